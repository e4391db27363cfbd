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

use crate::checksum::{delta32, fold, udp_finish};
use crate::packet::{Packet, PROTO_TCP, PROTO_UDP};
use crate::wire::icmpv4::{self, Icmpv4Packet};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::{get_array, get_u16, get_u32, set_u16, set_u32, tcp, udp};
use std::net::Ipv4Addr;

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
/// [`inner_tuple`] would return `None`.
pub fn rewrite_inner(
    frame: &mut [u8],
    pkt: &Packet,
    new_src: Ipv4Addr,
    new_sport: u16,
    new_dst: Ipv4Addr,
    new_dport: u16,
) -> bool {
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
/// incremental header checksum update. Returns false, changing nothing, if
/// `pkt` is not IPv4 or its header does not fit `frame`.
pub fn set_outer_addrs(
    frame: &mut [u8],
    pkt: &Packet,
    new_src: Ipv4Addr,
    new_dst: Ipv4Addr,
) -> bool {
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

/// NAT mode, real-server side → client: the error is about a request
/// after DNAT (quoted CIP:cport → RIP:rport). The quoted destination
/// becomes `vip:vport` and the outer source `vip` (whoever sent the error:
/// the client must see it come from the address it talked to). Returns
/// false, changing nothing, where [`inner_tuple`] would return `None`.
pub fn nat_out(frame: &mut [u8], pkt: &Packet, vip: Ipv4Addr, vport: u16) -> bool {
    let Some((_, src, sport, _, _)) = inner_tuple(frame, pkt) else {
        return false;
    };
    let outer_dst = Ipv4Addr::from(get_u32(frame, pkt.l3 + ipv4::field::DST));
    rewrite_inner(frame, pkt, src, sport, vip, vport) && set_outer_addrs(frame, pkt, vip, outer_dst)
}

/// NAT mode, client side → real server: the error is about a reply after
/// SNAT (quoted VIP:vport → CIP:cport). The quoted source becomes
/// `rip:rport` and the outer destination `rip`. Returns false, changing
/// nothing, where [`inner_tuple`] would return `None`.
pub fn nat_in(frame: &mut [u8], pkt: &Packet, rip: Ipv4Addr, rport: u16) -> bool {
    let Some((_, _, _, dst, dport)) = inner_tuple(frame, pkt) else {
        return false;
    };
    let outer_src = Ipv4Addr::from(get_u32(frame, pkt.l3 + ipv4::field::SRC));
    rewrite_inner(frame, pkt, rip, rport, dst, dport) && set_outer_addrs(frame, pkt, outer_src, rip)
}
