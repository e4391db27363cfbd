//! NAT64 for FullNAT (DPVS's `nat64`): an IPv6 VIP served by IPv4 real
//! servers. [`to_v4`] turns a client's IPv6 TCP/UDP packet into an IPv4
//! one from a local IPv4 address to the real server; [`to_v6`] turns the
//! server's IPv4 reply back into an IPv6 packet from the VIP to the
//! client. Both translate in place (RFC 7915 header mapping, stateful: the
//! caller's connection entry holds the four addresses and ports).
//!
//! * IPv6 → IPv4: the IPv6 header and any extension headers are replaced
//!   by a 20-byte IPv4 header, the L4 data moves left (the frame gets 20
//!   or more bytes shorter): TOS from the traffic class, identification 0,
//!   DF set, TTL from the hop limit (decrement it first), computed header
//!   checksum.
//! * IPv4 → IPv6: the IPv4 header (options included) is replaced by a
//!   40-byte IPv6 header, the L4 data moves right (the caller leaves room
//!   for up to 20 more bytes): traffic class from the TOS, flow label 0,
//!   hop limit from the TTL, no extension headers.
//! * The TCP/UDP checksum is moved from one pseudo-header to the other and
//!   the ports rewritten, by one incremental update, for full and partial
//!   (`NEEDS_CSUM`) checksums alike. A UDP checksum of 0 (none, allowed
//!   over IPv4) is computed in full on the way to IPv6, where it is
//!   mandatory; a computed 0 is sent as `0xffff`.
//! * Offloads: given the frame's vnet header, `csum_start` and `hdr_len`
//!   follow the header length change and a GSO type TCPV6 becomes TCPV4
//!   (and back), ECN bit kept, so a TCP super-frame stays one super-frame
//!   (`gso_size` unchanged: the MSS does not depend on the IP header).
//!   UDP super-frames do not exist here ([`crate::packet::parse`] refuses
//!   them).
//! * TOA: the client's IPv6 address reaches the IPv4 server in the IPv6
//!   TOA option (kind 253): after [`to_v4`], parse the new frame and call
//!   [`crate::toa::insert_toa`] with the IPv6 client address.
//!
//! * ICMP errors from the IPv4 side ([`icmp_to_v6`], RFC 7915 §4.2): an
//!   ICMPv4 error about a packet the appliance sent to an IPv4 server
//!   becomes the ICMPv6 error the client would have got about its own
//!   packet: destination unreachable (codes mapped: port unreachable 4,
//!   administratively prohibited 1, the rest no route 0), fragmentation
//!   needed as Packet Too Big with the MTU 20 bytes larger (at least
//!   1280), time exceeded with its code. The quoted IPv4 header becomes
//!   the IPv6 header the client sent (client → VIP), the quoted ports and
//!   (when quoted whole) TCP/UDP checksum follow, and the quote is cut so
//!   the error fits the IPv6 minimum MTU. Other ICMPv4 errors (parameter
//!   problem, source quench, redirects, unknown codes) give `None`.
//!
//! Not translated: ICMP echo (echo to the VIP is answered by the
//! appliance), ICMPv6 errors from the client's side, other protocols.

use crate::checksum::{self, fold, udp_finish};
use crate::nat::Csum;
use crate::packet::{Kind, Packet, PROTO_TCP, PROTO_UDP};
use crate::wire::ethernet::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::ipv6::{self, Ipv6Packet};
use crate::wire::vnet::{VnetHdr, GSO_ECN, GSO_TCPV4, GSO_TCPV6};
use crate::wire::{get_u16, get_u32, get_u8, icmpv4, icmpv6, set_u16, set_u32, tcp, udp};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Bytes an IPv4 header without options is shorter than an IPv6 one.
pub const SHRINK: usize = ipv6::HEADER_LEN - ipv4::MIN_HEADER_LEN;

/// Offset of the L4 checksum field for TCP/UDP, and whether it is UDP.
fn l4_csum_field(proto: u8) -> Option<(usize, bool)> {
    match proto {
        PROTO_TCP => Some((tcp::field::CHECKSUM, false)),
        PROTO_UDP => Some((udp::field::CHECKSUM, true)),
        _ => None,
    }
}

/// Where a TCP/UDP packet of family `kind` lies in `buf[..frame_len]`:
/// (L4 checksum offset, UDP, L3 offset, L4 offset, end of the IP packet),
/// or `None` unless it is such a packet right after the Ethernet header,
/// with its checksum field inside.
fn segment(
    buf: &[u8],
    frame_len: usize,
    pkt: &Packet,
    kind: Kind,
) -> Option<(usize, bool, usize, usize, usize)> {
    let (ck, is_udp) = l4_csum_field(pkt.proto)?;
    let (l3, l4, end) = (pkt.l3, pkt.l4, pkt.ip_end());
    let min_l3 = match kind {
        Kind::Ipv6 => ipv6::HEADER_LEN,
        _ => ipv4::MIN_HEADER_LEN,
    };
    if pkt.kind != kind
        || frame_len > buf.len()
        || end > frame_len
        || l3 != ethernet::HEADER_LEN
        || l4 < l3 + min_l3
        || l4 + ck + 2 > end
    {
        return None;
    }
    Some((ck, is_udp, l3, l4, end))
}

/// Moves the vnet header's offsets by `delta` bytes (negative: the L3
/// header got shorter) and sets its GSO type to `gso` (ECN kept) if it is
/// a TCP GSO frame.
fn adjust_vnet(hdr: Option<&mut VnetHdr>, delta: isize, gso: u8) {
    let Some(h) = hdr else {
        return;
    };
    if h.needs_csum() {
        h.csum_start = shift_u16(h.csum_start, delta);
    }
    if h.hdr_len != 0 {
        h.hdr_len = shift_u16(h.hdr_len, delta);
    }
    if h.is_gso() && matches!(h.gso_type & !GSO_ECN, GSO_TCPV4 | GSO_TCPV6) {
        h.gso_type = gso | (h.gso_type & GSO_ECN);
    }
}

/// `v + delta`, clamped to a u16.
fn shift_u16(v: u16, delta: isize) -> u16 {
    (v as isize + delta).clamp(0, 0xffff) as u16
}

/// Client → real server: translates the IPv6 TCP/UDP packet of the
/// Ethernet frame `buf[..frame_len]` (classified as `pkt`) into IPv4 from
/// `src:sport` to `dst:dport` (the local address and the real server), as
/// the module docs say, and adjusts `hdr` if given. `csum` says whether
/// the L4 checksum is full or partial ([`Csum::from_vnet`] of the
/// original). Returns the new frame length, or `None`, changing nothing,
/// if `pkt` is not IPv6 TCP/UDP inside `buf[..frame_len]` or the segment
/// is too long for an IPv4 packet.
pub fn to_v4(
    buf: &mut [u8],
    frame_len: usize,
    pkt: &Packet,
    csum: Csum,
    hdr: Option<&mut VnetHdr>,
    (src, sport): (Ipv4Addr, u16),
    (dst, dport): (Ipv4Addr, u16),
) -> Option<usize> {
    let (IpAddr::V6(old_src), IpAddr::V6(old_dst)) = (pkt.src, pkt.dst) else {
        return None;
    };
    let (ck, is_udp, l3, l4, end) = segment(buf, frame_len, pkt, Kind::Ipv6)?;
    let seg_len = end - l4;
    let total = u16::try_from(seg_len + ipv4::MIN_HEADER_LEN).ok()?;
    let seg_len16 = seg_len as u16;
    let tos = ((get_u16(buf, l3) >> 4) & 0xff) as u8;
    let ttl = get_u8(buf, l3 + ipv6::field::HOP_LIMIT);
    let (old_sport, old_dport) = (get_u16(buf, l4), get_u16(buf, l4 + 2));
    let c = get_u16(buf, l4 + ck);

    // One update: old pseudo-header out, new one in, ports.
    let ph6 = checksum::pseudo_header_v6(old_src, old_dst, pkt.proto, u32::from(seg_len16));
    let ph4 = checksum::pseudo_header_v4(src, dst, pkt.proto, seg_len16);
    let delta = u64::from(!ph6) + u64::from(ph4);
    let ports = checksum::delta16(old_sport, sport) + checksum::delta16(old_dport, dport);
    let c = match csum {
        Csum::Partial => fold(u64::from(c) + delta),
        Csum::Full => {
            let c = !fold(u64::from(!c) + delta + ports);
            if is_udp {
                udp_finish(c)
            } else {
                c
            }
        }
    };

    let new_l4 = l3 + ipv4::MIN_HEADER_LEN;
    buf.copy_within(l4..end, new_l4);
    set_u16(buf, new_l4, sport);
    set_u16(buf, new_l4 + 2, dport);
    set_u16(buf, new_l4 + ck, c);
    set_u16(buf, ethernet::field::ETHERTYPE, ETHERTYPE_IPV4);
    let h = buf.get_mut(l3..new_l4)?;
    h.fill(0);
    let mut ip = Ipv4Packet::new_unchecked(h);
    ip.set_version(4);
    ip.set_ihl(5);
    ip.set_tos(tos);
    ip.set_total_len(total);
    ip.set_ident(0);
    ip.set_dont_frag(true);
    ip.set_ttl(ttl);
    ip.set_protocol(pkt.proto);
    ip.set_src_addr(src);
    ip.set_dst_addr(dst);
    ip.fill_checksum();
    adjust_vnet(hdr, new_l4 as isize - l4 as isize, GSO_TCPV4);
    Some(new_l4 + seg_len)
}

/// Real server → client: translates the IPv4 TCP/UDP reply of the Ethernet
/// frame `buf[..frame_len]` (classified as `pkt`) into IPv6 from
/// `src:sport` to `dst:dport` (the VIP and the client), as the module docs
/// say, and adjusts `hdr` if given. `buf` must have room for the frame to
/// grow by up to [`SHRINK`] bytes. Returns the new frame length, or
/// `None`, changing nothing, if `pkt` is not IPv4 TCP/UDP inside
/// `buf[..frame_len]` or there is no room.
pub fn to_v6(
    buf: &mut [u8],
    frame_len: usize,
    pkt: &Packet,
    csum: Csum,
    hdr: Option<&mut VnetHdr>,
    (src, sport): (Ipv6Addr, u16),
    (dst, dport): (Ipv6Addr, u16),
) -> Option<usize> {
    let (IpAddr::V4(old_src), IpAddr::V4(old_dst)) = (pkt.src, pkt.dst) else {
        return None;
    };
    let (ck, is_udp, l3, l4, end) = segment(buf, frame_len, pkt, Kind::Ipv4)?;
    let seg_len = end - l4;
    let seg_len16 = u16::try_from(seg_len).ok()?;
    let new_l4 = l3 + ipv6::HEADER_LEN;
    let new_end = new_l4 + seg_len;
    if new_end > buf.len() {
        return None;
    }
    let tos = get_u8(buf, l3 + 1);
    let ttl = get_u8(buf, l3 + 8);
    let (old_sport, old_dport) = (get_u16(buf, l4), get_u16(buf, l4 + 2));
    let c = get_u16(buf, l4 + ck);

    buf.copy_within(l4..end, new_l4);
    set_u16(buf, new_l4, sport);
    set_u16(buf, new_l4 + 2, dport);
    let c = if is_udp && csum == Csum::Full && c == 0 {
        // No checksum over IPv4; mandatory over IPv6: compute it.
        set_u16(buf, new_l4 + ck, 0);
        let seg = buf.get(new_l4..new_end)?;
        udp_finish(checksum::l4_checksum_v6(src, dst, PROTO_UDP, seg))
    } else {
        let ph4 = checksum::pseudo_header_v4(old_src, old_dst, pkt.proto, seg_len16);
        let ph6 = checksum::pseudo_header_v6(src, dst, pkt.proto, u32::from(seg_len16));
        let delta = u64::from(!ph4) + u64::from(ph6);
        let ports = checksum::delta16(old_sport, sport) + checksum::delta16(old_dport, dport);
        match csum {
            Csum::Partial => fold(u64::from(c) + delta),
            Csum::Full => {
                let c = !fold(u64::from(!c) + delta + ports);
                if is_udp {
                    udp_finish(c)
                } else {
                    c
                }
            }
        }
    };
    set_u16(buf, new_l4 + ck, c);
    set_u16(buf, ethernet::field::ETHERTYPE, ETHERTYPE_IPV6);
    let h = buf.get_mut(l3..new_l4)?;
    h.fill(0);
    let repr = ipv6::Ipv6Repr {
        src,
        dst,
        next_header: pkt.proto,
        payload_len: seg_len16,
        hop_limit: ttl,
    };
    let mut ip = Ipv6Packet::new_unchecked(h);
    repr.emit(&mut ip);
    ip.set_traffic_class(tos);
    adjust_vnet(hdr, new_l4 as isize - l4 as isize, GSO_TCPV6);
    Some(new_end)
}

/// The ICMPv6 (type, code) for an ICMPv4 error (RFC 7915 §4.2), `None` for
/// what is not translated.
fn icmp6_kind(kind: u8, code: u8) -> Option<(u8, u8)> {
    match (kind, code) {
        (icmpv4::TYPE_DEST_UNREACHABLE, 3) => Some((icmpv6::TYPE_DEST_UNREACHABLE, 4)),
        (icmpv4::TYPE_DEST_UNREACHABLE, 4) => Some((icmpv6::TYPE_PACKET_TOO_BIG, 0)),
        (icmpv4::TYPE_DEST_UNREACHABLE, 9 | 10 | 13 | 15) => {
            Some((icmpv6::TYPE_DEST_UNREACHABLE, 1))
        }
        (icmpv4::TYPE_DEST_UNREACHABLE, 0 | 1 | 5..=8 | 11 | 12) => {
            Some((icmpv6::TYPE_DEST_UNREACHABLE, 0))
        }
        (icmpv4::TYPE_TIME_EXCEEDED, c @ (0 | 1)) => Some((icmpv6::TYPE_TIME_EXCEEDED, c)),
        _ => None,
    }
}

/// Translates in place the ICMPv4 error `pkt` (an Ethernet/IPv4 frame of
/// `frame_len` bytes in `buf`, whose quote is the TCP/UDP packet the
/// appliance sent a NAT64 connection's server) into the ICMPv6 error for
/// its client: from `vip` to `client`, quoting the packet as the client
/// sent it (`client` → `vip`, ports as given). `buf` needs room for the
/// frame to grow by 40 bytes (less once the quote is cut to fit 1280
/// bytes). The vnet header, if any, is cleared of offloads (the ICMPv6
/// checksum is complete). Returns the new frame length, or `None` (the
/// frame unchanged) for what is not translated.
pub fn icmp_to_v6(
    buf: &mut [u8],
    frame_len: usize,
    pkt: &Packet,
    hdr: Option<&mut VnetHdr>,
    (client, cport): (Ipv6Addr, u16),
    (vip, vport): (Ipv6Addr, u16),
) -> Option<usize> {
    let (l3, l4, end) = (pkt.l3, pkt.l4, pkt.ip_end());
    if pkt.kind != Kind::Ipv4
        || pkt.proto != ipv4::PROTO_ICMP
        || frame_len > buf.len()
        || end > frame_len
        || l3 != ethernet::HEADER_LEN
    {
        return None;
    }
    let (kind, code) = icmp6_kind(get_u8(buf, l4), get_u8(buf, l4 + 1))?;
    let q = l4 + icmpv4::HEADER_LEN;
    let qihl = usize::from(get_u8(buf, q) & 0x0f) * 4;
    if get_u8(buf, q) >> 4 != 4 || qihl < ipv4::MIN_HEADER_LEN {
        return None;
    }
    let qproto = get_u8(buf, q + 9);
    let ql4 = q + qihl;
    if ql4 + 8 > end {
        return None;
    }
    let (ck, is_udp) = l4_csum_field(qproto)?;
    // The quoted packet's own segment length (not what is quoted of it).
    let seg_len = usize::from(get_u16(buf, q + 2)).checked_sub(qihl)?;
    let seg_len16 = u16::try_from(seg_len).ok()?;
    let (qtos, qttl) = (get_u8(buf, q + 1), get_u8(buf, q + 8));
    let qsrc = Ipv4Addr::from(get_u32(buf, q + 12));
    let qdst = Ipv4Addr::from(get_u32(buf, q + 16));
    let (ttl, mtu4) = (get_u8(buf, l3 + 8), get_u16(buf, l4 + 6));

    // New layout: IPv6 (40), ICMPv6 (8), quoted IPv6 (40), quoted L4 cut to fit 1280.
    let new_l4 = l3 + ipv6::HEADER_LEN;
    let new_q = new_l4 + icmpv6::HEADER_LEN;
    let new_ql4 = new_q + ipv6::HEADER_LEN;
    let quoted = (end - ql4).min(icmpv6::MAX_QUOTE - ipv6::HEADER_LEN);
    let new_end = new_ql4 + quoted;
    if new_end > buf.len() {
        return None;
    }
    let (old_sport, old_dport) = (get_u16(buf, ql4), get_u16(buf, ql4 + 2));
    buf.copy_within(ql4..ql4 + quoted, new_ql4);
    set_u16(buf, new_ql4, cport);
    set_u16(buf, new_ql4 + 2, vport);
    if ck + 2 <= quoted {
        let c = get_u16(buf, new_ql4 + ck);
        if !(is_udp && c == 0) {
            let ph4 = checksum::pseudo_header_v4(qsrc, qdst, qproto, seg_len16);
            let ph6 = checksum::pseudo_header_v6(client, vip, qproto, u32::from(seg_len16));
            let delta = u64::from(!ph4)
                + u64::from(ph6)
                + checksum::delta16(old_sport, cport)
                + checksum::delta16(old_dport, vport);
            let c = !fold(u64::from(!c) + delta);
            set_u16(buf, new_ql4 + ck, if is_udp { udp_finish(c) } else { c });
        }
    }
    // The quoted IPv6 header: the packet as the client sent it.
    let mut qip = Ipv6Packet::new_unchecked(buf.get_mut(new_q..new_ql4)?);
    ipv6::Ipv6Repr {
        src: client,
        dst: vip,
        next_header: qproto,
        payload_len: seg_len16,
        hop_limit: qttl,
    }
    .emit(&mut qip);
    qip.set_traffic_class(qtos);
    // The ICMPv6 header.
    let icmp = buf.get_mut(new_l4..new_q)?;
    icmp.copy_from_slice(&[kind, code, 0, 0, 0, 0, 0, 0]);
    if kind == icmpv6::TYPE_PACKET_TOO_BIG {
        let mtu = (u32::from(mtu4) + 20).max(icmpv6::MIN_MTU as u32);
        set_u32(buf, new_l4 + icmpv6::field::MTU, mtu);
    }
    // The outer IPv6 header, from the VIP to the client.
    let msg_len = u16::try_from(new_end - new_l4).ok()?;
    let mut ip = Ipv6Packet::new_unchecked(buf.get_mut(l3..new_l4)?);
    ipv6::Ipv6Repr {
        src: vip,
        dst: client,
        next_header: ipv6::NH_ICMPV6,
        payload_len: msg_len,
        hop_limit: ttl,
    }
    .emit(&mut ip);
    ip.set_traffic_class(0);
    set_u16(buf, ethernet::field::ETHERTYPE, ETHERTYPE_IPV6);
    let sum = checksum::l4_checksum_v6(vip, client, ipv6::NH_ICMPV6, buf.get(new_l4..new_end)?);
    set_u16(buf, new_l4 + icmpv6::field::CHECKSUM, sum);
    if let Some(h) = hdr {
        *h = VnetHdr::default();
    }
    Some(new_end)
}
