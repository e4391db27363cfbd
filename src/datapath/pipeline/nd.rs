//! IPv6's host role on the data path, as `Pipeline::arp` is IPv4's: Neighbour Solicitations
//! for the appliance's addresses (its ports' global addresses and EUI-64 link-local ones,
//! VIPs, FullNAT local addresses, the floating addresses of VRRP instances this appliance is
//! MASTER of; none of a BACKUP's) answered with Neighbour Advertisements, neighbours learnt
//! from solicitations and advertisements (and frames held for them released), and ICMPv6
//! echo requests to those addresses answered. Every other ICMPv6 message (router discovery,
//! MLD, errors) is counted and dropped. The byte work is `modes::reply`'s.

use std::net::{IpAddr, Ipv6Addr};

use modes::packet::Packet;
use modes::reply;
use modes::wire::icmpv6;

use crate::datapath::neigh::NeighEvent;
use crate::datapath::pipeline::{Env, Pipeline, Sink, Verdict};
use crate::datapath::service::PortInfo;
use crate::datapath::stats::Drop;
use crate::sys::tap::VNET_HDR_LEN;

pub use modes::reply::link_local;

/// Whether `ip` is one of port `info`'s own IPv6 addresses (configured or link-local).
fn own6(info: &PortInfo, ip: Ipv6Addr) -> bool {
    ip == link_local(info.mac) || info.addresses.iter().any(|c| c.addr == IpAddr::V6(ip))
}

/// Whether `ip` is on port `info`'s link: link-local, or inside one of its IPv6 prefixes.
fn on_link6(info: &PortInfo, ip: Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80 || info.addresses.iter().any(|c| c.contains(IpAddr::V6(ip)))
}

impl Pipeline {
    /// An ICMPv6 message received on `port` (`pkt` parsed from the Ethernet `frame`):
    /// Neighbour Discovery and echo for the appliance, else dropped. Martian sources were
    /// dropped before.
    pub(super) fn icmp6<S: Sink>(
        &mut self,
        env: &Env,
        sink: &mut S,
        port: usize,
        frame: &[u8],
        pkt: &Packet,
        group: bool,
    ) -> Verdict {
        let kind = frame.get(pkt.l4).copied().unwrap_or(0);
        let snap = env.snap;
        let info = &snap.ports[port];
        let IpAddr::V6(src) = pkt.src else {
            return self.drop(Drop::NdIgnored);
        };
        match kind {
            icmpv6::TYPE_NEIGHBOR_SOLICIT => {
                let Some(target) = reply::ns_target(frame, pkt) else {
                    return self.drop(Drop::NdIgnored);
                };
                let t = IpAddr::V6(target);
                let owned = own6(info, target)
                    || ((snap.is_vip(t) || snap.is_lip(t)) && !env.standby.is_down(t))
                    || env.standby.is_floating(port, t);
                // The solicitation's source link-layer option teaches us the sender (RFC 4861
                // §7.2.3), as an ARP request to us does.
                if owned && !src.is_unspecified() && on_link6(info, src) {
                    if let Some(mac) = nd_source_ll(frame, pkt) {
                        self.learn6(env, sink, port, src, mac);
                    }
                }
                if !owned {
                    return self.drop(Drop::NdIgnored);
                }
                let out = &mut self.tx[VNET_HDR_LEN..];
                match reply::neighbour_advert(out, frame, pkt, info.mac.into(), target) {
                    Some(n) => {
                        if self.send_tx(sink, port, n) {
                            self.c.nd_replies += 1;
                        }
                        Verdict::Answer
                    }
                    None => self.drop(Drop::NdIgnored),
                }
            }
            icmpv6::TYPE_NEIGHBOR_ADVERT => {
                let Some((target, ll)) = reply::na_info(frame, pkt) else {
                    return self.drop(Drop::NdIgnored);
                };
                let eth_src = [frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]];
                let mac = ll.map_or(eth_src, |m| m.0);
                if on_link6(info, target) && mac[0] & 1 == 0 {
                    self.learn6(env, sink, port, target, mac);
                }
                // The host stack resolves its own next hops: it needs the answers to us.
                match pkt.dst {
                    IpAddr::V6(d) if env.host_stack && !group && own6(info, d) => Verdict::Host,
                    _ => self.drop(Drop::NdIgnored),
                }
            }
            icmpv6::TYPE_ECHO_REQUEST if !group => {
                let IpAddr::V6(dst) = pkt.dst else {
                    return self.drop(Drop::IcmpIgnored);
                };
                let d = pkt.dst;
                if snap.is_vip(d) && env.standby.is_down(d) {
                    return self.drop(Drop::Standby);
                }
                if !(own6(info, dst) || snap.is_local(d) || snap.is_vip(d)) {
                    return self.drop(Drop::IcmpIgnored);
                }
                let mac = info.mac.into();
                match reply::icmp_echo_reply(&mut self.tx[VNET_HDR_LEN..], frame, pkt, mac) {
                    Some(n) => {
                        if self.send_tx(sink, port, n) {
                            self.c.echo_replies += 1;
                        }
                        Verdict::Answer
                    }
                    None => self.drop(Drop::IcmpIgnored),
                }
            }
            _ if group => self.drop(Drop::NotForUs),
            // Echo replies and errors for the host stack's checks.
            _ if env.host_stack && matches!(pkt.dst, IpAddr::V6(d) if own6(info, d)) => {
                Verdict::Host
            }
            _ => self.drop(Drop::IcmpIgnored),
        }
    }

    /// Learns IPv6 neighbour `ip` at `mac` on `port` (an event for the control thread unless
    /// the published table has it fresh) and releases the frames held for it.
    fn learn6<S: Sink>(
        &mut self,
        env: &Env,
        sink: &mut S,
        port: usize,
        ip: Ipv6Addr,
        mac: [u8; 6],
    ) {
        let ip = IpAddr::V6(ip);
        let fresh = env.neigh.entry(ip).is_some_and(|n| {
            n.mac == mac && n.port == port && self.now.saturating_sub(n.confirmed) < 30
        });
        if !fresh {
            self.event(NeighEvent::Learned { ip, mac, port });
        }
        if !self.held.is_empty() {
            self.release_held(env, sink, Some((ip, port, mac)));
        }
    }
}

/// The source link-layer address option of a (validated) Neighbour Solicitation.
fn nd_source_ll(frame: &[u8], pkt: &Packet) -> Option<[u8; 6]> {
    let msg = frame.get(pkt.l4..pkt.l3 + pkt.ip_total_len as usize)?;
    let opts = msg.get(icmpv6::field::ND_OPTIONS..)?;
    icmpv6::ll_addr_option(opts, icmpv6::OPT_SOURCE_LL_ADDR)
        .map(|m| m.0)
        .filter(|m| m[0] & 1 == 0)
}
