//! The live virtual-service table: the configuration as ipvsadm sees it ([`adm::Listing`]),
//! changed by ipvsadm commands with IPVS semantics, and turned into the immutable snapshots the
//! workers read.
//!
//! Every command is applied to a copy; the copy becomes current only when a snapshot can be
//! built from it (scheduler names and flags valid), so a failed command changes nothing. Real
//! servers keep their [`Dest`] object (weight, counters, overload flag) and their stable id
//! across edits of their own or other entries; a removed real server's `Dest` is marked
//! unavailable, and its connections go on (IPVS `expire_nodest_conn=0`) or end at their next
//! packet (`=1`). A service whose scheduler and flags are unchanged keeps its scheduler's state
//! through `Scheduler::rebuild`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use modes::{Forward, Protocol};
use sched::{Dest, SchedSpec, Scheduler};
use tapvs_adm::{self as adm, AdmError, Command, Listing};

use crate::config::Config;
use crate::datapath::route::Router;
use crate::datapath::service::{PortInfo, Service, Snapshot};

/// Service identity: protocol, address and port.
pub type SvcKey = (Protocol, SocketAddrV4);

/// The identity of a configured service.
pub fn svc_key(proto: Protocol, vip: SocketAddrV4) -> SvcKey {
    (proto, vip)
}

/// Settings the config file can give a service that ipvsadm has no option for.
#[derive(Debug, Clone, Default)]
struct Extras {
    local_addresses: Vec<Ipv4Addr>,
    toa: bool,
    toa_on_syn: bool,
    mh_table_size: Option<u32>,
    /// `sloppy_tcp` of the config's service (absent: the global setting).
    sloppy_tcp: Option<bool>,
}

struct LiveDest {
    id: u32,
    dest: Arc<Dest>,
}

struct LiveSched {
    spec: SchedSpec,
    sched: Arc<dyn Scheduler>,
}

/// What health checks say about a real server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    /// The checks failed.
    pub down: bool,
    /// On failure keep the server with weight 0 instead of removing it.
    pub inhibit_on_failure: bool,
    /// A weight set by a dynamic check (misc_dynamic).
    pub weight: Option<u32>,
}

/// The live table.
pub struct Table {
    listing: Listing,
    health: HashMap<(SvcKey, SocketAddrV4), Health>,
    transitions: HashMap<(SvcKey, SocketAddrV4), u64>,
    sorry: HashMap<SvcKey, (SocketAddrV4, Forward)>,
    sorry_active: std::collections::HashSet<SvcKey>,
    extras: HashMap<SvcKey, Extras>,
    dests: HashMap<(SvcKey, SocketAddrV4), LiveDest>,
    scheds: HashMap<SvcKey, LiveSched>,
    next_id: u32,
    ports: Vec<PortInfo>,
    router: Router,
    /// `control.sloppy_tcp`: the default of services without their own setting.
    sloppy_tcp: bool,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("services", &self.listing.services.len())
            .finish()
    }
}

impl Table {
    /// The table described by a validated config, and its first snapshot.
    pub fn from_config(cfg: &Config) -> Result<(Table, Snapshot), String> {
        let mut listing = Listing {
            conn_table_size: cfg.max_connections.min(u32::MAX as usize) as u32,
            timeouts: (cfg.timeouts.tcp, cfg.timeouts.tcp_fin, cfg.timeouts.udp),
            ..Listing::default()
        };
        let mut extras = HashMap::new();
        for s in &cfg.services {
            let proto = s.proto;
            extras.insert(
                (proto, s.vip),
                Extras {
                    local_addresses: s.local_addresses.clone(),
                    toa: s.toa,
                    toa_on_syn: s.toa_on_syn,
                    mh_table_size: s.scheduler.mh_table_size,
                    sloppy_tcp: s.sloppy_tcp,
                },
            );
            listing.services.push(adm::ServiceEntry {
                proto,
                addr: *s.vip.ip(),
                port: s.vip.port(),
                sched: s.scheduler.name.clone(),
                flags: s.scheduler.flags.clone(),
                persistent: s.persistent,
                netmask: (s.netmask != Ipv4Addr::BROADCAST).then_some(s.netmask),
                ops: s.ops,
                stats: adm::Stats::default(),
                rate: adm::Rate::default(),
                dests: s
                    .reals
                    .iter()
                    .map(|r| adm::DestEntry {
                        u_threshold: r.u_threshold,
                        l_threshold: r.l_threshold,
                        ..adm::DestEntry::new(r.addr, r.forward, r.weight)
                    })
                    .collect(),
            });
        }
        let mut t = Table {
            listing,
            health: HashMap::new(),
            transitions: HashMap::new(),
            sorry: HashMap::new(),
            sorry_active: Default::default(),
            extras,
            dests: HashMap::new(),
            scheds: HashMap::new(),
            next_id: 0,
            ports: Snapshot::ports_of(cfg),
            router: Router::new(&cfg.ports, &cfg.routes),
            sloppy_tcp: cfg.control.sloppy_tcp,
        };
        let snap = t.rebuild(&t.effective()).map_err(|e| e.to_string())?;
        Ok((t, snap))
    }

    /// The listing as the data path uses it: health-failed servers removed (or at weight 0
    /// with `inhibit_on_failure`), dynamic weights applied, and, while a service has lost its
    /// quorum, its real servers replaced by its sorry server. This is what `-L` shows, as keepalived's changes to the IPVS
    /// table would.
    pub fn effective(&self) -> Listing {
        let mut l = self.listing.clone();
        for s in &mut l.services {
            let key = (s.proto, SocketAddrV4::new(s.addr, s.port));
            s.dests.retain_mut(|d| {
                let Some(h) = self.health.get(&(key, SocketAddrV4::new(d.addr, d.port))) else {
                    return true;
                };
                if let Some(w) = h.weight {
                    d.weight = w;
                }
                if h.down {
                    d.weight = 0;
                    return h.inhibit_on_failure;
                }
                true
            });
            // keepalived: without quorum, all real servers go and the sorry server serves.
            if self.sorry_active.contains(&key) {
                if let Some(&(addr, forward)) = self.sorry.get(&key) {
                    s.dests = vec![adm::DestEntry::new(addr, forward, 1)];
                }
            }
        }
        l
    }

    /// Records a health verdict for a real server; returns the new snapshot when the
    /// effective table changed.
    pub fn set_health(
        &mut self,
        service: SvcKey,
        dest: SocketAddrV4,
        h: Health,
    ) -> Result<Option<Snapshot>, AdmError> {
        let old = self.health.insert((service, dest), h).unwrap_or_default();
        if old == h {
            return Ok(None);
        }
        if old.down != h.down {
            *self.transitions.entry((service, dest)).or_default() += 1;
        }
        self.rebuild(&self.effective()).map(Some)
    }

    /// A real server's health verdict (`None`: not checked) and its up/down transitions.
    pub fn health(&self, service: SvcKey, dest: SocketAddrV4) -> (Option<Health>, u64) {
        let k = (service, dest);
        (
            self.health.get(&k).copied(),
            self.transitions.get(&k).copied().unwrap_or(0),
        )
    }

    /// Names the sorry server of a service (used while it has lost quorum).
    pub fn set_sorry_server(&mut self, service: SvcKey, addr: SocketAddrV4, fwd: Forward) {
        self.sorry.insert(service, (addr, fwd));
    }

    /// Turns a service's sorry server on or off; returns the new snapshot when that changed.
    pub fn set_sorry_active(
        &mut self,
        service: SvcKey,
        on: bool,
    ) -> Result<Option<Snapshot>, AdmError> {
        let changed = if on {
            self.sorry_active.insert(service)
        } else {
            self.sorry_active.remove(&service)
        };
        if !changed {
            return Ok(None);
        }
        self.rebuild(&self.effective()).map(Some)
    }

    /// The configuration as ipvsadm sees it (counters not filled in).
    pub fn listing(&self) -> &Listing {
        &self.listing
    }

    /// The real server id of `dest` in `service`, if present.
    pub fn dest_id(&self, service: SvcKey, dest: SocketAddrV4) -> Option<u32> {
        self.dests.get(&(service, dest)).map(|d| d.id)
    }

    /// The `Dest` of a real server, if present.
    pub fn dest(&self, service: SvcKey, dest: SocketAddrV4) -> Option<&Arc<Dest>> {
        self.dests.get(&(service, dest)).map(|d| &d.dest)
    }

    /// Applies a configuration command. Returns the new snapshot to publish when the
    /// services changed, `None` for commands that change no service (timeouts are applied
    /// by the caller). On error nothing changed.
    pub fn apply(&mut self, cmd: &Command) -> Result<Option<Snapshot>, AdmError> {
        let mut next = self.listing.clone();
        next.apply(cmd)?;
        if let Command::SetTimeouts { .. } = cmd {
            self.listing = next;
            return Ok(None);
        }
        let current = std::mem::replace(&mut self.listing, next);
        match self.rebuild(&self.effective()) {
            Ok(snap) => Ok(Some(snap)),
            Err(e) => {
                self.listing = current;
                Err(e)
            }
        }
    }

    /// Builds the snapshot for `listing`, updating the live dests and schedulers. Fails, with
    /// nothing changed, when a scheduler cannot be built.
    fn rebuild(&mut self, listing: &Listing) -> Result<Snapshot, AdmError> {
        // First build every scheduler spec, so a bad one fails before anything changes.
        let mut specs = Vec::new();
        for s in &listing.services {
            let key = (s.proto, SocketAddrV4::new(s.addr, s.port));
            let mut spec = SchedSpec::new(s.sched.clone());
            spec.flags = s.flags.clone();
            spec.mh_table_size = self.extras.get(&key).and_then(|e| e.mh_table_size);
            sched::build(&spec, &[]).map_err(|e| match e {
                sched::SchedError::UnknownScheduler(_) => AdmError::SchedulerNotFound,
                other => AdmError::Other(other.to_string()),
            })?;
            specs.push((key, spec));
        }
        for s in &listing.services {
            let key = (s.proto, SocketAddrV4::new(s.addr, s.port));
            let lips = self
                .extras
                .get(&key)
                .is_some_and(|e| !e.local_addresses.is_empty());
            if !lips && s.dests.iter().any(|d| d.forward == Forward::FullNat) {
                return Err(AdmError::Other(format!(
                    "FullNAT needs local addresses: set `local_addresses` for {} {}:{} in the config",
                    s.proto.name(),
                    s.addr,
                    s.port
                )));
            }
        }
        let mut seen = HashMap::new();
        let mut services = Vec::new();
        for (s, (key, spec)) in listing.services.iter().zip(specs) {
            let mut dests = Vec::new();
            let mut ids = Vec::new();
            let mut forward = Vec::new();
            for d in &s.dests {
                let daddr = SocketAddrV4::new(d.addr, d.port);
                let live = self.dests.entry((key, daddr)).or_insert_with(|| {
                    let id = self.next_id;
                    self.next_id += 1;
                    LiveDest {
                        id,
                        dest: Arc::new(Dest::new(IpAddr::V4(d.addr), d.port, d.weight)),
                    }
                });
                live.dest.set_weight(d.weight);
                live.dest.set_thresholds(d.u_threshold, d.l_threshold);
                live.dest.set_available(true);
                seen.insert((key, daddr), ());
                dests.push(live.dest.clone());
                ids.push(live.id);
                forward.push(d.forward);
            }
            let sched: Arc<dyn Scheduler> = match self.scheds.get(&key) {
                Some(l) if l.spec == spec => l.sched.rebuild(&dests).into(),
                _ => sched::build(&spec, &dests)
                    .map_err(|e| AdmError::Other(e.to_string()))?
                    .into(),
            };
            self.scheds.insert(
                key,
                LiveSched {
                    spec,
                    sched: sched.clone(),
                },
            );
            let extras = self.extras.get(&key).cloned().unwrap_or(Extras {
                toa: true,
                ..Extras::default()
            });
            services.push(Service {
                proto: s.proto,
                vip: s.addr,
                vport: s.port,
                dests,
                dest_ids: ids,
                forward,
                sched,
                persistent: s.persistent,
                netmask: u32::from(s.netmask.unwrap_or(Ipv4Addr::BROADCAST)),
                ops: s.ops,
                local_addresses: extras.local_addresses.clone().into(),
                toa: extras.toa,
                toa_on_syn: extras.toa_on_syn,
                sloppy_tcp: extras.sloppy_tcp.unwrap_or(self.sloppy_tcp),
            });
        }
        // Real servers that left: unavailable (templates stop pointing at them; their
        // connections follow expire_nodest_conn).
        self.dests.retain(|k, d| {
            let keep = seen.contains_key(k);
            if !keep {
                d.dest.set_available(false);
            }
            keep
        });
        let live: Vec<SvcKey> = listing
            .services
            .iter()
            .map(|s| (s.proto, SocketAddrV4::new(s.addr, s.port)))
            .collect();
        self.scheds.retain(|k, _| live.contains(k));
        Ok(Snapshot::new(
            self.ports.clone(),
            self.router.clone(),
            services,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn table() -> Table {
        let cfg = crate::config::parse(
            r#"
[[port]]
name = "int"
tap = "t0"
addresses = ["172.16.0.1/24"]

[[service]]
protocol = "tcp"
address = "192.0.2.1:80"
scheduler = "rr"

[[service.real]]
address = "172.16.0.2:80"

[[service.real]]
address = "172.16.0.3:80"
"#,
            Path::new("t.toml"),
        )
        .unwrap();
        Table::from_config(&cfg).unwrap().0
    }

    fn cmd(line: &str) -> Command {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        adm::parse(&args).unwrap()
    }

    const SVC: (Protocol, SocketAddrV4) = (
        Protocol::Tcp,
        SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 80),
    );

    #[test]
    fn edits_keep_dest_objects_and_ids() {
        let mut t = table();
        let rs2: SocketAddrV4 = "172.16.0.3:80".parse().unwrap();
        let d = t.dest(SVC, rs2).unwrap().clone();
        d.bind(true);
        let id = t.dest_id(SVC, rs2).unwrap();
        let snap = t
            .apply(&cmd("-e -t 192.0.2.1:80 -r 172.16.0.3:80 -m -w 0"))
            .unwrap()
            .unwrap();
        let same = t.dest(SVC, rs2).unwrap();
        assert!(Arc::ptr_eq(&d, same), "the Dest survives the edit");
        assert_eq!(same.weight(), 0);
        assert_eq!(same.active_conns(), 1, "counters kept");
        assert_eq!(t.dest_id(SVC, rs2), Some(id));
        assert_eq!(snap.services[0].dests.len(), 2);
        // Adding another server does not disturb the others' ids.
        t.apply(&cmd("-a -t 192.0.2.1:80 -r 172.16.0.4:80 -m"))
            .unwrap();
        assert_eq!(t.dest_id(SVC, rs2), Some(id));
        assert_eq!(t.dest_id(SVC, "172.16.0.4:80".parse().unwrap()), Some(2));
    }

    #[test]
    fn deleted_dest_becomes_unavailable() {
        let mut t = table();
        let rs1: SocketAddrV4 = "172.16.0.2:80".parse().unwrap();
        let d = t.dest(SVC, rs1).unwrap().clone();
        let snap = t
            .apply(&cmd("-d -t 192.0.2.1:80 -r 172.16.0.2:80"))
            .unwrap()
            .unwrap();
        assert!(!d.is_available());
        assert_eq!(snap.services[0].dests.len(), 1);
        assert!(t.dest(SVC, rs1).is_none());
    }

    #[test]
    fn failed_commands_change_nothing() {
        let mut t = table();
        let before = format!("{:?}", t.listing());
        assert!(matches!(
            t.apply(&cmd("-A -t 192.0.2.1:80 -s rr")),
            Err(AdmError::ServiceExists)
        ));
        assert!(matches!(
            t.apply(&cmd("-E -t 192.0.2.1:80 -s nosuch")),
            Err(AdmError::SchedulerNotFound)
        ));
        assert!(matches!(
            t.apply(&cmd("-d -t 192.0.2.1:80 -r 172.16.0.9:80")),
            Err(AdmError::NoSuchDest)
        ));
        // IPVS refuses a lower threshold above the upper one (ERANGE).
        assert!(matches!(
            t.apply(&cmd("-a -t 192.0.2.1:80 -r 172.16.0.9:80 -m -x 5 -y 10")),
            Err(AdmError::ThresholdRange)
        ));
        assert!(matches!(
            t.apply(&cmd("-e -t 192.0.2.1:80 -r 172.16.0.2:80 -m -x 5 -y 10")),
            Err(AdmError::ThresholdRange)
        ));
        assert_eq!(format!("{:?}", t.listing()), before);
    }

    #[test]
    fn fullnat_needs_local_addresses() {
        let mut t = table();
        let e = t
            .apply(&cmd("-a -t 192.0.2.1:80 -r 172.16.0.9:80 -b"))
            .unwrap_err();
        assert!(e.to_string().contains("local_addresses"), "{e}");
        assert!(t.dest(SVC, "172.16.0.9:80".parse().unwrap()).is_none());
    }

    #[test]
    fn health_overlay_removes_inhibits_reweights_and_adds_sorry() {
        let mut t = table();
        let rs1: SocketAddrV4 = "172.16.0.2:80".parse().unwrap();
        let rs2: SocketAddrV4 = "172.16.0.3:80".parse().unwrap();
        let down = Health {
            down: true,
            ..Health::default()
        };
        let snap = t.set_health(SVC, rs1, down).unwrap().unwrap();
        assert_eq!(
            snap.services[0].dests.len(),
            1,
            "a failed server leaves the pool"
        );
        assert_eq!(t.effective().services[0].dests.len(), 1);
        assert_eq!(
            t.listing().services[0].dests.len(),
            2,
            "the configuration keeps it"
        );
        assert!(
            t.set_health(SVC, rs1, down).unwrap().is_none(),
            "no change, no snapshot"
        );
        let inhibited = Health {
            down: true,
            inhibit_on_failure: true,
            weight: None,
        };
        let snap = t.set_health(SVC, rs1, inhibited).unwrap().unwrap();
        assert_eq!(snap.services[0].dests[0].weight(), 0, "inhibited: weight 0");
        let dynamic = Health {
            weight: Some(7),
            ..Health::default()
        };
        let snap = t.set_health(SVC, rs2, dynamic).unwrap().unwrap();
        assert_eq!(snap.services[0].dests[1].weight(), 7);
        let sorry: SocketAddrV4 = "172.16.0.9:80".parse().unwrap();
        t.set_sorry_server(SVC, sorry, Forward::Nat);
        let snap = t.set_sorry_active(SVC, true).unwrap().unwrap();
        assert_eq!(snap.services[0].dests.len(), 1, "only the sorry server");
        assert_eq!(
            snap.services[0].dests[0].addr(),
            std::net::IpAddr::V4(*sorry.ip())
        );
        assert!(t.set_sorry_active(SVC, true).unwrap().is_none());
        let snap = t.set_sorry_active(SVC, false).unwrap().unwrap();
        assert_eq!(snap.services[0].dests.len(), 2);
    }

    #[test]
    fn services_come_and_go() {
        let mut t = table();
        let snap = t.apply(&cmd("-A -u 192.0.2.1:53 -s wrr")).unwrap().unwrap();
        assert_eq!(snap.services.len(), 2);
        assert!(snap.service(17, Ipv4Addr::new(192, 0, 2, 1), 53).is_some());
        let snap = t.apply(&cmd("-C")).unwrap().unwrap();
        assert!(snap.services.is_empty());
        assert!(!snap.is_vip(Ipv4Addr::new(192, 0, 2, 1)));
    }
}
