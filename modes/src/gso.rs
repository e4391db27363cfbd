//! Software GSO for the paths where a super-frame cannot be handed to the
//! kernel as it is (TUN mode: virtio-net cannot describe IPIP offload).
//! [`segment_tcp4`] cuts a TCPv4 super-frame into MSS-sized segments the
//! way a TSO device does, each with complete IPv4 and TCP checksums.

use crate::packet::{Kind, Packet, PROTO_TCP};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::tcp::{self, TcpPacket};
use crate::wire::vnet::{VnetHdr, GSO_TCPV4};

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
    mut emit: impl FnMut(&[u8]),
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
    let payload_len = end - data;
    let mss = if !hdr.is_gso() {
        payload_len.max(1)
    } else if hdr.gso_kind() == GSO_TCPV4 && hdr.gso_size > 0 {
        usize::from(hdr.gso_size)
    } else {
        return None;
    };
    let headers = frame.get(..data)?;
    let payload = frame.get(data..end)?;
    if out.len() < data + mss.min(payload_len) {
        return None;
    }
    let ip_in = Ipv4Packet::new_unchecked(frame.get(l3..)?);
    let (ident, src, dst) = (ip_in.ident(), ip_in.src_addr(), ip_in.dst_addr());
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
        // seg_end − l3 ≤ end − l3 = the frame's total length, a u16.
        let total = (seg_end - l3) as u16;
        let mut ip = Ipv4Packet::new_unchecked(seg.get_mut(l3..l4)?);
        ip.set_total_len(total);
        ip.set_ident(ident.wrapping_add(count as u16));
        ip.fill_checksum();
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
        t.fill_checksum(src, dst);
        emit(out.get(..seg_end)?);
        count += 1;
        offset += chunk.len();
    }
    Some(count)
}
