//! Host and service names, as ipvsadm uses them, without I/O: the [`Resolver`] the command
//! line's `host:service` values are resolved through ([`crate::cmd::resolve`]), and the
//! [`Names`] listings print without `-n` (`localhost:http` for `127.0.0.1:80`).
//!
//! The texts of `/etc/hosts` and `/etc/services` are parsed here ([`Names::parse`],
//! [`Services::parse`]); `tapvsadm` reads the files and asks the system resolver
//! (getaddrinfo) for host names. Reverse lookups use the files only: the first `/etc/hosts`
//! line with the address gives its name (as glibc's `files` source), the first
//! `/etc/services` line with the port and protocol the service's name. No DNS is asked, where
//! ipvsadm's `getnameinfo` may.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use modes::Protocol;
use serde::{Deserialize, Serialize};

/// Forward lookups for the command line (`-t host:service`, `-r host:service`,
/// `-t [host]:service` for IPv6).
pub trait Resolver {
    /// The first IPv4 address of host `name`.
    fn host(&self, name: &str) -> Option<Ipv4Addr>;
    /// The first IPv6 address of host `name` (a name in brackets); none by default.
    fn host6(&self, name: &str) -> Option<Ipv6Addr> {
        let _ = name;
        None
    }
    /// The port of service `name` (or one of its aliases) for `proto`.
    fn service(&self, name: &str, proto: Protocol) -> Option<u16>;
}

/// The entries of an `/etc/services` text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Services {
    /// (official name, aliases, port, protocol) in file order.
    entries: Vec<(String, Vec<String>, u16, Protocol)>,
}

impl Services {
    /// Parses `/etc/services`: `name port/protocol [aliases...] [# comment]`; lines that do
    /// not fit, and protocols other than tcp and udp, are skipped.
    pub fn parse(text: &str) -> Services {
        let mut entries = Vec::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let (Some(name), Some(pp)) = (words.next(), words.next()) else {
                continue;
            };
            let Some((port, proto)) = pp.split_once('/') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            let proto = match proto {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                _ => continue,
            };
            entries.push((
                name.to_string(),
                words.map(str::to_string).collect(),
                port,
                proto,
            ));
        }
        Services { entries }
    }

    /// The port of `name` (official name or alias) for `proto`.
    pub fn port(&self, name: &str, proto: Protocol) -> Option<u16> {
        self.entries
            .iter()
            .find(|(n, aliases, _, p)| {
                *p == proto && (n == name || aliases.iter().any(|a| a == name))
            })
            .map(|e| e.2)
    }

    /// The official name of `port` for `proto` (the first entry).
    pub fn name(&self, port: u16, proto: Protocol) -> Option<&str> {
        self.entries
            .iter()
            .find(|(_, _, p, pr)| *p == port && *pr == proto)
            .map(|e| e.0.as_str())
    }
}

/// Parses `/etc/hosts`: `address name [aliases...] [# comment]`, IPv4 and IPv6 lines;
/// (address, names) in file order.
pub fn parse_hosts(text: &str) -> Vec<(IpAddr, Vec<String>)> {
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let addr: IpAddr = words.next()?.parse().ok()?;
            let names: Vec<String> = words.map(str::to_string).collect();
            (!names.is_empty()).then_some((addr, names))
        })
        .collect()
}

/// An address as glibc's `inet_ntop` writes it (what ipvsadm prints). Rust's `Display` agrees
/// but for the IPv4-compatible addresses (`::/96` with a non-zero seventh group), which glibc
/// writes with a dotted tail (`::1.2.3.4`, where Rust writes `::102:304`).
pub fn ntop(addr: IpAddr) -> String {
    match addr {
        IpAddr::V6(a) => {
            let s = a.segments();
            if s[..6] == [0; 6] && s[6] != 0 {
                let [_, _, _, _, _, _, _, _, _, _, _, _, b0, b1, b2, b3] = a.octets();
                format!("::{}", Ipv4Addr::new(b0, b1, b2, b3))
            } else {
                a.to_string()
            }
        }
        IpAddr::V4(a) => a.to_string(),
    }
}

/// The longest `addr:port` text ipvsadm prints (its buffer is 60 bytes with the NUL).
const ADDR_PORT_MAX: usize = 59;

/// Names for listings without `-n`: host names by address and service names by port, as
/// `tapvsadm` read them (it sends them with the request, so names are the client's, as with
/// ipvsadm). An empty `Names` prints numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Names {
    /// Host name by address (IPv4 or IPv6).
    #[serde(default)]
    pub hosts: HashMap<IpAddr, String>,
    /// TCP service name by port.
    #[serde(default)]
    pub tcp: HashMap<u16, String>,
    /// UDP service name by port.
    #[serde(default)]
    pub udp: HashMap<u16, String>,
}

impl Names {
    /// The reverse maps of an `/etc/hosts` and an `/etc/services` text (first entry wins).
    pub fn parse(hosts: &str, services: &str) -> Names {
        let mut n = Names::default();
        for (addr, names) in parse_hosts(hosts) {
            if let Some(first) = names.into_iter().next() {
                n.hosts.entry(addr).or_insert(first);
            }
        }
        for (name, _, port, proto) in Services::parse(services).entries {
            let map = match proto {
                Protocol::Tcp => &mut n.tcp,
                Protocol::Udp => &mut n.udp,
            };
            map.entry(port).or_insert(name);
        }
        n
    }

    /// `host:service` for `addr:port` of `proto` (`[host]:service` for IPv6), each part a
    /// name when there is one, else the number; at most 59 bytes (ipvsadm's
    /// `addrport_to_anyname` and its 60-byte buffer).
    pub fn addr_port(&self, addr: IpAddr, port: u16, proto: Protocol) -> String {
        let host = self.hosts.get(&addr).cloned().unwrap_or_else(|| ntop(addr));
        let map = match proto {
            Protocol::Tcp => &self.tcp,
            Protocol::Udp => &self.udp,
        };
        let (open, close) = if addr.is_ipv6() { ("[", "]") } else { ("", "") };
        let mut s = match map.get(&port) {
            Some(svc) => format!("{open}{host}{close}:{svc}"),
            None => format!("{open}{host}{close}:{port}"),
        };
        if s.len() > ADDR_PORT_MAX {
            let mut end = ADDR_PORT_MAX;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
        }
        s
    }

    /// Whether there is no name at all (the listing is numeric).
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.tcp.is_empty() && self.udp.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: &str = "127.0.0.1\tlocalhost\n127.0.0.1 other\n# 10.0.0.1 commented\n\
                         ::1 localhost ip6-localhost\n10.0.0.5 web web.example # box\n\
                         bad line\n10.0.0.6\n";
    const SERVICES: &str = "# services\nhttp\t\t80/tcp\t\twww\t# WorldWideWeb HTTP\n\
                            domain\t\t53/tcp\ndomain\t\t53/udp\nsunrpc 111/tcp portmapper\n\
                            sunrpc 111/udp portmapper\nbroken 99999/tcp\nx 7/ddp\nnoport\n\
                            www-alt 80/tcp\n";

    #[test]
    fn services_forward_and_reverse() {
        let s = Services::parse(SERVICES);
        assert_eq!(s.port("http", Protocol::Tcp), Some(80));
        assert_eq!(s.port("www", Protocol::Tcp), Some(80));
        assert_eq!(s.port("http", Protocol::Udp), None);
        assert_eq!(s.port("domain", Protocol::Udp), Some(53));
        assert_eq!(s.port("portmapper", Protocol::Udp), Some(111));
        assert_eq!(s.port("broken", Protocol::Tcp), None);
        assert_eq!(s.port("x", Protocol::Tcp), None);
        assert_eq!(s.name(80, Protocol::Tcp), Some("http"), "first entry wins");
        assert_eq!(s.name(53, Protocol::Udp), Some("domain"));
        assert_eq!(s.name(8080, Protocol::Tcp), None);
    }

    #[test]
    fn hosts_and_reverse_names() {
        let h = parse_hosts(HOSTS);
        assert_eq!(h.len(), 4);
        assert_eq!(
            h[2],
            (
                "::1".parse().unwrap(),
                vec!["localhost".into(), "ip6-localhost".into()]
            )
        );
        assert_eq!(
            h[3],
            (
                "10.0.0.5".parse().unwrap(),
                vec!["web".into(), "web.example".into()]
            )
        );
        let n = Names::parse(HOSTS, SERVICES);
        assert_eq!(
            n.addr_port(Ipv4Addr::LOCALHOST.into(), 80, Protocol::Tcp),
            "localhost:http"
        );
        assert_eq!(
            n.addr_port(Ipv4Addr::LOCALHOST.into(), 80, Protocol::Udp),
            "localhost:80"
        );
        assert_eq!(
            n.addr_port("10.0.0.5".parse().unwrap(), 53, Protocol::Udp),
            "web:domain"
        );
        assert_eq!(
            n.addr_port("10.9.9.9".parse().unwrap(), 8080, Protocol::Tcp),
            "10.9.9.9:8080"
        );
        assert!(!n.is_empty());
        assert!(Names::default().is_empty());
        // IPv6: in brackets, names from IPv6 lines, numbers compressed as inet_ntop does.
        assert_eq!(
            n.addr_port("::1".parse().unwrap(), 80, Protocol::Tcp),
            "[localhost]:http"
        );
        assert_eq!(
            n.addr_port("2001:db8:0:0:0:0:0:5".parse().unwrap(), 53, Protocol::Udp),
            "[2001:db8::5]:domain"
        );
        assert_eq!(
            Names::default().addr_port("2001:db8:5::2".parse().unwrap(), 80, Protocol::Tcp),
            "[2001:db8:5::2]:80"
        );
        // inet_ntop's dotted tail for IPv4-compatible addresses only.
        for (a, want) in [
            ("::1.2.3.4", "::1.2.3.4"),
            ("::0.1.0.0", "::0.1.0.0"),
            ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
            ("::1", "::1"),
            ("::", "::"),
            ("::0.0.1.2", "::102"),
            ("1::1.2.3.4", "1::102:304"),
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
        ] {
            assert_eq!(ntop(a.parse().unwrap()), want, "{a}");
        }
        // ipvsadm's 60-byte buffer: at most 59 bytes, even for a long name.
        let long = Names::parse(&format!("2001:db8::9 {}\n", "h".repeat(70)), "");
        let s = long.addr_port("2001:db8::9".parse().unwrap(), 8080, Protocol::Tcp);
        assert_eq!(s, format!("[{}", "h".repeat(58)));
        // The names travel as JSON with the request: addresses as keys, both families.
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(serde_json::from_str::<Names>(&json).unwrap(), n);
        assert_eq!(
            Names::default().addr_port(Ipv4Addr::LOCALHOST.into(), 80, Protocol::Tcp),
            "127.0.0.1:80"
        );
    }
}
