//! TCP (RFC 9293): the segment view [`TcpPacket`] over one whole segment
//! (header, options, payload; the IP payload exactly), flag constants and
//! full-checksum verify/fill over IPv4.

use super::{get_u16, get_u32, get_u8, set_u16, set_u32, set_u8, sub, sub_mut, Error};
use crate::checksum;
use crate::wire::ipv4::PROTO_TCP;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Length of a header without options.
pub const MIN_HEADER_LEN: usize = 20;
/// Length of a header with 40 bytes of options.
pub const MAX_HEADER_LEN: usize = 60;

/// FIN flag bit (in [`TcpPacket::flags`]).
pub const FIN: u8 = 0x01;
/// SYN flag bit.
pub const SYN: u8 = 0x02;
/// RST flag bit.
pub const RST: u8 = 0x04;
/// PSH flag bit.
pub const PSH: u8 = 0x08;
/// ACK flag bit.
pub const ACK: u8 = 0x10;
/// URG flag bit.
pub const URG: u8 = 0x20;
/// ECE flag bit.
pub const ECE: u8 = 0x40;
/// CWR flag bit.
pub const CWR: u8 = 0x80;

/// Option kind: end of option list.
pub const OPT_END: u8 = 0;
/// Option kind: no-operation (one byte, padding).
pub const OPT_NOP: u8 = 1;
/// Option kind: maximum segment size (length 4, SYN only).
pub const OPT_MSS: u8 = 2;
/// Option kind: window scale (length 3).
pub const OPT_WINDOW_SCALE: u8 = 3;
/// Option kind: SACK permitted (length 2).
pub const OPT_SACK_PERMITTED: u8 = 4;
/// Option kind: SACK blocks.
pub const OPT_SACK: u8 = 5;
/// Option kind: timestamps (length 10).
pub const OPT_TIMESTAMPS: u8 = 8;
/// Option kind of the TOA ("TCP option address") client address, as used
/// by Alibaba LVS and DPVS FullNAT (length 8 for IPv4).
pub const OPT_TOA: u8 = 254;

/// Finds the first option of `kind` in the options bytes `opts` (after the
/// 20-byte fixed header) and returns its offset in `opts` and its length
/// (kind and length bytes included). The walk stops at end-of-list, at a
/// length byte < 2 or at an option that overruns `opts` (a malformed list
/// yields `None` for everything after the fault). `kind` must not be
/// [`OPT_END`] or [`OPT_NOP`] (they have no length byte; `None`).
pub fn find_option(opts: &[u8], kind: u8) -> Option<(usize, usize)> {
    if kind == OPT_END || kind == OPT_NOP {
        return None;
    }
    let mut i = 0;
    while let Some(&k) = opts.get(i) {
        match k {
            OPT_END => return None,
            OPT_NOP => i += 1,
            _ => {
                let len = usize::from(*opts.get(i + 1)?);
                if len < 2 || i + len > opts.len() {
                    return None;
                }
                if k == kind {
                    return Some((i, len));
                }
                i += len;
            }
        }
    }
    None
}

/// Byte offsets of the TCP header fields.
pub mod field {
    /// Source port (2 bytes).
    pub const SRC_PORT: usize = 0;
    /// Destination port (2 bytes).
    pub const DST_PORT: usize = 2;
    /// Sequence number (4 bytes).
    pub const SEQ: usize = 4;
    /// Acknowledgment number (4 bytes).
    pub const ACK: usize = 8;
    /// Data offset (high nibble), reserved bits and NS.
    pub const DATA_OFF: usize = 12;
    /// The eight flag bits CWR..FIN.
    pub const FLAGS: usize = 13;
    /// Window (2 bytes).
    pub const WINDOW: usize = 14;
    /// Checksum (2 bytes).
    pub const CHECKSUM: usize = 16;
    /// Urgent pointer (2 bytes).
    pub const URGENT: usize = 18;
    /// Start of options.
    pub const OPTIONS: usize = 20;
}

/// A view of a TCP segment. The buffer must be the segment exactly (the IP
/// payload) for the payload and checksum methods to mean anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the fixed header fits, data offset ≥ 5 and the header (with
    /// options) fits.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.header_len() < MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        if self.header_len() > len {
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

    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::SEQ)
    }

    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::ACK)
    }

    /// Data offset in 32-bit words.
    #[inline]
    pub fn data_offset(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::DATA_OFF) >> 4
    }

    /// Header length in bytes (data offset × 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.data_offset()) * 4
    }

    /// The eight flag bits ([`FIN`] .. [`CWR`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::FLAGS)
    }

    /// SYN set.
    #[inline]
    pub fn syn(&self) -> bool {
        self.flags() & SYN != 0
    }

    /// ACK set.
    #[inline]
    pub fn ack(&self) -> bool {
        self.flags() & ACK != 0
    }

    /// FIN set.
    #[inline]
    pub fn fin(&self) -> bool {
        self.flags() & FIN != 0
    }

    /// RST set.
    #[inline]
    pub fn rst(&self) -> bool {
        self.flags() & RST != 0
    }

    /// Window.
    #[inline]
    pub fn window_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::WINDOW)
    }

    /// Checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::URGENT)
    }

    /// Options bytes (byte 20 to the header length).
    #[inline]
    pub fn options(&self) -> &[u8] {
        sub(self.buffer.as_ref(), field::OPTIONS, self.header_len())
    }

    /// Payload (after the header to the end of the buffer).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        sub(b, self.header_len(), b.len())
    }

    /// True if the full checksum over the pseudo-header and the whole
    /// buffer is correct.
    #[inline]
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        checksum::l4_checksum_v4(src, dst, PROTO_TCP, self.buffer.as_ref()) == 0
    }

    /// [`verify_checksum`](Self::verify_checksum) over the IPv6
    /// pseudo-header (the buffer is the whole segment, extension headers
    /// excluded).
    #[inline]
    pub fn verify_checksum_v6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        checksum::l4_checksum_v6(src, dst, PROTO_TCP, self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
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

    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::SEQ, v);
    }

    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, v: u32) {
        set_u32(self.buffer.as_mut(), field::ACK, v);
    }

    /// Sets the data offset (32-bit words), keeping the reserved/NS bits.
    #[inline]
    pub fn set_data_offset(&mut self, words: u8) {
        let b = get_u8(self.buffer.as_ref(), field::DATA_OFF);
        set_u8(
            self.buffer.as_mut(),
            field::DATA_OFF,
            (words << 4) | (b & 0x0f),
        );
    }

    /// Sets the eight flag bits.
    #[inline]
    pub fn set_flags(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), field::FLAGS, v);
    }

    /// Sets the window.
    #[inline]
    pub fn set_window_len(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::WINDOW, v);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent_at(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::URGENT, v);
    }

    /// Mutable options bytes.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        sub_mut(self.buffer.as_mut(), field::OPTIONS, hl)
    }

    /// Mutable payload.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let b = self.buffer.as_mut();
        let len = b.len();
        sub_mut(b, hl, len)
    }

    /// Computes and stores the full checksum over the pseudo-header and the
    /// whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let c = checksum::l4_checksum_v4(src, dst, PROTO_TCP, self.buffer.as_ref());
        self.set_checksum(c);
    }

    /// [`fill_checksum`](Self::fill_checksum) over the IPv6 pseudo-header.
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let c = checksum::l4_checksum_v6(src, dst, PROTO_TCP, self.buffer.as_ref());
        self.set_checksum(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_flags_and_checksum() {
        let (s, d) = (Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(5, 6, 7, 8));
        let mut b = [0u8; 27];
        let mut t = TcpPacket::new_unchecked(&mut b[..]);
        t.set_src_port(1234);
        t.set_dst_port(80);
        t.set_seq_number(0xdead_beef);
        t.set_ack_number(7);
        t.set_data_offset(6);
        t.set_flags(SYN | ACK);
        t.set_window_len(512);
        t.set_urgent_at(3);
        t.options_mut().copy_from_slice(&[2, 4, 5, 0xb4]);
        t.payload_mut().copy_from_slice(b"abc");
        t.fill_checksum(s, d);
        let t = TcpPacket::new_checked(&b[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port()), (1234, 80));
        assert_eq!((t.seq_number(), t.ack_number()), (0xdead_beef, 7));
        assert_eq!((t.data_offset(), t.header_len()), (6, 24));
        assert!(t.syn() && t.ack() && !t.fin() && !t.rst());
        assert_eq!((t.window_len(), t.urgent_at()), (512, 3));
        assert_eq!(t.options(), &[2, 4, 5, 0xb4]);
        assert_eq!(t.payload(), b"abc");
        assert!(t.verify_checksum(s, d));
        assert!(!t.verify_checksum(d, d));
    }

    #[test]
    fn find_option_walks_the_list() {
        let opts = [1, 2, 4, 5, 0xb4, 1, 3, 3, 7, 254, 8, 0, 80, 1, 2, 3, 4];
        assert_eq!(find_option(&opts, OPT_MSS), Some((1, 4)));
        assert_eq!(find_option(&opts, OPT_WINDOW_SCALE), Some((6, 3)));
        assert_eq!(find_option(&opts, OPT_TOA), Some((9, 8)));
        assert_eq!(find_option(&opts, OPT_TIMESTAMPS), None);
        assert_eq!(find_option(&opts, OPT_NOP), None);
        // after end-of-list, after a bad length, overrunning
        assert_eq!(find_option(&[0, 2, 4, 5, 0xb4], OPT_MSS), None);
        assert_eq!(find_option(&[3, 1, 2, 4, 5, 0xb4], OPT_MSS), None);
        assert_eq!(find_option(&[2, 4, 5], OPT_MSS), None);
        assert_eq!(find_option(&[2], OPT_MSS), None);
        assert_eq!(find_option(&[], OPT_MSS), None);
    }

    #[test]
    fn check_len_cases() {
        let mut b = [0u8; 24];
        assert_eq!(
            TcpPacket::new_checked(&b[..19]).unwrap_err(),
            Error::Truncated
        );
        b[field::DATA_OFF] = 4 << 4;
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap_err(),
            Error::Malformed
        );
        b[field::DATA_OFF] = 7 << 4;
        assert_eq!(
            TcpPacket::new_checked(&b[..]).unwrap_err(),
            Error::Truncated
        );
        b[field::DATA_OFF] = 6 << 4;
        assert!(TcpPacket::new_checked(&b[..]).is_ok());
    }
}
