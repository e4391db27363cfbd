//! Routing: which port and next hop a destination is reached through. Connected routes come
//! from the ports' addresses, static routes from the config; the longest prefix wins, and among
//! equal prefixes the connected route. The table is tiny and immutable once built (it lives in
//! the service snapshot), so a lookup is a short linear scan without locks.

use std::net::IpAddr;

use crate::config::{Cidr, PortConfig, RouteConfig};

/// One route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix.
    pub to: Cidr,
    /// Egress port index.
    pub port: usize,
    /// Gateway, or `None` for a connected network (the destination is the next hop).
    pub via: Option<IpAddr>,
}

/// The routing table, sorted by descending prefix length.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// Builds the table from the ports' addresses and the static routes. A static route whose
    /// gateway is on no connected network is skipped (config validation rejects it earlier).
    pub fn new(ports: &[PortConfig], statics: &[RouteConfig]) -> Router {
        let mut routes = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            for a in &p.addresses {
                let net = Cidr {
                    addr: a.network(),
                    prefix: a.prefix,
                };
                routes.push(Route {
                    to: net,
                    port: i,
                    via: None,
                });
            }
        }
        let connected = routes.clone();
        for r in statics {
            if let Some(c) = connected.iter().find(|c| c.to.contains(r.via)) {
                routes.push(Route {
                    to: r.to,
                    port: c.port,
                    via: Some(r.via),
                });
            }
        }
        // Stable sort: connected routes (pushed first) win ties.
        routes.sort_by_key(|r| std::cmp::Reverse(r.to.prefix));
        Router { routes }
    }

    /// The egress port and next hop for `dst` (a route of its family).
    #[inline]
    pub fn lookup(&self, dst: impl Into<IpAddr>) -> Option<(usize, IpAddr)> {
        let dst = dst.into();
        self.routes
            .iter()
            .find(|r| r.to.contains(dst))
            .map(|r| (r.port, r.via.unwrap_or(dst)))
    }

    /// All routes, longest prefix first.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(addr: &str) -> PortConfig {
        PortConfig {
            name: "p".into(),
            tap: "t".into(),
            mac: [2, 0, 0, 0, 0, 1],
            addresses: vec![Cidr::parse(addr).unwrap()],
            bridge: None,
            mtu: None,
            queue_len: 4096,
            rp_filter: crate::config::RpFilter::Off,
        }
    }

    #[test]
    fn longest_prefix_and_gateways() {
        let ports = [port("10.0.0.1/24"), port("172.16.0.1/24")];
        let statics = [
            RouteConfig {
                to: Cidr::parse("default").unwrap(),
                via: "10.0.0.254".parse().unwrap(),
            },
            RouteConfig {
                to: Cidr::parse("192.168.0.0/16").unwrap(),
                via: "172.16.0.9".parse().unwrap(),
            },
        ];
        let r = Router::new(&ports, &statics);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(r.lookup(ip("10.0.0.7")), Some((0, ip("10.0.0.7"))));
        assert_eq!(r.lookup(ip("172.16.0.2")), Some((1, ip("172.16.0.2"))));
        assert_eq!(r.lookup(ip("192.168.3.4")), Some((1, ip("172.16.0.9"))));
        assert_eq!(r.lookup(ip("8.8.8.8")), Some((0, ip("10.0.0.254"))));
        assert_eq!(Router::new(&ports, &[]).lookup(ip("8.8.8.8")), None);
    }

    #[test]
    fn ipv6_longest_prefix_beside_ipv4() {
        let mut ext = port("10.0.0.1/24");
        ext.addresses.push(Cidr::parse("2001:db8:c::1/64").unwrap());
        let int = port("2001:db8:5::1/64");
        let statics = [
            RouteConfig {
                to: Cidr::parse("default6").unwrap(),
                via: "2001:db8:c::fe".parse().unwrap(),
            },
            RouteConfig {
                to: Cidr::parse("2001:db8:77::/48").unwrap(),
                via: "2001:db8:5::9".parse().unwrap(),
            },
        ];
        let r = Router::new(&[ext, int], &statics);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            r.lookup(ip("2001:db8:5::2")),
            Some((1, ip("2001:db8:5::2")))
        );
        assert_eq!(
            r.lookup(ip("2001:db8:77:1::5")),
            Some((1, ip("2001:db8:5::9")))
        );
        assert_eq!(
            r.lookup(ip("2001:4860::8888")),
            Some((0, ip("2001:db8:c::fe")))
        );
        // No IPv4 default: an IPv4 destination off-link has no route, whatever the v6 ones.
        assert_eq!(r.lookup(ip("8.8.8.8")), None);
        assert_eq!(r.lookup(ip("10.0.0.9")), Some((0, ip("10.0.0.9"))));
    }
}
