//! Slow-path frames the appliance originates as a host: ARP replies,
//! requests and announcements, ICMP echo replies, TCP RSTs for closed ports
//! and ICMP errors (destination unreachable, fragmentation needed, time
//! exceeded). Each builder writes a complete Ethernet frame (no vnet header,
//! no padding to 60 bytes) into the caller's `out` buffer and returns its
//! length, or `None` if `out` is too small or the trigger must not (or
//! cannot) be answered. No allocation.
//!
//! Generated IPv4 headers have no options and TTL 64. TCP RSTs carry DF and
//! IP id 0 (as Linux sends them); ICMP messages carry no DF and reuse the
//! triggering packet's IP id, so no state is needed. Checksums are always
//! computed in full. The Ethernet destination of every answer is the
//! trigger's Ethernet source.

use crate::checksum;
use crate::nat::Csum;
use crate::packet::{Kind, Packet, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::wire::arp::{self, ArpPacket, ArpRepr};
use crate::wire::ethernet::{self, EthernetAddress, EthernetFrame, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use crate::wire::icmpv4::{self, Icmpv4Packet};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::tcp::{self, TcpPacket};
use crate::wire::{set_u16, udp};
use std::net::Ipv4Addr;

/// TTL of every generated IPv4 packet.
pub const REPLY_TTL: u8 = 64;
/// Largest IP datagram an ICMP error may make (RFC 1812 §4.3.2.3).
pub const ICMP_ERROR_MAX_LEN: usize = 576;
/// Type of service of ICMP errors (precedence "internetwork control").
pub const ICMP_ERROR_TOS: u8 = 0xc0;

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
    let to = answerable(req_frame, pkt)?;
    if pkt.proto != PROTO_TCP {
        return None;
    }
    let req_ip = Ipv4Packet::new_checked(req_frame.get(pkt.l3..)?).ok()?;
    let seg = TcpPacket::new_checked(req_ip.payload()).ok()?;
    let flags = seg.flags();
    if flags & tcp::RST != 0 {
        return None;
    }
    let (seq, ack, out_flags) = if flags & tcp::ACK != 0 {
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
    };
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
/// [`icmpv4::CODE_PORT_UNREACHABLE`]); see [`icmp_error`].
pub fn icmp_unreachable(
    out: &mut [u8],
    req_frame: &[u8],
    pkt: &Packet,
    csum: Csum,
    our_mac: EthernetAddress,
    src_ip: Ipv4Addr,
    code: u8,
) -> Option<usize> {
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
/// [`icmp_error`].
pub fn icmp_time_exceeded(
    out: &mut [u8],
    req_frame: &[u8],
    pkt: &Packet,
    csum: Csum,
    our_mac: EthernetAddress,
    src_ip: Ipv4Addr,
) -> Option<usize> {
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
