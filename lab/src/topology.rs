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
//! segments. Run it (or anything else) inside the director with
//! `topology.director.try_run(...)`, and drop what that returns before the [`Topology`].
//! Everything lives in namespaces, so dropping the [`Topology`] removes it all.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;

use crate::netns::{bridge, veth, Netns};

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
}

impl Topology {
    /// Builds the namespaces, links and addresses for `n_reals` real servers (no appliance yet).
    pub fn build(n_reals: usize) -> io::Result<Topology> {
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
        let mut members = Vec::new();
        for (i, rs) in reals.iter().enumerate() {
            let d = format!("r{i}");
            veth((rs, "eth0"), (&director, &d))?;
            rs.add_addr("eth0", &format!("{}/24", real_addr(i)))?;
            rs.add_default_route(&INT_ADDR.to_string())?;
            members.push(d);
        }
        bridge(&director, EXT_BRIDGE, &["cx"])?;
        let m: Vec<&str> = members.iter().map(String::as_str).collect();
        bridge(&director, INT_BRIDGE, &m)?;
        Ok(Topology {
            client,
            director,
            reals,
            clients: Vec::new(),
        })
    }

    /// Gives every real server a second leg on the client segment (10.0.0.3 and up), as in the
    /// kernel selftest's DR and TUN cases, so replies can go straight to the client.
    pub fn reals_on_client_segment(&mut self) -> io::Result<()> {
        for (i, rs) in self.reals.iter().enumerate() {
            let d = format!("s{i}");
            veth((rs, "eth1"), (&self.director, &d))?;
            self.director
                .ip(&["link", "set", "dev", &d, "master", EXT_BRIDGE])?;
            rs.add_addr("eth1", &format!("10.0.0.{}/24", 3 + i))?;
        }
        Ok(())
    }

    /// Adds `n` more client hosts (10.0.0.10 and up) on the client segment.
    pub fn add_clients(&mut self, n: usize) -> io::Result<()> {
        for _ in 0..n {
            let i = self.clients.len();
            let ns = Netns::new(&format!("client{}", i + 1))?;
            ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")?;
            let d = format!("c{i}");
            veth((&ns, "eth0"), (&self.director, &d))?;
            self.director
                .ip(&["link", "set", "dev", &d, "master", EXT_BRIDGE])?;
            ns.add_addr("eth0", &format!("{}/24", extra_client_addr(i)))?;
            ns.add_route(&format!("{VIP}/32"), &EXT_ADDR.to_string())?;
            self.clients.push(ns);
        }
        Ok(())
    }
}
