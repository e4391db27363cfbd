//! FullNAT forwarding (DPVS `-b`, Alibaba LVS FULLNAT): both ends of the
//! connection are rewritten, so the real server sees the appliance's local
//! address (LIP) as the client and replies to it, wherever it sits in the
//! network. Requests become LIP:lport → RIP:rport ([`fnat_in`]), replies
//! VIP:vport → CIP:cport ([`fnat_out`]).
//!
//! Both rewrites change two addresses and two ports in one pass with one
//! RFC 1624 update per checksum: the IPv4 header checksum, and the TCP/UDP
//! checksum either full or partial ([`Csum::Partial`], virtio `NEEDS_CSUM`,
//! GSO super-frames included: only the address changes enter a partial
//! sum). Lengths, `csum_start` and `csum_offset` do not change, so the vnet
//! header stays valid. A UDP checksum of 0 stays 0. For other protocols
//! only the addresses change. The client address the real server no longer
//! sees travels in the TOA option ([`crate::toa`]).
//!
//! IPv6: the same rewrites with IPv6 addresses (all four of the packet's
//! family, otherwise nothing changes): no header checksum, the 16-byte
//! address changes enter the TCP/UDP/ICMPv6 checksum through the
//! pseudo-header, and a UDP checksum is never 0 afterwards (0 → `0xffff`).
//! An IPv6 client served by IPv4 real servers is NAT64 ([`crate::nat64`]).

use crate::checksum::{delta128, delta32, fold, udp_finish};
use crate::nat::Csum;
use crate::packet::{Kind, Packet, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use crate::wire::{get_array, get_u16, get_u32, icmpv6, ipv4, ipv6, set_bytes, set_u16, set_u32};
use crate::wire::{tcp, udp};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv6: rewrites both addresses and, for TCP/UDP, both ports; the
/// TCP/UDP/ICMPv6 checksum follows.
#[inline(never)]
fn rewrite_both6(
    frame: &mut [u8],
    pkt: &Packet,
    csum: Csum,
    (new_src, new_sport): (Ipv6Addr, u16),
    (new_dst, new_dport): (Ipv6Addr, u16),
) {
    if pkt.kind != Kind::Ipv6 || pkt.l3.saturating_add(ipv6::HEADER_LEN) > pkt.l4 {
        return;
    }
    let (ck, ports, is_udp) = match pkt.proto {
        PROTO_TCP => (Some(tcp::field::CHECKSUM), true, false),
        PROTO_UDP => (Some(udp::field::CHECKSUM), true, true),
        PROTO_ICMPV6 => (Some(icmpv6::field::CHECKSUM), false, false),
        _ => (None, false, false),
    };
    let need = match ck {
        Some(f) => pkt.l4.saturating_add(f + 2),
        None => pkt.l3 + ipv6::HEADER_LEN,
    };
    if frame.len() < need {
        return;
    }
    let (src_off, dst_off) = (pkt.l3 + ipv6::field::SRC, pkt.l3 + ipv6::field::DST);
    let old_src = Ipv6Addr::from(get_array::<16>(frame, src_off));
    let old_dst = Ipv6Addr::from(get_array::<16>(frame, dst_off));
    set_bytes(frame, src_off, &new_src.octets());
    set_bytes(frame, dst_off, &new_dst.octets());
    let Some(f) = ck else {
        return;
    };
    let f = pkt.l4 + f;
    let addr_delta = delta128(old_src, new_src) + delta128(old_dst, new_dst);
    let mut port_delta = 0;
    if ports {
        let (sp_off, dp_off) = (pkt.l4 + tcp::field::SRC_PORT, pkt.l4 + tcp::field::DST_PORT);
        let (old_sport, old_dport) = (get_u16(frame, sp_off), get_u16(frame, dp_off));
        set_u16(frame, sp_off, new_sport);
        set_u16(frame, dp_off, new_dport);
        port_delta = u64::from(!old_sport)
            + u64::from(new_sport)
            + u64::from(!old_dport)
            + u64::from(new_dport);
    }
    let c = get_u16(frame, f);
    let c = match csum {
        Csum::Partial => fold(u64::from(c) + addr_delta),
        Csum::Full => {
            let c = !fold(u64::from(!c) + addr_delta + port_delta);
            if is_udp {
                udp_finish(c)
            } else {
                c
            }
        }
    };
    set_u16(frame, f, c);
}

/// Rewrites source and destination address and, for TCP/UDP, both ports.
fn rewrite_both(
    frame: &mut [u8],
    pkt: &Packet,
    csum: Csum,
    (new_src, new_sport): (Ipv4Addr, u16),
    (new_dst, new_dport): (Ipv4Addr, u16),
) {
    if pkt.kind != Kind::Ipv4 || pkt.l3 > frame.len() || pkt.l4 > frame.len() {
        return;
    }
    let l4_csum = match pkt.proto {
        PROTO_TCP => Some(pkt.l4 + tcp::field::CHECKSUM),
        PROTO_UDP => Some(pkt.l4 + udp::field::CHECKSUM),
        _ => None,
    };
    let need = match l4_csum {
        Some(f) => f + 2,
        None => pkt.l3 + ipv4::MIN_HEADER_LEN,
    };
    if frame.len() < need || pkt.l4 < pkt.l3 + ipv4::MIN_HEADER_LEN {
        return;
    }

    let (src_off, dst_off) = (pkt.l3 + ipv4::field::SRC, pkt.l3 + ipv4::field::DST);
    let (old_src, old_dst) = (get_u32(frame, src_off), get_u32(frame, dst_off));
    let (new_src, new_dst) = (u32::from(new_src), u32::from(new_dst));
    set_u32(frame, src_off, new_src);
    set_u32(frame, dst_off, new_dst);
    let addr_delta = delta32(old_src, new_src) + delta32(old_dst, new_dst);
    let ip_csum = pkt.l3 + ipv4::field::CHECKSUM;
    let c = get_u16(frame, ip_csum);
    set_u16(frame, ip_csum, !fold(u64::from(!c) + addr_delta));

    let Some(f) = l4_csum else {
        return;
    };
    let (sp_off, dp_off) = (pkt.l4 + tcp::field::SRC_PORT, pkt.l4 + tcp::field::DST_PORT);
    let (old_sport, old_dport) = (get_u16(frame, sp_off), get_u16(frame, dp_off));
    set_u16(frame, sp_off, new_sport);
    set_u16(frame, dp_off, new_dport);
    let c = get_u16(frame, f);
    let c = match csum {
        // The partial field is the uncomplemented pseudo-header sum: add
        // the address change directly (ports are not in it).
        Csum::Partial => fold(u64::from(c) + addr_delta),
        Csum::Full if pkt.proto == PROTO_UDP && c == 0 => return,
        Csum::Full => {
            let port_delta = u64::from(!old_sport)
                + u64::from(new_sport)
                + u64::from(!old_dport)
                + u64::from(new_dport);
            let c = !fold(u64::from(!c) + addr_delta + port_delta);
            if pkt.proto == PROTO_UDP {
                udp_finish(c)
            } else {
                c
            }
        }
    };
    set_u16(frame, f, c);
}

/// Request direction (client → real server): source CIP:cport becomes
/// `lip:lport`, destination VIP:vport becomes `rip:rport` (ports only for
/// TCP/UDP), with incremental IPv4 and TCP/UDP checksum updates according
/// to `csum`. Does nothing for ARP, if `frame` is shorter than `pkt`
/// says, or if the addresses are not all of the packet's family (IPv4 or
/// IPv6, see the module docs).
#[inline]
pub fn fnat_in(
    frame: &mut [u8],
    pkt: &Packet,
    csum: Csum,
    lip: impl Into<IpAddr>,
    lport: u16,
    rip: impl Into<IpAddr>,
    rport: u16,
) {
    match (lip.into(), rip.into()) {
        (IpAddr::V4(l), IpAddr::V4(r)) => rewrite_both(frame, pkt, csum, (l, lport), (r, rport)),
        (IpAddr::V6(l), IpAddr::V6(r)) => rewrite_both6(frame, pkt, csum, (l, lport), (r, rport)),
        _ => {}
    }
}

/// Reply direction (real server → client): source RIP:rport becomes
/// `vip:vport`, destination LIP:lport becomes `cip:cport`; otherwise as
/// [`fnat_in`].
#[inline]
pub fn fnat_out(
    frame: &mut [u8],
    pkt: &Packet,
    csum: Csum,
    vip: impl Into<IpAddr>,
    vport: u16,
    cip: impl Into<IpAddr>,
    cport: u16,
) {
    match (vip.into(), cip.into()) {
        (IpAddr::V4(v), IpAddr::V4(c)) => rewrite_both(frame, pkt, csum, (v, vport), (c, cport)),
        (IpAddr::V6(v), IpAddr::V6(c)) => rewrite_both6(frame, pkt, csum, (v, vport), (c, cport)),
        _ => {}
    }
}
