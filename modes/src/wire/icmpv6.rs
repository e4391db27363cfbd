//! ICMPv6 (RFC 4443) and the Neighbor Discovery messages tapvs answers
//! (RFC 4861): the message view [`Icmpv6Packet`] (type, code, checksum,
//! rest-of-header read as echo id/seq or MTU, the NS/NA target and flags,
//! the ND options), the option walk [`find_nd_option`], and [`Icmpv6Repr`],
//! which parses and builds Echo Request/Reply, Neighbor Solicitation and
//! Advertisement (with source/target link-layer address options) and Packet
//! Too Big. The checksum covers the IPv6 pseudo-header
//! ([`crate::checksum::l4_checksum_v6`]).

use super::ethernet::EthernetAddress;
use super::ipv6::NH_ICMPV6;
use super::{get_array, get_u16, get_u32, get_u8, set_bytes, set_u16, set_u32, set_u8};
use super::{sub, sub_mut, Error};
use crate::checksum;
use std::net::Ipv6Addr;

/// Length of the ICMPv6 header (type, code, checksum, rest-of-header).
pub const HEADER_LEN: usize = 8;
/// Length of a Neighbor Solicitation/Advertisement without options.
pub const ND_LEN: usize = 24;
/// Length of a link-layer address option for Ethernet (type, length 1,
/// 6-byte address).
pub const LL_OPT_LEN: usize = 8;
/// The IPv6 minimum MTU (RFC 8200 §5): an error message, IPv6 header
/// included, must not exceed it.
pub const MIN_MTU: usize = 1280;
/// Most quoted bytes an error can carry within [`MIN_MTU`]
/// (1280 − 40 − 8).
pub const MAX_QUOTE: usize = MIN_MTU - super::ipv6::HEADER_LEN - HEADER_LEN;

/// Type: destination unreachable.
pub const TYPE_DEST_UNREACHABLE: u8 = 1;
/// Type: packet too big.
pub const TYPE_PACKET_TOO_BIG: u8 = 2;
/// Type: time exceeded.
pub const TYPE_TIME_EXCEEDED: u8 = 3;
/// Type: parameter problem.
pub const TYPE_PARAMETER_PROBLEM: u8 = 4;
/// Type: echo request.
pub const TYPE_ECHO_REQUEST: u8 = 128;
/// Type: echo reply.
pub const TYPE_ECHO_REPLY: u8 = 129;
/// Type: neighbor solicitation.
pub const TYPE_NEIGHBOR_SOLICIT: u8 = 135;
/// Type: neighbor advertisement.
pub const TYPE_NEIGHBOR_ADVERT: u8 = 136;

/// ND option: source link-layer address.
pub const OPT_SOURCE_LL_ADDR: u8 = 1;
/// ND option: target link-layer address.
pub const OPT_TARGET_LL_ADDR: u8 = 2;

/// Neighbor Advertisement flag: sender is a router.
pub const NA_ROUTER: u8 = 0x80;
/// Neighbor Advertisement flag: sent in response to a solicitation.
pub const NA_SOLICITED: u8 = 0x40;
/// Neighbor Advertisement flag: override an existing cache entry.
pub const NA_OVERRIDE: u8 = 0x20;

/// True for the RFC 4443 error types (0–127), whose data quote the
/// offending packet.
#[inline]
pub const fn is_error_type(t: u8) -> bool {
    t < 128
}

/// Byte offsets of the ICMPv6 fields.
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
    /// MTU of a packet-too-big message (4 bytes).
    pub const MTU: usize = 4;
    /// Neighbor Advertisement flags (R, S, O in the high bits).
    pub const NA_FLAGS: usize = 4;
    /// Start of data (echo data, quoted packet of errors).
    pub const DATA: usize = 8;
    /// NS/NA target address (16 bytes).
    pub const TARGET: usize = 8;
    /// Start of the NS/NA options.
    pub const ND_OPTIONS: usize = 24;
}

/// Finds the first ND option of `kind` in `opts` (type, length in 8-byte
/// units, body) and returns the whole option. `None` if absent, or if the
/// walk meets an option of length 0 or one running past the end (the
/// options are then invalid, RFC 4861 §4.6).
pub fn find_nd_option(opts: &[u8], kind: u8) -> Option<&[u8]> {
    let mut rest = opts;
    while let [t, units, ..] = *rest {
        let len = usize::from(units) * 8;
        if len == 0 {
            return None;
        }
        let opt = rest.get(..len)?;
        if t == kind {
            return Some(opt);
        }
        rest = rest.get(len..)?;
    }
    None
}

/// True if the ND options are well formed: every option of non-zero
/// length and within `opts`.
pub fn nd_options_valid(opts: &[u8]) -> bool {
    let mut rest = opts;
    while let [_, units, ..] = *rest {
        let len = usize::from(units) * 8;
        match rest.get(len..) {
            Some(r) if len > 0 => rest = r,
            _ => return false,
        }
    }
    rest.is_empty()
}

/// The Ethernet address in a link-layer address option of `kind` (one
/// 8-byte unit), if present and that size.
pub fn ll_addr_option(opts: &[u8], kind: u8) -> Option<EthernetAddress> {
    match find_nd_option(opts, kind)? {
        [_, 1, a, b, c, d, e, f] => Some(EthernetAddress([*a, *b, *c, *d, *e, *f])),
        _ => None,
    }
}

/// A view of an ICMPv6 message. The buffer must be the message exactly
/// (the upper-layer packet) for the data and checksum methods to mean
/// anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        Icmpv6Packet { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// `Err(Truncated)` if shorter than the 8-byte header, or than the
    /// 24 bytes of a Neighbor Solicitation/Advertisement.
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        let need = match self.msg_type() {
            TYPE_NEIGHBOR_SOLICIT | TYPE_NEIGHBOR_ADVERT => ND_LEN,
            _ => HEADER_LEN,
        };
        if len < need {
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

    /// MTU (packet too big).
    #[inline]
    pub fn mtu(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::MTU)
    }

    /// Neighbor Advertisement flags byte ([`NA_ROUTER`] | [`NA_SOLICITED`]
    /// | [`NA_OVERRIDE`]; the low 5 bits are reserved).
    #[inline]
    pub fn na_flags(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::NA_FLAGS)
    }

    /// NS/NA target address.
    #[inline]
    pub fn target_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(get_array::<16>(self.buffer.as_ref(), field::TARGET))
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

    /// For error messages, the quoted packet (its IPv6 header first; it may
    /// be truncated); `None` for other types.
    #[inline]
    pub fn quoted_packet(&self) -> Option<&[u8]> {
        self.is_error().then(|| self.data())
    }

    /// The NS/NA options (after byte 24; empty if shorter).
    #[inline]
    pub fn nd_options(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        sub(b, field::ND_OPTIONS, b.len())
    }

    /// True if the checksum over the pseudo-header and the whole buffer is
    /// correct.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        checksum::l4_checksum_v6(src, dst, NH_ICMPV6, self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
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

    /// Sets the MTU.
    #[inline]
    pub fn set_mtu(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::MTU, v);
    }

    /// Sets the Neighbor Advertisement flags byte.
    #[inline]
    pub fn set_na_flags(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), field::NA_FLAGS, v);
    }

    /// Sets the NS/NA target address.
    #[inline]
    pub fn set_target_addr(&mut self, a: Ipv6Addr) {
        set_bytes(self.buffer.as_mut(), field::TARGET, &a.octets());
    }

    /// Mutable data (after the header).
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        let b = self.buffer.as_mut();
        let len = b.len();
        sub_mut(b, field::DATA, len)
    }

    /// Mutable NS/NA options.
    #[inline]
    pub fn nd_options_mut(&mut self) -> &mut [u8] {
        let b = self.buffer.as_mut();
        let len = b.len();
        sub_mut(b, field::ND_OPTIONS, len)
    }

    /// Computes and stores the checksum over the pseudo-header and the
    /// whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let c = checksum::l4_checksum_v6(src, dst, NH_ICMPV6, self.buffer.as_ref());
        self.set_checksum(c);
    }
}

/// A validated ICMPv6 message of one of the kinds tapvs parses and builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv6Repr<'a> {
    /// Echo request (128).
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Data after the header.
        data: &'a [u8],
    },
    /// Echo reply (129).
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq_no: u16,
        /// Data after the header.
        data: &'a [u8],
    },
    /// Neighbor Solicitation (135).
    NeighborSolicit {
        /// Address whose link-layer address is sought.
        target: Ipv6Addr,
        /// Source link-layer address option, if present.
        source_ll: Option<EthernetAddress>,
    },
    /// Neighbor Advertisement (136).
    NeighborAdvert {
        /// [`NA_ROUTER`] | [`NA_SOLICITED`] | [`NA_OVERRIDE`] (reserved bits
        /// cleared).
        flags: u8,
        /// Address advertised.
        target: Ipv6Addr,
        /// Target link-layer address option, if present.
        target_ll: Option<EthernetAddress>,
    },
    /// Packet Too Big (2).
    PacketTooBig {
        /// MTU of the next hop.
        mtu: u32,
        /// The quoted packet; [`emit`](Icmpv6Repr::emit) writes at most
        /// [`MAX_QUOTE`] bytes of it.
        quoted: &'a [u8],
    },
}

impl<'a> Icmpv6Repr<'a> {
    /// Reads a message sent from `src` to `dst`: `Truncated` if too short,
    /// `Malformed` if the checksum does not verify, the code is not 0, the
    /// type is none of the five kinds, ND options are malformed, or an NS
    /// target is multicast (RFC 4861 §7.1.1). Hop limit 255 is the IPv6
    /// layer's check, not made here.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(
        src: Ipv6Addr,
        dst: Ipv6Addr,
        p: &Icmpv6Packet<&'a T>,
    ) -> Result<Icmpv6Repr<'a>, Error> {
        p.check_len()?;
        if !p.verify_checksum(src, dst) || p.code() != 0 {
            return Err(Error::Malformed);
        }
        let b: &'a [u8] = T::as_ref(p.buffer);
        let data = sub(b, field::DATA, b.len());
        let opts = sub(b, field::ND_OPTIONS, b.len());
        match p.msg_type() {
            TYPE_ECHO_REQUEST => Ok(Icmpv6Repr::EchoRequest {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
                data,
            }),
            TYPE_ECHO_REPLY => Ok(Icmpv6Repr::EchoReply {
                ident: p.echo_ident(),
                seq_no: p.echo_seq_no(),
                data,
            }),
            TYPE_NEIGHBOR_SOLICIT if nd_options_valid(opts) && !p.target_addr().is_multicast() => {
                Ok(Icmpv6Repr::NeighborSolicit {
                    target: p.target_addr(),
                    source_ll: ll_addr_option(opts, OPT_SOURCE_LL_ADDR),
                })
            }
            TYPE_NEIGHBOR_ADVERT if nd_options_valid(opts) => Ok(Icmpv6Repr::NeighborAdvert {
                flags: p.na_flags() & (NA_ROUTER | NA_SOLICITED | NA_OVERRIDE),
                target: p.target_addr(),
                target_ll: ll_addr_option(opts, OPT_TARGET_LL_ADDR),
            }),
            TYPE_PACKET_TOO_BIG => Ok(Icmpv6Repr::PacketTooBig {
                mtu: p.mtu(),
                quoted: data,
            }),
            _ => Err(Error::Malformed),
        }
    }

    /// Bytes [`emit`](Self::emit) writes.
    pub fn buffer_len(&self) -> usize {
        match self {
            Icmpv6Repr::EchoRequest { data, .. } | Icmpv6Repr::EchoReply { data, .. } => {
                HEADER_LEN + data.len()
            }
            Icmpv6Repr::NeighborSolicit { source_ll: ll, .. }
            | Icmpv6Repr::NeighborAdvert { target_ll: ll, .. } => {
                ND_LEN + if ll.is_some() { LL_OPT_LEN } else { 0 }
            }
            Icmpv6Repr::PacketTooBig { quoted, .. } => HEADER_LEN + quoted.len().min(MAX_QUOTE),
        }
    }

    /// Writes the message into the first [`buffer_len`](Self::buffer_len)
    /// bytes of `p` and its checksum for `src` → `dst`. Returns the bytes
    /// written, or `None`, writing nothing, if `p` is shorter than that.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        p: &mut Icmpv6Packet<T>,
    ) -> Option<usize> {
        let n = self.buffer_len();
        let buf = p.buffer.as_mut().get_mut(..n)?;
        buf.fill(0);
        let mut m = Icmpv6Packet::new_unchecked(buf);
        match *self {
            Icmpv6Repr::EchoRequest {
                ident,
                seq_no,
                data,
            }
            | Icmpv6Repr::EchoReply {
                ident,
                seq_no,
                data,
            } => {
                let t = if matches!(self, Icmpv6Repr::EchoRequest { .. }) {
                    TYPE_ECHO_REQUEST
                } else {
                    TYPE_ECHO_REPLY
                };
                m.set_msg_type(t);
                m.set_echo_ident(ident);
                m.set_echo_seq_no(seq_no);
                m.data_mut().copy_from_slice(data);
            }
            Icmpv6Repr::NeighborSolicit { target, source_ll } => {
                m.set_msg_type(TYPE_NEIGHBOR_SOLICIT);
                m.set_target_addr(target);
                if let Some(ll) = source_ll {
                    write_ll_option(m.nd_options_mut(), OPT_SOURCE_LL_ADDR, ll);
                }
            }
            Icmpv6Repr::NeighborAdvert {
                flags,
                target,
                target_ll,
            } => {
                m.set_msg_type(TYPE_NEIGHBOR_ADVERT);
                m.set_na_flags(flags & (NA_ROUTER | NA_SOLICITED | NA_OVERRIDE));
                m.set_target_addr(target);
                if let Some(ll) = target_ll {
                    write_ll_option(m.nd_options_mut(), OPT_TARGET_LL_ADDR, ll);
                }
            }
            Icmpv6Repr::PacketTooBig { mtu, quoted } => {
                m.set_msg_type(TYPE_PACKET_TOO_BIG);
                m.set_mtu(mtu);
                let q = quoted.get(..MAX_QUOTE).unwrap_or(quoted);
                m.data_mut().copy_from_slice(q);
            }
        }
        m.fill_checksum(src, dst);
        Some(n)
    }
}

/// Writes an 8-byte Ethernet link-layer address option at the start of
/// `opts` (nothing if shorter).
fn write_ll_option(opts: &mut [u8], kind: u8, ll: EthernetAddress) {
    set_u8(opts, 0, kind);
    set_u8(opts, 1, 1);
    set_bytes(opts, 2, &ll.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> (Ipv6Addr, Ipv6Addr) {
        (
            "fe80::1".parse().unwrap(),
            "ff02::1:ff00:2".parse().unwrap(),
        )
    }

    fn round_trip(r: Icmpv6Repr<'_>) -> Vec<u8> {
        let (s, d) = addrs();
        let mut b = vec![0xaau8; r.buffer_len() + 3];
        let n = r.emit(s, d, &mut Icmpv6Packet::new_unchecked(&mut b[..]));
        assert_eq!(n, Some(r.buffer_len()));
        b.truncate(r.buffer_len());
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(s, d));
        // Swapping the addresses keeps the sum; another address does not.
        assert!(p.verify_checksum(d, s) && !p.verify_checksum(s, s));
        assert_eq!(Icmpv6Repr::parse(s, d, &p).unwrap(), r);
        b
    }

    #[test]
    fn echo_round_trip() {
        let b = round_trip(Icmpv6Repr::EchoRequest {
            ident: 0x1234,
            seq_no: 7,
            data: b"ping",
        });
        assert_eq!(b[..2], [128, 0]);
        assert_eq!(b[4..], [0x12, 0x34, 0, 7, b'p', b'i', b'n', b'g']);
        let b = round_trip(Icmpv6Repr::EchoReply {
            ident: 1,
            seq_no: 2,
            data: &[],
        });
        assert_eq!(b.len(), 8);
        assert_eq!(b[0], TYPE_ECHO_REPLY);
    }

    #[test]
    fn nd_round_trip_and_options() {
        let ll = EthernetAddress([2, 0, 0, 0, 0, 9]);
        let target: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let b = round_trip(Icmpv6Repr::NeighborSolicit {
            target,
            source_ll: Some(ll),
        });
        assert_eq!(b.len(), 32);
        assert_eq!(b[24..], [1, 1, 2, 0, 0, 0, 0, 9]);
        round_trip(Icmpv6Repr::NeighborSolicit {
            target,
            source_ll: None,
        });
        let b = round_trip(Icmpv6Repr::NeighborAdvert {
            flags: NA_SOLICITED | NA_OVERRIDE,
            target,
            target_ll: Some(ll),
        });
        assert_eq!(b[4], 0x60);
        assert_eq!(b[24..26], [OPT_TARGET_LL_ADDR, 1]);
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.target_addr(), target);
        assert_eq!(ll_addr_option(p.nd_options(), OPT_TARGET_LL_ADDR), Some(ll));
        assert_eq!(ll_addr_option(p.nd_options(), OPT_SOURCE_LL_ADDR), None);
        // An NS is at least 24 bytes.
        assert_eq!(
            Icmpv6Packet::new_checked(&b[..23]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn option_walk_is_bounded() {
        let opts = [9, 1, 0, 0, 0, 0, 0, 0, 2, 1, 1, 2, 3, 4, 5, 6];
        assert!(nd_options_valid(&opts));
        assert_eq!(find_nd_option(&opts, 2), Some(&opts[8..]));
        assert_eq!(
            ll_addr_option(&opts, 2),
            Some(EthernetAddress([1, 2, 3, 4, 5, 6]))
        );
        // Zero length stops the walk; a length past the end too.
        let zero = [9, 0, 0, 0, 0, 0, 0, 0, 2, 1, 1, 2, 3, 4, 5, 6];
        assert!(!nd_options_valid(&zero));
        assert_eq!(find_nd_option(&zero, 2), None);
        assert!(!nd_options_valid(&opts[..15]));
        assert_eq!(find_nd_option(&opts[..15], 2), None);
        assert!(!nd_options_valid(&[1]));
        assert!(nd_options_valid(&[]));
        // A 16-byte link-layer option is not an Ethernet address.
        let long = [1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(ll_addr_option(&long, 1), None);
    }

    #[test]
    fn packet_too_big_quotes_at_most_the_minimum_mtu() {
        let big = vec![0x5au8; 1500];
        let (s, d) = addrs();
        let r = Icmpv6Repr::PacketTooBig {
            mtu: 1400,
            quoted: &big,
        };
        assert_eq!(r.buffer_len(), 8 + MAX_QUOTE);
        assert_eq!(40 + r.buffer_len(), MIN_MTU);
        let mut b = vec![0u8; r.buffer_len()];
        assert_eq!(
            r.emit(s, d, &mut Icmpv6Packet::new_unchecked(&mut b[..])),
            Some(1240)
        );
        let p = Icmpv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.msg_type(), p.mtu()), (TYPE_PACKET_TOO_BIG, 1400));
        assert_eq!(p.quoted_packet(), Some(&big[..MAX_QUOTE]));
        assert!(p.verify_checksum(s, d));
        let small = round_trip(Icmpv6Repr::PacketTooBig {
            mtu: 1280,
            quoted: &big[..48],
        });
        assert_eq!(small.len(), 56);
        // Too small an output buffer: nothing written.
        let mut tiny = [7u8; 20];
        assert_eq!(
            r.emit(s, d, &mut Icmpv6Packet::new_unchecked(&mut tiny[..])),
            None
        );
        assert_eq!(tiny, [7; 20]);
    }

    #[test]
    fn parse_refusals() {
        let (s, d) = addrs();
        let r = Icmpv6Repr::NeighborSolicit {
            target: "2001:db8::2".parse().unwrap(),
            source_ll: Some(EthernetAddress([2, 0, 0, 0, 0, 1])),
        };
        let good = round_trip(r);
        let bad = |f: &dyn Fn(&mut Icmpv6Packet<&mut [u8]>)| {
            let mut b = good.clone();
            let mut p = Icmpv6Packet::new_unchecked(&mut b[..]);
            f(&mut p);
            p.fill_checksum(s, d);
            let p = Icmpv6Packet::new_unchecked(&b[..]);
            Icmpv6Repr::parse(s, d, &p).unwrap_err()
        };
        assert_eq!(bad(&|p| p.set_code(1)), Error::Malformed);
        assert_eq!(bad(&|p| p.set_msg_type(137)), Error::Malformed);
        assert_eq!(
            bad(&|p| p.set_target_addr("ff02::1".parse().unwrap())),
            Error::Malformed
        );
        assert_eq!(bad(&|p| p.nd_options_mut()[1] = 0), Error::Malformed);
        assert_eq!(bad(&|p| p.nd_options_mut()[1] = 2), Error::Malformed);
        let mut b = good.clone();
        b[10] ^= 1;
        let p = Icmpv6Packet::new_unchecked(&b[..]);
        assert_eq!(Icmpv6Repr::parse(s, d, &p).unwrap_err(), Error::Malformed);
        let p = Icmpv6Packet::new_unchecked(&good[..7]);
        assert_eq!(Icmpv6Repr::parse(s, d, &p).unwrap_err(), Error::Truncated);
        assert!(is_error_type(TYPE_PACKET_TOO_BIG) && !is_error_type(TYPE_ECHO_REQUEST));
    }
}
