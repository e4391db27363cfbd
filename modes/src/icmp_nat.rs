//! NAT of ICMP errors that belong to a connection (what IPVS's
//! `ip_vs_nat_icmp` does for NAT mode). An ICMP error (destination
//! unreachable, fragmentation needed, time exceeded, …) quotes the IP
//! header and at least the first 8 bytes of the packet that caused it; if
//! that packet belongs to a NATed connection, the quote shows the
//! addresses on the far side of the appliance and must be translated like
//! the connection's packets, and so must the outer header.
//!
//! * [`inner_tuple`] reads the quoted protocol, addresses and ports, to
//!   look the connection up (TCP and UDP only).
//! * [`rewrite_inner`] rewrites the quoted addresses and ports; it
//!   recomputes the quoted IP header checksum, updates the quoted TCP/UDP
//!   checksum incrementally when the quote contains it (a quoted UDP
//!   checksum 0 stays 0) and recomputes the ICMP checksum over the whole
//!   message.
//! * [`set_outer_addrs`] rewrites the outer addresses with an incremental
//!   IPv4 header checksum update (the ICMP checksum does not cover them).
//! * [`nat_out`] and [`nat_in`] combine the two for NAT mode.
//!
//! The ICMP checksum written is always complete: a frame that came with
//! `NEEDS_CSUM` must go out without it. Other forwarding modes (FullNAT:
//! both quoted ends change) use the two building blocks directly.
//!
//! ICMPv6 errors (types 0–127) are handled the same way: [`quoted_tuple`]
//! reads the quote of either family (IPv6 addresses as [`IpAddr`]), and
//! [`rewrite_inner`], [`set_outer_addrs`], [`nat_out`] and [`nat_in`] take
//! addresses of the packet's family. The quoted IPv6 header has no
//! checksum; its TCP/UDP checksum (when quoted) follows the 16-byte
//! addresses and the ports; the ICMPv6 checksum covers the outer
//! pseudo-header, so it is recomputed by [`rewrite_inner`] and updated for
//! the outer addresses by [`set_outer_addrs`]. Only quotes whose IPv6
//! header is directly followed by TCP or UDP are translated (a quoted
//! extension header gives `None`).

use crate::checksum::{delta128, delta32, fold, udp_finish};
use crate::packet::{Kind, Packet, PROTO_TCP, PROTO_UDP};
use crate::wire::icmpv4::{self, Icmpv4Packet};
use crate::wire::icmpv6::{self, Icmpv6Packet};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::ipv6;
use crate::wire::{get_array, get_u16, get_u32, get_u8, set_bytes, set_u16, set_u32, tcp, udp};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Where the quoted IPv6 packet of an ICMPv6 error is: (offset of the
/// quoted IPv6 header, end of the ICMPv6 message, quoted protocol).
fn locate6(frame: &[u8], pkt: &Packet) -> Option<(usize, usize, u8)> {
    if !pkt.is_icmpv6() {
        return None;
    }
    let (l4, end) = (pkt.l4, pkt.ip_end());
    let inner = l4.checked_add(icmpv6::HEADER_LEN)?;
    if end > frame.len() || inner.checked_add(ipv6::HEADER_LEN + 4)? > end {
        return None;
    }
    if !icmpv6::is_error_type(get_u8(frame, l4)) || get_u8(frame, inner) >> 4 != 6 {
        return None;
    }
    let proto = get_u8(frame, inner + ipv6::field::NEXT_HEADER);
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    Some((inner, end, proto))
}

/// [`inner_tuple`] for either family: for an ICMP or ICMPv6 error whose
/// quoted packet is TCP or UDP, the quoted `(protocol, source, source
/// port, destination, destination port)`. `None` as for [`inner_tuple`],
/// and for an ICMPv6 quote with extension headers.
pub fn quoted_tuple(frame: &[u8], pkt: &Packet) -> Option<(u8, IpAddr, u16, IpAddr, u16)> {
    if pkt.kind == Kind::Ipv4 {
        let (p, s, sp, d, dp) = inner_tuple(frame, pkt)?;
        return Some((p, s.into(), sp, d.into(), dp));
    }
    let (inner, _, proto) = locate6(frame, pkt)?;
    let src = Ipv6Addr::from(get_array::<16>(frame, inner + ipv6::field::SRC));
    let dst = Ipv6Addr::from(get_array::<16>(frame, inner + ipv6::field::DST));
    let il4 = inner + ipv6::HEADER_LEN;
    let sport = get_u16(frame, il4 + tcp::field::SRC_PORT);
    let dport = get_u16(frame, il4 + tcp::field::DST_PORT);
    Some((proto, src.into(), sport, dst.into(), dport))
}

/// The ICMPv6 half of [`rewrite_inner`].
fn rewrite_inner6(
    frame: &mut [u8],
    pkt: &Packet,
    (new_src, new_sport): (Ipv6Addr, u16),
    (new_dst, new_dport): (Ipv6Addr, u16),
) -> bool {
    let (IpAddr::V6(outer_src), IpAddr::V6(outer_dst)) = (pkt.src, pkt.dst) else {
        return false;
    };
    let Some((inner, end, proto)) = locate6(frame, pkt) else {
        return false;
    };
    let (src_off, dst_off) = (inner + ipv6::field::SRC, inner + ipv6::field::DST);
    let il4 = inner + ipv6::HEADER_LEN;
    let (sp_off, dp_off) = (il4 + tcp::field::SRC_PORT, il4 + tcp::field::DST_PORT);
    let old_src = Ipv6Addr::from(get_array::<16>(frame, src_off));
    let old_dst = Ipv6Addr::from(get_array::<16>(frame, dst_off));
    let old_sport = get_u16(frame, sp_off);
    let old_dport = get_u16(frame, dp_off);
    set_bytes(frame, src_off, &new_src.octets());
    set_bytes(frame, dst_off, &new_dst.octets());
    set_u16(frame, sp_off, new_sport);
    set_u16(frame, dp_off, new_dport);
    let field = il4
        + if proto == PROTO_TCP {
            tcp::field::CHECKSUM
        } else {
            udp::field::CHECKSUM
        };
    if field + 2 <= end {
        let c = get_u16(frame, field);
        let c = !fold(
            u64::from(!c)
                + delta128(old_src, new_src)
                + delta128(old_dst, new_dst)
                + u64::from(!old_sport)
                + u64::from(new_sport)
                + u64::from(!old_dport)
                + u64::from(new_dport),
        );
        let c = if proto == PROTO_UDP { udp_finish(c) } else { c };
        set_u16(frame, field, c);
    }
    if let Some(m) = frame.get_mut(pkt.l4..end) {
        Icmpv6Packet::new_unchecked(m).fill_checksum(outer_src, outer_dst);
    }
    true
}

/// The ICMPv6 half of [`set_outer_addrs`]: the ICMPv6 checksum follows the
/// pseudo-header.
fn set_outer_addrs6(frame: &mut [u8], pkt: &Packet, new_src: Ipv6Addr, new_dst: Ipv6Addr) -> bool {
    let ck = pkt.l4.saturating_add(icmpv6::field::CHECKSUM);
    if pkt.kind != Kind::Ipv6
        || frame.len() < pkt.l3.saturating_add(ipv6::HEADER_LEN)
        || (pkt.is_icmpv6() && frame.len() < ck.saturating_add(2))
    {
        return false;
    }
    let (src_off, dst_off) = (pkt.l3 + ipv6::field::SRC, pkt.l3 + ipv6::field::DST);
    let old_src = Ipv6Addr::from(get_array::<16>(frame, src_off));
    let old_dst = Ipv6Addr::from(get_array::<16>(frame, dst_off));
    set_bytes(frame, src_off, &new_src.octets());
    set_bytes(frame, dst_off, &new_dst.octets());
    if pkt.is_icmpv6() {
        let c = get_u16(frame, ck);
        let d = delta128(old_src, new_src) + delta128(old_dst, new_dst);
        set_u16(frame, ck, !fold(u64::from(!c) + d));
    }
    true
}

/// Where the quoted packet is: (offset of the quoted IP header, its header
/// length, end of the ICMP message, quoted protocol).
fn locate(frame: &[u8], pkt: &Packet) -> Option<(usize, usize, usize, u8)> {
    if !pkt.is_icmp() {
        return None;
    }
    let (l4, end) = (pkt.l4, pkt.ip_end());
    let inner = l4.checked_add(icmpv4::HEADER_LEN)?;
    if inner > end || end > frame.len() {
        return None;
    }
    let msg = Icmpv4Packet::new_checked(frame.get(l4..end)?).ok()?;
    if !msg.is_error() {
        return None;
    }
    let q = Ipv4Packet::new_unchecked(frame.get(inner..end)?);
    let hl = q.header_len();
    // Header complete, ports present, not a later fragment (no ports).
    if q.version() != 4 || hl < ipv4::MIN_HEADER_LEN || inner + hl + 4 > end || q.frag_offset() != 0
    {
        return None;
    }
    let proto = q.protocol();
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    Some((inner, hl, end, proto))
}

/// For an ICMP error frame whose quoted packet is TCP or UDP: the quoted
/// `(protocol, source, source port, destination, destination port)`, i.e.
/// the packet the error is about, as it was sent. `None` for ICMP queries,
/// other quoted protocols, a quote too short for the IP header and the
/// ports, a quoted non-first fragment, or a `pkt` that does not fit
/// `frame`.
pub fn inner_tuple(frame: &[u8], pkt: &Packet) -> Option<(u8, Ipv4Addr, u16, Ipv4Addr, u16)> {
    let (inner, hl, _, proto) = locate(frame, pkt)?;
    let src = Ipv4Addr::from(get_array::<4>(frame, inner + ipv4::field::SRC));
    let dst = Ipv4Addr::from(get_array::<4>(frame, inner + ipv4::field::DST));
    let sport = get_u16(frame, inner + hl + tcp::field::SRC_PORT);
    let dport = get_u16(frame, inner + hl + tcp::field::DST_PORT);
    Some((proto, src, sport, dst, dport))
}

/// Rewrites the quoted packet of an ICMP error to
/// `new_src:new_sport → new_dst:new_dport`, then fixes the checksums as
/// the module docs say. Returns false, changing nothing, where
/// [`quoted_tuple`] would return `None` or the addresses are not of the
/// packet's family.
pub fn rewrite_inner(
    frame: &mut [u8],
    pkt: &Packet,
    new_src: impl Into<IpAddr>,
    new_sport: u16,
    new_dst: impl Into<IpAddr>,
    new_dport: u16,
) -> bool {
    let (new_src, new_dst) = match (new_src.into(), new_dst.into()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (s, d),
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            return rewrite_inner6(frame, pkt, (s, new_sport), (d, new_dport))
        }
        _ => return false,
    };
    let Some((inner, hl, end, proto)) = locate(frame, pkt) else {
        return false;
    };
    let (src_off, dst_off) = (inner + ipv4::field::SRC, inner + ipv4::field::DST);
    let il4 = inner + hl;
    let (sp_off, dp_off) = (il4 + tcp::field::SRC_PORT, il4 + tcp::field::DST_PORT);
    let old_src = get_u32(frame, src_off);
    let old_dst = get_u32(frame, dst_off);
    let old_sport = get_u16(frame, sp_off);
    let old_dport = get_u16(frame, dp_off);
    let (ns, nd) = (u32::from(new_src), u32::from(new_dst));
    set_u32(frame, src_off, ns);
    set_u32(frame, dst_off, nd);
    set_u16(frame, sp_off, new_sport);
    set_u16(frame, dp_off, new_dport);
    if let Some(h) = frame.get_mut(inner..inner + hl) {
        Ipv4Packet::new_unchecked(h).fill_checksum();
    }

    // The quoted L4 checksum, when the quote reaches it, was a full one.
    let field = il4
        + if proto == PROTO_TCP {
            tcp::field::CHECKSUM
        } else {
            udp::field::CHECKSUM
        };
    if field + 2 <= end {
        let c = get_u16(frame, field);
        if !(proto == PROTO_UDP && c == 0) {
            let c = !fold(
                u64::from(!c)
                    + delta32(old_src, ns)
                    + delta32(old_dst, nd)
                    + u64::from(!old_sport)
                    + u64::from(new_sport)
                    + u64::from(!old_dport)
                    + u64::from(new_dport),
            );
            let c = if proto == PROTO_UDP { udp_finish(c) } else { c };
            set_u16(frame, field, c);
        }
    }

    if let Some(m) = frame.get_mut(pkt.l4..end) {
        Icmpv4Packet::new_unchecked(m).fill_checksum();
    }
    true
}

/// Sets the outer IPv4 source and destination of the frame with an
/// incremental header checksum update (IPv6: the ICMPv6 checksum's, if
/// the packet is ICMPv6). Returns false, changing nothing, if `pkt` is not
/// of the addresses' family or its header does not fit `frame`.
pub fn set_outer_addrs(
    frame: &mut [u8],
    pkt: &Packet,
    new_src: impl Into<IpAddr>,
    new_dst: impl Into<IpAddr>,
) -> bool {
    let (new_src, new_dst) = match (new_src.into(), new_dst.into()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (s, d),
        (IpAddr::V6(s), IpAddr::V6(d)) => return set_outer_addrs6(frame, pkt, s, d),
        _ => return false,
    };
    if pkt.kind != crate::packet::Kind::Ipv4
        || frame.len() < pkt.l3.saturating_add(ipv4::MIN_HEADER_LEN)
    {
        return false;
    }
    let (src_off, dst_off) = (pkt.l3 + ipv4::field::SRC, pkt.l3 + ipv4::field::DST);
    let (old_src, old_dst) = (get_u32(frame, src_off), get_u32(frame, dst_off));
    let (ns, nd) = (u32::from(new_src), u32::from(new_dst));
    set_u32(frame, src_off, ns);
    set_u32(frame, dst_off, nd);
    let c_off = pkt.l3 + ipv4::field::CHECKSUM;
    let c = get_u16(frame, c_off);
    set_u16(
        frame,
        c_off,
        !fold(u64::from(!c) + delta32(old_src, ns) + delta32(old_dst, nd)),
    );
    true
}

/// The outer source (`src`) or destination address as the frame holds it
/// (the caller has checked that the header fits).
fn outer_addr(frame: &[u8], pkt: &Packet, src: bool) -> IpAddr {
    if pkt.kind == Kind::Ipv6 {
        let off = if src {
            ipv6::field::SRC
        } else {
            ipv6::field::DST
        };
        IpAddr::V6(Ipv6Addr::from(get_array::<16>(frame, pkt.l3 + off)))
    } else {
        let off = if src {
            ipv4::field::SRC
        } else {
            ipv4::field::DST
        };
        IpAddr::V4(Ipv4Addr::from(get_u32(frame, pkt.l3 + off)))
    }
}

/// NAT mode, real-server side → client: the error is about a request
/// after DNAT (quoted CIP:cport → RIP:rport). The quoted destination
/// becomes `vip:vport` and the outer source `vip` (whoever sent the error:
/// the client must see it come from the address it talked to). Returns
/// false, changing nothing, where [`inner_tuple`] would return `None`.
pub fn nat_out(frame: &mut [u8], pkt: &Packet, vip: impl Into<IpAddr>, vport: u16) -> bool {
    let vip = vip.into();
    let Some((_, src, sport, _, _)) = quoted_tuple(frame, pkt) else {
        return false;
    };
    let outer_dst = outer_addr(frame, pkt, false);
    if src.is_ipv4() != vip.is_ipv4() {
        return false;
    }
    rewrite_inner(frame, pkt, src, sport, vip, vport) && set_outer_addrs(frame, pkt, vip, outer_dst)
}

/// NAT mode, client side → real server: the error is about a reply after
/// SNAT (quoted VIP:vport → CIP:cport). The quoted source becomes
/// `rip:rport` and the outer destination `rip`. Returns false, changing
/// nothing, where [`inner_tuple`] would return `None`.
pub fn nat_in(frame: &mut [u8], pkt: &Packet, rip: impl Into<IpAddr>, rport: u16) -> bool {
    let rip = rip.into();
    let Some((_, _, _, dst, dport)) = quoted_tuple(frame, pkt) else {
        return false;
    };
    let outer_src = outer_addr(frame, pkt, true);
    if dst.is_ipv4() != rip.is_ipv4() {
        return false;
    }
    rewrite_inner(frame, pkt, rip, rport, dst, dport) && set_outer_addrs(frame, pkt, outer_src, rip)
}
