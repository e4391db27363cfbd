//! Slow-path frames the appliance originates as a host: ARP replies,
//! requests and announcements, IPv6 Neighbor Discovery (advertisements in
//! answer to solicitations, unsolicited advertisements, solicitations),
//! ICMP/ICMPv6 echo replies, TCP RSTs for closed ports and ICMP/ICMPv6
//! errors (destination unreachable, fragmentation needed / packet too big,
//! time exceeded). Each builder writes a complete Ethernet frame (no vnet header,
//! no padding to 60 bytes) into the caller's `out` buffer and returns its
//! length, or `None` if `out` is too small or the trigger must not (or
//! cannot) be answered. No allocation.
//!
//! Generated IPv4 headers have no options and TTL 64. TCP RSTs carry DF and
//! IP id 0 (as Linux sends them); ICMP messages carry no DF and reuse the
//! triggering packet's IP id, so no state is needed. Checksums are always
//! computed in full. The Ethernet destination of every answer is the
//! trigger's Ethernet source (an NA to a solicitation's source uses its
//! source link-layer option when present).
//!
//! IPv6: generated headers have traffic class and flow label 0, no
//! extension headers and hop limit 64, except Neighbor Discovery (hop
//! limit 255, RFC 4861). ICMPv6 errors (RFC 4443) quote as much of the
//! offending packet as fits 1280 bytes, and are never sent about an ICMPv6
//! error, to a multicast or unspecified source, or about a packet sent to a
//! multicast address. The functions taking a [`Packet`] answer either
//! family; an address argument of the other family gives `None`.

use crate::checksum;
use crate::nat::Csum;
use crate::packet::{Kind, Packet, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use crate::wire::arp::{self, ArpPacket, ArpRepr};
use crate::wire::ethernet::{
    self, EthernetAddress, EthernetFrame, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6,
};
use crate::wire::icmpv4::{self, Icmpv4Packet};
use crate::wire::icmpv6::{self, Icmpv6Packet, Icmpv6Repr};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::ipv6::{self, Ipv6Packet, Ipv6Repr};
use crate::wire::tcp::{self, TcpPacket};
use crate::wire::{set_u16, udp};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// TTL of every generated IPv4 packet.
pub const REPLY_TTL: u8 = 64;
/// Largest IP datagram an ICMP error may make (RFC 1812 §4.3.2.3).
pub const ICMP_ERROR_MAX_LEN: usize = 576;
/// Type of service of ICMP errors (precedence "internetwork control").
pub const ICMP_ERROR_TOS: u8 = 0xc0;

/// Hop limit of generated IPv6 packets other than Neighbor Discovery.
pub const REPLY_HOP_LIMIT: u8 = 64;
/// Hop limit of Neighbor Discovery messages (RFC 4861: receivers drop
/// others).
pub const ND_HOP_LIMIT: u8 = 255;

/// ICMPv6 destination unreachable codes (RFC 4443 §3.1).
pub mod icmpv6_code {
    /// No route to destination.
    pub const NO_ROUTE: u8 = 0;
    /// Communication administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 1;
    /// Address unreachable.
    pub const ADDR_UNREACHABLE: u8 = 3;
    /// Port unreachable.
    pub const PORT_UNREACHABLE: u8 = 4;
    /// Hop limit exceeded in transit (type 3).
    pub const HOP_LIMIT_EXCEEDED: u8 = 0;
}

const ARP_FRAME_LEN: usize = ethernet::HEADER_LEN + arp::PACKET_LEN;
const IP_OFF: usize = ethernet::HEADER_LEN;
const L4_OFF: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN;

/// True for an address that names one host: not 0.0.0.0, broadcast or
/// multicast.
fn is_unicast_host(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast())
}

fn write_eth(buf: &mut [u8], dst: EthernetAddress, src: EthernetAddress, ethertype: u16) {
    let mut eth = EthernetFrame::new_unchecked(buf);
    eth.set_dst_addr(dst);
    eth.set_src_addr(src);
    eth.set_ethertype(ethertype);
}

/// Fields of a generated option-less IPv4 header.
struct IpHdr {
    tos: u8,
    ident: u16,
    dont_frag: bool,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

/// Writes a 20-byte header at `buf[0..20]` with total length `total` and a
/// fresh checksum.
fn write_ipv4(buf: &mut [u8], h: &IpHdr, total: u16) {
    let Some(hdr) = buf.get_mut(..ipv4::MIN_HEADER_LEN) else {
        return;
    };
    // The setters below keep the bits they do not own (the reserved flag); `buf` may hold
    // an earlier frame.
    hdr.fill(0);
    let mut ip = Ipv4Packet::new_unchecked(hdr);
    ip.set_version(4);
    ip.set_ihl(5);
    ip.set_tos(h.tos);
    ip.set_total_len(total);
    ip.set_ident(h.ident);
    ip.set_frag_offset(0);
    ip.set_more_frags(false);
    ip.set_dont_frag(h.dont_frag);
    ip.set_ttl(REPLY_TTL);
    ip.set_protocol(h.proto);
    ip.set_src_addr(h.src);
    ip.set_dst_addr(h.dst);
    ip.fill_checksum();
}

fn emit_arp(
    out: &mut [u8],
    eth_dst: EthernetAddress,
    eth_src: EthernetAddress,
    repr: &ArpRepr,
) -> Option<usize> {
    let buf = out.get_mut(..ARP_FRAME_LEN)?;
    write_eth(buf, eth_dst, eth_src, ETHERTYPE_ARP);
    let body = buf.get_mut(ethernet::HEADER_LEN..)?;
    repr.emit(&mut ArpPacket::new_unchecked(body));
    Some(ARP_FRAME_LEN)
}

/// Answers the ARP request frame `req` if it asks for `our_ip`: an ARP
/// reply "`our_ip` is at `our_mac`" sent to the requester's hardware address
/// (target = the request's sender, so a DAD probe from 0.0.0.0 gets a reply
/// with target 0.0.0.0). `None` if `req` is not a valid Ethernet/IPv4 ARP
/// request for `our_ip`, its sender MAC is not unicast, or `out` is shorter
/// than 42 bytes.
pub fn arp_reply(
    out: &mut [u8],
    req: &[u8],
    our_mac: EthernetAddress,
    our_ip: Ipv4Addr,
) -> Option<usize> {
    let eth = EthernetFrame::new_checked(req).ok()?;
    if eth.ethertype() != ETHERTYPE_ARP {
        return None;
    }
    let r = ArpRepr::parse(&ArpPacket::new_unchecked(eth.payload())).ok()?;
    if r.op != arp::OP_REQUEST || r.tpa != our_ip || !r.sha.is_unicast() {
        return None;
    }
    let reply = ArpRepr {
        op: arp::OP_REPLY,
        sha: our_mac,
        spa: our_ip,
        tha: r.sha,
        tpa: r.spa,
    };
    emit_arp(out, r.sha, our_mac, &reply)
}

/// A broadcast ARP request "who has `target_ip`? tell `our_ip`" (target
/// hardware address zero). `None` if `out` is shorter than 42 bytes.
pub fn arp_request(
    out: &mut [u8],
    our_mac: EthernetAddress,
    our_ip: Ipv4Addr,
    target_ip: Ipv4Addr,
) -> Option<usize> {
    let req = ArpRepr {
        op: arp::OP_REQUEST,
        sha: our_mac,
        spa: our_ip,
        tha: EthernetAddress::ZERO,
        tpa: target_ip,
    };
    emit_arp(out, EthernetAddress::BROADCAST, our_mac, &req)
}

/// A gratuitous ARP (RFC 5227 announcement): a broadcast request with
/// sender and target protocol address both `ip`, target hardware address
/// zero, so neighbours update their caches (e.g. after VIP failover).
/// `None` if `out` is shorter than 42 bytes.
pub fn gratuitous_arp(out: &mut [u8], mac: EthernetAddress, ip: Ipv4Addr) -> Option<usize> {
    arp_request(out, mac, ip, ip)
}

/// Checks common to every IP answer; returns the trigger's Ethernet source
/// (the answer's Ethernet destination).
fn answerable(req_frame: &[u8], pkt: &Packet) -> Option<EthernetAddress> {
    if pkt.kind != Kind::Ipv4 || pkt.l3 > req_frame.len() || pkt.l4 > req_frame.len() {
        return None;
    }
    let eth = EthernetFrame::new_checked(req_frame).ok()?;
    if eth.ethertype() != ETHERTYPE_IPV4 || eth.dst_addr().is_multicast() {
        return None;
    }
    let to = eth.src_addr();
    if !to.is_unicast() || !is_unicast_host(pkt.src4()) || !is_unicast_host(pkt.dst4()) {
        return None;
    }
    Some(to)
}

/// Answers an ICMP echo request: Ethernet source `our_mac`, destination the
/// request's source; IP addresses swapped (source = the address that was
/// pinged); type 0; identifier, sequence and data copied; TTL 64; the TOS
/// copied; no IP options; checksums computed in full (the request's own
/// checksum, possibly partial, is neither checked nor reused). `None` if
/// `pkt` is not an ICMP echo request, was sent to a broadcast/multicast
/// address or from a non-unicast one, or `out` is too small
/// (14 + 20 + the ICMP length).
pub fn icmp_echo_reply(
    out: &mut [u8],
    req_frame: &[u8],
    pkt: &Packet,
    our_mac: EthernetAddress,
) -> Option<usize> {
    if pkt.kind == Kind::Ipv6 {
        return icmp6_echo_reply(out, req_frame, pkt, our_mac);
    }
    let to = answerable(req_frame, pkt)?;
    if pkt.proto != PROTO_ICMP {
        return None;
    }
    let req_ip = Ipv4Packet::new_checked(req_frame.get(pkt.l3..)?).ok()?;
    let msg = req_ip.payload();
    let icmp = Icmpv4Packet::new_checked(msg).ok()?;
    if icmp.msg_type() != icmpv4::TYPE_ECHO_REQUEST {
        return None;
    }
    let ip_total = ipv4::MIN_HEADER_LEN + msg.len();
    let total = u16::try_from(ip_total).ok()?;
    let len = ethernet::HEADER_LEN + ip_total;
    let buf = out.get_mut(..len)?;
    write_eth(buf, to, our_mac, ETHERTYPE_IPV4);
    let ip = IpHdr {
        tos: req_ip.tos(),
        ident: req_ip.ident(),
        dont_frag: false,
        proto: PROTO_ICMP,
        src: pkt.dst4(),
        dst: pkt.src4(),
    };
    write_ipv4(buf.get_mut(IP_OFF..)?, &ip, total);
    let body = buf.get_mut(L4_OFF..)?;
    body.copy_from_slice(msg);
    let mut reply = Icmpv4Packet::new_unchecked(body);
    reply.set_msg_type(icmpv4::TYPE_ECHO_REPLY);
    reply.set_code(0);
    reply.fill_checksum();
    Some(len)
}

/// The RST a host sends for a TCP segment to a closed port (RFC 9293
/// §3.10.7.1): if the segment has ACK, `seq = SEG.ACK`, flags RST;
/// otherwise `seq = 0`, `ack = SEG.SEQ + SEG.LEN` (data, +1 for SYN, +1 for
/// FIN), flags RST|ACK. Ports and addresses swapped (IP source = the
/// segment's destination), window 0, no options, DF, TTL 64, full
/// checksums; Ethernet source `our_mac`. `None` for a segment that carries
/// RST itself, one sent to or from a broadcast/multicast address, non-TCP,
/// or if `out` is shorter than 54 bytes.
pub fn tcp_rst(
    out: &mut [u8],
    req_frame: &[u8],
    pkt: &Packet,
    our_mac: EthernetAddress,
) -> Option<usize> {
    if pkt.kind == Kind::Ipv6 {
        return tcp6_rst(out, req_frame, pkt, our_mac);
    }
    let to = answerable(req_frame, pkt)?;
    if pkt.proto != PROTO_TCP {
        return None;
    }
    let req_ip = Ipv4Packet::new_checked(req_frame.get(pkt.l3..)?).ok()?;
    let seg = TcpPacket::new_checked(req_ip.payload()).ok()?;
    let (seq, ack, out_flags) = rst_numbers(&seg)?;
    const IP_TOTAL: usize = ipv4::MIN_HEADER_LEN + tcp::MIN_HEADER_LEN;
    const LEN: usize = ethernet::HEADER_LEN + IP_TOTAL;
    let buf = out.get_mut(..LEN)?;
    write_eth(buf, to, our_mac, ETHERTYPE_IPV4);
    let ip = IpHdr {
        tos: 0,
        ident: 0,
        dont_frag: true,
        proto: PROTO_TCP,
        src: pkt.dst4(),
        dst: pkt.src4(),
    };
    write_ipv4(buf.get_mut(IP_OFF..)?, &ip, IP_TOTAL as u16);
    let hdr = buf.get_mut(L4_OFF..)?;
    // As for the IP header: no stale reserved bits or NS/AE flag.
    hdr.fill(0);
    let mut t = TcpPacket::new_unchecked(hdr);
    t.set_src_port(seg.dst_port());
    t.set_dst_port(seg.src_port());
    t.set_seq_number(seq);
    t.set_ack_number(ack);
    t.set_data_offset(5);
    t.set_flags(out_flags);
    t.set_window_len(0);
    t.set_urgent_at(0);
    t.fill_checksum(pkt.dst4(), pkt.src4());
    Some(LEN)
}

/// Sequence, acknowledgement and flags of the RST answering `seg`
/// (RFC 9293 §3.10.7.1); `None` if `seg` carries RST itself.
fn rst_numbers(seg: &TcpPacket<&[u8]>) -> Option<(u32, u32, u8)> {
    let flags = seg.flags();
    if flags & tcp::RST != 0 {
        return None;
    }
    Some(if flags & tcp::ACK != 0 {
        (seg.ack_number(), 0, tcp::RST)
    } else {
        let seg_len = u32::try_from(seg.payload().len()).ok()?
            + u32::from(flags & tcp::SYN != 0)
            + u32::from(flags & tcp::FIN != 0);
        (
            0,
            seg.seq_number().wrapping_add(seg_len),
            tcp::RST | tcp::ACK,
        )
    })
}

/// Builds an ICMP error of `icmp_type`/`code` with the 4-byte
/// `rest_of_header` about the packet in `req_frame`, from `src_ip`, to the
/// packet's source. The data quotes the original IP datagram as it is in
/// `req_frame` (header with options, then payload) up to a 576-byte ICMP
/// datagram (548 quoted bytes; always the header plus at least 8 bytes when
/// the original has them). If `csum` is [`Csum::Partial`] the original's
/// TCP/UDP checksum field holds only the pseudo-header sum, so the quote
/// gets the completed checksum (computed over the whole original segment),
/// as the sender would have put on the wire. For a GSO super-frame the
/// quote is of the super-frame (its total length and first bytes), not of
/// one segment.
///
/// Never answers (returns `None`): an ICMP message that is not a query
/// ([`icmpv4::is_query_type`]), a fragment other than the first, a frame
/// sent to an Ethernet broadcast/multicast address, a packet to or from an
/// IP broadcast/multicast/unspecified address, ARP; also `None` if `out` is
/// too small.
#[allow(clippy::too_many_arguments)]
pub fn icmp_error(
    out: &mut [u8],
    req_frame: &[u8],
    pkt: &Packet,
    csum: Csum,
    our_mac: EthernetAddress,
    src_ip: Ipv4Addr,
    icmp_type: u8,
    code: u8,
    rest_of_header: u32,
) -> Option<usize> {
    let to = answerable(req_frame, pkt)?;
    let orig = Ipv4Packet::new_checked(req_frame.get(pkt.l3..)?).ok()?;
    if orig.frag_offset() != 0 {
        return None;
    }
    let hl = orig.header_len();
    let orig_total = usize::from(orig.total_len());
    if orig.protocol() == PROTO_ICMP {
        let t = Icmpv4Packet::new_checked(orig.payload()).ok()?;
        if !icmpv4::is_query_type(t.msg_type()) {
            return None;
        }
    }
    const MAX_QUOTE: usize = ICMP_ERROR_MAX_LEN - ipv4::MIN_HEADER_LEN - icmpv4::HEADER_LEN;
    let quote_len = orig_total.min(MAX_QUOTE);
    let quote = req_frame.get(pkt.l3..pkt.l3 + quote_len)?;
    let ip_total = ipv4::MIN_HEADER_LEN + icmpv4::HEADER_LEN + quote_len;
    let len = ethernet::HEADER_LEN + ip_total;
    let buf = out.get_mut(..len)?;
    write_eth(buf, to, our_mac, ETHERTYPE_IPV4);
    let ip = IpHdr {
        tos: ICMP_ERROR_TOS,
        ident: orig.ident(),
        dont_frag: false,
        proto: PROTO_ICMP,
        src: src_ip,
        dst: pkt.src4(),
    };
    // ip_total ≤ 576.
    write_ipv4(buf.get_mut(IP_OFF..)?, &ip, ip_total as u16);
    let body = buf.get_mut(L4_OFF..)?;
    let mut msg = Icmpv4Packet::new_unchecked(body);
    msg.set_msg_type(icmp_type);
    msg.set_code(code);
    msg.set_rest_of_header(rest_of_header);
    let data = msg.data_mut();
    data.copy_from_slice(quote);
    if csum == Csum::Partial {
        let field = match orig.protocol() {
            PROTO_TCP => Some(tcp::field::CHECKSUM),
            PROTO_UDP => Some(udp::field::CHECKSUM),
            _ => None,
        };
        if let Some(f) = field {
            let full = checksum::udp_finish(checksum::checksum(orig.payload()));
            set_u16(data, hl + f, full);
        }
    }
    msg.fill_checksum();
    Some(len)
}

/// Destination unreachable (type 3) with `code` (e.g.
/// [`icmpv4::CODE_PORT_UNREACHABLE`]); see [`icmp_error`]. For an IPv6
/// packet (`src_ip` IPv6) an ICMPv6 destination unreachable (type 1, see
/// [`icmp6_error`]) whose code is mapped from the ICMPv4 `code`: port
/// unreachable → port unreachable (4), network unreachable/unknown →
/// no route (0), administratively prohibited (9, 10, 13) →
/// administratively prohibited (1), any other → address unreachable (3).
pub fn icmp_unreachable(
    out: &mut [u8],
    req_frame: &[u8],
    pkt: &Packet,
    csum: Csum,
    our_mac: EthernetAddress,
    src_ip: impl Into<IpAddr>,
    code: u8,
) -> Option<usize> {
    let src_ip = match src_ip.into() {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => {
            let code6 = match code {
                icmpv4::CODE_PORT_UNREACHABLE => icmpv6_code::PORT_UNREACHABLE,
                0 | 6 => icmpv6_code::NO_ROUTE,
                9 | 10 | 13 => icmpv6_code::ADMIN_PROHIBITED,
                _ => icmpv6_code::ADDR_UNREACHABLE,
            };
            return icmp6_error(
                out,
                req_frame,
                pkt,
                csum,
                our_mac,
                a,
                icmpv6::TYPE_DEST_UNREACHABLE,
                code6,
                0,
            );
        }
    };
    icmp_error(
        out,
        req_frame,
        pkt,
        csum,
        our_mac,
        src_ip,
        icmpv4::TYPE_DEST_UNREACHABLE,
        code,
        0,
    )
}

/// Fragmentation needed and DF set (type 3 code 4) carrying
/// `next_hop_mtu` (RFC 1191); see [`icmp_error`].
pub fn icmp_frag_needed(
    out: &mut [u8],
    req_frame: &[u8],
    pkt: &Packet,
    csum: Csum,
    our_mac: EthernetAddress,
    src_ip: Ipv4Addr,
    next_hop_mtu: u16,
) -> Option<usize> {
    icmp_error(
        out,
        req_frame,
        pkt,
        csum,
        our_mac,
        src_ip,
        icmpv4::TYPE_DEST_UNREACHABLE,
        icmpv4::CODE_FRAG_NEEDED,
        u32::from(next_hop_mtu),
    )
}

/// Time exceeded, TTL exceeded in transit (type 11 code 0); see
/// [`icmp_error`]. For IPv6 (`src_ip` IPv6): ICMPv6 time exceeded, hop
/// limit exceeded in transit (type 3 code 0); see [`icmp6_error`].
pub fn icmp_time_exceeded(
    out: &mut [u8],
    req_frame: &[u8],
    pkt: &Packet,
    csum: Csum,
    our_mac: EthernetAddress,
    src_ip: impl Into<IpAddr>,
) -> Option<usize> {
    let src_ip = match src_ip.into() {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => {
            return icmp6_error(
                out,
                req_frame,
                pkt,
                csum,
                our_mac,
                a,
                icmpv6::TYPE_TIME_EXCEEDED,
                icmpv6_code::HOP_LIMIT_EXCEEDED,
                0,
            )
        }
    };
    icmp_error(
        out,
        req_frame,
        pkt,
        csum,
        our_mac,
        src_ip,
        icmpv4::TYPE_TIME_EXCEEDED,
        icmpv4::CODE_TTL_EXCEEDED,
        0,
    )
}

/// "The packet is too big for the next hop" in either family: for IPv4
/// [`icmp_frag_needed`] (type 3 code 4, `mtu` clamped to 65535), for IPv6
/// an ICMPv6 Packet Too Big (type 2) carrying `mtu` (RFC 8201), see
/// [`icmp6_error`]. `src_ip` must be of the packet's family.
pub fn packet_too_big(
    out: &mut [u8],
    req_frame: &[u8],
    pkt: &Packet,
    csum: Csum,
    our_mac: EthernetAddress,
    src_ip: impl Into<IpAddr>,
    mtu: u32,
) -> Option<usize> {
    match src_ip.into() {
        IpAddr::V4(a) => icmp_frag_needed(
            out,
            req_frame,
            pkt,
            csum,
            our_mac,
            a,
            u16::try_from(mtu).unwrap_or(u16::MAX),
        ),
        IpAddr::V6(a) => icmp6_error(
            out,
            req_frame,
            pkt,
            csum,
            our_mac,
            a,
            icmpv6::TYPE_PACKET_TOO_BIG,
            0,
            mtu,
        ),
    }
}

/// The Ethernet multicast address of an IPv6 multicast group (RFC 2464:
/// `33:33` and the group's last 32 bits).
pub fn ipv6_multicast_mac(group: Ipv6Addr) -> EthernetAddress {
    let o = group.octets();
    EthernetAddress([0x33, 0x33, o[12], o[13], o[14], o[15]])
}

/// The EUI-64 link-local address of an interface with MAC `mac` (RFC 4291 appendix A):
/// `fe80::/64` with the MAC's universal/local bit flipped and `ff:fe` in the middle.
pub fn link_local(mac: [u8; 6]) -> Ipv6Addr {
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        mac[0] ^ 0x02,
        mac[1],
        mac[2],
        0xff,
        0xfe,
        mac[3],
        mac[4],
        mac[5],
    ])
}

/// The solicited-node multicast address of `a` (RFC 4291 §2.7.1):
/// `ff02::1:ff00:0` with the low 24 bits of `a`.
pub fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// The all-nodes link-local multicast address `ff02::1`.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// True for an IPv6 address that names one host: not `::` nor multicast.
fn is_unicast_host6(a: Ipv6Addr) -> bool {
    !(a.is_unspecified() || a.is_multicast())
}

/// The IPv6 addresses of `pkt`, if it is IPv6.
fn addrs6(pkt: &Packet) -> Option<(Ipv6Addr, Ipv6Addr)> {
    match (pkt.kind, pkt.src, pkt.dst) {
        (Kind::Ipv6, IpAddr::V6(s), IpAddr::V6(d)) => Some((s, d)),
        _ => None,
    }
}

/// The IPv6 checks common to echo replies, RSTs and errors: an IPv6
/// packet inside the frame, sent to a unicast Ethernet address from a
/// unicast one, from a unicast IPv6 source to a unicast destination.
/// Returns the answer's Ethernet destination and the packet's addresses.
fn answerable6(req_frame: &[u8], pkt: &Packet) -> Option<(EthernetAddress, Ipv6Addr, Ipv6Addr)> {
    let (src, dst) = addrs6(pkt)?;
    if pkt.l3 > pkt.l4 || pkt.l4 > pkt.ip_end() || pkt.ip_end() > req_frame.len() {
        return None;
    }
    let eth = EthernetFrame::new_checked(req_frame).ok()?;
    if eth.ethertype() != ETHERTYPE_IPV6 || eth.dst_addr().is_multicast() {
        return None;
    }
    let to = eth.src_addr();
    if !to.is_unicast() || !is_unicast_host6(src) || !is_unicast_host6(dst) {
        return None;
    }
    Some((to, src, dst))
}

/// Writes an Ethernet header and an IPv6 header (no extension headers) at
/// the start of `buf`; returns the rest of `buf` (the upper-layer packet).
fn write_eth_ipv6<'a>(
    buf: &'a mut [u8],
    eth_dst: EthernetAddress,
    eth_src: EthernetAddress,
    repr: &Ipv6Repr,
) -> Option<&'a mut [u8]> {
    write_eth(buf, eth_dst, eth_src, ETHERTYPE_IPV6);
    let ip = buf.get_mut(IP_OFF..IP_OFF + ipv6::HEADER_LEN)?;
    repr.emit(&mut Ipv6Packet::new_unchecked(ip));
    buf.get_mut(IP_OFF + ipv6::HEADER_LEN..)
}

/// ICMPv6 echo reply (type 129) to an echo request (type 128, code 0):
/// addresses swapped, identifier, sequence and data copied, hop limit 64,
/// checksum computed; any extension headers of the request are not
/// copied. `None` under the conditions of [`icmp_echo_reply`].
fn icmp6_echo_reply(
    out: &mut [u8],
    req_frame: &[u8],
    pkt: &Packet,
    our_mac: EthernetAddress,
) -> Option<usize> {
    let (to, src, dst) = answerable6(req_frame, pkt)?;
    if pkt.proto != PROTO_ICMPV6 {
        return None;
    }
    let msg = req_frame.get(pkt.l4..pkt.ip_end())?;
    let m = Icmpv6Packet::new_checked(msg).ok()?;
    if m.msg_type() != icmpv6::TYPE_ECHO_REQUEST || m.code() != 0 {
        return None;
    }
    let plen = u16::try_from(msg.len()).ok()?;
    let len = IP_OFF + ipv6::HEADER_LEN + msg.len();
    let buf = out.get_mut(..len)?;
    let repr = Ipv6Repr {
        src: dst,
        dst: src,
        next_header: PROTO_ICMPV6,
        payload_len: plen,
        hop_limit: REPLY_HOP_LIMIT,
    };
    let body = write_eth_ipv6(buf, to, our_mac, &repr)?;
    body.copy_from_slice(msg);
    let mut reply = Icmpv6Packet::new_unchecked(body);
    reply.set_msg_type(icmpv6::TYPE_ECHO_REPLY);
    reply.fill_checksum(dst, src);
    Some(len)
}

/// The IPv6 [`tcp_rst`]: same numbers, hop limit 64, 74 bytes.
fn tcp6_rst(
    out: &mut [u8],
    req_frame: &[u8],
    pkt: &Packet,
    our_mac: EthernetAddress,
) -> Option<usize> {
    let (to, src, dst) = answerable6(req_frame, pkt)?;
    if pkt.proto != PROTO_TCP {
        return None;
    }
    let seg = TcpPacket::new_checked(req_frame.get(pkt.l4..pkt.ip_end())?).ok()?;
    let (seq, ack, out_flags) = rst_numbers(&seg)?;
    const LEN: usize = IP_OFF + ipv6::HEADER_LEN + tcp::MIN_HEADER_LEN;
    let buf = out.get_mut(..LEN)?;
    let repr = Ipv6Repr {
        src: dst,
        dst: src,
        next_header: PROTO_TCP,
        payload_len: tcp::MIN_HEADER_LEN as u16,
        hop_limit: REPLY_HOP_LIMIT,
    };
    let hdr = write_eth_ipv6(buf, to, our_mac, &repr)?;
    hdr.fill(0);
    let mut t = TcpPacket::new_unchecked(&mut *hdr);
    t.set_src_port(seg.dst_port());
    t.set_dst_port(seg.src_port());
    t.set_seq_number(seq);
    t.set_ack_number(ack);
    t.set_data_offset(5);
    t.set_flags(out_flags);
    let c = checksum::l4_checksum_v6(dst, src, PROTO_TCP, hdr);
    set_u16(hdr, tcp::field::CHECKSUM, c);
    Some(LEN)
}

/// Builds an ICMPv6 error (RFC 4443) of `icmp_type`/`code` with the 4-byte
/// `rest_of_header` (the MTU of a Packet Too Big, the pointer of a
/// Parameter Problem) about the IPv6 packet in `req_frame`, from `src_ip`
/// to the packet's source, hop limit 64. The data quotes the packet from
/// its IPv6 header on, as much as keeps the error within 1280 bytes
/// ([`icmpv6::MAX_QUOTE`] = 1232 quoted bytes). A [`Csum::Partial`]
/// TCP/UDP checksum is completed in the quote, as in [`icmp_error`].
///
/// Never answers (returns `None`): an ICMPv6 error (types 0–127), a packet
/// sent to a multicast address or an Ethernet broadcast/multicast address,
/// from a multicast or unspecified source, a packet that is not IPv6;
/// also `None` if `out` is too small.
#[allow(clippy::too_many_arguments)]
pub fn icmp6_error(
    out: &mut [u8],
    req_frame: &[u8],
    pkt: &Packet,
    csum: Csum,
    our_mac: EthernetAddress,
    src_ip: Ipv6Addr,
    icmp_type: u8,
    code: u8,
    rest_of_header: u32,
) -> Option<usize> {
    let (to, src, _) = answerable6(req_frame, pkt)?;
    if pkt.proto == PROTO_ICMPV6 {
        let t = Icmpv6Packet::new_checked(req_frame.get(pkt.l4..pkt.ip_end())?).ok()?;
        if icmpv6::is_error_type(t.msg_type()) {
            return None;
        }
    }
    let quote_len = (pkt.ip_total_len as usize).min(icmpv6::MAX_QUOTE);
    let quote = req_frame.get(pkt.l3..pkt.l3 + quote_len)?;
    let icmp_len = icmpv6::HEADER_LEN + quote_len;
    let len = IP_OFF + ipv6::HEADER_LEN + icmp_len;
    let buf = out.get_mut(..len)?;
    let repr = Ipv6Repr {
        src: src_ip,
        dst: src,
        next_header: PROTO_ICMPV6,
        // ≤ 1240.
        payload_len: icmp_len as u16,
        hop_limit: REPLY_HOP_LIMIT,
    };
    let body = write_eth_ipv6(buf, to, our_mac, &repr)?;
    body.fill(0);
    let mut msg = Icmpv6Packet::new_unchecked(body);
    msg.set_msg_type(icmp_type);
    msg.set_code(code);
    msg.set_rest_of_header(rest_of_header);
    let data = msg.data_mut();
    data.copy_from_slice(quote);
    if csum == Csum::Partial {
        let field = match pkt.proto {
            PROTO_TCP => Some(tcp::field::CHECKSUM),
            PROTO_UDP => Some(udp::field::CHECKSUM),
            _ => None,
        };
        if let Some(f) = field {
            let seg = req_frame.get(pkt.l4..pkt.ip_end())?;
            let full = checksum::udp_finish(checksum::checksum(seg));
            let at = pkt.l4 - pkt.l3 + f;
            if at + 2 <= data.len() {
                set_u16(data, at, full);
            }
        }
    }
    msg.fill_checksum(src_ip, src);
    Some(len)
}

/// A valid Neighbor Solicitation in `frame` (RFC 4861 §7.1.1: hop limit
/// 255, code 0, checksum, length, target not multicast, options well
/// formed; from `::` only to a solicited-node address and without a
/// source link-layer option): its source, destination, target and source
/// link-layer address option.
fn parse_ns(
    frame: &[u8],
    pkt: &Packet,
) -> Option<(Ipv6Addr, Ipv6Addr, Ipv6Addr, Option<EthernetAddress>)> {
    let (src, dst) = addrs6(pkt)?;
    if pkt.proto != PROTO_ICMPV6 || pkt.ttl != ND_HOP_LIMIT || src.is_multicast() {
        return None;
    }
    let msg = frame.get(pkt.l4..pkt.ip_end())?;
    let p = Icmpv6Packet::new_checked(msg).ok()?;
    if p.msg_type() != icmpv6::TYPE_NEIGHBOR_SOLICIT {
        return None;
    }
    let Icmpv6Repr::NeighborSolicit { target, source_ll } = Icmpv6Repr::parse(src, dst, &p).ok()?
    else {
        return None;
    };
    if dst != target && dst != solicited_node(target) {
        return None;
    }
    if src.is_unspecified() && (dst != solicited_node(target) || source_ll.is_some()) {
        return None;
    }
    Some((src, dst, target, source_ll))
}

/// The target of a valid Neighbor Solicitation (see [`neighbour_advert`]
/// for the checks), for the caller to decide whether it owns it; `None`
/// for anything else.
pub fn ns_target(frame: &[u8], pkt: &Packet) -> Option<Ipv6Addr> {
    parse_ns(frame, pkt).map(|(_, _, t, _)| t)
}

/// The target and target link-layer address of a Neighbor Advertisement
/// (hop limit 255, checksum and options valid), to learn a neighbour's
/// MAC from; `None` for anything else.
pub fn na_info(frame: &[u8], pkt: &Packet) -> Option<(Ipv6Addr, Option<EthernetAddress>)> {
    let (src, dst) = addrs6(pkt)?;
    if pkt.proto != PROTO_ICMPV6 || pkt.ttl != ND_HOP_LIMIT {
        return None;
    }
    let p = Icmpv6Packet::new_checked(frame.get(pkt.l4..pkt.ip_end())?).ok()?;
    match Icmpv6Repr::parse(src, dst, &p).ok()? {
        Icmpv6Repr::NeighborAdvert {
            target, target_ll, ..
        } => Some((target, target_ll)),
        _ => None,
    }
}

/// Writes a Neighbor Advertisement frame (hop limit 255, target link-layer
/// option `our_mac`).
fn emit_na(
    out: &mut [u8],
    eth_dst: EthernetAddress,
    our_mac: EthernetAddress,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    flags: u8,
    target: Ipv6Addr,
) -> Option<usize> {
    let na = Icmpv6Repr::NeighborAdvert {
        flags,
        target,
        target_ll: Some(our_mac),
    };
    let n = na.buffer_len();
    let len = IP_OFF + ipv6::HEADER_LEN + n;
    let buf = out.get_mut(..len)?;
    let repr = Ipv6Repr {
        src,
        dst,
        next_header: PROTO_ICMPV6,
        payload_len: n as u16,
        hop_limit: ND_HOP_LIMIT,
    };
    let body = write_eth_ipv6(buf, eth_dst, our_mac, &repr)?;
    na.emit(src, dst, &mut Icmpv6Packet::new_unchecked(body))?;
    Some(len)
}

/// Answers a Neighbor Solicitation for `our_ip` (RFC 4861 §7.2.4): a
/// Neighbor Advertisement from `our_ip` with flags Solicited and Override,
/// target `our_ip` and a target link-layer address option `our_mac`,
/// hop limit 255, to the solicitation's source (Ethernet destination its
/// source link-layer option, else the frame's Ethernet source). A DAD
/// probe (source `::`) is answered to all-nodes `ff02::1`
/// (`33:33:00:00:00:01`) without the Solicited flag. `None` if the frame is
/// not a valid solicitation ([`ns_target`]) for `our_ip`, its Ethernet
/// source is not unicast, or `out` is shorter than 86 bytes.
pub fn neighbour_advert(
    out: &mut [u8],
    frame: &[u8],
    pkt: &Packet,
    our_mac: EthernetAddress,
    our_ip: Ipv6Addr,
) -> Option<usize> {
    let (src, _, target, source_ll) = parse_ns(frame, pkt)?;
    if target != our_ip {
        return None;
    }
    let eth_src = EthernetFrame::new_checked(frame).ok()?.src_addr();
    if !eth_src.is_unicast() {
        return None;
    }
    if src.is_unspecified() {
        return emit_na(
            out,
            ipv6_multicast_mac(ALL_NODES),
            our_mac,
            our_ip,
            ALL_NODES,
            icmpv6::NA_OVERRIDE,
            our_ip,
        );
    }
    let eth_dst = source_ll.filter(|m| m.is_unicast()).unwrap_or(eth_src);
    emit_na(
        out,
        eth_dst,
        our_mac,
        our_ip,
        src,
        icmpv6::NA_SOLICITED | icmpv6::NA_OVERRIDE,
        our_ip,
    )
}

/// An unsolicited Neighbor Advertisement (RFC 4861 §7.2.6) for `ip` at
/// `mac`: to all-nodes `ff02::1` (`33:33:00:00:00:01`), flag Override,
/// target link-layer option, hop limit 255 — the IPv6 gratuitous ARP, for
/// a port coming up or a failover. `None` if `out` is shorter than 86
/// bytes.
pub fn unsolicited_na(out: &mut [u8], mac: EthernetAddress, ip: Ipv6Addr) -> Option<usize> {
    emit_na(
        out,
        ipv6_multicast_mac(ALL_NODES),
        mac,
        ip,
        ALL_NODES,
        icmpv6::NA_OVERRIDE,
        ip,
    )
}

/// A Neighbor Solicitation for `target` from `our_ip` (RFC 4861 §7.2.2):
/// to `target`'s solicited-node multicast address and its Ethernet
/// multicast address, with a source link-layer option `our_mac`, hop limit
/// 255 — to resolve a next hop. `None` if `out` is shorter than 86 bytes.
pub fn neighbour_solicit(
    out: &mut [u8],
    our_mac: EthernetAddress,
    our_ip: Ipv6Addr,
    target: Ipv6Addr,
) -> Option<usize> {
    let ns = Icmpv6Repr::NeighborSolicit {
        target,
        source_ll: Some(our_mac),
    };
    let dst = solicited_node(target);
    let n = ns.buffer_len();
    let len = IP_OFF + ipv6::HEADER_LEN + n;
    let buf = out.get_mut(..len)?;
    let repr = Ipv6Repr {
        src: our_ip,
        dst,
        next_header: PROTO_ICMPV6,
        payload_len: n as u16,
        hop_limit: ND_HOP_LIMIT,
    };
    let body = write_eth_ipv6(buf, ipv6_multicast_mac(dst), our_mac, &repr)?;
    ns.emit(our_ip, dst, &mut Icmpv6Packet::new_unchecked(body))?;
    Some(len)
}
