//! IPv6 (RFC 8200): the fixed-header view [`Ipv6Packet`] with every field,
//! the validated [`Ipv6Repr`], and [`upper_layer`], the bounded walk over
//! the extension-header chain to the upper-layer protocol, whose refusals
//! are the [`V6Error`] reasons. Also the next-header numbers the crate uses.
//!
//! Fragments are refused, not reassembled, and jumbograms (payload length 0
//! with a Hop-by-Hop Jumbo Payload option) are not supported.

use super::{get_array, get_u16, get_u32, get_u8, set_bytes, set_u16, set_u32, set_u8};
use super::{sub, sub_mut, Error};
use core::fmt;
use std::net::Ipv6Addr;

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;
/// Next header: Hop-by-Hop Options.
pub const NH_HOP_BY_HOP: u8 = 0;
/// Next header: TCP.
pub const NH_TCP: u8 = 6;
/// Next header: UDP.
pub const NH_UDP: u8 = 17;
/// Next header: IPv6 encapsulated in IPv6.
pub const NH_IPV6: u8 = 41;
/// Next header: Routing.
pub const NH_ROUTING: u8 = 43;
/// Next header: Fragment.
pub const NH_FRAGMENT: u8 = 44;
/// Next header: Encapsulating Security Payload (opaque; an upper layer here).
pub const NH_ESP: u8 = 50;
/// Next header: Authentication Header.
pub const NH_AH: u8 = 51;
/// Next header: ICMPv6.
pub const NH_ICMPV6: u8 = 58;
/// Next header: No Next Header.
pub const NH_NO_NEXT: u8 = 59;
/// Next header: Destination Options.
pub const NH_DEST_OPTS: u8 = 60;
/// Most extension headers [`upper_layer`] walks before giving up.
pub const MAX_EXT_HEADERS: usize = 8;

/// Byte offsets of the IPv6 header fields.
pub mod field {
    /// Version (4 bits), traffic class (8), flow label (20): 4 bytes.
    pub const VER_TC_FLOW: usize = 0;
    /// Payload length (2 bytes).
    pub const PAYLOAD_LEN: usize = 4;
    /// Next header.
    pub const NEXT_HEADER: usize = 6;
    /// Hop limit.
    pub const HOP_LIMIT: usize = 7;
    /// Source address (16 bytes).
    pub const SRC: usize = 8;
    /// Destination address (16 bytes).
    pub const DST: usize = 24;
    /// Start of the payload (extension headers first, if any).
    pub const PAYLOAD: usize = 40;
}

const FLOW_MASK: u32 = 0x000f_ffff;

/// A view of an IPv6 packet (fixed header, then payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the 40-byte header is within the buffer, version 6, and
    /// 40 + payload length ≤ buffer length (the buffer may be longer, e.g.
    /// Ethernet padding). Does not walk the extension headers
    /// ([`upper_layer`] does).
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 6 {
            return Err(Error::Malformed);
        }
        if HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version (6 for a valid packet).
    #[inline]
    pub fn version(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::VER_TC_FLOW) >> 4
    }

    /// Traffic class (DSCP << 2 | ECN).
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (get_u16(self.buffer.as_ref(), field::VER_TC_FLOW) >> 4) as u8
    }

    /// Flow label (20 bits).
    #[inline]
    pub fn flow_label(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::VER_TC_FLOW) & FLOW_MASK
    }

    /// Payload length: the bytes after the fixed header, extension headers
    /// included.
    #[inline]
    pub fn payload_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::PAYLOAD_LEN)
    }

    /// Next header: the first extension header or the upper-layer protocol.
    #[inline]
    pub fn next_header(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::NEXT_HEADER)
    }

    /// Hop limit.
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::HOP_LIMIT)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(get_array::<16>(self.buffer.as_ref(), field::SRC))
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(get_array::<16>(self.buffer.as_ref(), field::DST))
    }

    /// The payload: from byte 40 to 40 + payload length (clamped to the
    /// buffer), so Ethernet padding is excluded.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        sub(
            self.buffer.as_ref(),
            HEADER_LEN,
            HEADER_LEN + usize::from(self.payload_len()),
        )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the version nibble.
    #[inline]
    pub fn set_version(&mut self, v: u8) {
        let b = get_u8(self.buffer.as_ref(), field::VER_TC_FLOW);
        set_u8(
            self.buffer.as_mut(),
            field::VER_TC_FLOW,
            (v << 4) | (b & 0x0f),
        );
    }

    /// Sets the traffic class.
    #[inline]
    pub fn set_traffic_class(&mut self, v: u8) {
        let w = get_u16(self.buffer.as_ref(), field::VER_TC_FLOW);
        let w = (w & 0xf00f) | (u16::from(v) << 4);
        set_u16(self.buffer.as_mut(), field::VER_TC_FLOW, w);
    }

    /// Sets the flow label (only the low 20 bits are used).
    #[inline]
    pub fn set_flow_label(&mut self, v: u32) {
        let w = get_u32(self.buffer.as_ref(), field::VER_TC_FLOW);
        let w = (w & !FLOW_MASK) | (v & FLOW_MASK);
        set_u32(self.buffer.as_mut(), field::VER_TC_FLOW, w);
    }

    /// Sets the payload length.
    #[inline]
    pub fn set_payload_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::PAYLOAD_LEN, v);
    }

    /// Sets the next header.
    #[inline]
    pub fn set_next_header(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), field::NEXT_HEADER, v);
    }

    /// Sets the hop limit.
    #[inline]
    pub fn set_hop_limit(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), field::HOP_LIMIT, v);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv6Addr) {
        set_bytes(self.buffer.as_mut(), field::SRC, &a.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv6Addr) {
        set_bytes(self.buffer.as_mut(), field::DST, &a.octets());
    }

    /// Mutable payload (byte 40 to 40 + payload length, clamped).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        sub_mut(self.buffer.as_mut(), HEADER_LEN, end)
    }
}

/// Why [`upper_layer`] refused a packet. `#[repr(u8)]`, numbered densely
/// from 0 in the order of [`V6Error::ALL`], so it can index a counter array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum V6Error {
    /// Shorter than the 40-byte header, or an extension header runs past
    /// the end of the buffer.
    Truncated = 0,
    /// The version nibble is not 6.
    BadVersion = 1,
    /// Payload length 0 (a jumbogram, unsupported, or no payload at all),
    /// larger than the buffer after the header, or too short for the
    /// extension headers it holds.
    BadPayloadLen = 2,
    /// A Fragment header (44): fragments are counted and dropped.
    Fragment = 3,
    /// More than [`MAX_EXT_HEADERS`] extension headers.
    ExtChainTooLong = 4,
    /// No upper layer to hand on: No Next Header (59); Hop-by-Hop anywhere
    /// but first (RFC 8200 §4.3); or an extension header this walk does
    /// not skip (AH 51, Mobility 135, HIP 139, Shim6 140, experimental
    /// 253/254), whose body must not be read as an upper layer.
    BogusNextHeader = 5,
}

impl V6Error {
    /// Number of reasons.
    pub const COUNT: usize = 6;

    /// Every reason, in discriminant order (`ALL[r as usize] == r`).
    pub const ALL: [V6Error; V6Error::COUNT] = [
        V6Error::Truncated,
        V6Error::BadVersion,
        V6Error::BadPayloadLen,
        V6Error::Fragment,
        V6Error::ExtChainTooLong,
        V6Error::BogusNextHeader,
    ];

    /// Stable snake_case name for metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            V6Error::Truncated => "ipv6_truncated",
            V6Error::BadVersion => "ipv6_bad_version",
            V6Error::BadPayloadLen => "ipv6_bad_payload_len",
            V6Error::Fragment => "ipv6_fragment",
            V6Error::ExtChainTooLong => "ipv6_ext_chain_too_long",
            V6Error::BogusNextHeader => "ipv6_bogus_next_header",
        }
    }

    /// The discriminant as an index (`< COUNT`).
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for V6Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for V6Error {}

/// True for the extension headers [`upper_layer`] skips (Hop-by-Hop,
/// Routing, Destination Options).
#[inline]
pub const fn is_skipped_ext_header(nh: u8) -> bool {
    matches!(nh, NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS)
}

/// True for next-header values that are extension headers (or No Next
/// Header) which [`upper_layer`] refuses rather than skips.
#[inline]
pub const fn is_refused_next_header(nh: u8) -> bool {
    matches!(nh, NH_NO_NEXT | NH_AH | 135 | 139 | 140 | 253 | 254)
}

/// Walks the IPv6 packet `buf` (fixed header first; the buffer may be
/// longer than the packet, e.g. Ethernet padding) to its upper layer.
/// Returns the upper-layer protocol and its offset from the start of `buf`;
/// the upper-layer packet runs from there to 40 + payload length.
///
/// Checks, in order: 40 bytes present ([`V6Error::Truncated`]), version 6,
/// payload length non-zero and within the buffer; then, for each
/// extension header, at most [`MAX_EXT_HEADERS`] of them: Fragment (44)
/// refused, Hop-by-Hop only first, each header's 2-byte start and whole
/// length within the buffer (`Truncated`) and within the payload length
/// (`BadPayloadLen`). Skips Hop-by-Hop (0), Routing (43) and Destination
/// Options (60); refuses what [`is_refused_next_header`] names; anything
/// else (TCP, UDP, ICMPv6, ESP, IPv6-in-IPv6, unknown numbers) is the
/// upper layer. Reads at most 2 bytes per header and never panics.
pub fn upper_layer(buf: &[u8]) -> Result<(u8, usize), V6Error> {
    if buf.len() < HEADER_LEN {
        return Err(V6Error::Truncated);
    }
    if get_u8(buf, field::VER_TC_FLOW) >> 4 != 6 {
        return Err(V6Error::BadVersion);
    }
    let plen = usize::from(get_u16(buf, field::PAYLOAD_LEN));
    if plen == 0 || HEADER_LEN + plen > buf.len() {
        return Err(V6Error::BadPayloadLen);
    }
    let end = HEADER_LEN + plen;
    let mut nh = get_u8(buf, field::NEXT_HEADER);
    let mut off = HEADER_LEN;
    let mut count = 0usize;
    loop {
        if nh == NH_FRAGMENT {
            return Err(V6Error::Fragment);
        }
        if is_refused_next_header(nh) || (nh == NH_HOP_BY_HOP && count > 0) {
            return Err(V6Error::BogusNextHeader);
        }
        if !is_skipped_ext_header(nh) {
            return Ok((nh, off));
        }
        if count == MAX_EXT_HEADERS {
            return Err(V6Error::ExtChainTooLong);
        }
        count += 1;
        // `off` ≤ `end` ≤ `buf.len()` here, so `off + 2` cannot overflow.
        let Some(&[next, hlen]) = buf.get(off..off + 2) else {
            return Err(V6Error::Truncated);
        };
        let len = (usize::from(hlen) + 1) * 8;
        if off + len > buf.len() {
            return Err(V6Error::Truncated);
        }
        if off + len > end {
            return Err(V6Error::BadPayloadLen);
        }
        off += len;
        nh = next;
    }
}

/// A validated IPv6 fixed header (traffic class and flow label are emitted
/// as 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv6Repr {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Next header (first extension header or upper-layer protocol).
    pub next_header: u8,
    /// Payload length (extension headers included).
    pub payload_len: u16,
    /// Hop limit.
    pub hop_limit: u8,
}

impl Ipv6Repr {
    /// Reads a packet after [`Ipv6Packet::check_len`].
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Result<Ipv6Repr, Error> {
        p.check_len()?;
        Ok(Ipv6Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: p.payload_len(),
            hop_limit: p.hop_limit(),
        })
    }

    /// Bytes [`emit`](Self::emit) writes: [`HEADER_LEN`].
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the whole fixed header: version 6, traffic class and flow
    /// label 0, then the fields.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Ipv6Packet<T>) {
        set_u32(p.buffer.as_mut(), field::VER_TC_FLOW, 6 << 28);
        p.set_payload_len(self.payload_len);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src_addr(self.src);
        p.set_dst_addr(self.dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr(payload_len: u16, next_header: u8) -> Ipv6Repr {
        Ipv6Repr {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
            next_header,
            payload_len,
            hop_limit: 64,
        }
    }

    /// A packet with `exts` extension headers (next header, length in
    /// 8-byte units after the first 8), then a 4-byte upper layer `last`.
    fn chain(exts: &[(u8, u8)], last: u8) -> Vec<u8> {
        let first = exts.first().map_or(last, |e| e.0);
        let mut b = vec![0u8; HEADER_LEN];
        for (i, &(_, units)) in exts.iter().enumerate() {
            let next = exts.get(i + 1).map_or(last, |e| e.0);
            let mut h = vec![0u8; (usize::from(units) + 1) * 8];
            h[0] = next;
            h[1] = units;
            b.extend_from_slice(&h);
        }
        b.extend_from_slice(&[1, 2, 3, 4]);
        let r = repr((b.len() - HEADER_LEN) as u16, first);
        r.emit(&mut Ipv6Packet::new_unchecked(&mut b[..]));
        b
    }

    #[test]
    fn fields_and_repr_round_trip() {
        let mut b = chain(&[], NH_TCP);
        let mut p = Ipv6Packet::new_unchecked(&mut b[..]);
        p.set_traffic_class(0xb8);
        p.set_flow_label(0xf_1234);
        assert_eq!((p.version(), p.traffic_class()), (6, 0xb8));
        assert_eq!(p.flow_label(), 0xf_1234);
        p.set_flow_label(0xfff_ffff);
        assert_eq!((p.version(), p.traffic_class()), (6, 0xb8));
        assert_eq!(p.flow_label(), 0xf_ffff);
        p.set_traffic_class(0);
        assert_eq!(p.flow_label(), 0xf_ffff);
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        p.payload_mut()[0] = 9;
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(Ipv6Repr::parse(&p).unwrap(), repr(4, NH_TCP));
        assert_eq!(p.payload(), &[9, 2, 3, 4]);
        let mut e = [0xffu8; HEADER_LEN];
        repr(4, NH_TCP).emit(&mut Ipv6Packet::new_unchecked(&mut e[..]));
        assert_eq!(e[..8], [0x60, 0, 0, 0, 0, 4, NH_TCP, 64]);
    }

    #[test]
    fn check_len_cases() {
        let b = chain(&[], NH_UDP);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..39]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Ipv6Packet::new_checked(&b[..43]).unwrap_err(),
            Error::Truncated
        );
        let mut v = b.clone();
        v[0] = 0x40;
        assert_eq!(
            Ipv6Packet::new_checked(&v[..]).unwrap_err(),
            Error::Malformed
        );
        let mut padded = b.clone();
        padded.extend_from_slice(&[0; 6]);
        let p = Ipv6Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.payload().len(), 4);
        // Accessors on a short buffer read zeros and write nothing.
        let mut short = [0x60u8, 1, 2];
        let mut p = Ipv6Packet::new_unchecked(&mut short[..]);
        assert_eq!((p.payload_len(), p.hop_limit()), (0, 0));
        assert_eq!(p.dst_addr(), Ipv6Addr::UNSPECIFIED);
        p.set_dst_addr(Ipv6Addr::LOCALHOST);
        p.set_flow_label(5);
        assert!(p.payload().is_empty());
        assert_eq!(short, [0x60, 1, 2]);
    }

    #[test]
    fn walk_skips_the_three_headers() {
        let b = chain(&[], NH_TCP);
        assert_eq!(upper_layer(&b), Ok((NH_TCP, 40)));
        let b = chain(
            &[(NH_HOP_BY_HOP, 0), (NH_ROUTING, 2), (NH_DEST_OPTS, 1)],
            NH_UDP,
        );
        assert_eq!(upper_layer(&b), Ok((NH_UDP, 40 + 8 + 24 + 16)));
        let mut padded = b.clone();
        padded.extend_from_slice(&[0; 10]);
        assert_eq!(upper_layer(&padded), Ok((NH_UDP, 88)));
        // ESP and unknown protocols are upper layers.
        assert_eq!(
            upper_layer(&chain(&[(NH_DEST_OPTS, 0)], NH_ESP)),
            Ok((50, 48))
        );
        assert_eq!(upper_layer(&chain(&[], 200)), Ok((200, 40)));
        // Eight headers pass, nine do not.
        let eight = [(NH_DEST_OPTS, 0); MAX_EXT_HEADERS];
        assert_eq!(upper_layer(&chain(&eight, NH_ICMPV6)), Ok((NH_ICMPV6, 104)));
        let nine = [(NH_ROUTING, 0); MAX_EXT_HEADERS + 1];
        assert_eq!(
            upper_layer(&chain(&nine, NH_TCP)),
            Err(V6Error::ExtChainTooLong)
        );
    }

    #[test]
    fn walk_refusals() {
        let b = chain(&[(NH_DEST_OPTS, 1)], NH_TCP);
        assert_eq!(upper_layer(&b[..39]), Err(V6Error::Truncated));
        let mut v = b.clone();
        v[0] = 0x45;
        assert_eq!(upper_layer(&v), Err(V6Error::BadVersion));
        let mut v = b.clone();
        v[4..6].copy_from_slice(&0u16.to_be_bytes());
        assert_eq!(upper_layer(&v), Err(V6Error::BadPayloadLen));
        // Payload length beyond the buffer.
        assert_eq!(upper_layer(&b[..b.len() - 1]), Err(V6Error::BadPayloadLen));
        // The 16-byte header inside the buffer but past the payload length.
        let mut v = b.clone();
        v[4..6].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(upper_layer(&v), Err(V6Error::BadPayloadLen));
        // The header runs off the buffer (payload length shrunk to match).
        let mut v = b[..50].to_vec();
        v[4..6].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(upper_layer(&v), Err(V6Error::Truncated));
        let mut v = b[..41].to_vec();
        v[4..6].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(upper_layer(&v), Err(V6Error::Truncated));
        // Payload exactly consumed by headers: the upper layer is empty.
        let mut v = b[..56].to_vec();
        v[4..6].copy_from_slice(&16u16.to_be_bytes());
        assert_eq!(upper_layer(&v), Ok((NH_TCP, 56)));
        assert_eq!(
            upper_layer(&chain(&[(NH_ROUTING, 0)], NH_FRAGMENT)),
            Err(V6Error::Fragment)
        );
        assert_eq!(
            upper_layer(&chain(&[], NH_FRAGMENT)),
            Err(V6Error::Fragment)
        );
        for nh in [NH_NO_NEXT, NH_AH, 135, 253] {
            assert_eq!(
                upper_layer(&chain(&[(NH_DEST_OPTS, 0)], nh)),
                Err(V6Error::BogusNextHeader),
                "{nh}"
            );
        }
        assert_eq!(
            upper_layer(&chain(&[(NH_DEST_OPTS, 0), (NH_HOP_BY_HOP, 0)], NH_TCP)),
            Err(V6Error::BogusNextHeader)
        );
    }

    #[test]
    fn error_table_is_consistent() {
        let mut names = std::collections::HashSet::new();
        for (i, r) in V6Error::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(names.insert(r.as_str()));
            assert_eq!(r.to_string(), r.as_str());
        }
        assert_eq!(names.len(), V6Error::COUNT);
    }
}
