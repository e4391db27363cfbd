//! The control plane, on its own threads: the running appliance ([`runtime`]) and the state its
//! threads share ([`shared`]), the live service table as ipvsadm sees it ([`table`]), the control socket
//! that tapvsadm talks to ([`socket`]), the rate estimator ([`estimator`]), the Prometheus endpoint
//! ([`metrics`]), the host stack that health checks speak through ([`host`]) and the health
//! thread that runs the checkers on it and applies their verdicts ([`checks`]), and the
//! scale-out route announcer ([`announce`]), the hitless reload ([`reload`]), the change log
//! ([`changelog`]), the live capture's session ([`capture`]) and the hook scripts
//! ([`script`]). It changes what the data path does only by publishing snapshots (and, for a
//! capture, by setting its filter).

pub mod announce;
pub mod capture;
pub mod changelog;
pub mod checks;
pub mod estimator;
pub mod host;
pub mod metrics;
pub mod reload;
pub mod runtime;
pub mod script;
pub mod shared;
pub mod socket;
pub mod sync;
pub mod table;
pub mod vrrp;
