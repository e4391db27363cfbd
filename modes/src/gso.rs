//! Software GSO for the paths where a super-frame cannot be handed to the
//! kernel as it is (TUN mode: virtio-net cannot describe IPIP offload).
//! [`segment_tcp4`] cuts a TCPv4 super-frame, [`segment_tcp6`] a TCPv6 one,
//! into MSS-sized segments the way a TSO device does, each with complete
//! checksums. Both share one cutting loop and differ only in how each
//! segment's IP header and TCP checksum are finished.

use crate::packet::{Kind, Packet, PROTO_TCP};
use crate::wire::ethernet::{self, ETHERTYPE_IPV6};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::ipv6::{self, Ipv6Packet};
use crate::wire::tcp::{self, TcpPacket};
use crate::wire::vnet::{VnetHdr, GSO_TCPV4, GSO_TCPV6};
use crate::wire::{get_u16, get_u8};

/// Splits the TCPv4 frame `frame` (Ethernet + IPv4 + TCP, vnet header
/// stripped, classified as `pkt`; `hdr` is its vnet header) into segments
/// of at most `hdr.gso_size` payload bytes. Each segment is written to
/// `out[..n]` and passed to `emit` before the next one overwrites it.
///
/// Every segment repeats the frame's Ethernet, IPv4 (options included) and
/// TCP (options included) headers with: IPv4 total length for its size,
/// identification = the frame's + i (wrapping), a computed header checksum;
/// TCP sequence number = the frame's + payload offset (wrapping); FIN and
/// PSH only on the last segment, CWR only on the first; a full TCP checksum
/// (whatever the frame's checksum field held, partial or not). Ethernet
/// padding is not copied.
///
/// A frame that is not GSO (`hdr.gso_type` = `GSO_NONE`) or whose payload
/// fits one segment is emitted once, as it is but with complete checksums,
/// so every TCP frame can go through here.
///
/// Returns the number of segments emitted, or `None`, emitting nothing, if
/// `pkt` is not TCP/IPv4 inside `frame`, `hdr` is GSO but not
/// `GSO_TCPV4` (the ECN bit is allowed) or has `gso_size` 0, or `out` is
/// shorter than the headers plus one full segment.
pub fn segment_tcp4(
    frame: &[u8],
    hdr: &VnetHdr,
    pkt: &Packet,
    out: &mut [u8],
    emit: impl FnMut(&[u8]),
) -> Option<usize> {
    if pkt.kind != Kind::Ipv4 || pkt.proto != PROTO_TCP {
        return None;
    }
    let (l3, l4, data, end) = (pkt.l3, pkt.l4, pkt.payload_offset(), pkt.ip_end());
    // Ordered so that no addition can overflow: once `end` is inside the
    // frame, every offset before it is too.
    if !(end <= frame.len()
        && data <= end
        && l4 <= data
        && l3 <= l4
        && l3 + ipv4::MIN_HEADER_LEN <= l4
        && l4 + tcp::MIN_HEADER_LEN <= data)
    {
        return None;
    }
    let ip_in = Ipv4Packet::new_unchecked(frame.get(l3..)?);
    let (ident, src, dst) = (ip_in.ident(), ip_in.src_addr(), ip_in.dst_addr());
    let cuts = Cuts { l4, data, end };
    cut(frame, hdr, GSO_TCPV4, cuts, out, emit, |seg, count| {
        // seg.len() − l3 ≤ end − l3 = the frame's total length, a u16.
        let total = (seg.len() - l3) as u16;
        let mut ip = Ipv4Packet::new_unchecked(seg.get_mut(l3..l4)?);
        ip.set_total_len(total);
        ip.set_ident(ident.wrapping_add(count as u16));
        ip.fill_checksum();
        TcpPacket::new_unchecked(seg.get_mut(l4..)?).fill_checksum(src, dst);
        Some(())
    })
}

/// Splits the TCPv6 frame `frame` (Ethernet + IPv6 + extension headers +
/// TCP, vnet header stripped; `hdr` is its vnet header) like
/// [`segment_tcp4`]: at most `hdr.gso_size` payload bytes per segment, each
/// written to `out[..n]` and passed to `emit`.
///
/// The frame is classified here, since [`crate::packet::parse`] takes IPv4
/// only: ethertype IPv6 without VLAN tag, [`ipv6::upper_layer`] to TCP
/// (Hop-by-Hop, Routing and Destination Options headers are repeated in
/// every segment as they are), a TCP data offset within the payload.
/// Every segment repeats the headers with: IPv6 payload length for its size
/// (there is no identification to advance: no fragments); TCP sequence
/// number, FIN/PSH/CWR as in [`segment_tcp4`]; a full TCP checksum over the
/// IPv6 pseudo-header. Ethernet padding is not copied.
///
/// A frame that is not GSO is emitted once with a complete checksum.
/// Returns the number of segments, or `None`, emitting nothing, if the
/// frame is not TCP/IPv6 as above (jumbograms included: payload length 0),
/// `hdr` is GSO but not `GSO_TCPV6` (ECN allowed) or has `gso_size` 0, or
/// `out` is shorter than the headers plus one full segment.
pub fn segment_tcp6(
    frame: &[u8],
    hdr: &VnetHdr,
    out: &mut [u8],
    emit: impl FnMut(&[u8]),
) -> Option<usize> {
    let l3 = ethernet::HEADER_LEN;
    if get_u16(frame, ethernet::field::ETHERTYPE) != ETHERTYPE_IPV6 {
        return None;
    }
    let ip = frame.get(l3..)?;
    let (proto, off) = ipv6::upper_layer(ip).ok()?;
    if proto != PROTO_TCP {
        return None;
    }
    let ip_in = Ipv6Packet::new_unchecked(ip);
    let (src, dst) = (ip_in.src_addr(), ip_in.dst_addr());
    // upper_layer checked off ≤ 40 + payload length ≤ ip.len(), so none of
    // these additions can overflow.
    let l4 = l3 + off;
    let end = l3 + ipv6::HEADER_LEN + usize::from(ip_in.payload_len());
    let doff = usize::from(get_u8(frame, l4 + tcp::field::DATA_OFF) >> 4) * 4;
    let data = l4 + doff;
    if doff < tcp::MIN_HEADER_LEN || data > end {
        return None;
    }
    let cuts = Cuts { l4, data, end };
    cut(frame, hdr, GSO_TCPV6, cuts, out, emit, |seg, _| {
        // seg.len() − l3 − 40 ≤ the frame's payload length, a u16.
        let plen = (seg.len() - l3 - ipv6::HEADER_LEN) as u16;
        Ipv6Packet::new_unchecked(seg.get_mut(l3..l4)?).set_payload_len(plen);
        TcpPacket::new_unchecked(seg.get_mut(l4..)?).fill_checksum_v6(src, dst);
        Some(())
    })
}

/// Offsets in a TCP frame, validated by the caller as
/// `l4 + 20 ≤ data ≤ end ≤ frame.len()`.
#[derive(Clone, Copy)]
struct Cuts {
    /// TCP header.
    l4: usize,
    /// TCP payload.
    data: usize,
    /// End of the IP packet.
    end: usize,
}

/// The cutting loop both IP versions share: checks `hdr` against `gso_kind`
/// and `out`, then for each chunk copies the headers and the chunk, sets
/// the sequence number and flags, and lets `finish(segment, index)` write
/// the IP lengths and the TCP checksum before `emit`.
fn cut(
    frame: &[u8],
    hdr: &VnetHdr,
    gso_kind: u8,
    c: Cuts,
    out: &mut [u8],
    mut emit: impl FnMut(&[u8]),
    mut finish: impl FnMut(&mut [u8], usize) -> Option<()>,
) -> Option<usize> {
    let Cuts { l4, data, end } = c;
    let payload_len = end - data;
    let mss = if !hdr.is_gso() {
        payload_len.max(1)
    } else if hdr.gso_kind() == gso_kind && hdr.gso_size > 0 {
        usize::from(hdr.gso_size)
    } else {
        return None;
    };
    let headers = frame.get(..data)?;
    let payload = frame.get(data..end)?;
    if out.len() < data + mss.min(payload_len) {
        return None;
    }
    let tcp_in = TcpPacket::new_unchecked(frame.get(l4..)?);
    let (seq, flags) = (tcp_in.seq_number(), tcp_in.flags());

    let mut count = 0usize;
    let mut chunks = payload.chunks(mss);
    let mut next = chunks.next();
    // A payload-less frame still makes one segment.
    let empty: &[u8] = &[];
    if next.is_none() {
        next = Some(empty);
    }
    let mut offset = 0usize;
    while let Some(chunk) = next {
        next = chunks.next();
        let last = next.is_none();
        let seg_end = data + chunk.len();
        let seg = out.get_mut(..seg_end)?;
        seg.get_mut(..data)?.copy_from_slice(headers);
        seg.get_mut(data..)?.copy_from_slice(chunk);
        let mut t = TcpPacket::new_unchecked(seg.get_mut(l4..)?);
        t.set_seq_number(seq.wrapping_add(offset as u32));
        let mut f = flags;
        if !last {
            f &= !(tcp::FIN | tcp::PSH);
        }
        if count > 0 {
            f &= !tcp::CWR;
        }
        t.set_flags(f);
        finish(seg, count)?;
        emit(out.get(..seg_end)?);
        count += 1;
        offset += chunk.len();
    }
    Some(count)
}
