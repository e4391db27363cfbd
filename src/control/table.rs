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

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use modes::{Forward, Protocol};
use sched::{Dest, SchedSpec, Scheduler};
use tapvs_adm::{self as adm, AdmError, Command, Listing};

use crate::config::Config;
use crate::datapath::route::Router;
use crate::datapath::service::{Service, Snapshot};

/// Service identity: protocol, address and port (IPv4 or IPv6).
pub type SvcKey = (Protocol, SocketAddr);

/// The identity of a configured service.
pub fn svc_key(proto: Protocol, vip: SocketAddr) -> SvcKey {
    (proto, vip)
}

/// `a:port` as a socket address (either family): how the table keys the `adm` entries'
/// services and real servers.
pub fn sock(a: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(a, port)
}

/// Settings the config file can give a service that ipvsadm has no option for.
#[derive(Debug, Clone, Default, PartialEq)]
struct Extras {
    local_addresses: Vec<IpAddr>,
    toa: bool,
    toa_on_syn: bool,
    mh_table_size: Option<u32>,
    /// `sloppy_tcp` of the config's service (absent: the global setting).
    sloppy_tcp: Option<bool>,
    /// Access control (allow/deny lists, conn_limit, conn_rate).
    access: crate::config::AccessConfig,
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

/// A configured service: its ipvsadm entry and its place in the listing order.
struct Entry {
    seq: u64,
    svc: adm::ServiceEntry,
}

/// The live table.
///
/// Services are kept by key (with a sequence number for ipvsadm's listing order), and the
/// snapshot last built is kept too: a command touches only the services it names, rebuilds
/// those services alone, and derives the next snapshot from the last one through its
/// persistent maps, so an edit costs O(log n) in the table size (`-C` and config loads touch
/// every service, as they must).
pub struct Table {
    /// The listing's table-wide fields (timeouts, table size); its services are `entries`.
    meta: Listing,
    entries: HashMap<SvcKey, Entry>,
    order: BTreeMap<u64, SvcKey>,
    /// The services by family, protocol, address and port (ipvsadm's sorted listing order).
    by_addr: BTreeMap<SortKey, SvcKey>,
    next_seq: u64,
    health: HashMap<(SvcKey, SocketAddr), Health>,
    transitions: HashMap<(SvcKey, SocketAddr), u64>,
    sorry: HashMap<SvcKey, (SocketAddr, Forward)>,
    sorry_active: std::collections::HashSet<SvcKey>,
    extras: HashMap<SvcKey, Extras>,
    dests: HashMap<(SvcKey, SocketAddr), LiveDest>,
    scheds: HashMap<SvcKey, LiveSched>,
    next_id: u32,
    snap: Snapshot,
    /// `control.sloppy_tcp`: the default of services without their own setting.
    sloppy_tcp: bool,
    /// The ports and static routes (fixed for the daemon's life): what a new real server or
    /// VIP is checked against.
    ports: Vec<crate::config::PortConfig>,
    routes: Vec<crate::config::RouteConfig>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("services", &self.entries.len())
            .finish()
    }
}

/// The snapshot key of a service key.
fn snap_key(key: SvcKey) -> crate::datapath::service::SvcKey {
    crate::datapath::service::svc_key(key.0.number(), key.1.ip(), key.1.port())
}

/// A service's place in ipvsadm's sorted listing: IPv4 before IPv6, then protocol, address
/// and port (libipvs's order, as `tapvsadm` sorts a listing it is given).
pub type SortKey = (bool, u8, u128, u16);

fn sort_key(key: SvcKey) -> SortKey {
    let (v6, addr) = match key.1.ip() {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    };
    (v6, key.0.number(), addr, key.1.port())
}

/// Where the next page of a listing starts (from [`Table::effective_page`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursor {
    /// After this place in the order of addition.
    Added(u64),
    /// After this place in the sorted order.
    Sorted(SortKey),
}

/// A service's or real server's address as the config gives it, checked against the
/// family rules the config validation applies (an IPv6 VIP with IPv4 real servers is NAT64,
/// which needs FullNAT; an IPv4 VIP takes IPv4 real servers only).
fn family_problem(vip: SocketAddr, real: SocketAddr, forward: Forward) -> Option<String> {
    match (vip, real) {
        (SocketAddr::V4(_), SocketAddr::V6(_)) => Some(format!(
            "real server {real}: an IPv4 service takes IPv4 real servers only"
        )),
        (SocketAddr::V6(_), SocketAddr::V4(_)) if forward != Forward::FullNat => Some(format!(
            "real server {real}: an IPv4 real server behind an IPv6 service needs FullNAT (-b, NAT64)"
        )),
        _ => None,
    }
}

fn sched_error(e: sched::SchedError) -> AdmError {
    match e {
        sched::SchedError::UnknownScheduler(_) => AdmError::SchedulerNotFound,
        other => AdmError::Other(other.to_string()),
    }
}

/// A service's access settings as `-L` shows them.
fn access_entry(a: &crate::config::AccessConfig) -> adm::AccessEntry {
    let show = |l: &[crate::config::Cidr]| l.iter().map(|c| c.to_string()).collect();
    adm::AccessEntry {
        deny: show(&a.deny),
        allow: show(&a.allow),
        conn_limit: a.conn_limit,
        conn_rate: a.conn_rate,
        conn_rate_prefix: a.conn_rate_prefix,
    }
}

impl Table {
    /// The table described by a validated config, and its first snapshot.
    pub fn from_config(cfg: &Config) -> Result<(Table, Snapshot), String> {
        let meta = Listing {
            conn_table_size: cfg.max_connections.min(u32::MAX as usize) as u32,
            timeouts: (cfg.timeouts.tcp, cfg.timeouts.tcp_fin, cfg.timeouts.udp),
            ..Listing::default()
        };
        let mut t = Table {
            meta,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            by_addr: BTreeMap::new(),
            next_seq: 0,
            health: HashMap::new(),
            transitions: HashMap::new(),
            sorry: HashMap::new(),
            sorry_active: Default::default(),
            extras: HashMap::new(),
            dests: HashMap::new(),
            scheds: HashMap::new(),
            next_id: 0,
            snap: Snapshot::empty(
                Snapshot::ports_of(cfg),
                Router::new(&cfg.ports, &cfg.routes),
            ),
            sloppy_tcp: cfg.control.sloppy_tcp,
            ports: cfg.ports.clone(),
            routes: cfg.routes.clone(),
        };
        for s in &cfg.services {
            let key = (s.proto, s.vip);
            t.extras.insert(
                key,
                Extras {
                    local_addresses: s.local_addresses.clone(),
                    toa: s.toa,
                    toa_on_syn: s.toa_on_syn,
                    mh_table_size: s.scheduler.mh_table_size,
                    sloppy_tcp: s.sloppy_tcp,
                    access: s.access.clone(),
                },
            );
            let entry = adm::ServiceEntry {
                proto: s.proto,
                addr: s.vip.ip(),
                port: s.vip.port(),
                fwmark: None,
                sched: s.scheduler.name.clone(),
                flags: s.scheduler.flags.clone(),
                persistent: s.persistent,
                netmask: match s.netmask {
                    IpAddr::V4(m) => (m != Ipv4Addr::BROADCAST).then_some(adm::Netmask::V4(m)),
                    // The config's prefix length, as the mask's leading ones.
                    IpAddr::V6(m) => {
                        let len = u128::from(m).leading_ones() as u8;
                        (len != 128).then_some(adm::Netmask::V6(len))
                    }
                },
                ops: s.ops,
                synproxy: s.synproxy,
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
                access: None,
            };
            t.insert_entry(key, entry);
        }
        let keys: Vec<SvcKey> = t.order.values().copied().collect();
        for key in keys {
            t.rebuild(key).map_err(|e| e.to_string())?;
        }
        t.set_defence(&cfg.defence);
        let snap = t.snapshot();
        Ok((t, snap))
    }

    fn insert_entry(&mut self, key: SvcKey, svc: adm::ServiceEntry) {
        let seq = match self.entries.get(&key) {
            Some(e) => e.seq,
            None => {
                self.next_seq += 1;
                self.order.insert(self.next_seq, key);
                self.by_addr.insert(sort_key(key), key);
                self.next_seq
            }
        };
        self.entries.insert(key, Entry { seq, svc });
    }

    fn remove_entry(&mut self, key: SvcKey) -> Option<adm::ServiceEntry> {
        let e = self.entries.remove(&key)?;
        self.order.remove(&e.seq);
        self.by_addr.remove(&sort_key(key));
        Some(e.svc)
    }

    /// The snapshot of the table as it is now (cheap: the maps are shared).
    pub fn snapshot(&self) -> Snapshot {
        let mut s = self.snap.clone();
        s.reserve_dest_ids(self.next_id);
        s
    }

    /// How many services are configured.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no service is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// One service as the data path uses it: health-failed servers removed (or at weight 0
    /// with `inhibit_on_failure`), dynamic weights applied, and, while the service has lost its
    /// quorum, its real servers replaced by its sorry server.
    fn effective_service(&self, s: &adm::ServiceEntry) -> adm::ServiceEntry {
        let mut s = s.clone();
        let key = (s.proto, sock(s.addr, s.port));
        s.access = self
            .extras
            .get(&key)
            .map(|e| access_entry(&e.access))
            .filter(|a| !a.is_empty());
        s.dests.retain_mut(|d| {
            let Some(h) = self.health.get(&(key, sock(d.addr, d.port))) else {
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
        s
    }

    /// The listing as the data path uses it (see `effective_service`). This is what `-L`
    /// shows, as keepalived's changes to the IPVS table would. O(n): listings that must not
    /// hold the table for long page through [`Table::effective_page`].
    pub fn effective(&self) -> Listing {
        let mut l = self.meta.clone();
        l.services = self
            .order
            .values()
            .map(|k| self.effective_service(&self.entries[k].svc))
            .collect();
        l
    }

    /// Up to `max` services of the effective listing, sorted by protocol, address and port
    /// (`sorted`) or in the order they were added, starting after the cursor `after` (from
    /// the previous page; `None` for the first), and the cursor for the next page (`None`
    /// when this was the last). O(log n + max).
    pub fn effective_page(
        &self,
        sorted: bool,
        after: Option<Cursor>,
        max: usize,
    ) -> (Vec<adm::ServiceEntry>, Option<Cursor>) {
        if sorted {
            let after = match after {
                Some(Cursor::Sorted(k)) => Some(k),
                _ => None,
            };
            self.page_of(&self.by_addr, after, max, Cursor::Sorted)
        } else {
            let after = match after {
                Some(Cursor::Added(k)) => Some(k),
                _ => None,
            };
            self.page_of(&self.order, after, max, Cursor::Added)
        }
    }

    /// Up to `max` services of `index` after `after`, and the cursor of the next page.
    fn page_of<K: Ord + Copy>(
        &self,
        index: &BTreeMap<K, SvcKey>,
        after: Option<K>,
        max: usize,
        cursor: fn(K) -> Cursor,
    ) -> (Vec<adm::ServiceEntry>, Option<Cursor>) {
        use std::ops::Bound;
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut out = Vec::new();
        let mut last = None;
        for (&k, key) in index.range((lower, Bound::Unbounded)) {
            if out.len() == max {
                return (out, last.map(cursor));
            }
            out.push(self.effective_service(&self.entries[key].svc));
            last = Some(k);
        }
        (out, None)
    }

    /// One service of the effective listing.
    pub fn effective_one(&self, key: SvcKey) -> Option<adm::ServiceEntry> {
        self.entries
            .get(&key)
            .map(|e| self.effective_service(&e.svc))
    }

    /// The table-wide part of the listing (timeouts, table size), without services.
    pub fn meta(&self) -> &Listing {
        &self.meta
    }

    /// The configured service `key`, as ipvsadm sees it.
    pub fn service(&self, key: SvcKey) -> Option<&adm::ServiceEntry> {
        self.entries.get(&key).map(|e| &e.svc)
    }

    /// Records a health verdict for a real server; returns the new snapshot when the
    /// effective table changed.
    pub fn set_health(
        &mut self,
        service: SvcKey,
        dest: SocketAddr,
        h: Health,
    ) -> Result<Option<Snapshot>, AdmError> {
        let old = self.health.insert((service, dest), h).unwrap_or_default();
        if old == h {
            return Ok(None);
        }
        if old.down != h.down {
            *self.transitions.entry((service, dest)).or_default() += 1;
        }
        self.rebuild(service)?;
        Ok(Some(self.snapshot()))
    }

    /// A real server's health verdict (`None`: not checked) and its up/down transitions.
    pub fn health(&self, service: SvcKey, dest: SocketAddr) -> (Option<Health>, u64) {
        let k = (service, dest);
        (
            self.health.get(&k).copied(),
            self.transitions.get(&k).copied().unwrap_or(0),
        )
    }

    /// Names the sorry server of a service (used while it has lost quorum).
    pub fn set_sorry_server(&mut self, service: SvcKey, addr: SocketAddr, fwd: Forward) {
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
        self.rebuild(service)?;
        Ok(Some(self.snapshot()))
    }

    /// Sets the config-only settings of service `key` (FullNAT local addresses, TOA, MH table
    /// size, `sloppy_tcp`, access control) for its next rebuild; returns whether they changed
    /// (a reload then calls [`Table::refresh`] unless a command rebuilds the service anyway).
    pub fn set_extras(&mut self, key: SvcKey, s: &crate::config::ServiceConfig) -> bool {
        let e = Extras {
            local_addresses: s.local_addresses.clone(),
            toa: s.toa,
            toa_on_syn: s.toa_on_syn,
            mh_table_size: s.scheduler.mh_table_size,
            sloppy_tcp: s.sloppy_tcp,
            access: s.access.clone(),
        };
        self.extras.insert(key, e.clone()) != Some(e)
    }

    /// Sets the `[defence]` limits the next snapshots carry; returns whether they changed.
    pub fn set_defence(&mut self, d: &crate::config::DefenceConfig) -> bool {
        let limits = crate::datapath::acl::IcmpLimits::of(d);
        let changed = self.snap.icmp_limits != limits;
        self.snap.icmp_limits = limits;
        changed
    }

    /// Rebuilds service `key` from its entry and settings (after [`Table::set_extras`]).
    pub fn refresh(&mut self, key: SvcKey) -> Result<(), AdmError> {
        self.rebuild(key)
    }

    /// Forgets the health verdict of a real server (its checks were removed or changed);
    /// returns the new snapshot when the effective table changed.
    pub fn clear_health(
        &mut self,
        service: SvcKey,
        dest: SocketAddr,
    ) -> Result<Option<Snapshot>, AdmError> {
        self.transitions.remove(&(service, dest));
        match self.health.remove(&(service, dest)) {
            Some(h) if h != Health::default() && self.entries.contains_key(&service) => {
                self.rebuild(service)?;
                Ok(Some(self.snapshot()))
            }
            _ => Ok(None),
        }
    }

    /// Forgets the sorry server of a service (a reload removed it); returns the new snapshot
    /// when it was serving.
    pub fn clear_sorry(&mut self, service: SvcKey) -> Result<Option<Snapshot>, AdmError> {
        self.sorry.remove(&service);
        self.set_sorry_active(service, false)
    }

    /// The configuration as ipvsadm sees it (counters not filled in). O(n).
    pub fn listing(&self) -> Listing {
        let mut l = self.meta.clone();
        l.services = self
            .order
            .values()
            .map(|k| self.entries[k].svc.clone())
            .collect();
        l
    }

    /// The real server id of `dest` in `service`, if present.
    pub fn dest_id(&self, service: SvcKey, dest: SocketAddr) -> Option<u32> {
        self.dests.get(&(service, dest)).map(|d| d.id)
    }

    /// The `Dest` of a real server, if present.
    pub fn dest(&self, service: SvcKey, dest: SocketAddr) -> Option<&Arc<Dest>> {
        self.dests.get(&(service, dest)).map(|d| &d.dest)
    }

    /// Applies a configuration command. Returns the new snapshot to publish when the
    /// services changed, `None` for commands that change no service (timeouts are applied
    /// by the caller). On error nothing changed. Cost: O(log n) plus the size of the
    /// service the command names; `-C` is O(n).
    pub fn apply(&mut self, cmd: &Command) -> Result<Option<Snapshot>, AdmError> {
        Ok(self.apply_quiet(cmd)?.then(|| self.snapshot()))
    }

    /// [`Table::apply`] without building the snapshot to publish: returns whether the
    /// services changed. A batch applies its commands with this and publishes
    /// [`Table::snapshot`] once at the end.
    pub fn apply_quiet(&mut self, cmd: &Command) -> Result<bool, AdmError> {
        use adm::ServiceSpec;
        let spec = match cmd {
            Command::SetTimeouts { .. } => {
                self.meta.apply(cmd)?;
                return Ok(false);
            }
            Command::Clear => {
                let keys: Vec<SvcKey> = self.order.values().copied().collect();
                for k in keys {
                    self.remove_entry(k);
                    self.rebuild(k)?;
                }
                return Ok(true);
            }
            Command::Zero(None) => return Ok(false),
            Command::Zero(Some(spec)) => spec,
            Command::AddService(o) | Command::EditService(o) => &o.service,
            Command::DeleteService(spec) => spec,
            Command::AddServer(o) | Command::EditServer(o) => &o.service,
            Command::DeleteServer { service, .. } => service,
            Command::List(_)
            | Command::Save { .. }
            | Command::Restore
            | Command::Help
            | Command::Version
            | Command::StartDaemon(_)
            | Command::StopDaemon(_) => return Ok(false),
        };
        let key = match spec {
            ServiceSpec::Addr { proto, addr } => (*proto, *addr),
            ServiceSpec::Fwmark { .. } => {
                return Err(AdmError::Unsupported("fwmark services (-f)".into()))
            }
        };
        // The command runs with IPVS semantics against a listing of just the service it
        // names (or none), so its errors are exactly the full listing's.
        let old = self.entries.get(&key).map(|e| e.svc.clone());
        let mut one = Listing {
            services: old.iter().cloned().collect(),
            ..Listing::default()
        };
        one.apply(cmd)?;
        if matches!(cmd, Command::Zero(_)) {
            return Ok(false);
        }
        self.check_addresses(cmd)?;
        match one.services.pop() {
            Some(svc) => self.insert_entry(key, svc),
            None => {
                self.remove_entry(key);
            }
        }
        if let Err(e) = self.rebuild(key) {
            match old {
                Some(svc) => self.insert_entry(key, svc),
                None => {
                    self.remove_entry(key);
                }
            }
            return Err(e);
        }
        Ok(true)
    }

    /// Refuses, as IPVS refuses an address that is not unicast, a new real server that cannot
    /// work here (`config::real_server_problem`: not unicast, an address of the appliance or a
    /// VIP, unreachable) and a new service whose VIP is not a unicast address or is one of the
    /// appliance's own addresses; the config file is held to the same rules.
    fn check_addresses(&self, cmd: &Command) -> Result<(), AdmError> {
        let invalid = |m: String| AdmError::Other(format!("Invalid operation: {m}"));
        match cmd {
            Command::AddServer(o) | Command::EditServer(o) => {
                if let adm::ServiceSpec::Addr { addr, .. } = &o.service {
                    if let Some(m) = family_problem(*addr, o.server, o.forward) {
                        return Err(invalid(m));
                    }
                }
                if matches!(cmd, Command::EditServer(_)) {
                    return Ok(());
                }
                let problem = crate::config::real_server_problem(
                    &self.ports,
                    &self.routes,
                    |a| self.snap.is_vip(a),
                    |a| self.snap.is_lip(a),
                    o.server.ip(),
                );
                problem.map_or(Ok(()), |m| Err(invalid(m)))
            }
            Command::AddService(o) => {
                let adm::ServiceSpec::Addr { addr, .. } = &o.service else {
                    return Ok(());
                };
                let ip = addr.ip();
                if let Some(why) = crate::config::not_unicast(ip) {
                    return Err(invalid(format!("{ip} is {why}, not a virtual address")));
                }
                let own = self.ports.iter().enumerate().find_map(|(k, p)| {
                    p.addresses.iter().find_map(|c| {
                        if c.addr == ip {
                            Some(format!(
                                "an address of the appliance itself (port[{k}] {:?})",
                                p.name
                            ))
                        } else {
                            crate::config::subnet_special(c, ip)
                                .map(|w| format!("the {w} address of port[{k}]'s network"))
                        }
                    })
                });
                match own {
                    Some(what) => Err(invalid(format!("{ip} is {what}, not a virtual address"))),
                    None if self.snap.is_lip(ip) => Err(invalid(format!(
                        "{ip} is a FullNAT local address, not a virtual address"
                    ))),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// Rebuilds service `key` in the snapshot from its entry (or removes it when it has no
    /// entry), updating its live dests and scheduler. Fails, with nothing changed, when its
    /// scheduler cannot be built or it needs local addresses it lacks.
    fn rebuild(&mut self, key: SvcKey) -> Result<(), AdmError> {
        let skey = snap_key(key);
        let Some(entry) = self.entries.get(&key) else {
            if let Some(old) = self.snap.without_service(skey) {
                for d in &old.dests {
                    self.dests
                        .remove(&(key, SocketAddr::new(d.addr(), d.port())));
                    d.set_available(false);
                }
            }
            self.scheds.remove(&key);
            return Ok(());
        };
        let s = self.effective_service(&entry.svc);
        // First check what can fail, so a bad command fails before anything changes.
        let mut spec = SchedSpec::new(s.sched.clone());
        spec.flags = s.flags.clone();
        spec.mh_table_size = self.extras.get(&key).and_then(|e| e.mh_table_size);
        let reuse = self.scheds.get(&key).filter(|l| l.spec == spec).is_some();
        if !reuse {
            sched::build(&spec, &[]).map_err(sched_error)?;
        }
        let lips: &[IpAddr] = self
            .extras
            .get(&key)
            .map_or(&[], |e| e.local_addresses.as_slice());
        if lips.is_empty() && s.dests.iter().any(|d| d.forward == Forward::FullNat) {
            return Err(AdmError::Other(format!(
                "FullNAT needs local addresses: set `local_addresses` for {} {} in the config",
                s.proto.name(),
                sock(s.addr, s.port)
            )));
        }
        // NAT64: an IPv4 real server behind an IPv6 service speaks from an IPv4 local address.
        if s.addr.is_ipv6()
            && !lips.iter().any(|a| a.is_ipv4())
            && s.dests.iter().any(|d| d.addr.is_ipv4())
        {
            return Err(AdmError::Other(format!(
                "an IPv4 real server of an IPv6 service needs an IPv4 local address: set `local_addresses` for {} {} in the config",
                s.proto.name(),
                sock(s.addr, s.port)
            )));
        }
        let mut dests = Vec::with_capacity(s.dests.len());
        let mut ids = Vec::with_capacity(s.dests.len());
        let mut forward = Vec::with_capacity(s.dests.len());
        for d in &s.dests {
            let daddr = sock(d.addr, d.port);
            let live = self.dests.entry((key, daddr)).or_insert_with(|| {
                let id = self.next_id;
                self.next_id += 1;
                LiveDest {
                    id,
                    dest: Arc::new(Dest::new(d.addr, d.port, d.weight)),
                }
            });
            live.dest.set_weight(d.weight);
            live.dest.set_thresholds(d.u_threshold, d.l_threshold);
            live.dest.set_available(true);
            dests.push(live.dest.clone());
            ids.push(live.id);
            forward.push(d.forward);
        }
        let sched: Arc<dyn Scheduler> = match self.scheds.get(&key) {
            Some(l) if l.spec == spec => l.sched.rebuild(&dests).into(),
            _ => sched::build(&spec, &dests).map_err(sched_error)?.into(),
        };
        self.scheds.insert(
            key,
            LiveSched {
                spec,
                sched: sched.clone(),
            },
        );
        // Real servers that left: unavailable (templates stop pointing at them; their
        // connections follow expire_nodest_conn).
        if let Some(old) = self.snap.service_by_key(skey) {
            let now: std::collections::HashSet<SocketAddr> =
                s.dests.iter().map(|d| sock(d.addr, d.port)).collect();
            for d in &old.dests {
                let daddr = SocketAddr::new(d.addr(), d.port());
                if !now.contains(&daddr) {
                    d.set_available(false);
                    self.dests.remove(&(key, daddr));
                }
            }
        }
        let extras = self.extras.get(&key).cloned().unwrap_or(Extras {
            toa: true,
            ..Extras::default()
        });
        self.snap.with_service(Arc::new(Service {
            proto: s.proto,
            vip: s.addr,
            vport: s.port,
            dests,
            dest_ids: ids,
            forward,
            sched,
            persistent: s.persistent,
            netmask: match s.netmask {
                Some(adm::Netmask::V4(m)) => u128::from(u32::from(m)),
                Some(adm::Netmask::V6(len)) => crate::config::prefix_mask(128, len),
                None if s.addr.is_ipv6() => u128::MAX,
                None => u128::from(u32::MAX),
            },
            ops: s.ops,
            local_addresses: extras.local_addresses.clone().into(),
            toa: extras.toa,
            toa_on_syn: extras.toa_on_syn,
            sloppy_tcp: extras.sloppy_tcp.unwrap_or(self.sloppy_tcp),
            access: crate::datapath::acl::Access::new(&extras.access),
            synproxy: s.synproxy,
        }));
        Ok(())
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

    const SVC: (Protocol, SocketAddr) = (
        Protocol::Tcp,
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 80),
    );

    #[test]
    fn edits_keep_dest_objects_and_ids() {
        let mut t = table();
        let rs2: SocketAddr = "172.16.0.3:80".parse().unwrap();
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
        assert_eq!(snap.services().next().unwrap().dests.len(), 2);
        // Adding another server does not disturb the others' ids.
        t.apply(&cmd("-a -t 192.0.2.1:80 -r 172.16.0.4:80 -m"))
            .unwrap();
        assert_eq!(t.dest_id(SVC, rs2), Some(id));
        assert_eq!(t.dest_id(SVC, "172.16.0.4:80".parse().unwrap()), Some(2));
    }

    #[test]
    fn deleted_dest_becomes_unavailable() {
        let mut t = table();
        let rs1: SocketAddr = "172.16.0.2:80".parse().unwrap();
        let d = t.dest(SVC, rs1).unwrap().clone();
        let snap = t
            .apply(&cmd("-d -t 192.0.2.1:80 -r 172.16.0.2:80"))
            .unwrap()
            .unwrap();
        assert!(!d.is_available());
        assert_eq!(snap.services().next().unwrap().dests.len(), 1);
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

    /// A dual-stack table: the IPv4 service of [`table`] and, with local addresses of both
    /// families, nothing else yet.
    fn table6() -> Table {
        let cfg = crate::config::parse(
            r#"
[[port]]
name = "int"
tap = "t0"
addresses = ["172.16.0.1/24", "2001:db8:5::1/64"]

[[service]]
protocol = "tcp"
address = "192.0.2.1:80"
scheduler = "rr"

[[service.real]]
address = "172.16.0.2:80"
"#,
            Path::new("t.toml"),
        )
        .unwrap();
        Table::from_config(&cfg).unwrap().0
    }

    #[test]
    fn ipv6_services_are_served() {
        let mut t = table6();
        let svc6: SvcKey = (Protocol::Tcp, "[2001:db8:f::80]:80".parse().unwrap());
        let rs: SocketAddr = "[2001:db8:5::2]:8080".parse().unwrap();
        t.apply(&cmd("-A -t [2001:db8:f::80]:80 -s wrr")).unwrap();
        let snap = t
            .apply(&cmd(
                "-a -t [2001:db8:f::80]:80 -r [2001:db8:5::2]:8080 -m -w 4",
            ))
            .unwrap()
            .unwrap();
        let vip6: IpAddr = "2001:db8:f::80".parse().unwrap();
        assert!(snap.is_vip(vip6));
        let s = snap
            .service(6, vip6, 80)
            .expect("the IPv6 service is in the snapshot");
        assert_eq!(s.dests.len(), 1);
        assert_eq!((s.dests[0].addr(), s.dests[0].port()), (rs.ip(), 8080));
        assert_eq!(s.dests[0].weight(), 4);
        assert_eq!(s.netmask, u128::MAX);
        let id = t.dest_id(svc6, rs).unwrap();
        t.apply(&cmd(
            "-e -t [2001:db8:f::80]:80 -r [2001:db8:5::2]:8080 -m -w 9",
        ))
        .unwrap();
        assert_eq!(
            t.dest_id(svc6, rs),
            Some(id),
            "the edit keeps the real's id"
        );
        assert_eq!(t.dest(svc6, rs).unwrap().weight(), 9);
        t.apply(&cmd("-E -t [2001:db8:f::80]:80 -s rr")).unwrap();
        assert_eq!(t.service(svc6).unwrap().sched, "rr");
        t.apply(&cmd("-Z -t [2001:db8:f::80]:80")).unwrap();
        // Health verdicts and listings work on IPv6 keys too.
        let down = Health {
            down: true,
            ..Health::default()
        };
        let snap = t.set_health(svc6, rs, down).unwrap().unwrap();
        assert!(snap.service(6, vip6, 80).unwrap().dests.is_empty());
        assert_eq!(t.health(svc6, rs), (Some(down), 1));
        // Sorted pages: IPv4 before IPv6, whatever the order of addition.
        t.apply(&cmd("-A -u 192.0.2.9:53 -s rr")).unwrap();
        let (p1, next) = t.effective_page(true, None, 2);
        let (p2, end) = t.effective_page(true, next, 2);
        let order: Vec<String> = p1
            .iter()
            .chain(&p2)
            .map(|s| format!("{} {}", s.proto.name(), sock(s.addr, s.port)))
            .collect();
        assert_eq!(
            order,
            [
                "TCP 192.0.2.1:80",
                "UDP 192.0.2.9:53",
                "TCP [2001:db8:f::80]:80"
            ]
        );
        assert_eq!(end, None);
        let (added, _) = t.effective_page(false, None, 10);
        assert_eq!(
            sock(added[1].addr, added[1].port),
            svc6.1,
            "order of addition"
        );
        let snap = t
            .apply(&cmd("-d -t [2001:db8:f::80]:80 -r [2001:db8:5::2]:8080"))
            .unwrap()
            .unwrap();
        assert!(snap.service(6, vip6, 80).unwrap().dests.is_empty());
        assert!(t.dest(svc6, rs).is_none());
        let snap = t.apply(&cmd("-D -t [2001:db8:f::80]:80")).unwrap().unwrap();
        assert!(!snap.is_vip(vip6));
        assert!(t.service(svc6).is_none());
    }

    /// An IPv6 persistent service's prefix-length netmask from the config reaches the
    /// snapshot (the template key) and the listing.
    #[test]
    fn ipv6_netmask_from_the_config_is_kept() {
        let cfg = crate::config::parse(
            r#"
[[port]]
name = "int"
tap = "t0"
addresses = ["172.16.0.1/24", "2001:db8:5::1/64"]

[[service]]
protocol = "tcp"
address = "[2001:db8:f::80]:80"
persistent = 300
netmask = 64

[[service.real]]
address = "[2001:db8:5::2]:80"

[[service]]
protocol = "tcp"
address = "[2001:db8:f::80]:81"
persistent = 300

[[service.real]]
address = "[2001:db8:5::2]:81"
"#,
            Path::new("t.toml"),
        )
        .unwrap();
        let (t, snap) = Table::from_config(&cfg).unwrap();
        let vip6: IpAddr = "2001:db8:f::80".parse().unwrap();
        assert_eq!(
            snap.service(6, vip6, 80).unwrap().netmask,
            crate::config::prefix_mask(128, 64)
        );
        assert_eq!(snap.service(6, vip6, 81).unwrap().netmask, u128::MAX);
        let key = |p| (Protocol::Tcp, SocketAddr::new(vip6, p));
        assert_eq!(
            t.service(key(80)).unwrap().netmask,
            Some(adm::Netmask::V6(64))
        );
        assert_eq!(t.service(key(81)).unwrap().netmask, None);
    }

    #[test]
    fn ipv6_family_rules_and_fwmark_refusal() {
        let mut t = table6();
        t.apply(&cmd("-A -t [2001:db8:f::80]:80 -s rr")).unwrap();
        let before = format!("{:?}", t.listing());
        // NAT64 needs FullNAT, and FullNAT needs (IPv4) local addresses this service lacks.
        let e = t
            .apply(&cmd("-a -t [2001:db8:f::80]:80 -r 172.16.0.2:80 -b"))
            .unwrap_err();
        assert!(e.to_string().contains("local_addresses"), "{e}");
        // An IPv6 real server must be reachable, and not the appliance's own address.
        let e = t
            .apply(&cmd("-a -t [2001:db8:f::80]:80 -r [2001:db8:9::2]:80 -m"))
            .unwrap_err();
        assert!(e.to_string().starts_with("Invalid operation"), "{e}");
        let e = t
            .apply(&cmd("-a -t [2001:db8:f::80]:80 -r [2001:db8:5::1]:80 -m"))
            .unwrap_err();
        assert!(e.to_string().starts_with("Invalid operation"), "{e}");
        // An own IPv6 address is no VIP.
        let e = t.apply(&cmd("-A -t [2001:db8:5::1]:80 -s rr")).unwrap_err();
        assert!(e.to_string().contains("not a virtual address"), "{e}");
        for line in ["-A -f 1 -s rr", "-A -f 1 -6 -s rr", "-D -f 1"] {
            let e = t.apply(&cmd(line)).unwrap_err();
            assert_eq!(
                e.to_string(),
                "fwmark services (-f) is not supported yet by tapvs",
                "{line}"
            );
        }
        assert_eq!(format!("{:?}", t.listing()), before, "nothing changed");
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
        let rs1: SocketAddr = "172.16.0.2:80".parse().unwrap();
        let rs2: SocketAddr = "172.16.0.3:80".parse().unwrap();
        let down = Health {
            down: true,
            ..Health::default()
        };
        let snap = t.set_health(SVC, rs1, down).unwrap().unwrap();
        assert_eq!(
            snap.services().next().unwrap().dests.len(),
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
        assert_eq!(
            snap.services().next().unwrap().dests[0].weight(),
            0,
            "inhibited: weight 0"
        );
        let dynamic = Health {
            weight: Some(7),
            ..Health::default()
        };
        let snap = t.set_health(SVC, rs2, dynamic).unwrap().unwrap();
        assert_eq!(snap.services().next().unwrap().dests[1].weight(), 7);
        let sorry: SocketAddr = "172.16.0.9:80".parse().unwrap();
        t.set_sorry_server(SVC, sorry, Forward::Nat);
        let snap = t.set_sorry_active(SVC, true).unwrap().unwrap();
        assert_eq!(
            snap.services().next().unwrap().dests.len(),
            1,
            "only the sorry server"
        );
        assert_eq!(snap.services().next().unwrap().dests[0].addr(), sorry.ip());
        assert!(t.set_sorry_active(SVC, true).unwrap().is_none());
        let snap = t.set_sorry_active(SVC, false).unwrap().unwrap();
        assert_eq!(snap.services().next().unwrap().dests.len(), 2);
    }

    #[test]
    fn edits_of_servers_leave_the_address_sets_shared() {
        let mut t = table();
        let before = t.snapshot();
        let snap = t
            .apply(&cmd("-a -t 192.0.2.1:80 -r 172.16.0.9:80 -m"))
            .unwrap()
            .unwrap();
        assert!(snap.same_address_sets(&before), "-a: no steering change");
        let snap2 = t.apply(&cmd("-E -t 192.0.2.1:80 -s wrr")).unwrap().unwrap();
        assert!(snap2.same_address_sets(&snap), "-E: no steering change");
        let vip2 = Ipv4Addr::new(192, 0, 2, 7);
        let snap3 = t.apply(&cmd("-A -t 192.0.2.7:80 -s rr")).unwrap().unwrap();
        assert!(!snap3.same_address_sets(&snap2));
        assert!(snap3.is_vip(vip2));
        // A second service on the same VIP, then both gone: counted per address.
        t.apply(&cmd("-A -u 192.0.2.7:53 -s rr")).unwrap();
        let snap4 = t.apply(&cmd("-D -t 192.0.2.7:80")).unwrap().unwrap();
        assert!(snap4.is_vip(vip2), "the UDP service still uses it");
        let snap5 = t.apply(&cmd("-D -u 192.0.2.7:53")).unwrap().unwrap();
        assert!(!snap5.is_vip(vip2));
        assert!(snap5.is_vip(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(snap5.service_count(), 1);
    }

    #[test]
    fn address_classes_survive_churn_and_filter_rebuilds() {
        use crate::datapath::service::Source;
        let mut t = table();
        let vip = |i: u32| Ipv4Addr::from(0xC612_0000 + i);
        // Far more addresses come and go than stay: the filter is rebuilt on the way.
        for i in 0..3000u32 {
            t.apply(&cmd(&format!("-A -t {}:80 -s rr", vip(i))))
                .unwrap();
            if i % 3 != 0 {
                t.apply(&cmd(&format!("-D -t {}:80", vip(i)))).unwrap();
            }
        }
        let snap = t.snapshot();
        assert_eq!(snap.service_count(), 1 + 1000);
        for i in 0..3000u32 {
            let kept = i % 3 == 0;
            assert_eq!(snap.is_vip(vip(i)), kept, "{}", vip(i));
            let want = if kept { Source::Vip } else { Source::Ordinary };
            assert_eq!(snap.source_class(vip(i)), want, "{}", vip(i));
        }
        assert_eq!(
            snap.source_class(Ipv4Addr::new(172, 16, 0, 1)),
            Source::Martian,
            "own address"
        );
        assert!(snap.is_vip(Ipv4Addr::new(192, 0, 2, 1)));
    }

    #[test]
    fn services_come_and_go() {
        let mut t = table();
        let snap = t.apply(&cmd("-A -u 192.0.2.1:53 -s wrr")).unwrap().unwrap();
        assert_eq!(snap.service_count(), 2);
        assert!(snap.service(17, Ipv4Addr::new(192, 0, 2, 1), 53).is_some());
        let snap = t.apply(&cmd("-C")).unwrap().unwrap();
        assert_eq!(snap.service_count(), 0);
        assert!(!snap.is_vip(Ipv4Addr::new(192, 0, 2, 1)));
    }
}
