//! ICMPv4 (RFC 792): the message view [`Icmpv4Packet`] (type, code,
//! checksum, the 4-byte rest-of-header read as echo id/seq or next-hop MTU,
//! and the data, which for error messages is the quoted datagram), plus the
//! type/code constants and the error/query classification.

use super::{get_u16, get_u32, get_u8, set_u16, set_u32, set_u8, sub, sub_mut, Error};
use crate::checksum;

/// Length of the ICMP header (type, code, checksum, rest-of-header).
pub const HEADER_LEN: usize = 8;

/// Type: echo reply.
pub const TYPE_ECHO_REPLY: u8 = 0;
/// Type: destination unreachable.
pub const TYPE_DEST_UNREACHABLE: u8 = 3;
/// Type: source quench.
pub const TYPE_SOURCE_QUENCH: u8 = 4;
/// Type: redirect.
pub const TYPE_REDIRECT: u8 = 5;
/// Type: echo request.
pub const TYPE_ECHO_REQUEST: u8 = 8;
/// Type: time exceeded.
pub const TYPE_TIME_EXCEEDED: u8 = 11;
/// Type: parameter problem.
pub const TYPE_PARAMETER_PROBLEM: u8 = 12;
/// Type: timestamp request.
pub const TYPE_TIMESTAMP: u8 = 13;
/// Type: timestamp reply.
pub const TYPE_TIMESTAMP_REPLY: u8 = 14;

/// Destination unreachable code: network unreachable.
pub const CODE_NET_UNREACHABLE: u8 = 0;
/// Destination unreachable code: host unreachable.
pub const CODE_HOST_UNREACHABLE: u8 = 1;
/// Destination unreachable code: protocol unreachable.
pub const CODE_PROTO_UNREACHABLE: u8 = 2;
/// Destination unreachable code: port unreachable.
pub const CODE_PORT_UNREACHABLE: u8 = 3;
/// Destination unreachable code: fragmentation needed and DF set.
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Destination unreachable code: communication administratively prohibited.
pub const CODE_ADMIN_PROHIBITED: u8 = 13;
/// Time exceeded code: TTL exceeded in transit.
pub const CODE_TTL_EXCEEDED: u8 = 0;
/// Time exceeded code: fragment reassembly time exceeded.
pub const CODE_REASSEMBLY_EXCEEDED: u8 = 1;

/// True for the RFC 792 error types (3, 4, 5, 11, 12), whose data quote
/// the offending datagram.
#[inline]
pub const fn is_error_type(t: u8) -> bool {
    matches!(t, 3 | 4 | 5 | 11 | 12)
}

/// True for the query/informational types an error may be sent about
/// (echo, timestamp, information and address-mask requests and replies:
/// 0, 8, 13–18). Everything else, unknown types included, is treated as an
/// error that must never be answered with an error (as Linux does).
#[inline]
pub const fn is_query_type(t: u8) -> bool {
    matches!(t, 0 | 8 | 13..=18)
}

/// Byte offsets of the ICMP header fields.
pub mod field {
    /// Type.
    pub const TYPE: usize = 0;
    /// Code.
    pub const CODE: usize = 1;
    /// Checksum (2 bytes).
    pub const CHECKSUM: usize = 2;
    /// Rest of header (4 bytes).
    pub const REST: usize = 4;
    /// Echo identifier (2 bytes).
    pub const ECHO_IDENT: usize = 4;
    /// Echo sequence number (2 bytes).
    pub const ECHO_SEQ: usize = 6;
    /// Next-hop MTU of a fragmentation-needed message (2 bytes).
    pub const NEXT_HOP_MTU: usize = 6;
    /// Start of data (the quoted datagram of errors).
    pub const DATA: usize = 8;
}

/// A view of an ICMPv4 message. The buffer must be the message exactly
/// (the IP payload) for the data and checksum methods to mean anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Icmpv4Packet { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Err(Truncated)` if shorter than the 8-byte header.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::TYPE)
    }

    /// Message code.
    #[inline]
    pub fn code(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::CODE)
    }

    /// Checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The 4-byte rest-of-header as one number.
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::REST)
    }

    /// Echo identifier (echo request/reply).
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number (echo request/reply).
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ECHO_SEQ)
    }

    /// Next-hop MTU (destination unreachable, fragmentation needed).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::NEXT_HOP_MTU)
    }

    /// True if the type is an error type ([`is_error_type`]).
    #[inline]
    pub fn is_error(&self) -> bool {
        is_error_type(self.msg_type())
    }

    /// Everything after the 8-byte header.
    #[inline]
    pub fn data(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        sub(b, field::DATA, b.len())
    }

    /// For error messages, the quoted datagram (its IP header first; it may
    /// be truncated); `None` for other types.
    #[inline]
    pub fn quoted_datagram(&self) -> Option<&[u8]> {
        self.is_error().then(|| self.data())
    }

    /// True if the checksum over the whole buffer is correct.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::sum(self.buffer.as_ref()) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Sets the type.
    #[inline]
    pub fn set_msg_type(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), field::TYPE, v);
    }

    /// Sets the code.
    #[inline]
    pub fn set_code(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), field::CODE, v);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the rest-of-header.
    #[inline]
    pub fn set_rest_of_header(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::REST, v);
    }

    /// Sets the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::ECHO_IDENT, v);
    }

    /// Sets the echo sequence number.
    #[inline]
    pub fn set_echo_seq_no(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::ECHO_SEQ, v);
    }

    /// Sets the next-hop MTU.
    #[inline]
    pub fn set_next_hop_mtu(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::NEXT_HOP_MTU, v);
    }

    /// Mutable data (after the header).
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let b = self.buffer.as_mut();
        let len = b.len();
        sub_mut(b, field::DATA, len)
    }

    /// Computes and stores the checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_fields_and_checksum() {
        let mut b = [0u8; 12];
        let mut p = Icmpv4Packet::new_unchecked(&mut b[..]);
        p.set_msg_type(TYPE_ECHO_REQUEST);
        p.set_echo_ident(0x1234);
        p.set_echo_seq_no(9);
        p.data_mut().copy_from_slice(b"ping");
        p.fill_checksum();
        let p = Icmpv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.msg_type(), p.code()), (8, 0));
        assert_eq!((p.echo_ident(), p.echo_seq_no()), (0x1234, 9));
        assert_eq!(p.rest_of_header(), 0x1234_0009);
        assert_eq!(p.data(), b"ping");
        assert!(p.quoted_datagram().is_none());
        assert!(p.verify_checksum());
        assert!(Icmpv4Packet::new_checked(&b[..7]).is_err());
    }

    #[test]
    fn classification() {
        for t in 0..=255u8 {
            assert!(!(is_error_type(t) && is_query_type(t)), "{t}");
        }
        assert!(is_error_type(TYPE_DEST_UNREACHABLE) && is_error_type(TYPE_TIME_EXCEEDED));
        assert!(is_query_type(TYPE_ECHO_REQUEST) && is_query_type(TYPE_TIMESTAMP_REPLY));
        assert!(!is_query_type(9) && !is_query_type(19));
    }
}
