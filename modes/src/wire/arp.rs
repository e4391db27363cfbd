//! ARP for Ethernet/IPv4 (RFC 826): the fixed 28-byte packet view
//! [`ArpPacket`] and the validated [`ArpRepr`] (operation plus the four
//! addresses) used to build requests and replies.

use super::ethernet::{EthernetAddress, ETHERTYPE_IPV4};
use super::{get_array, get_u16, get_u8, set_bytes, set_u16, set_u8, Error};
use std::net::Ipv4Addr;

/// Length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// Hardware type of Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;
/// Operation: request.
pub const OP_REQUEST: u16 = 1;
/// Operation: reply.
pub const OP_REPLY: u16 = 2;

/// Byte offsets of the Ethernet/IPv4 ARP fields.
pub mod field {
    /// Hardware type (2 bytes).
    pub const HTYPE: usize = 0;
    /// Protocol type (2 bytes).
    pub const PTYPE: usize = 2;
    /// Hardware address length (1 byte).
    pub const HLEN: usize = 4;
    /// Protocol address length (1 byte).
    pub const PLEN: usize = 5;
    /// Operation (2 bytes).
    pub const OPER: usize = 6;
    /// Sender hardware address (6 bytes).
    pub const SHA: usize = 8;
    /// Sender protocol address (4 bytes).
    pub const SPA: usize = 14;
    /// Target hardware address (6 bytes).
    pub const THA: usize = 18;
    /// Target protocol address (4 bytes).
    pub const TPA: usize = 24;
}

/// A view of an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len) and checking that
    /// it is Ethernet/IPv4 ARP (htype 1, ptype 0x0800, hlen 6, plen 4).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        if !p.is_ethernet_ipv4() {
            return Err(Error::Malformed);
        }
        Ok(p)
    }

    /// `Err(Truncated)` if the buffer is shorter than [`PACKET_LEN`].
    #[inline]
    pub fn check_len(&self) -> Result<(), Error> {
        if self.buffer.as_ref().len() < PACKET_LEN {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// True if htype, ptype, hlen and plen describe Ethernet/IPv4.
    #[inline]
    pub fn is_ethernet_ipv4(&self) -> bool {
        self.htype() == HTYPE_ETHERNET
            && self.ptype() == ETHERTYPE_IPV4
            && self.hlen() == 6
            && self.plen() == 4
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Hardware type.
    #[inline]
    pub fn htype(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::HTYPE)
    }

    /// Protocol type (an ethertype).
    #[inline]
    pub fn ptype(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::PTYPE)
    }

    /// Hardware address length.
    #[inline]
    pub fn hlen(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::HLEN)
    }

    /// Protocol address length.
    #[inline]
    pub fn plen(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::PLEN)
    }

    /// Operation ([`OP_REQUEST`], [`OP_REPLY`], ...).
    #[inline]
    pub fn op(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::OPER)
    }

    /// Sender hardware address.
    #[inline]
    pub fn sha(&self) -> EthernetAddress {
        EthernetAddress(get_array(self.buffer.as_ref(), field::SHA))
    }

    /// Sender protocol address.
    #[inline]
    pub fn spa(&self) -> Ipv4Addr {
        Ipv4Addr::from(get_array::<4>(self.buffer.as_ref(), field::SPA))
    }

    /// Target hardware address.
    #[inline]
    pub fn tha(&self) -> EthernetAddress {
        EthernetAddress(get_array(self.buffer.as_ref(), field::THA))
    }

    /// Target protocol address.
    #[inline]
    pub fn tpa(&self) -> Ipv4Addr {
        Ipv4Addr::from(get_array::<4>(self.buffer.as_ref(), field::TPA))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Sets the hardware type.
    #[inline]
    pub fn set_htype(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::HTYPE, v);
    }

    /// Sets the protocol type.
    #[inline]
    pub fn set_ptype(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::PTYPE, v);
    }

    /// Sets the hardware address length.
    #[inline]
    pub fn set_hlen(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), field::HLEN, v);
    }

    /// Sets the protocol address length.
    #[inline]
    pub fn set_plen(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), field::PLEN, v);
    }

    /// Sets the operation.
    #[inline]
    pub fn set_op(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::OPER, v);
    }

    /// Sets the sender hardware address.
    #[inline]
    pub fn set_sha(&mut self, a: EthernetAddress) {
        set_bytes(self.buffer.as_mut(), field::SHA, &a.0);
    }

    /// Sets the sender protocol address.
    #[inline]
    pub fn set_spa(&mut self, a: Ipv4Addr) {
        set_bytes(self.buffer.as_mut(), field::SPA, &a.octets());
    }

    /// Sets the target hardware address.
    #[inline]
    pub fn set_tha(&mut self, a: EthernetAddress) {
        set_bytes(self.buffer.as_mut(), field::THA, &a.0);
    }

    /// Sets the target protocol address.
    #[inline]
    pub fn set_tpa(&mut self, a: Ipv4Addr) {
        set_bytes(self.buffer.as_mut(), field::TPA, &a.octets());
    }
}

/// A validated Ethernet/IPv4 ARP message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    /// Operation ([`OP_REQUEST`] or [`OP_REPLY`]; others are kept as is).
    pub op: u16,
    /// Sender hardware address.
    pub sha: EthernetAddress,
    /// Sender protocol address.
    pub spa: Ipv4Addr,
    /// Target hardware address.
    pub tha: EthernetAddress,
    /// Target protocol address.
    pub tpa: Ipv4Addr,
}

impl ArpRepr {
    /// Reads a packet, refusing short or non-Ethernet/IPv4 ones.
    pub fn parse<T: AsRef<[u8]>>(p: &ArpPacket<T>) -> Result<ArpRepr, Error> {
        p.check_len()?;
        if !p.is_ethernet_ipv4() {
            return Err(Error::Malformed);
        }
        Ok(ArpRepr {
            op: p.op(),
            sha: p.sha(),
            spa: p.spa(),
            tha: p.tha(),
            tpa: p.tpa(),
        })
    }

    /// Bytes [`emit`](Self::emit) writes: [`PACKET_LEN`].
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes every field, including htype/ptype/hlen/plen.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut ArpPacket<T>) {
        p.set_htype(HTYPE_ETHERNET);
        p.set_ptype(ETHERTYPE_IPV4);
        p.set_hlen(6);
        p.set_plen(4);
        p.set_op(self.op);
        p.set_sha(self.sha);
        p.set_spa(self.spa);
        p.set_tha(self.tha);
        p.set_tpa(self.tpa);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repr_round_trip_and_validation() {
        let r = ArpRepr {
            op: OP_REQUEST,
            sha: EthernetAddress([2, 0, 0, 0, 0, 1]),
            spa: Ipv4Addr::new(10, 0, 0, 1),
            tha: EthernetAddress::ZERO,
            tpa: Ipv4Addr::new(10, 0, 0, 2),
        };
        let mut b = [0u8; PACKET_LEN];
        r.emit(&mut ArpPacket::new_unchecked(&mut b[..]));
        let p = ArpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(ArpRepr::parse(&p).unwrap(), r);
        assert_eq!(
            ArpPacket::new_checked(&b[..27]).unwrap_err(),
            Error::Truncated
        );
        b[field::HLEN] = 8;
        assert_eq!(
            ArpPacket::new_checked(&b[..]).unwrap_err(),
            Error::Malformed
        );
        assert_eq!(
            ArpRepr::parse(&ArpPacket::new_unchecked(&b[..])).unwrap_err(),
            Error::Malformed
        );
    }
}
