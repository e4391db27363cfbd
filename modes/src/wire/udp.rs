//! UDP (RFC 768): the datagram view [`UdpPacket`] (ports, length, checksum,
//! payload bounded by the length field) with full-checksum verify/fill over
//! IPv4, honouring "checksum 0 means none".

use super::{get_u16, set_u16, sub, sub_mut, Error};
use crate::checksum;
use crate::wire::ipv4::PROTO_UDP;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

/// Byte offsets of the UDP header fields.
pub mod field {
    /// Source port (2 bytes).
    pub const SRC_PORT: usize = 0;
    /// Destination port (2 bytes).
    pub const DST_PORT: usize = 2;
    /// Length of header plus payload (2 bytes).
    pub const LENGTH: usize = 4;
    /// Checksum (2 bytes; 0 = none).
    pub const CHECKSUM: usize = 6;
}

/// A view of a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the header fits and 8 ≤ length field ≤ buffer length.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let ulen = usize::from(self.len());
        if ulen < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if ulen > len {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field (header plus payload).
    #[inline]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Checksum as stored (0 = none).
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Payload: byte 8 to the length field (clamped to the buffer).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        sub(self.buffer.as_ref(), HEADER_LEN, usize::from(self.len()))
    }

    /// True if the checksum is 0 (none) or correct over the pseudo-header
    /// and the datagram (as bounded by the length field).
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let d = sub(self.buffer.as_ref(), 0, usize::from(self.len()));
        checksum::l4_checksum_v4(src, dst, PROTO_UDP, d) == 0
    }

    /// True if the checksum is correct over the IPv6 pseudo-header and the
    /// datagram (as bounded by the length field). A checksum of 0 is
    /// invalid over IPv6 (RFC 8200 §8.1): false.
    #[inline]
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        let d = sub(self.buffer.as_ref(), 0, usize::from(self.len()));
        checksum::l4_checksum_v6(src, dst, PROTO_UDP, d) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::SRC_PORT, v);
    }

    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::DST_PORT, v);
    }

    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH, v);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Mutable payload.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let ulen = usize::from(self.len());
        sub_mut(self.buffer.as_mut(), HEADER_LEN, ulen)
    }

    /// Computes and stores the full checksum (a computed 0 is stored as
    /// `0xffff`).
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let ulen = usize::from(self.len());
        let d = sub(self.buffer.as_ref(), 0, ulen);
        let c = checksum::udp_finish(checksum::l4_checksum_v4(src, dst, PROTO_UDP, d));
        self.set_checksum(c);
    }

    /// [`fill_checksum`](Self::fill_checksum) over the IPv6 pseudo-header
    /// (a computed 0 is stored as `0xffff`; 0 is never sent over IPv6).
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let ulen = usize::from(self.len());
        let d = sub(self.buffer.as_ref(), 0, ulen);
        let c = checksum::udp_finish(checksum::l4_checksum_v6(src, dst, PROTO_UDP, d));
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_checksum() {
        let (s, d) = (Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(5, 6, 7, 8));
        let mut b = [0u8; 14];
        let mut u = UdpPacket::new_unchecked(&mut b[..]);
        u.set_src_port(53);
        u.set_dst_port(5353);
        u.set_len(12);
        u.payload_mut().copy_from_slice(b"abcd");
        u.fill_checksum(s, d);
        let u = UdpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (53, 5353, 12));
        assert_eq!(u.payload(), b"abcd");
        assert!(u.verify_checksum(s, d));
        assert!(!u.verify_checksum(s, s));
        let mut z = b;
        z[6] = 0;
        z[7] = 0;
        assert!(UdpPacket::new_unchecked(&z[..]).verify_checksum(s, s));
    }

    #[test]
    fn v6_checksum_and_zero_is_invalid() {
        let (s, d): (Ipv6Addr, Ipv6Addr) = (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        );
        let mut b = [0u8; 12];
        let mut u = UdpPacket::new_unchecked(&mut b[..]);
        u.set_src_port(53);
        u.set_len(12);
        u.payload_mut().copy_from_slice(b"abcd");
        u.fill_checksum_v6(s, d);
        let u = UdpPacket::new_unchecked(&b[..]);
        assert!(u.verify_checksum_v6(s, d) && !u.verify_checksum_v6(d, d));
        assert!(!u.verify_checksum(Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(5, 6, 7, 8)));
        let mut z = b;
        z[6] = 0;
        z[7] = 0;
        assert!(!UdpPacket::new_unchecked(&z[..]).verify_checksum_v6(s, d));
    }

    #[test]
    fn check_len_cases() {
        let mut b = [0u8; 10];
        assert_eq!(
            UdpPacket::new_checked(&b[..7]).unwrap_err(),
            Error::Truncated
        );
        b[5] = 7;
        assert_eq!(
            UdpPacket::new_checked(&b[..]).unwrap_err(),
            Error::Malformed
        );
        b[5] = 11;
        assert_eq!(
            UdpPacket::new_checked(&b[..]).unwrap_err(),
            Error::Truncated
        );
        b[5] = 10;
        assert!(UdpPacket::new_checked(&b[..]).is_ok());
    }
}
