//! The `[[vrrp]]` sections of the configuration: the raw TOML shape ([`RawVrrp`]) and its
//! validation into [`VrrpConfig`] (ranges and combinations as keepalived accepts them). Errors
//! are (field path, problem); `config` adds the file. Ports are passed in by name with their
//! addresses, so this module does not depend on `config`.

use std::net::Ipv4Addr;

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
    #[serde(default = "default_version")]
    version: u8,
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
    track_ports: Vec<String>,
}

fn default_priority() -> u32 {
    100
}

fn default_advert_int() -> f64 {
    1.0
}

fn default_version() -> u8 {
    2
}

/// A validated VRRP instance.
#[derive(Debug, Clone, PartialEq)]
pub struct VrrpConfig {
    /// Instance name (keepalived's `vrrp_instance NAME`).
    pub name: String,
    /// Index of the port adverts are sent and received on.
    pub port: usize,
    /// The port's address adverts come from (its first).
    pub src: Ipv4Addr,
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
    /// Unicast peers (empty: multicast 224.0.0.18).
    pub unicast_peers: Vec<Ipv4Addr>,
    /// The virtual addresses (VIPs, floating gateways, FullNAT local addresses).
    pub addresses: Vec<Ipv4Addr>,
    /// Script run on entering MASTER.
    pub notify_master: Option<String>,
    /// Script run on entering BACKUP.
    pub notify_backup: Option<String>,
    /// Script run on entering FAULT.
    pub notify_fault: Option<String>,
    /// Script run on every transition, with `INSTANCE NAME STATE PRIORITY` appended.
    pub notify: Option<String>,
    /// Ports whose link going down puts the instance in FAULT.
    pub track_ports: Vec<usize>,
}

/// Validates the sections against `ports` (name, addresses with prefix length).
pub fn validate(
    raw: &[RawVrrp],
    ports: &[(String, Vec<(Ipv4Addr, u8)>)],
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
        let port_of = |name: &str| ports.iter().position(|(n, _)| n == name);
        let port =
            port_of(&r.port).ok_or_else(|| (f("port"), format!("no port named {:?}", r.port)))?;
        let src = ports[port]
            .1
            .first()
            .map(|a| a.0)
            .ok_or_else(|| (f("port"), format!("port {:?} has no address", r.port)))?;
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
        if !matches!(r.version, 2 | 3) {
            return Err((f("version"), "must be 2 or 3".into()));
        }
        let cs = (r.advert_int * 100.0).round();
        let advert_int_cs = if r.version == 2 {
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
            if r.version != 2 {
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
        for (j, p) in r.unicast_peers.iter().enumerate() {
            let ip: Ipv4Addr = p.parse().map_err(|_| {
                (
                    f(&format!("unicast_peers[{j}]")),
                    format!("{p:?} is not an IPv4 address"),
                )
            })?;
            if ip.is_multicast() || ip.is_broadcast() || ip.is_unspecified() {
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
            let ip: Ipv4Addr = a
                .parse()
                .map_err(|_| (field.clone(), format!("{a:?} is not an IPv4 address")))?;
            if ip.is_multicast() || ip.is_broadcast() || ip.is_unspecified() || ip.is_loopback() {
                return Err((field, format!("{ip} is not a unicast address")));
            }
            if ports
                .iter()
                .any(|(_, addrs)| addrs.iter().any(|x| x.0 == ip))
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
        let mut track_ports = Vec::new();
        for (j, t) in r.track_ports.iter().enumerate() {
            track_ports.push(port_of(t).ok_or_else(|| {
                (
                    f(&format!("track_ports[{j}]")),
                    format!("no port named {t:?}"),
                )
            })?);
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
            version: r.version,
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
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> Vec<(String, Vec<(Ipv4Addr, u8)>)> {
        vec![
            ("ext".into(), vec![(Ipv4Addr::new(10, 0, 0, 2), 24)]),
            ("int".into(), vec![(Ipv4Addr::new(172, 16, 0, 2), 24)]),
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
        validate(&w.vrrp, &ports())
    }

    #[test]
    fn defaults() {
        let v = parse("").unwrap();
        let c = &v[0];
        assert_eq!(
            (c.port, c.src, c.vrid, c.priority),
            (0, Ipv4Addr::new(10, 0, 0, 2), 51, 100)
        );
        assert_eq!((c.advert_int_cs, c.version), (100, 2));
        assert!(!c.initial_master && c.preempt);
        assert_eq!(c.addresses, vec![Ipv4Addr::new(10, 0, 0, 100)]);
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
        assert_eq!(c.unicast_peers, vec![Ipv4Addr::new(10, 0, 0, 3)]);
        assert_eq!(c.track_ports, vec![1]);
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
        ];
        for (extra, field) in cases {
            assert_eq!(parse(extra).unwrap_err().0, field, "{extra}");
        }
        let bad_port: Vec<RawVrrp> = vec![RawVrrp {
            port: "nope".into(),
            ..parse_raw()
        }];
        assert_eq!(validate(&bad_port, &ports()).unwrap_err().0, "vrrp[0].port");
        let own = vec![RawVrrp {
            virtual_addresses: vec!["10.0.0.2".into()],
            ..parse_raw()
        }];
        assert_eq!(
            validate(&own, &ports()).unwrap_err().0,
            "vrrp[0].virtual_addresses[0]"
        );
        let vrid0 = vec![RawVrrp {
            virtual_router_id: 0,
            ..parse_raw()
        }];
        assert_eq!(
            validate(&vrid0, &ports()).unwrap_err().0,
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
            validate(&twice, &ports()).unwrap_err().0,
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
        assert_eq!(validate(&dup_name, &ports()).unwrap_err().0, "vrrp[1].name");
    }

    fn parse_raw() -> RawVrrp {
        toml::from_str(
            "name = \"VI_1\"\nport = \"ext\"\nvirtual_router_id = 51\nvirtual_addresses = [\"10.0.0.100\"]\n",
        )
        .unwrap()
    }
}
