//! The standard throwaway topology of the demo and the integration tests, modelled on the Linux
//! `ipvs.sh` selftest: a client namespace, a director namespace with one bridge per segment
//! (where the appliance attaches a TAP port each), and N real-server namespaces on the server
//! segment. This module owns the namespaces, links, bridges and addresses of that topology and
//! the names and addresses the appliance is expected to use in it; it does not start anything.
//!
//! ```text
//!  client 10.0.0.2 ── veth ── [director: br "bx" + TAP "tx"]  appliance port 10.0.0.1/24
//!  rs_i 172.16.0.(2+i) ── veth ── [director: br "bi" + TAP "ti"] appliance port 172.16.0.1/24
//! ```
//! The client routes the VIP through 10.0.0.1; real servers use 172.16.0.1 as their default
//! gateway (NAT). The director's kernel holds no address: the appliance is the host on both
//! segments.
//!
//! [`Topology::build`] disables IPv6 in every namespace. [`Topology::build_dual`] builds the
//! same topology dual-stack: the client and real servers also get the IPv6 plan below (all
//! addresses `nodad`), with router solicitations, router advertisements, DAD and MLD reports off
//! so that nothing is sent that the appliance did not ask for; the director's kernel stays
//! IPv6-less (its bridges still carry IPv6, with multicast snooping off).
//!
//! ```text
//!  client 2001:db8:c::2/64, route 2001:db8:f::/64 (VIP6) via EXT6 2001:db8:c::1
//!  rs_i 2001:db8:5::(2+i)/64, default via INT6 2001:db8:5::1
//!  DR/TUN legs on the client segment: rs_i 2001:db8:c::(3+i)/64; extra clients 2001:db8:c::(10+i)
//!  FullNAT local addresses: 2001:db8:5::100 and up
//! ``` Run it (or anything else) inside the director with
//! `topology.director.try_run(...)`, and drop what that returns before the [`Topology`].
//! Everything lives in namespaces, so dropping the [`Topology`] removes it all.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::Path;

use crate::netns::{bridge, no_snooping, veth, Netns};

/// The virtual address used by the lab (from the kernel selftest).
pub const VIP: Ipv4Addr = Ipv4Addr::new(207, 175, 44, 110);
/// The client's address.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
/// The appliance's address on the client segment.
pub const EXT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// The appliance's address on the server segment.
pub const INT_ADDR: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
/// The MAC of the appliance's client-side port.
pub const EXT_MAC: &str = "02:74:76:00:00:01";
/// The MAC of the appliance's server-side port.
pub const INT_MAC: &str = "02:74:76:00:00:02";
/// The director's bridge on the client segment.
pub const EXT_BRIDGE: &str = "bx";
/// The director's bridge on the server segment.
pub const INT_BRIDGE: &str = "bi";
/// The TAP the appliance creates in the director and attaches to [`EXT_BRIDGE`].
pub const EXT_TAP: &str = "tx";
/// The TAP the appliance creates in the director and attaches to [`INT_BRIDGE`].
pub const INT_TAP: &str = "ti";

/// Address of real server `i` (0-based).
pub fn real_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 16, 0, 2 + i as u8)
}

/// `VIP:port`.
pub fn vip(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(VIP, port))
}

/// Address of extra client `i` (0-based; the main client is 10.0.0.2).
pub fn extra_client_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 10 + i as u8)
}

/// The IPv6 virtual address of the dual-stack lab.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, 0x80);
/// The prefix the clients route through [`EXT6`]; [`VIP6`] and any further IPv6 VIPs live in it.
pub const VIP6_PREFIX: &str = "2001:db8:f::/64";
/// The client's IPv6 address.
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 2);
/// The appliance's IPv6 address on the client segment (prefix length 64).
pub const EXT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 1);
/// The appliance's IPv6 address on the server segment (prefix length 64).
pub const INT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 1);
/// Prefix length of the IPv6 segments.
pub const PREFIX6_LEN: u8 = 64;

/// IPv6 address of real server `i` (0-based) on the server segment: 2001:db8:5::(2+i).
pub fn real_addr6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 2 + i as u16)
}

/// Address of real server `i`'s leg on the client segment ([`Topology::reals_on_client_segment`]):
/// 10.0.0.(3+i).
pub fn real_client_leg(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 3 + i as u8)
}

/// IPv6 address of real server `i`'s leg on the client segment (dual stack): 2001:db8:c::(3+i).
pub fn real_client_leg6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 3 + i as u16)
}

/// FullNAT local address `i` (0-based) for IPv6 services: 2001:db8:5::(100+i) (hex), on the
/// server segment. The lab does not configure it anywhere: the appliance owns it.
pub fn local_addr6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 0x100 + i as u16)
}

/// `[VIP6]:port`.
pub fn vip6(port: u16) -> SocketAddr {
    SocketAddr::V6(SocketAddrV6::new(VIP6, port, 0, 0))
}

/// IPv6 address of extra client `i` (0-based; dual stack): 2001:db8:c::(10+i) (hex).
pub fn extra_client_addr6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 0x10 + i as u16)
}

/// The nftables table [`Topology::build_dual`] loads into the client and real-server
/// namespaces: it drops their own MLD reports and dones (the only IPv6 packets a host sends
/// unasked once router solicitations and DAD are off).
const QUIET_MLD_NFT: &str = "table ip6 tvs_quiet_mld { chain out { type filter hook output \
    priority 0; policy accept; icmpv6 type { mld-listener-report, mld-listener-done, \
    mld2-listener-report } drop; }; }";

/// Makes `ns` an IPv6 host that speaks only when spoken to: enables IPv6, turns off router
/// solicitations, router advertisements and DAD (on `all` and `default`, so links created later
/// inherit it) and drops its MLD reports (nftables). Call before creating its links.
pub(crate) fn quiet_ipv6(ns: &Netns) -> io::Result<()> {
    for scope in ["all", "default"] {
        for (knob, value) in [
            ("disable_ipv6", "0"),
            ("accept_ra", "0"),
            ("router_solicitations", "0"),
            ("accept_dad", "0"),
            ("dad_transmits", "0"),
        ] {
            ns.sysctl(&format!("net.ipv6.conf.{scope}.{knob}"), value)?;
        }
    }
    ns.exec(&["nft", QUIET_MLD_NFT]).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("{e} (the dual-stack lab needs nftables to keep MLD reports off the segments)"),
        )
    })?;
    Ok(())
}

/// The namespaces of the topology; dropping it deletes them (and with them every link).
#[derive(Debug)]
pub struct Topology {
    /// The client host.
    pub client: Netns,
    /// The director, where the appliance runs.
    pub director: Netns,
    /// The real servers.
    pub reals: Vec<Netns>,
    /// More clients on the client segment (see [`Topology::add_clients`]).
    pub clients: Vec<Netns>,
    /// Built with [`Topology::build_dual`] (IPv6 too).
    dual: bool,
}

impl Topology {
    /// Builds the namespaces, links and addresses for `n_reals` real servers (no appliance yet),
    /// IPv4 only: IPv6 is disabled in every namespace.
    pub fn build(n_reals: usize) -> io::Result<Topology> {
        Topology::build_with(n_reals, false)
    }

    /// [`Topology::build`] dual-stack: the IPv4 plan plus, on the client and the real servers,
    /// the IPv6 plan of the module documentation ([`CLIENT6`] routing [`VIP6_PREFIX`] via
    /// [`EXT6`], real server `i` at [`real_addr6`]`(i)` with its default route via [`INT6`]),
    /// every address `nodad`, router solicitations, RAs, DAD and MLD reports off. The director's
    /// kernel keeps IPv6 disabled; its bridges forward IPv6 with multicast snooping off, so
    /// Neighbour Solicitations reach the TAPs without any MLD. Needs `nft` (nftables).
    pub fn build_dual(n_reals: usize) -> io::Result<Topology> {
        Topology::build_with(n_reals, true)
    }

    /// Whether the topology was built with [`Topology::build_dual`].
    pub fn is_dual(&self) -> bool {
        self.dual
    }

    /// [`Topology::build`] (`dual = false`) or [`Topology::build_dual`].
    fn build_with(n_reals: usize, dual: bool) -> io::Result<Topology> {
        let client = Netns::new("client")?;
        let director = Netns::new("director")?;
        let mut reals = Vec::new();
        for i in 0..n_reals {
            reals.push(Netns::new(&format!("rs{i}"))?);
        }
        for ns in std::iter::once(&client)
            .chain(std::iter::once(&director))
            .chain(reals.iter())
        {
            if dual && !std::ptr::eq(ns, &director) {
                quiet_ipv6(ns)?;
                continue;
            }
            // IPv6 chatter (router solicitations, MLD) would only add to the drop counters.
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            ns.sysctl("net.ipv6.conf.default.disable_ipv6", "1")?;
        }
        // With br_netfilter present, bridged IPv4 would be validated (and malformed frames
        // dropped) by the director's kernel before reaching the TAP: the appliance is meant to
        // see the segment's frames as they are.
        if Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
            for key in ["iptables", "ip6tables", "arptables"] {
                director.sysctl(&format!("net.bridge.bridge-nf-call-{key}"), "0")?;
            }
        }
        veth((&client, "eth0"), (&director, "cx"))?;
        client.add_addr("eth0", &format!("{CLIENT}/24"))?;
        client.add_route(&format!("{VIP}/32"), &EXT_ADDR.to_string())?;
        if dual {
            client.add_addr("eth0", &format!("{CLIENT6}/{PREFIX6_LEN}"))?;
            client.add_route(VIP6_PREFIX, &EXT6.to_string())?;
        }
        let mut members = Vec::new();
        for (i, rs) in reals.iter().enumerate() {
            let d = format!("r{i}");
            veth((rs, "eth0"), (&director, &d))?;
            rs.add_addr("eth0", &format!("{}/24", real_addr(i)))?;
            rs.add_default_route(&INT_ADDR.to_string())?;
            if dual {
                rs.add_addr("eth0", &format!("{}/{PREFIX6_LEN}", real_addr6(i)))?;
                rs.add_default_route(&INT6.to_string())?;
            }
            members.push(d);
        }
        bridge(&director, EXT_BRIDGE, &["cx"])?;
        let m: Vec<&str> = members.iter().map(String::as_str).collect();
        bridge(&director, INT_BRIDGE, &m)?;
        if dual {
            // No MLD is sent, so a snooping bridge must not learn (or wait for) listeners.
            for br in [EXT_BRIDGE, INT_BRIDGE] {
                no_snooping(&director, br)?;
            }
        }
        Ok(Topology {
            client,
            director,
            reals,
            clients: Vec::new(),
            dual,
        })
    }

    /// Gives every real server a second leg `eth1` on the client segment ([`real_client_leg`],
    /// 10.0.0.3 and up; dual stack also [`real_client_leg6`], 2001:db8:c::3 and up), as in the
    /// kernel selftest's DR and TUN cases, so replies can go straight to the client.
    pub fn reals_on_client_segment(&mut self) -> io::Result<()> {
        for (i, rs) in self.reals.iter().enumerate() {
            let d = format!("s{i}");
            veth((rs, "eth1"), (&self.director, &d))?;
            self.director
                .ip(&["link", "set", "dev", &d, "master", EXT_BRIDGE])?;
            rs.add_addr("eth1", &format!("{}/24", real_client_leg(i)))?;
            if self.dual {
                rs.add_addr("eth1", &format!("{}/{PREFIX6_LEN}", real_client_leg6(i)))?;
            }
        }
        Ok(())
    }

    /// Adds `n` more client hosts ([`extra_client_addr`], 10.0.0.10 and up) on the client
    /// segment, routing [`VIP`] via [`EXT_ADDR`]; dual stack also [`extra_client_addr6`]
    /// (2001:db8:c::10 and up) routing [`VIP6_PREFIX`] via [`EXT6`], as quiet as the client.
    pub fn add_clients(&mut self, n: usize) -> io::Result<()> {
        for _ in 0..n {
            let i = self.clients.len();
            let ns = Netns::new(&format!("client{}", i + 1))?;
            if self.dual {
                quiet_ipv6(&ns)?;
            } else {
                ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            }
            let d = format!("c{i}");
            veth((&ns, "eth0"), (&self.director, &d))?;
            self.director
                .ip(&["link", "set", "dev", &d, "master", EXT_BRIDGE])?;
            ns.add_addr("eth0", &format!("{}/24", extra_client_addr(i)))?;
            ns.add_route(&format!("{VIP}/32"), &EXT_ADDR.to_string())?;
            if self.dual {
                ns.add_addr("eth0", &format!("{}/{PREFIX6_LEN}", extra_client_addr6(i)))?;
                ns.add_route(VIP6_PREFIX, &EXT6.to_string())?;
            }
            self.clients.push(ns);
        }
        Ok(())
    }
}
