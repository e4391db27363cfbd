//! What a listing needs: services, their real servers, counters, rates and timeouts.
//!
//! These are plain serialisable values: the daemon builds them from its live table and
//! [`crate::format`] renders them. [`Listing::apply`] executes a parsed [`Command`] against a
//! listing in memory with the kernel's semantics and runtime errors ("Service already exists",
//! "No such destination", ...), which is what restore round trips and tests rely on.
//!
//! Addresses are IPv4 or IPv6 (`IpAddr`); a fwmark service (`-f mark [-6]`) is kept as IPVS
//! keeps it: [`ServiceEntry::fwmark`] set, the unspecified address of its family, port 0.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use modes::{Forward, Protocol};
use serde::{Deserialize, Serialize};

use super::cmd::{Command, Netmask, ServerOpts, ServiceOpts, ServiceSpec};
use super::AdmError;

/// The Forward column of a real server listed as [`DestEntry::local`] (whatever its method).
pub const LOCAL: &str = "Local";

/// The Forward column for forwarding method `f`: `Masq` (NAT), `Route` (direct routing),
/// `Tunnel` (IPIP) or `FullNat`.
pub fn forward_name(f: Forward) -> &'static str {
    match f {
        Forward::Nat => "Masq",
        Forward::Dr => "Route",
        Forward::Tun => "Tunnel",
        Forward::FullNat => "FullNat",
    }
}

/// The forwarding method whose Forward column is `name` ([`forward_name`] backwards; not
/// [`LOCAL`], which names no method).
pub fn forward_by_name(name: &str) -> Option<Forward> {
    Forward::ALL.into_iter().find(|f| forward_name(*f) == name)
}

/// Cumulative counters of a service or real server (`--stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Connections scheduled.
    pub conns: u64,
    /// Packets from clients.
    pub inpkts: u64,
    /// Packets to clients.
    pub outpkts: u64,
    /// Bytes from clients.
    pub inbytes: u64,
    /// Bytes to clients.
    pub outbytes: u64,
}

/// Estimated rates of a service or real server (`--rate`), per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// Connections per second.
    pub cps: u64,
    /// Incoming packets per second.
    pub inpps: u64,
    /// Outgoing packets per second.
    pub outpps: u64,
    /// Incoming bytes per second.
    pub inbps: u64,
    /// Outgoing bytes per second.
    pub outbps: u64,
}

/// One real server of a service.
///
/// It serialises with the Forward column as ipvsadm lists it (`"forward": "Masq"`, ...,
/// `"Local"` for a [`DestEntry::local`] server, which stands for direct routing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "DestRecord", try_from = "DestRecord")]
pub struct DestEntry {
    /// Real server address (IPv4 or IPv6).
    pub addr: IpAddr,
    /// Real server port.
    pub port: u16,
    /// Forwarding method.
    pub forward: Forward,
    /// The real server is an address of the director itself (IPVS `LOCALNODE`): listed as
    /// `Local` whatever [`DestEntry::forward`] says, saved as `-g`. tapvs never sets it.
    pub local: bool,
    /// Weight, 0..=65535 (0 = quiesced).
    pub weight: u32,
    /// Active (TCP ESTABLISHED) connections.
    pub active: u32,
    /// Inactive connections (every other state).
    pub inactive: u32,
    /// Persistence templates pointing at this server.
    pub persist: u32,
    /// Upper connection threshold (0 = none).
    pub u_threshold: u32,
    /// Lower connection threshold (0 = none).
    pub l_threshold: u32,
    /// Cumulative counters.
    pub stats: Stats,
    /// Rates.
    pub rate: Rate,
}

impl DestEntry {
    /// A real server with no connections or counters yet and no thresholds.
    pub fn new(addr: SocketAddr, forward: Forward, weight: u32) -> DestEntry {
        DestEntry {
            addr: addr.ip(),
            port: addr.port(),
            forward,
            local: false,
            weight,
            active: 0,
            inactive: 0,
            persist: 0,
            u_threshold: 0,
            l_threshold: 0,
            stats: Stats::default(),
            rate: Rate::default(),
        }
    }
}

/// [`DestEntry`] as serialised: the forwarding method by its listing name.
#[derive(Serialize, Deserialize)]
struct DestRecord {
    addr: IpAddr,
    port: u16,
    forward: String,
    weight: u32,
    active: u32,
    inactive: u32,
    persist: u32,
    u_threshold: u32,
    l_threshold: u32,
    stats: Stats,
    rate: Rate,
}

impl From<DestEntry> for DestRecord {
    fn from(d: DestEntry) -> DestRecord {
        DestRecord {
            addr: d.addr,
            port: d.port,
            forward: if d.local {
                LOCAL
            } else {
                forward_name(d.forward)
            }
            .to_string(),
            weight: d.weight,
            active: d.active,
            inactive: d.inactive,
            persist: d.persist,
            u_threshold: d.u_threshold,
            l_threshold: d.l_threshold,
            stats: d.stats,
            rate: d.rate,
        }
    }
}

impl TryFrom<DestRecord> for DestEntry {
    type Error = String;

    fn try_from(r: DestRecord) -> Result<DestEntry, String> {
        let local = r.forward == LOCAL;
        let forward = if local {
            Forward::Dr
        } else {
            forward_by_name(&r.forward)
                .ok_or_else(|| format!("unknown forwarding method {:?}", r.forward))?
        };
        Ok(DestEntry {
            addr: r.addr,
            port: r.port,
            forward,
            local,
            weight: r.weight,
            active: r.active,
            inactive: r.inactive,
            persist: r.persist,
            u_threshold: r.u_threshold,
            l_threshold: r.l_threshold,
            stats: r.stats,
            rate: r.rate,
        })
    }
}

/// One virtual service and its real servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// Protocol.
    pub proto: Protocol,
    /// Virtual address (IPv4 or IPv6; for a fwmark service the unspecified address of its
    /// family).
    pub addr: IpAddr,
    /// Virtual port (0 = all ports, persistent services only; 0 for fwmark services).
    pub port: u16,
    /// The firewall mark of a fwmark service (`-f`); `None` for an address service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fwmark: Option<u32>,
    /// Scheduler name (`rr`, `wlc`, ...).
    pub sched: String,
    /// Scheduler flags by their listing names (`sh-fallback`, `sh-port`, `flag-1`, ...).
    pub flags: Vec<String>,
    /// Persistence timeout in seconds when the service is persistent.
    pub persistent: Option<u32>,
    /// Persistence granularity: a netmask (IPv4) or prefix length (IPv6); `None` (or the
    /// full mask, 255.255.255.255 or 128) means one client per template.
    pub netmask: Option<Netmask>,
    /// One-packet scheduling (`-o`).
    pub ops: bool,
    /// SYNPROXY (`-j enable`).
    #[serde(default)]
    pub synproxy: bool,
    /// Cumulative counters.
    pub stats: Stats,
    /// Rates.
    pub rate: Rate,
    /// Real servers.
    pub dests: Vec<DestEntry>,
    /// tapvs's access control of the service (config only, no ipvsadm option): shown by
    /// `-L`, `None` in the configuration ipvsadm edits and saves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<AccessEntry>,
}

/// A service's access control as `-L` shows it (the config's `deny`, `allow`, `conn_limit`,
/// `conn_rate` and `conn_rate_prefix`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    /// Client prefixes refused (`a.b.c.d/len`).
    pub deny: Vec<String>,
    /// When not empty, the only client prefixes admitted.
    pub allow: Vec<String>,
    /// Most open connections (0: none).
    pub conn_limit: u32,
    /// New connections per second per client prefix (0: none).
    pub conn_rate: u32,
    /// The prefix length of `conn_rate`.
    pub conn_rate_prefix: u8,
}

impl AccessEntry {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.deny.is_empty() && self.allow.is_empty() && self.conn_limit == 0 && self.conn_rate == 0
    }
}

/// One connection, as `-L -n -c` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnEntry {
    /// Protocol.
    pub proto: Protocol,
    /// Seconds until the entry expires.
    pub expire_secs: u32,
    /// State name as IPVS spells it (`ESTABLISHED`, `SYN_RECV`, `UDP`, ...).
    pub state: String,
    /// Client address and port.
    pub client: SocketAddr,
    /// Virtual address and port.
    pub vip: SocketAddr,
    /// Real server address and port (an IPv4 one for an IPv6 client in NAT64).
    pub dest: SocketAddr,
}

/// Everything `-L`, `-S` and `--timeout` print.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// Virtual services in table order (listings sort them unless `--nosort`).
    pub services: Vec<ServiceEntry>,
    /// Connection table size shown as `(size=N)` in the header.
    pub conn_table_size: u32,
    /// Timeouts (tcp, tcpfin, udp) in seconds, as `--set` and `--timeout`.
    pub timeouts: (u32, u32, u32),
}

/// IPVS defaults: 4096 buckets, timeouts 900 120 300.
impl Default for Listing {
    fn default() -> Self {
        Listing {
            services: Vec::new(),
            conn_table_size: 4096,
            timeouts: (900, 120, 300),
        }
    }
}

impl ServiceEntry {
    /// The `-t`/`-u`/`-f` spec naming this service.
    pub fn spec(&self) -> ServiceSpec {
        match self.fwmark {
            Some(mark) => ServiceSpec::Fwmark {
                mark,
                ipv6: self.addr.is_ipv6(),
            },
            None => ServiceSpec::Addr {
                proto: self.proto,
                addr: SocketAddr::new(self.addr, self.port),
            },
        }
    }

    /// Whether `spec` names this service.
    pub fn matches(&self, spec: &ServiceSpec) -> bool {
        match spec {
            ServiceSpec::Addr { proto, addr } => {
                self.fwmark.is_none()
                    && *proto == self.proto
                    && addr.ip() == self.addr
                    && addr.port() == self.port
            }
            ServiceSpec::Fwmark { mark, ipv6 } => {
                self.fwmark == Some(*mark) && self.addr.is_ipv6() == *ipv6
            }
        }
    }

    /// The real server at `addr`, if any.
    pub fn dest(&self, addr: SocketAddr) -> Option<&DestEntry> {
        self.dests
            .iter()
            .find(|d| d.addr == addr.ip() && d.port == addr.port())
    }

    /// The persistence mask when it is not the full one (/32, /128).
    pub fn effective_netmask(&self) -> Option<Netmask> {
        self.netmask.filter(|m| !m.is_full())
    }

    fn configure(&mut self, o: &ServiceOpts) {
        self.sched = o.scheduler.clone();
        self.flags = o.sched_flags.clone();
        self.persistent = o.persistent;
        self.netmask = Some(o.netmask).filter(|m| !m.is_full());
        self.ops = o.ops;
        self.synproxy = o.synproxy;
    }

    /// SYNPROXY needs every reply through the director: no DR or TUN real server.
    fn synproxy_ok(&self, synproxy: bool, extra: Option<Forward>) -> Result<(), AdmError> {
        let bypass = |f: Forward| matches!(f, Forward::Dr | Forward::Tun);
        if synproxy && (self.dests.iter().any(|d| bypass(d.forward)) || extra.is_some_and(bypass)) {
            return Err(AdmError::SynproxyForward);
        }
        Ok(())
    }
}

impl Listing {
    /// The service named by `spec`, if any.
    pub fn service(&self, spec: &ServiceSpec) -> Option<&ServiceEntry> {
        self.services.iter().find(|s| s.matches(spec))
    }

    fn service_mut(&mut self, spec: &ServiceSpec) -> Result<&mut ServiceEntry, AdmError> {
        self.services
            .iter_mut()
            .find(|s| s.matches(spec))
            .ok_or(AdmError::NoSuchService)
    }

    /// Applies a configuration command in memory with IPVS semantics.
    ///
    /// Listing, saving, help and restore commands change nothing and succeed. Errors are the
    /// runtime ones ipvsadm reports (exit status 1). `-E` and `-e` replace every setting with
    /// the command's (ipvsadm sends the whole service or server, defaults included); `--set`
    /// keeps a timeout given as 0. IPv6 and fwmark services are kept like the others (the
    /// daemon decides what it serves).
    pub fn apply(&mut self, cmd: &Command) -> Result<(), AdmError> {
        match cmd {
            Command::AddService(o) => {
                if self.service(&o.service).is_some() {
                    return Err(AdmError::ServiceExists);
                }
                // A fwmark service is TCP with the unspecified address of its family, as IPVS
                // keeps it.
                let (proto, addr, port, fwmark) = match o.service {
                    ServiceSpec::Addr { proto, addr } => (proto, addr.ip(), addr.port(), None),
                    ServiceSpec::Fwmark { mark, ipv6 } => {
                        let any = if ipv6 {
                            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                        } else {
                            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                        };
                        (Protocol::Tcp, any, 0, Some(mark))
                    }
                };
                let mut s = ServiceEntry {
                    proto,
                    addr,
                    port,
                    fwmark,
                    sched: String::new(),
                    flags: Vec::new(),
                    persistent: None,
                    netmask: None,
                    ops: false,
                    synproxy: false,
                    stats: Stats::default(),
                    rate: Rate::default(),
                    dests: Vec::new(),
                    access: None,
                };
                s.configure(o);
                self.services.push(s);
            }
            Command::EditService(o) => {
                let s = self.service_mut(&o.service)?;
                s.synproxy_ok(o.synproxy, None)?;
                s.configure(o);
            }
            Command::DeleteService(spec) => {
                self.service_mut(spec)?;
                self.services.retain(|s| !s.matches(spec));
            }
            Command::Clear => self.services.clear(),
            Command::AddServer(o) => {
                let s = self.service_mut(&o.service).map_err(not_defined)?;
                check_thresholds(o)?;
                if s.dest(o.server).is_some() {
                    return Err(AdmError::DestExists);
                }
                s.synproxy_ok(s.synproxy, Some(o.forward))?;
                s.dests.push(DestEntry {
                    addr: o.server.ip(),
                    port: o.server.port(),
                    forward: o.forward,
                    local: false,
                    weight: o.weight,
                    active: 0,
                    inactive: 0,
                    persist: 0,
                    u_threshold: o.u_threshold,
                    l_threshold: o.l_threshold,
                    stats: Stats::default(),
                    rate: Rate::default(),
                });
            }
            Command::EditServer(o) => {
                let s = self.service_mut(&o.service).map_err(not_defined)?;
                check_thresholds(o)?;
                let d = s
                    .dests
                    .iter_mut()
                    .find(|d| d.addr == o.server.ip() && d.port == o.server.port())
                    .ok_or(AdmError::NoSuchDest)?;
                if s.synproxy && matches!(o.forward, Forward::Dr | Forward::Tun) {
                    return Err(AdmError::SynproxyForward);
                }
                d.forward = o.forward;
                d.local = false;
                d.weight = o.weight;
                d.u_threshold = o.u_threshold;
                d.l_threshold = o.l_threshold;
            }
            Command::DeleteServer { service, server } => {
                let s = self.service_mut(service).map_err(not_defined)?;
                if s.dest(*server).is_none() {
                    return Err(AdmError::NoSuchDest);
                }
                s.dests
                    .retain(|d| !(d.addr == server.ip() && d.port == server.port()));
            }
            Command::Zero(spec) => {
                let zero = |s: &mut ServiceEntry| {
                    s.stats = Stats::default();
                    s.rate = Rate::default();
                    for d in &mut s.dests {
                        d.stats = Stats::default();
                        d.rate = Rate::default();
                    }
                };
                match spec {
                    Some(spec) => zero(self.service_mut(spec)?),
                    None => self.services.iter_mut().for_each(zero),
                }
            }
            Command::SetTimeouts { tcp, tcp_fin, udp } => {
                let keep = |new: u32, old: u32| if new == 0 { old } else { new };
                let (t, f, u) = self.timeouts;
                self.timeouts = (keep(*tcp, t), keep(*tcp_fin, f), keep(*udp, u));
            }
            Command::List(_)
            | Command::Save { .. }
            | Command::Restore
            | Command::Help
            | Command::Version
            | Command::StartDaemon(_)
            | Command::StopDaemon(_) => {}
        }
        Ok(())
    }
}

/// IPVS refuses a real server whose lower threshold is above its upper one (checked after the
/// service lookup and before the server's own, as the kernel does).
fn check_thresholds(o: &ServerOpts) -> Result<(), AdmError> {
    if o.l_threshold > o.u_threshold {
        return Err(AdmError::ThresholdRange);
    }
    Ok(())
}

/// Server commands on a missing service say "Service not defined", as ipvsadm.
fn not_defined(e: AdmError) -> AdmError {
    match e {
        AdmError::NoSuchService => AdmError::ServiceNotDefined,
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::super::cmd::parse;
    use super::*;

    fn run(l: &mut Listing, line: &str) -> Result<(), AdmError> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        l.apply(&parse(&args)?)
    }

    #[test]
    fn runtime_errors_and_codes() {
        let mut l = Listing::default();
        run(&mut l, "-A -t 10.0.0.1:80 -s rr").unwrap();
        let e = run(&mut l, "-A -t 10.0.0.1:80").unwrap_err();
        assert_eq!(
            (e.to_string().as_str(), e.exit_code()),
            ("Service already exists", 1)
        );
        let e = run(&mut l, "-E -t 10.0.0.2:80").unwrap_err();
        assert_eq!(
            (e.to_string().as_str(), e.exit_code()),
            ("No such service", 1)
        );
        let e = run(&mut l, "-a -t 10.0.0.2:80 -r 1.1.1.1").unwrap_err();
        assert_eq!(e.to_string(), "Service not defined");
        run(&mut l, "-a -t 10.0.0.1:80 -r 1.1.1.1 -m").unwrap();
        let e = run(&mut l, "-a -t 10.0.0.1:80 -r 1.1.1.1:80 -g").unwrap_err();
        assert_eq!(e.to_string(), "Destination already exists");
        let e = run(&mut l, "-e -t 10.0.0.1:80 -r 1.1.1.2 -m").unwrap_err();
        assert_eq!(
            (e.to_string().as_str(), e.exit_code()),
            ("No such destination", 1)
        );
        let e = run(&mut l, "-d -t 10.0.0.1:80 -r 1.1.1.2").unwrap_err();
        assert_eq!(e, AdmError::NoSuchDest);
        let e = run(&mut l, "-Z -t 10.0.0.9:80").unwrap_err();
        assert_eq!(e, AdmError::NoSuchService);
        let e = run(&mut l, "-D -u 10.0.0.1:80").unwrap_err();
        assert_eq!(e, AdmError::NoSuchService);
        run(&mut l, "-d -t 10.0.0.1:80 -r 1.1.1.1").unwrap();
        assert!(l.services[0].dests.is_empty());
        run(&mut l, "-D -t 10.0.0.1:80").unwrap();
        assert!(l.services.is_empty());
    }

    #[test]
    fn lower_threshold_above_upper_is_refused() {
        let mut l = Listing::default();
        run(&mut l, "-A -t 10.0.0.1:80 -s rr").unwrap();
        run(&mut l, "-a -t 10.0.0.1:80 -r 1.1.1.1 -m -x 10 -y 10").unwrap();
        let before = l.clone();
        for line in [
            "-a -t 10.0.0.1:80 -r 1.1.1.2 -m -x 5 -y 10",
            "-a -t 10.0.0.1:80 -r 1.1.1.2 -m -y 1",
            "-e -t 10.0.0.1:80 -r 1.1.1.1 -m -x 5 -y 10",
            // Checked before the server's own existence, as the kernel does.
            "-a -t 10.0.0.1:80 -r 1.1.1.1 -m -x 5 -y 10",
            "-e -t 10.0.0.1:80 -r 9.9.9.9 -m -x 5 -y 10",
        ] {
            let e = run(&mut l, line).unwrap_err();
            assert_eq!(e, AdmError::ThresholdRange, "{line}");
            assert_eq!(
                (e.to_string().as_str(), e.exit_code()),
                ("Numerical result out of range", 1),
                "{line}"
            );
            assert_eq!(l, before, "{line} changed nothing");
        }
        // The service is looked up first.
        let e = run(&mut l, "-a -t 10.0.0.9:80 -r 1.1.1.2 -x 5 -y 10").unwrap_err();
        assert_eq!(e, AdmError::ServiceNotDefined);
    }

    #[test]
    fn edit_replaces_settings_and_set_keeps_zero() {
        let mut l = Listing::default();
        run(&mut l, "-A -t 10.0.0.1:80 -s rr -p 60 -M 255.255.255.0").unwrap();
        assert_eq!(l.services[0].persistent, Some(60));
        assert_eq!(
            l.services[0].netmask,
            Some(Netmask::V4(Ipv4Addr::new(255, 255, 255, 0)))
        );
        run(&mut l, "-E -t 10.0.0.1:80").unwrap();
        let s = &l.services[0];
        assert_eq!(
            (s.sched.as_str(), s.persistent, s.netmask),
            ("wlc", None, None)
        );
        run(&mut l, "-a -t 10.0.0.1:80 -r 1.1.1.1 -m -w 5 -x 10 -y 2").unwrap();
        run(&mut l, "-e -t 10.0.0.1:80 -r 1.1.1.1:80").unwrap();
        let d = &l.services[0].dests[0];
        assert_eq!((d.forward, d.weight, d.u_threshold), (Forward::Dr, 1, 0));
        run(&mut l, "--set 0 60 0").unwrap();
        assert_eq!(l.timeouts, (900, 60, 300));
        run(&mut l, "-C").unwrap();
        assert!(l.services.is_empty());
    }

    #[test]
    fn serialises_with_ipvsadm_names() {
        let d = DestEntry {
            addr: Ipv4Addr::new(1, 2, 3, 4).into(),
            port: 80,
            forward: Forward::FullNat,
            local: false,
            weight: 1,
            active: 0,
            inactive: 0,
            persist: 0,
            u_threshold: 0,
            l_threshold: 0,
            stats: Stats::default(),
            rate: Rate::default(),
        };
        let j = serde_json::to_string(&d).unwrap();
        assert!(j.contains("\"forward\":\"FullNat\""), "{j}");
        assert!(j.contains("\"addr\":\"1.2.3.4\""), "{j}");
        let back: DestEntry = serde_json::from_str(&j).unwrap();
        assert_eq!(back, d);
        assert_eq!(serde_json::to_string(&Protocol::Udp).unwrap(), "\"UDP\"");
    }
}
