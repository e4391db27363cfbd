//! tapvs: Linux Virtual Server rebuilt as a user-space appliance on TAP devices.
//!
//! The crate holds the daemon, in folders by role: the data path ([`datapath`]: workers,
//! pipeline, connection table, neighbours, routes, steering), the control plane ([`control`]:
//! runtime, live table, control socket, metrics, host stack), the configuration ([`config`]),
//! health checks ([`health`]), every system call ([`sys`]), the bare benchmark forwarder
//! ([`tapfwd`]), the real-server helpers ([`rs`]) and the
//! keepalived.conf importer ([`import`]).
//! Packet views and rewrites, and the protocol and forwarding-method types every layer shares,
//! live in the `modes` crate, schedulers in the `sched` crate, and tapvsadm's parser, listing
//! formats and control-socket messages in the `tapvs_adm` crate. The network-namespace harness
//! the demo and the integration tests share is the `tapvs-lab` crate (`lab/`); this library
//! does not use it outside tests.

#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod config;
pub mod control;
pub mod datapath;
pub mod fuzz;
pub mod health;
pub mod import;
pub mod rs;
pub mod scaleout;
pub mod syncd;
pub mod sys;
pub mod tapfwd;
pub mod vrrp;
