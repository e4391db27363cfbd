//! The `[[vrrp]]` and `[[vrrp_sync_group]]` sections of the configuration: the raw TOML shapes
//! ([`RawVrrp`], [`RawSyncGroup`]) and their validation into [`VrrpConfig`] and
//! [`SyncGroupConfig`] (ranges and combinations as keepalived accepts them), with the tracked
//! ports and services and their weights. Errors are (field path, problem); `config` adds the
//! file. Ports and services are passed in by name and address, so this module does not depend
//! on `config`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use modes::Protocol;

use serde::Deserialize;

/// One `[[vrrp]]` section as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVrrp {
    name: String,
    port: String,
    virtual_router_id: u32,
    #[serde(default = "default_priority")]
    priority: u32,
    #[serde(default = "default_advert_int")]
    advert_int: f64,
    /// Unset: 2 for IPv4 virtual addresses, 3 for IPv6 (keepalived's rule).
    version: Option<u8>,
    state: Option<String>,
    #[serde(default)]
    nopreempt: bool,
    #[serde(default)]
    preempt_delay: u32,
    auth_pass: Option<String>,
    #[serde(default)]
    unicast_peers: Vec<String>,
    virtual_addresses: Vec<String>,
    notify_master: Option<String>,
    notify_backup: Option<String>,
    notify_fault: Option<String>,
    notify: Option<String>,
    #[serde(default)]
    track_ports: Vec<RawTrackPort>,
    #[serde(default)]
    track_services: Vec<RawTrackService>,
}

/// A `track_ports` entry: a port name (FAULT while it is down) or `{ port, weight }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawTrackPort {
    /// `"int"`: FAULT while the port is down.
    Name(String),
    /// `{ port = "int", weight = -20 }`.
    Weighted(RawWeightedPort),
}

/// `{ port = "int", weight = -20 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeightedPort {
    port: String,
    #[serde(default)]
    weight: i32,
}

/// A `track_services` entry: `{ service = "tcp:10.0.0.100:80", weight = -50 }` (an IPv6
/// service as `"tcp:[2001:db8::80]:80"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrackService {
    service: String,
    #[serde(default)]
    weight: i32,
}

/// Most a tracking weight may add or take (keepalived's range).
pub const MAX_WEIGHT: i32 = 254;

/// A tracked port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackPort {
    /// Port index.
    pub port: usize,
    /// 0: FAULT while the port is down. Negative: added to the priority while it is down;
    /// positive: added while it is up (keepalived's `track_interface ... weight`).
    pub weight: i32,
}

/// A tracked virtual service: its health-check quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackService {
    /// Protocol.
    pub proto: Protocol,
    /// Virtual address and port.
    pub addr: SocketAddr,
    /// 0: FAULT while the service has lost its quorum. Negative: added to the priority while
    /// it has; positive: added while it has its quorum.
    pub weight: i32,
}

/// Whether a tracked object's state makes its instance faulty, and what it adds to the
/// priority: `ok` is the object's state (port up, service with its quorum).
pub fn track_effect(weight: i32, ok: bool) -> (bool, i32) {
    match (weight, ok) {
        (0, ok) => (!ok, 0),
        (w, false) if w < 0 => (false, w),
        (w, true) if w > 0 => (false, w),
        _ => (false, 0),
    }
}

/// The effective priority for a configured one and the sum of the tracking weights: clamped to
/// 1..=254 as keepalived does; an address owner (255) keeps 255.
pub fn effective_priority(configured: u8, delta: i32) -> u8 {
    if configured == 255 {
        return 255;
    }
    (i32::from(configured) + delta).clamp(1, 254) as u8
}

/// One `[[vrrp_sync_group]]` section as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSyncGroup {
    name: String,
    group: Vec<String>,
    notify_master: Option<String>,
    notify_backup: Option<String>,
    notify_fault: Option<String>,
}

/// A validated sync group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncGroupConfig {
    /// Group name.
    pub name: String,
    /// Indexes of its member instances (in `[[vrrp]]` order), two or more.
    pub members: Vec<usize>,
    /// Script run when the group enters MASTER (all members MASTER).
    pub notify_master: Option<String>,
    /// Script run when the group enters BACKUP.
    pub notify_backup: Option<String>,
    /// Script run when the group enters FAULT.
    pub notify_fault: Option<String>,
}

fn default_priority() -> u32 {
    100
}

fn default_advert_int() -> f64 {
    1.0
}

/// keepalived's rule: version 3 for an IPv6 instance, else 2.
fn default_version(ipv6: bool) -> u8 {
    if ipv6 {
        3
    } else {
        2
    }
}

/// A validated VRRP instance.
#[derive(Debug, Clone, PartialEq)]
pub struct VrrpConfig {
    /// Instance name (keepalived's `vrrp_instance NAME`).
    pub name: String,
    /// Index of the port adverts are sent and received on.
    pub port: usize,
    /// The address adverts come from: the port's first IPv4 address, or for an IPv6 instance
    /// its EUI-64 link-local address (RFC 5798 §5.1.2.1). Also the tie-breaking primary
    /// address.
    pub src: IpAddr,
    /// VRID 1..=255.
    pub vrid: u8,
    /// Priority 1..=255.
    pub priority: u8,
    /// Advertisement interval, centiseconds.
    pub advert_int_cs: u16,
    /// 2 or 3.
    pub version: u8,
    /// Initial state MASTER.
    pub initial_master: bool,
    /// Preemption (false with `nopreempt`).
    pub preempt: bool,
    /// `preempt_delay`, seconds.
    pub preempt_delay: u32,
    /// v2 PASS password (its first 8 bytes are sent).
    pub auth_pass: Option<String>,
    /// Unicast peers, of the instance's family (empty: multicast 224.0.0.18 or ff02::12).
    pub unicast_peers: Vec<IpAddr>,
    /// The virtual addresses (VIPs, floating gateways, FullNAT local addresses), all IPv4 or
    /// all IPv6.
    pub addresses: Vec<IpAddr>,
    /// Script run on entering MASTER.
    pub notify_master: Option<String>,
    /// Script run on entering BACKUP.
    pub notify_backup: Option<String>,
    /// Script run on entering FAULT.
    pub notify_fault: Option<String>,
    /// Script run on every transition, with `INSTANCE NAME STATE PRIORITY` appended.
    pub notify: Option<String>,
    /// Tracked ports (a port administratively down: FAULT, or its weight).
    pub track_ports: Vec<TrackPort>,
    /// Tracked services (health-check quorum lost: FAULT, or its weight).
    pub track_services: Vec<TrackService>,
}

/// A configured service as tracking sees it: protocol, address, and whether any of its real
/// servers has health checks (else its quorum never changes).
pub type ServiceRef = (Protocol, SocketAddr, bool);

/// A port as the VRRP sections see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRef {
    /// Port name.
    pub name: String,
    /// Its addresses, IPv4 and IPv6, in configuration order.
    pub addresses: Vec<IpAddr>,
    /// Its EUI-64 link-local address (from its MAC).
    pub link_local: Ipv6Addr,
}

/// Validates the sections against `ports` and `services`.
pub fn validate(
    raw: &[RawVrrp],
    ports: &[PortRef],
    services: &[ServiceRef],
) -> Result<Vec<VrrpConfig>, (String, String)> {
    let mut out: Vec<VrrpConfig> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let f = |s: &str| format!("vrrp[{i}].{s}");
        if r.name.is_empty() || r.name.len() > 64 || r.name.contains(char::is_whitespace) {
            return Err((f("name"), "must be 1..=64 characters, no spaces".into()));
        }
        if out.iter().any(|o| o.name == r.name) {
            return Err((
                f("name"),
                format!("{:?} is used by another instance", r.name),
            ));
        }
        let port_of = |name: &str| ports.iter().position(|p| p.name == name);
        let port =
            port_of(&r.port).ok_or_else(|| (f("port"), format!("no port named {:?}", r.port)))?;
        let vrid = u8::try_from(r.virtual_router_id)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| (f("virtual_router_id"), "must be 1..=255".into()))?;
        if out.iter().any(|o| o.port == port && o.vrid == vrid) {
            return Err((
                f("virtual_router_id"),
                format!(
                    "VRID {vrid} is used by another instance on port {:?}",
                    r.port
                ),
            ));
        }
        let priority = u8::try_from(r.priority)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| (f("priority"), "must be 1..=255".into()))?;
        // One address family per instance, given by its first virtual address.
        let ipv6 = virtual_family(&r.virtual_addresses, &f)?;
        let src = if ipv6 {
            IpAddr::V6(ports[port].link_local)
        } else {
            ports[port]
                .addresses
                .iter()
                .copied()
                .find(IpAddr::is_ipv4)
                .ok_or_else(|| (f("port"), format!("port {:?} has no IPv4 address", r.port)))?
        };
        let version = r.version.unwrap_or_else(|| default_version(ipv6));
        if !matches!(version, 2 | 3) {
            return Err((f("version"), "must be 2 or 3".into()));
        }
        if ipv6 && version == 2 {
            return Err((
                f("version"),
                "VRRP version 2 is IPv4 only: IPv6 virtual addresses need version 3".into(),
            ));
        }
        let cs = (r.advert_int * 100.0).round();
        let advert_int_cs = if version == 2 {
            if !(1.0..=255.0).contains(&r.advert_int) || r.advert_int.fract() != 0.0 {
                return Err((
                    f("advert_int"),
                    "must be a whole number of seconds 1..=255 for VRRP version 2".into(),
                ));
            }
            cs as u16
        } else {
            if !(1.0..=4095.0).contains(&cs) || !r.advert_int.is_finite() {
                return Err((
                    f("advert_int"),
                    "must be 0.01..=40.95 seconds for VRRP version 3".into(),
                ));
            }
            cs as u16
        };
        let initial_master = match r.state.as_deref() {
            None | Some("BACKUP") => false,
            Some("MASTER") => true,
            Some(o) => return Err((f("state"), format!("{o:?} is not MASTER or BACKUP"))),
        };
        if r.nopreempt && initial_master {
            return Err((
                f("nopreempt"),
                "requires state BACKUP (as keepalived)".into(),
            ));
        }
        if r.preempt_delay > 1000 {
            return Err((f("preempt_delay"), "must be 0..=1000 seconds".into()));
        }
        if r.preempt_delay > 0 && r.nopreempt {
            return Err((f("preempt_delay"), "makes no sense with nopreempt".into()));
        }
        if let Some(p) = &r.auth_pass {
            if version != 2 {
                return Err((
                    f("auth_pass"),
                    "authentication exists only in VRRP version 2".into(),
                ));
            }
            if p.is_empty() || p.len() > 8 || !p.is_ascii() {
                return Err((f("auth_pass"), "must be 1..=8 ASCII characters".into()));
            }
        }
        let mut unicast_peers = Vec::new();
        let family = if ipv6 { "IPv6" } else { "IPv4" };
        for (j, p) in r.unicast_peers.iter().enumerate() {
            let ip: IpAddr = p
                .parse()
                .ok()
                .filter(|ip: &IpAddr| ip.is_ipv6() == ipv6)
                .ok_or_else(|| {
                    (
                        f(&format!("unicast_peers[{j}]")),
                        format!("{p:?} is not an {family} address (the virtual addresses are)"),
                    )
                })?;
            if !unicast(ip) {
                return Err((
                    f(&format!("unicast_peers[{j}]")),
                    format!("{ip} is not a unicast address"),
                ));
            }
            unicast_peers.push(ip);
        }
        if r.virtual_addresses.is_empty() || r.virtual_addresses.len() > 255 {
            return Err((f("virtual_addresses"), "must list 1..=255 addresses".into()));
        }
        let mut addresses = Vec::new();
        for (j, a) in r.virtual_addresses.iter().enumerate() {
            let field = f(&format!("virtual_addresses[{j}]"));
            // `virtual_family` checked every entry is an address of the instance's family.
            let Ok(ip) = a.parse::<IpAddr>() else {
                return Err((field, format!("{a:?} is not an IP address")));
            };
            if !unicast(ip) || ip.is_loopback() {
                return Err((field, format!("{ip} is not a unicast address")));
            }
            if ports
                .iter()
                .any(|p| p.addresses.contains(&ip) || IpAddr::V6(p.link_local) == ip)
            {
                return Err((
                    field,
                    format!(
                        "{ip} is a port's own address; virtual addresses move between appliances"
                    ),
                ));
            }
            if addresses.contains(&ip) || out.iter().any(|o| o.addresses.contains(&ip)) {
                return Err((field, format!("{ip} is listed twice")));
            }
            addresses.push(ip);
        }
        let weight_ok = |field: String, w: i32| {
            if (-MAX_WEIGHT..=MAX_WEIGHT).contains(&w) {
                Ok(w)
            } else {
                Err((field, format!("must be -{MAX_WEIGHT}..={MAX_WEIGHT}")))
            }
        };
        let mut track_ports = Vec::new();
        for (j, t) in r.track_ports.iter().enumerate() {
            let (name, weight, field) = match t {
                RawTrackPort::Name(n) => (n, 0, f(&format!("track_ports[{j}]"))),
                RawTrackPort::Weighted(w) => (
                    &w.port,
                    weight_ok(f(&format!("track_ports[{j}].weight")), w.weight)?,
                    f(&format!("track_ports[{j}].port")),
                ),
            };
            let port = port_of(name).ok_or_else(|| (field, format!("no port named {name:?}")))?;
            track_ports.push(TrackPort { port, weight });
        }
        let mut track_services = Vec::new();
        for (j, t) in r.track_services.iter().enumerate() {
            let field = f(&format!("track_services[{j}].service"));
            let (proto, addr) = parse_service(&t.service).map_err(|m| (field.clone(), m))?;
            let Some(&(_, _, checked)) =
                services.iter().find(|(p, a, _)| *p == proto && *a == addr)
            else {
                return Err((field, format!("no service {:?} is configured", t.service)));
            };
            if !checked {
                return Err((
                    field,
                    format!(
                        "service {:?} has no health-checked real server: its quorum never changes",
                        t.service
                    ),
                ));
            }
            let weight = weight_ok(f(&format!("track_services[{j}].weight")), t.weight)?;
            track_services.push(TrackService {
                proto,
                addr,
                weight,
            });
        }
        for (name, s) in [
            ("notify_master", &r.notify_master),
            ("notify_backup", &r.notify_backup),
            ("notify_fault", &r.notify_fault),
            ("notify", &r.notify),
        ] {
            if s.as_deref().is_some_and(|s| s.trim().is_empty()) {
                return Err((f(name), "must not be empty".into()));
            }
        }
        out.push(VrrpConfig {
            name: r.name.clone(),
            port,
            src,
            vrid,
            priority,
            advert_int_cs,
            version,
            initial_master,
            preempt: !r.nopreempt,
            preempt_delay: r.preempt_delay,
            auth_pass: r.auth_pass.clone(),
            unicast_peers,
            addresses,
            notify_master: r.notify_master.clone(),
            notify_backup: r.notify_backup.clone(),
            notify_fault: r.notify_fault.clone(),
            notify: r.notify.clone(),
            track_ports,
            track_services,
        });
    }
    Ok(out)
}

/// Whether the instance's virtual addresses are IPv6 (else IPv4): every entry must be an IP
/// address of the family of the first one. An empty list is left to the count check.
fn virtual_family(addrs: &[String], f: &impl Fn(&str) -> String) -> Result<bool, (String, String)> {
    let mut family = None;
    for (j, a) in addrs.iter().enumerate() {
        let field = f(&format!("virtual_addresses[{j}]"));
        let ip: IpAddr = a
            .parse()
            .map_err(|_| (field.clone(), format!("{a:?} is not an IP address")))?;
        match family {
            None => family = Some(ip.is_ipv6()),
            Some(v6) if v6 != ip.is_ipv6() => {
                let (this, first) = if v6 {
                    ("IPv4", "IPv6")
                } else {
                    ("IPv6", "IPv4")
                };
                return Err((
                    field,
                    format!(
                        "{ip} is {this} but virtual_addresses[0] is {first}: \
                         one address family per instance"
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    Ok(family.unwrap_or(false))
}

/// Whether `ip` can be a virtual address or a unicast peer: not multicast, broadcast or
/// unspecified.
fn unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => !(a.is_multicast() || a.is_broadcast() || a.is_unspecified()),
        IpAddr::V6(a) => !(a.is_multicast() || a.is_unspecified()),
    }
}

/// `"tcp:10.0.0.100:80"` → (TCP, 10.0.0.100:80); `"tcp:[2001:db8::80]:80"` for IPv6.
fn parse_service(s: &str) -> Result<(Protocol, SocketAddr), String> {
    let bad =
        || format!("{s:?} is not \"tcp:a.b.c.d:port\", \"tcp:[ipv6]:port\" or the same with udp");
    let (proto, addr) = s.split_once(':').ok_or_else(bad)?;
    let proto = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return Err(bad()),
    };
    let addr: SocketAddr = addr.parse().map_err(|_| bad())?;
    Ok((proto, addr))
}

/// Validates the `[[vrrp_sync_group]]` sections against the validated instances: every member
/// names an instance, no instance is in two groups, a group has two members or more.
pub fn validate_groups(
    raw: &[RawSyncGroup],
    instances: &[VrrpConfig],
) -> Result<Vec<SyncGroupConfig>, (String, String)> {
    let mut out: Vec<SyncGroupConfig> = Vec::new();
    for (i, g) in raw.iter().enumerate() {
        let f = |s: &str| format!("vrrp_sync_group[{i}].{s}");
        if g.name.is_empty() || g.name.len() > 64 || g.name.contains(char::is_whitespace) {
            return Err((f("name"), "must be 1..=64 characters, no spaces".into()));
        }
        if out.iter().any(|o| o.name == g.name) {
            return Err((f("name"), format!("{:?} is used by another group", g.name)));
        }
        if g.group.len() < 2 {
            return Err((
                f("group"),
                "a sync group needs two instances or more".into(),
            ));
        }
        let mut members = Vec::new();
        for (j, name) in g.group.iter().enumerate() {
            let field = f(&format!("group[{j}]"));
            let m = instances
                .iter()
                .position(|v| &v.name == name)
                .ok_or_else(|| (field.clone(), format!("no VRRP instance named {name:?}")))?;
            if members.contains(&m) {
                return Err((field, format!("{name:?} is listed twice")));
            }
            if let Some(o) = out.iter().find(|o| o.members.contains(&m)) {
                return Err((
                    field,
                    format!("{name:?} is already in sync group {:?}", o.name),
                ));
            }
            members.push(m);
        }
        for (name, s) in [
            ("notify_master", &g.notify_master),
            ("notify_backup", &g.notify_backup),
            ("notify_fault", &g.notify_fault),
        ] {
            if s.as_deref().is_some_and(|s| s.trim().is_empty()) {
                return Err((f(name), "must not be empty".into()));
            }
        }
        out.push(SyncGroupConfig {
            name: g.name.clone(),
            members,
            notify_master: g.notify_master.clone(),
            notify_backup: g.notify_backup.clone(),
            notify_fault: g.notify_fault.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// The ext port's link-local address.
    const LL_EXT: &str = "fe80::74:76ff:fe00:101";

    fn ports() -> Vec<PortRef> {
        vec![
            PortRef {
                name: "ext".into(),
                addresses: vec![
                    Ipv4Addr::new(10, 0, 0, 2).into(),
                    "2001:db8:c::2".parse().unwrap(),
                ],
                link_local: LL_EXT.parse().unwrap(),
            },
            PortRef {
                name: "int".into(),
                addresses: vec!["172.16.0.2".parse().unwrap()],
                link_local: "fe80::74:76ff:fe00:102".parse().unwrap(),
            },
        ]
    }

    fn services() -> Vec<ServiceRef> {
        vec![
            (Protocol::Tcp, "10.0.0.100:80".parse().unwrap(), true),
            (Protocol::Udp, "10.0.0.100:53".parse().unwrap(), false),
            (Protocol::Tcp, "[2001:db8:f::80]:80".parse().unwrap(), true),
        ]
    }

    fn parse(extra: &str) -> Result<Vec<VrrpConfig>, (String, String)> {
        #[derive(Deserialize)]
        struct W {
            vrrp: Vec<RawVrrp>,
        }
        let text = format!(
            "[[vrrp]]\nname = \"VI_1\"\nport = \"ext\"\nvirtual_router_id = 51\nvirtual_addresses = [\"10.0.0.100\"]\n{extra}"
        );
        let w: W = toml::from_str(&text).map_err(|e| ("toml".to_string(), e.to_string()))?;
        validate(&w.vrrp, &ports(), &services())
    }

    #[test]
    fn defaults() {
        let v = parse("").unwrap();
        let c = &v[0];
        assert_eq!(
            (c.port, c.src, c.vrid, c.priority),
            (0, IpAddr::from([10, 0, 0, 2]), 51, 100)
        );
        assert_eq!((c.advert_int_cs, c.version), (100, 2));
        assert!(!c.initial_master && c.preempt);
        assert_eq!(c.addresses, vec![IpAddr::from([10, 0, 0, 100])]);
    }

    #[test]
    fn full() {
        let v = parse(
            "priority = 150\nstate = \"MASTER\"\nauth_pass = \"secret\"\nunicast_peers = [\"10.0.0.3\"]\npreempt_delay = 5\nnotify_master = \"/bin/true\"\ntrack_ports = [\"int\"]\n",
        )
        .unwrap();
        let c = &v[0];
        assert!(c.initial_master);
        assert_eq!(c.auth_pass.as_deref(), Some("secret"));
        assert_eq!(c.unicast_peers, vec![IpAddr::from([10, 0, 0, 3])]);
        assert_eq!(c.track_ports, vec![TrackPort { port: 1, weight: 0 }]);
        let v3 = parse("version = 3\nadvert_int = 0.5\n").unwrap();
        assert_eq!(v3[0].advert_int_cs, 50);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("priority = 0\n", "vrrp[0].priority"),
            ("priority = 256\n", "vrrp[0].priority"),
            ("version = 4\n", "vrrp[0].version"),
            ("advert_int = 0.5\n", "vrrp[0].advert_int"),
            ("version = 3\nadvert_int = 41\n", "vrrp[0].advert_int"),
            ("state = \"master\"\n", "vrrp[0].state"),
            (
                "state = \"MASTER\"\nnopreempt = true\n",
                "vrrp[0].nopreempt",
            ),
            ("preempt_delay = 1001\n", "vrrp[0].preempt_delay"),
            ("auth_pass = \"123456789\"\n", "vrrp[0].auth_pass"),
            ("version = 3\nauth_pass = \"x\"\n", "vrrp[0].auth_pass"),
            ("unicast_peers = [\"x\"]\n", "vrrp[0].unicast_peers[0]"),
            (
                "unicast_peers = [\"224.0.0.18\"]\n",
                "vrrp[0].unicast_peers[0]",
            ),
            ("track_ports = [\"nope\"]\n", "vrrp[0].track_ports[0]"),
            ("notify = \" \"\n", "vrrp[0].notify"),
            (
                "track_ports = [{ port = \"nope\", weight = -5 }]\n",
                "vrrp[0].track_ports[0].port",
            ),
            (
                "track_ports = [{ port = \"int\", weight = -255 }]\n",
                "vrrp[0].track_ports[0].weight",
            ),
            (
                "track_services = [{ service = \"tcp:10.0.0.100\" }]\n",
                "vrrp[0].track_services[0].service",
            ),
            (
                "track_services = [{ service = \"sctp:10.0.0.100:80\" }]\n",
                "vrrp[0].track_services[0].service",
            ),
            (
                "track_services = [{ service = \"tcp:10.0.0.100:81\" }]\n",
                "vrrp[0].track_services[0].service",
            ),
            (
                "track_services = [{ service = \"udp:10.0.0.100:53\" }]\n",
                "vrrp[0].track_services[0].service",
            ),
            (
                "track_services = [{ service = \"tcp:10.0.0.100:80\", weight = 300 }]\n",
                "vrrp[0].track_services[0].weight",
            ),
        ];
        for (extra, field) in cases {
            assert_eq!(parse(extra).unwrap_err().0, field, "{extra}");
        }
        let bad_port: Vec<RawVrrp> = vec![RawVrrp {
            port: "nope".into(),
            ..parse_raw()
        }];
        assert_eq!(
            validate(&bad_port, &ports(), &services()).unwrap_err().0,
            "vrrp[0].port"
        );
        let own = vec![RawVrrp {
            virtual_addresses: vec!["10.0.0.2".into()],
            ..parse_raw()
        }];
        assert_eq!(
            validate(&own, &ports(), &services()).unwrap_err().0,
            "vrrp[0].virtual_addresses[0]"
        );
        // IPv6 virtual addresses: one family per instance, version 3 only; unicast peers of
        // the instance's family; not a port's own address (its link-local one included).
        let v6 = |addrs: &[&str], version: Option<u8>| {
            validate(
                &[RawVrrp {
                    virtual_addresses: addrs.iter().map(|a| a.to_string()).collect(),
                    version,
                    unicast_peers: if addrs == ["2001:db8:f::82"] {
                        vec!["10.0.0.3".into()]
                    } else {
                        Vec::new()
                    },
                    ..parse_raw()
                }],
                &ports(),
                &services(),
            )
            .unwrap_err()
        };
        let cases: [(&[&str], Option<u8>, &str, &str); 8] = [
            (
                &["2001:db8:f::80", "10.0.0.100"],
                None,
                "vrrp[0].virtual_addresses[1]",
                "10.0.0.100 is IPv4 but virtual_addresses[0] is IPv6: one address family",
            ),
            (
                &["10.0.0.100", "2001:db8:f::80"],
                Some(3),
                "vrrp[0].virtual_addresses[1]",
                "2001:db8:f::80 is IPv6 but virtual_addresses[0] is IPv4",
            ),
            (
                &["10.0.0.100", "nope"],
                None,
                "vrrp[0].virtual_addresses[1]",
                "\"nope\" is not an IP address",
            ),
            (
                &["2001:db8:f::80"],
                Some(2),
                "vrrp[0].version",
                "VRRP version 2 is IPv4 only",
            ),
            (
                &["2001:db8:c::2"],
                None,
                "vrrp[0].virtual_addresses[0]",
                "2001:db8:c::2 is a port's own address",
            ),
            (
                &[LL_EXT],
                None,
                "vrrp[0].virtual_addresses[0]",
                "is a port's own address",
            ),
            (
                &["2001:db8:f::80", "ff02::12"],
                None,
                "vrrp[0].virtual_addresses[1]",
                "ff02::12 is not a unicast address",
            ),
            (
                &["2001:db8:f::82"],
                None,
                "vrrp[0].unicast_peers[0]",
                "\"10.0.0.3\" is not an IPv6 address",
            ),
        ];
        for (addrs, version, field, problem) in cases {
            let (f, m) = v6(addrs, version);
            assert_eq!(f, field, "{addrs:?} {version:?}");
            assert!(m.contains(problem), "{addrs:?} {version:?}: {m}");
        }
        // An IPv6 instance's default version is 3: its advert_int may be sub-second (a
        // version 2 instance names advert_int instead). It sends from the port's link-local
        // address, to unicast IPv6 peers if listed, and may track an IPv6 service.
        let sub_second = |addr: &str, peers: Vec<String>| {
            validate(
                &[RawVrrp {
                    virtual_addresses: vec![addr.into(), addr.replace("::80", "::1")],
                    advert_int: 0.5,
                    unicast_peers: peers,
                    track_services: vec![RawTrackService {
                        service: "tcp:[2001:db8:f::80]:80".into(),
                        weight: -20,
                    }],
                    ..parse_raw()
                }],
                &ports(),
                &services(),
            )
        };
        assert_eq!(
            sub_second("10.0.0.100", Vec::new()).unwrap_err().0,
            "vrrp[0].advert_int"
        );
        let c = sub_second("2001:db8:f::80", vec!["fe80::2".into()]).unwrap();
        let c = &c[0];
        assert_eq!((c.version, c.advert_int_cs), (3, 50));
        assert_eq!(c.src, LL_EXT.parse::<IpAddr>().unwrap());
        assert_eq!(
            c.addresses,
            ["2001:db8:f::80", "2001:db8:f::1"].map(|a| a.parse::<IpAddr>().unwrap())
        );
        assert_eq!(c.unicast_peers, ["fe80::2".parse::<IpAddr>().unwrap()]);
        assert_eq!(
            c.track_services[0].addr,
            "[2001:db8:f::80]:80".parse::<SocketAddr>().unwrap()
        );
        let vrid0 = vec![RawVrrp {
            virtual_router_id: 0,
            ..parse_raw()
        }];
        assert_eq!(
            validate(&vrid0, &ports(), &services()).unwrap_err().0,
            "vrrp[0].virtual_router_id"
        );
        let twice = vec![
            parse_raw(),
            RawVrrp {
                name: "VI_2".into(),
                virtual_addresses: vec!["10.0.0.101".into()],
                ..parse_raw()
            },
        ];
        assert_eq!(
            validate(&twice, &ports(), &services()).unwrap_err().0,
            "vrrp[1].virtual_router_id"
        );
        let dup_name = vec![
            parse_raw(),
            RawVrrp {
                virtual_router_id: 52,
                virtual_addresses: vec!["10.0.0.101".into()],
                ..parse_raw()
            },
        ];
        assert_eq!(
            validate(&dup_name, &ports(), &services()).unwrap_err().0,
            "vrrp[1].name"
        );
    }

    #[test]
    fn weighted_tracking() {
        let v = parse(
            "track_ports = [\"int\", { port = \"ext\", weight = -20 }, { port = \"int\" }]\ntrack_services = [{ service = \"tcp:10.0.0.100:80\", weight = -50 }, { service = \"tcp:10.0.0.100:80\" }]\n",
        )
        .unwrap();
        assert_eq!(
            v[0].track_ports,
            vec![
                TrackPort { port: 1, weight: 0 },
                TrackPort {
                    port: 0,
                    weight: -20
                },
                TrackPort { port: 1, weight: 0 }
            ]
        );
        let svc = TrackService {
            proto: Protocol::Tcp,
            addr: "10.0.0.100:80".parse().unwrap(),
            weight: -50,
        };
        assert_eq!(
            v[0].track_services,
            vec![svc, TrackService { weight: 0, ..svc }]
        );
        // An unknown key in a weighted entry is refused.
        assert!(parse("track_ports = [{ port = \"int\", wieght = 1 }]\n").is_err());
    }

    #[test]
    fn tracking_effects_and_clamping() {
        // Weight 0: FAULT while down.
        assert_eq!(track_effect(0, false), (true, 0));
        assert_eq!(track_effect(0, true), (false, 0));
        // Negative: added while down; positive: added while up (keepalived).
        assert_eq!(track_effect(-50, false), (false, -50));
        assert_eq!(track_effect(-50, true), (false, 0));
        assert_eq!(track_effect(10, true), (false, 10));
        assert_eq!(track_effect(10, false), (false, 0));
        assert_eq!(effective_priority(150, -50), 100);
        assert_eq!(effective_priority(100, -200), 1);
        assert_eq!(effective_priority(200, 100), 254);
        assert_eq!(
            effective_priority(255, -100),
            255,
            "an owner is not changed"
        );
    }

    fn instances(n: usize) -> Vec<VrrpConfig> {
        let raw: Vec<RawVrrp> = (0..n)
            .map(|i| RawVrrp {
                name: format!("VI_{i}"),
                virtual_router_id: 51 + i as u32,
                virtual_addresses: vec![format!("10.0.0.{}", 100 + i)],
                ..parse_raw()
            })
            .collect();
        validate(&raw, &ports(), &services()).unwrap()
    }

    fn groups(text: &str) -> Result<Vec<SyncGroupConfig>, (String, String)> {
        #[derive(Deserialize)]
        struct W {
            vrrp_sync_group: Vec<RawSyncGroup>,
        }
        let w: W = toml::from_str(text).map_err(|e| ("toml".to_string(), e.to_string()))?;
        validate_groups(&w.vrrp_sync_group, &instances(4))
    }

    #[test]
    fn sync_groups() {
        let g = groups(
            "[[vrrp_sync_group]]\nname = \"G1\"\ngroup = [\"VI_0\", \"VI_2\"]\nnotify_master = \"/bin/true\"\n[[vrrp_sync_group]]\nname = \"G2\"\ngroup = [\"VI_1\", \"VI_3\"]\n",
        )
        .unwrap();
        assert_eq!(g[0].members, vec![0, 2]);
        assert_eq!(g[0].notify_master.as_deref(), Some("/bin/true"));
        assert_eq!(g[1].members, vec![1, 3]);
        let cases = [
            (
                "[[vrrp_sync_group]]\nname = \"G\"\ngroup = [\"VI_0\", \"VI_9\"]\n",
                "vrrp_sync_group[0].group[1]",
                "no VRRP instance named \"VI_9\"",
            ),
            (
                "[[vrrp_sync_group]]\nname = \"G\"\ngroup = [\"VI_0\"]\n",
                "vrrp_sync_group[0].group",
                "two instances or more",
            ),
            (
                "[[vrrp_sync_group]]\nname = \"G\"\ngroup = [\"VI_0\", \"VI_1\"]\n[[vrrp_sync_group]]\nname = \"H\"\ngroup = [\"VI_2\", \"VI_1\"]\n",
                "vrrp_sync_group[1].group[1]",
                "already in sync group \"G\"",
            ),
            (
                "[[vrrp_sync_group]]\nname = \"G\"\ngroup = [\"VI_0\", \"VI_0\"]\n",
                "vrrp_sync_group[0].group[1]",
                "listed twice",
            ),
            (
                "[[vrrp_sync_group]]\nname = \"G\"\ngroup = [\"VI_0\", \"VI_1\"]\n[[vrrp_sync_group]]\nname = \"G\"\ngroup = [\"VI_2\", \"VI_3\"]\n",
                "vrrp_sync_group[1].name",
                "used by another group",
            ),
            (
                "[[vrrp_sync_group]]\nname = \"G\"\ngroup = [\"VI_0\", \"VI_1\"]\nnotify_fault = \"\"\n",
                "vrrp_sync_group[0].notify_fault",
                "empty",
            ),
        ];
        for (text, field, problem) in cases {
            let (f, m) = groups(text).unwrap_err();
            assert_eq!(f, field, "{text}");
            assert!(m.contains(problem), "{m}");
        }
    }

    fn parse_raw() -> RawVrrp {
        toml::from_str(
            "name = \"VI_1\"\nport = \"ext\"\nvirtual_router_id = 51\nvirtual_addresses = [\"10.0.0.100\"]\n",
        )
        .unwrap()
    }
}
