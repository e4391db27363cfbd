//! IPv4 (RFC 791): the header view [`Ipv4Packet`] with every fixed field,
//! the options slice, the payload bounded by the total length, and header
//! checksum verify/fill. Also the IP protocol numbers the crate uses.

use super::{get_array, get_u16, get_u8, set_bytes, set_u16, set_u8, sub, sub_mut, Error};
use crate::checksum;
use std::net::Ipv4Addr;

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Length of a header with 40 bytes of options.
pub const MAX_HEADER_LEN: usize = 60;
/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of IP-in-IP.
pub const PROTO_IPIP: u8 = 4;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;

/// Byte offsets of the IPv4 header fields.
pub mod field {
    /// Version (high nibble) and IHL (low nibble).
    pub const VER_IHL: usize = 0;
    /// Type of service (DSCP and ECN).
    pub const TOS: usize = 1;
    /// Total length (2 bytes).
    pub const TOTAL_LEN: usize = 2;
    /// Identification (2 bytes).
    pub const IDENT: usize = 4;
    /// Flags (3 high bits) and fragment offset (13 bits), 2 bytes.
    pub const FLAGS_FRAG: usize = 6;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Protocol.
    pub const PROTOCOL: usize = 9;
    /// Header checksum (2 bytes).
    pub const CHECKSUM: usize = 10;
    /// Source address (4 bytes).
    pub const SRC: usize = 12;
    /// Destination address (4 bytes).
    pub const DST: usize = 16;
    /// Start of options.
    pub const OPTIONS: usize = 20;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_MASK: u16 = 0x1fff;

/// A view of an IPv4 packet (header, options, payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks version 4, IHL ≥ 5, header within the buffer and
    /// header length ≤ total length ≤ buffer length (the buffer may be
    /// longer, e.g. Ethernet padding). Does not verify the checksum.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 || self.header_len() < MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if self.header_len() > len {
            return Err(Error::Truncated);
        }
        let total = usize::from(self.total_len());
        if total < self.header_len() {
            return Err(Error::Malformed);
        }
        if total > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Version (4 for a valid packet).
    #[inline]
    pub fn version(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::VER_IHL) >> 4
    }

    /// Internet header length in 32-bit words.
    #[inline]
    pub fn ihl(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::VER_IHL) & 0x0f
    }

    /// Header length in bytes (IHL × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.ihl()) * 4
    }

    /// Type of service byte (DSCP << 2 | ECN).
    #[inline]
    pub fn tos(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::TOS)
    }

    /// Total length (header plus payload).
    #[inline]
    pub fn total_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::TOTAL_LEN)
    }

    /// Identification.
    #[inline]
    pub fn ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::IDENT)
    }

    /// The 3-bit flags field (0b010 = DF, 0b001 = MF; the top bit is
    /// reserved).
    #[inline]
    pub fn flags(&self) -> u8 {
        (get_u16(self.buffer.as_ref(), field::FLAGS_FRAG) >> 13) as u8
    }

    /// Don't-fragment flag.
    #[inline]
    pub fn dont_frag(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & FLAG_DF != 0
    }

    /// More-fragments flag.
    #[inline]
    pub fn more_frags(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & FLAG_MF != 0
    }

    /// Fragment offset in 8-byte units.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & FRAG_MASK
    }

    /// True if this is a fragment (MF set or a non-zero offset).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLAGS_FRAG) & (FLAG_MF | FRAG_MASK) != 0
    }

    /// Time to live.
    #[inline]
    pub fn ttl(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::TTL)
    }

    /// Protocol of the payload ([`PROTO_TCP`], ...).
    #[inline]
    pub fn protocol(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::PROTOCOL)
    }

    /// Header checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    #[inline]
    pub fn src_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(get_array::<4>(self.buffer.as_ref(), field::SRC))
    }

    /// Destination address.
    #[inline]
    pub fn dst_addr(&self) -> Ipv4Addr {
        Ipv4Addr::from(get_array::<4>(self.buffer.as_ref(), field::DST))
    }

    /// The options bytes (between byte 20 and the header length).
    #[inline]
    pub fn options(&self) -> &[u8] {
        sub(self.buffer.as_ref(), field::OPTIONS, self.header_len())
    }

    /// The payload: from the header length to the total length (clamped to
    /// the buffer), so Ethernet padding is excluded.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        sub(
            self.buffer.as_ref(),
            self.header_len(),
            usize::from(self.total_len()),
        )
    }

    /// True if the header checksum is correct (false if the header does
    /// not fit the buffer).
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        let hl = self.header_len();
        match self.buffer.as_ref().get(..hl) {
            Some(h) if hl >= MIN_HEADER_LEN => checksum::sum(h) == 0xffff,
            _ => false,
        }
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the version nibble.
    #[inline]
    pub fn set_version(&mut self, v: u8) {
        let b = get_u8(self.buffer.as_ref(), field::VER_IHL);
        set_u8(self.buffer.as_mut(), field::VER_IHL, (v << 4) | (b & 0x0f));
    }

    /// Sets the IHL nibble (header length in 32-bit words).
    #[inline]
    pub fn set_ihl(&mut self, words: u8) {
        let b = get_u8(self.buffer.as_ref(), field::VER_IHL);
        set_u8(
            self.buffer.as_mut(),
            field::VER_IHL,
            (b & 0xf0) | (words & 0x0f),
        );
    }

    /// Sets the type of service byte.
    #[inline]
    pub fn set_tos(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), field::TOS, v);
    }

    /// Sets the total length.
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::TOTAL_LEN, v);
    }

    /// Sets the identification.
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::IDENT, v);
    }

    #[inline]
    fn update_flags_frag(&mut self, mask: u16, value: u16) {
        let old = get_u16(self.buffer.as_ref(), field::FLAGS_FRAG);
        set_u16(
            self.buffer.as_mut(),
            field::FLAGS_FRAG,
            (old & !mask) | (value & mask),
        );
    }

    /// Sets or clears don't-fragment.
    #[inline]
    pub fn set_dont_frag(&mut self, on: bool) {
        self.update_flags_frag(FLAG_DF, if on { FLAG_DF } else { 0 });
    }

    /// Sets or clears more-fragments.
    #[inline]
    pub fn set_more_frags(&mut self, on: bool) {
        self.update_flags_frag(FLAG_MF, if on { FLAG_MF } else { 0 });
    }

    /// Sets the fragment offset (8-byte units; only the low 13 bits are used).
    #[inline]
    pub fn set_frag_offset(&mut self, v: u16) {
        self.update_flags_frag(FRAG_MASK, v);
    }

    /// Sets the time to live.
    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), field::TTL, v);
    }

    /// Sets the protocol.
    #[inline]
    pub fn set_protocol(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), field::PROTOCOL, v);
    }

    /// Sets the header checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the source address.
    #[inline]
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        set_bytes(self.buffer.as_mut(), field::SRC, &a.octets());
    }

    /// Sets the destination address.
    #[inline]
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        set_bytes(self.buffer.as_mut(), field::DST, &a.octets());
    }

    /// Mutable options bytes.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        sub_mut(self.buffer.as_mut(), field::OPTIONS, hl)
    }

    /// Mutable payload (header length to total length, clamped).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hl, tl) = (self.header_len(), usize::from(self.total_len()));
        sub_mut(self.buffer.as_mut(), hl, tl)
    }

    /// Computes and stores the header checksum (no-op if the header does not
    /// fit the buffer).
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        if let Some(h) = self.buffer.as_ref().get(..hl) {
            let c = checksum::checksum(h);
            self.set_checksum(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> [u8; 24] {
        let mut b = [0u8; 24];
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_version(4);
        p.set_ihl(6);
        p.set_total_len(24);
        p.set_ttl(64);
        p.set_protocol(PROTO_UDP);
        p.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
        p.set_dst_addr(Ipv4Addr::new(10, 0, 0, 2));
        p.options_mut().copy_from_slice(&[1, 1, 1, 0]);
        p.set_dont_frag(true);
        p.fill_checksum();
        b
    }

    #[test]
    fn fields_and_checksum() {
        let b = header();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.version(), p.ihl(), p.header_len()), (4, 6, 24));
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.flags(), 0b010);
        assert_eq!(p.options(), &[1, 1, 1, 0]);
        assert!(p.payload().is_empty());
        assert!(p.verify_checksum());
        let mut c = b;
        c[field::TTL] = 63;
        assert!(!Ipv4Packet::new_unchecked(&c[..]).verify_checksum());
    }

    #[test]
    fn frag_bits() {
        let mut b = header();
        let mut p = Ipv4Packet::new_unchecked(&mut b[..]);
        p.set_frag_offset(0x1fff);
        assert!(p.dont_frag() && p.is_fragment());
        assert_eq!(p.frag_offset(), 0x1fff);
        p.set_frag_offset(0);
        p.set_more_frags(true);
        assert!(p.is_fragment() && p.more_frags());
        p.set_dont_frag(false);
        assert!(!p.dont_frag() && p.more_frags());
    }

    #[test]
    fn check_len_cases() {
        let b = header();
        assert_eq!(
            Ipv4Packet::new_checked(&b[..19]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Ipv4Packet::new_checked(&b[..22]).unwrap_err(),
            Error::Truncated
        );
        let mut v = b;
        v[0] = 0x66;
        assert_eq!(
            Ipv4Packet::new_checked(&v[..]).unwrap_err(),
            Error::Malformed
        );
        let mut v = b;
        v[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&v[..]).unwrap_err(),
            Error::Malformed
        );
        let mut v = b;
        v[3] = 20;
        assert_eq!(
            Ipv4Packet::new_checked(&v[..]).unwrap_err(),
            Error::Malformed
        );
        let mut v = [0u8; 30];
        v[..24].copy_from_slice(&b);
        v[3] = 26;
        let p = Ipv4Packet::new_checked(&v[..]).unwrap();
        assert_eq!(p.payload().len(), 2);
    }
}
