//! IP tunnelling (`ipvsadm -i`, IPIP, RFC 2003; IPv6-in-IPv6, RFC 2473):
//! [`encapsulate`] puts a 20-byte outer IPv4 header (protocol 4) in front
//! of the client's IPv4 packet, or a 40-byte outer IPv6 header (next header
//! 41) in front of an IPv6 one, in place; [`decapsulate`] finds the inner
//! packet again (for the user-space decapsulator on a real server);
//! [`mss_clamp`] lowers the MSS a SYN announces so that segments still fit
//! the path MTU once the outer header is added ([`max_mss`]). The outer
//! header is of the inner packet's family (no 4in6 or 6in4).
//!
//! Offloads: virtio-net has no GSO type for IP-in-IP and no way to describe
//! a partial checksum behind an outer header, so a frame must be turned
//! into plain, fully checksummed packets *before* [`encapsulate`]: a GSO
//! super-frame with [`crate::gso::segment_tcp4`], a single partial
//! (`NEEDS_CSUM`) frame with [`crate::offload::complete_partial`]. The
//! encapsulated frame is then written with an all-zero vnet header. The
//! same holds for IPv6-in-IPv6: a TCPv6 super-frame is cut with
//! [`crate::gso::segment_tcp6`] first.

use crate::checksum::update16;
use crate::nat::Csum;
use crate::packet::{Kind, Packet};
use crate::wire::ipv4::{self, Ipv4Packet, PROTO_IPIP};
use crate::wire::ipv6::{self, Ipv6Packet};
use crate::wire::tcp;
use crate::wire::{get_u16, get_u32, get_u8, set_u16, set_u32};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Bytes [`encapsulate`] adds to an IPv4 packet: one option-less IPv4
/// header.
pub const OVERHEAD: usize = ipv4::MIN_HEADER_LEN;
/// Bytes [`encapsulate`] adds to an IPv6 packet: one IPv6 header.
pub const OVERHEAD6: usize = ipv6::HEADER_LEN;

/// The outer header's size for `pkt`'s family ([`OVERHEAD`] or
/// [`OVERHEAD6`]).
#[inline]
pub const fn overhead(pkt: &Packet) -> usize {
    match pkt.kind {
        Kind::Ipv6 => OVERHEAD6,
        _ => OVERHEAD,
    }
}

/// The largest MSS a tunnelled TCP SYN of `pkt`'s family may announce for
/// a path MTU `mtu`: `mtu` − outer − inner IP header − 20 (IPv4: − 60,
/// IPv6: − 100), 0 if the MTU is smaller.
#[inline]
pub const fn max_mss(pkt: &Packet, mtu: u32) -> u16 {
    let ip = match pkt.kind {
        Kind::Ipv6 => ipv6::HEADER_LEN,
        _ => ipv4::MIN_HEADER_LEN,
    };
    let m = mtu.saturating_sub((overhead(pkt) + ip + tcp::MIN_HEADER_LEN) as u32);
    if m > u16::MAX as u32 {
        u16::MAX
    } else {
        m as u16
    }
}

/// Encapsulates the IPv4 packet of the Ethernet frame `buf[..frame_len]`
/// (classified as `pkt`) in IPIP: the inner packet moves right by
/// [`OVERHEAD`] bytes and an outer header is written in its place with
/// version 4, IHL 5, the inner TOS, total length = 20 + inner total length,
/// the inner identification, DF copied from the inner header (MF and
/// fragment offset 0), TTL `outer_ttl`, protocol 4, `outer_src` →
/// `outer_dst` and a computed header checksum. The Ethernet header stays
/// (the caller sets the MACs for the real server); Ethernet padding after
/// the inner packet is dropped. The inner packet is not modified at all
/// (its TTL included); its L4 checksum must already be complete (see the
/// module docs).
///
/// Returns the new frame length, or `None`, changing nothing, if `pkt` is
/// not IPv4 inside `buf[..frame_len]`, `buf` has no room for 20 more bytes
/// or the outer packet would exceed 65535 bytes.
///
/// IPv6 (`pkt` and both outer addresses IPv6): the inner packet moves right
/// by [`OVERHEAD6`] and the outer header gets version 6, the inner traffic
/// class and flow label, payload length = the inner packet's length (40 +
/// its payload length, at most 65535), next header 41, hop limit
/// `outer_ttl`. Addresses of mixed families give `None`.
#[inline]
pub fn encapsulate(
    buf: &mut [u8],
    frame_len: usize,
    pkt: &Packet,
    outer_src: impl Into<IpAddr>,
    outer_dst: impl Into<IpAddr>,
    outer_ttl: u8,
) -> Option<usize> {
    match (outer_src.into(), outer_dst.into()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => encapsulate4(buf, frame_len, pkt, s, d, outer_ttl),
        (IpAddr::V6(s), IpAddr::V6(d)) => encapsulate6(buf, frame_len, pkt, s, d, outer_ttl),
        _ => None,
    }
}

/// The IPv6-in-IPv6 half of [`encapsulate`].
fn encapsulate6(
    buf: &mut [u8],
    frame_len: usize,
    pkt: &Packet,
    outer_src: Ipv6Addr,
    outer_dst: Ipv6Addr,
    outer_ttl: u8,
) -> Option<usize> {
    let (l3, end) = (pkt.l3, pkt.ip_end());
    if pkt.kind != Kind::Ipv6 || frame_len > buf.len() || end > frame_len {
        return None;
    }
    let inner_len = end.checked_sub(l3)?;
    if inner_len < ipv6::HEADER_LEN {
        return None;
    }
    let plen = u16::try_from(inner_len).ok()?;
    let new_end = end + OVERHEAD6;
    if new_end > buf.len() {
        return None;
    }
    // Version, traffic class and flow label of the inner header.
    let vtf = get_u32(buf, l3 + ipv6::field::VER_TC_FLOW);
    if vtf >> 28 != 6 {
        return None;
    }
    buf.copy_within(l3..end, l3 + OVERHEAD6);
    set_u32(buf, l3 + ipv6::field::VER_TC_FLOW, vtf);
    let mut outer = Ipv6Packet::new_unchecked(buf.get_mut(l3..l3 + OVERHEAD6)?);
    outer.set_payload_len(plen);
    outer.set_next_header(ipv6::NH_IPV6);
    outer.set_hop_limit(outer_ttl);
    outer.set_src_addr(outer_src);
    outer.set_dst_addr(outer_dst);
    Some(new_end)
}

/// The IPIP half of [`encapsulate`].
fn encapsulate4(
    buf: &mut [u8],
    frame_len: usize,
    pkt: &Packet,
    outer_src: Ipv4Addr,
    outer_dst: Ipv4Addr,
    outer_ttl: u8,
) -> Option<usize> {
    let (l3, end) = (pkt.l3, pkt.ip_end());
    if pkt.kind != Kind::Ipv4 || frame_len > buf.len() || end > frame_len || l3 >= end {
        return None;
    }
    let inner = Ipv4Packet::new_checked(buf.get(l3..end)?).ok()?;
    let (tos, ident, df) = (inner.tos(), inner.ident(), inner.dont_frag());
    let total = u16::try_from(usize::from(inner.total_len()) + OVERHEAD).ok()?;
    let new_end = end + OVERHEAD;
    if new_end > buf.len() {
        return None;
    }
    buf.copy_within(l3..end, l3 + OVERHEAD);
    let mut outer = Ipv4Packet::new_unchecked(buf.get_mut(l3..l3 + OVERHEAD)?);
    outer.set_version(4);
    outer.set_ihl(5);
    outer.set_tos(tos);
    outer.set_total_len(total);
    outer.set_ident(ident);
    outer.set_frag_offset(0);
    outer.set_more_frags(false);
    outer.set_dont_frag(df);
    outer.set_ttl(outer_ttl);
    outer.set_protocol(PROTO_IPIP);
    outer.set_src_addr(outer_src);
    outer.set_dst_addr(outer_dst);
    outer.fill_checksum();
    Some(new_end)
}

/// Validates an IPIP packet that starts at `buf[0]` (the outer IPv4
/// header, no Ethernet header): outer version 4, sane IHL and total length,
/// correct header checksum, protocol 4, not a fragment; inner packet a
/// complete IPv4 header (version, IHL, checksum) whose total length fits
/// the outer payload. Returns the inner packet's offset in `buf` (the outer
/// header length) and its total length, or `None`.
///
/// An IPv6 outer header (version 6) is IPv6-in-IPv6: the outer payload
/// length must fit `buf`, its next header (after any extension headers,
/// walked as [`crate::packet::parse`] does; fragments refused) must be 41,
/// and the inner packet must pass [`inner_ipv6`] within the outer payload.
/// The inner packet is then at the returned offset (40 plus the outer
/// extension headers).
pub fn decapsulate(buf: &[u8]) -> Option<(usize, usize)> {
    if get_u8(buf, 0) >> 4 == 6 {
        return decapsulate6(buf);
    }
    let outer = Ipv4Packet::new_checked(buf).ok()?;
    if !outer.verify_checksum() || outer.protocol() != PROTO_IPIP || outer.is_fragment() {
        return None;
    }
    let inner = Ipv4Packet::new_checked(outer.payload()).ok()?;
    if !inner.verify_checksum() {
        return None;
    }
    Some((outer.header_len(), usize::from(inner.total_len())))
}

/// The IPv6-in-IPv6 half of [`decapsulate`].
fn decapsulate6(buf: &[u8]) -> Option<(usize, usize)> {
    let (nh, off) = ipv6::upper_layer(buf).ok()?;
    if nh != ipv6::NH_IPV6 {
        return None;
    }
    let end = ipv6::HEADER_LEN + usize::from(get_u16(buf, ipv6::field::PAYLOAD_LEN));
    let len = inner_ipv6(buf.get(off..end)?)?;
    Some((off, len))
}

/// Validates an IPv6 packet at `buf[0]` as a tunnel's inner packet:
/// version 6, a whole header, and 40 + payload length ≤ `buf.len()`.
/// Returns its length (40 + payload length). A raw IPv6 socket of
/// protocol 41 delivers the inner packet without the outer header; this is
/// the check for that case.
pub fn inner_ipv6(buf: &[u8]) -> Option<usize> {
    let h = buf.first_chunk::<{ ipv6::HEADER_LEN }>()?;
    if get_u8(h, 0) >> 4 != 6 {
        return None;
    }
    let len = ipv6::HEADER_LEN + usize::from(get_u16(h, ipv6::field::PAYLOAD_LEN));
    (len <= buf.len()).then_some(len)
}

/// Lowers the MSS option of a TCP SYN (or SYN/ACK) to `max_mss` if it
/// announces more, updating the TCP checksum incrementally: a full checksum
/// by RFC 1624 (the option may sit at an odd offset; that is handled), a
/// partial one ([`Csum::Partial`]) not at all, since the pseudo-header does
/// not change. Returns true if the option was rewritten; false, changing
/// nothing, for a non-SYN, a segment without (or with a malformed) MSS
/// option, an MSS already ≤ `max_mss`, or a `pkt` that does not fit
/// `frame`.
///
/// For TUN mode: `max_mss` = path MTU − 20 (outer) − 20 (IP) − 20 (TCP),
/// over IPv6 path MTU − 40 − 40 − 20 ([`max_mss`]). The option is found
/// the same way in either family (from `pkt.l4`).
pub fn mss_clamp(frame: &mut [u8], pkt: &Packet, csum: Csum, max_mss: u16) -> bool {
    if !pkt.is_tcp() || pkt.tcp_flags & tcp::SYN == 0 {
        return false;
    }
    let hdr_end = pkt.l4.saturating_add(pkt.l4_header_len());
    let opts_start = pkt.l4.saturating_add(tcp::field::OPTIONS);
    let Some(opts) = frame.get(opts_start..hdr_end) else {
        return false;
    };
    let Some((at, 4)) = tcp::find_option(opts, tcp::OPT_MSS) else {
        return false;
    };
    let field = opts_start + at + 2;
    let old = get_u16(frame, field);
    if old <= max_mss {
        return false;
    }
    set_u16(frame, field, max_mss);
    if csum == Csum::Full {
        let c_off = pkt.l4 + tcp::field::CHECKSUM;
        let c = get_u16(frame, c_off);
        // A 16-bit field at an odd offset of the segment contributes its
        // bytes swapped to the one's-complement sum.
        let c = if (field - pkt.l4) % 2 == 0 {
            update16(c, old, max_mss)
        } else {
            update16(c, old.swap_bytes(), max_mss.swap_bytes())
        };
        set_u16(frame, c_off, c);
    }
    true
}

/// True if the frame's IPv4 packet has the DF flag (false for anything
/// that is not IPv4 in `frame`). With DF, a packet that no longer fits the
/// MTU once encapsulated gets an ICMP "fragmentation needed" with
/// MTU − [`OVERHEAD`] instead of being tunnelled. Always true for IPv6
/// (routers never fragment it: a packet too big for the tunnel gets a
/// Packet Too Big with MTU − [`OVERHEAD6`]).
pub fn dont_fragment(frame: &[u8], pkt: &Packet) -> bool {
    if pkt.kind == Kind::Ipv6 {
        return true;
    }
    pkt.kind == Kind::Ipv4
        && frame.len() >= pkt.l3.saturating_add(ipv4::MIN_HEADER_LEN)
        && get_u8(frame, pkt.l3 + ipv4::field::FLAGS_FRAG) & 0x40 != 0
}
