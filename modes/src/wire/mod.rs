//! Zero-copy packet views: one file per protocol, each a thin wrapper over a
//! byte buffer (`AsRef<[u8]>` to read, `AsMut<[u8]>` to write) with typed
//! accessors at fixed offsets.
//!
//! Every view has `new_unchecked` (wrap any buffer), `new_checked` (wrap after
//! validating lengths and, where it matters, format fields) and `check_len`.
//! Accessors never panic: on a buffer too short for a field (only possible
//! with `new_unchecked`) a getter returns zero or an empty slice and a setter
//! writes nothing. Multi-byte fields are in network byte order, except in
//! [`vnet`], whose header is little-endian.

pub mod arp;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod ipvs_sync;
pub mod tcp;
pub mod udp;
pub mod vnet;
pub mod vrrp;

pub use arp::{ArpPacket, ArpRepr};
pub use ethernet::{EthernetAddress, EthernetFrame, ParseEthernetAddressError};
pub use icmpv4::Icmpv4Packet;
pub use icmpv6::{Icmpv6Packet, Icmpv6Repr};
pub use ipv4::Ipv4Packet;
pub use ipv6::{Ipv6Packet, Ipv6Repr, V6Error};
pub use tcp::TcpPacket;
pub use udp::UdpPacket;
pub use vnet::{VnetHdr, VNET_HDR_LEN};
pub use vrrp::{VrrpPacket, VrrpRepr};

use core::fmt;

/// Why a view could not be created over a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// The buffer is shorter than the header (or than a length field says).
    Truncated,
    /// A format field has a value this view does not accept.
    Malformed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::Truncated => "truncated packet",
            Error::Malformed => "malformed packet",
        })
    }
}

impl std::error::Error for Error {}

/// Reads the byte at `off`, or 0 if out of range.
#[inline]
pub(crate) fn get_u8(buf: &[u8], off: usize) -> u8 {
    buf.get(off).copied().unwrap_or(0)
}

/// Reads a big-endian `u16` at `off`, or 0 if out of range.
#[inline]
pub(crate) fn get_u16(buf: &[u8], off: usize) -> u16 {
    match buf.get(off..off.wrapping_add(2)) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

/// Reads a big-endian `u32` at `off`, or 0 if out of range.
#[inline]
pub(crate) fn get_u32(buf: &[u8], off: usize) -> u32 {
    match buf.get(off..off.wrapping_add(4)) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// Reads `N` bytes at `off`, or zeros if out of range.
#[inline]
pub(crate) fn get_array<const N: usize>(buf: &[u8], off: usize) -> [u8; N] {
    buf.get(off..off.wrapping_add(N))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .unwrap_or([0; N])
}

/// Writes the byte at `off` if in range.
#[inline]
pub(crate) fn set_u8(buf: &mut [u8], off: usize, v: u8) {
    if let Some(b) = buf.get_mut(off) {
        *b = v;
    }
}

/// Writes a big-endian `u16` at `off` if in range.
#[inline]
pub(crate) fn set_u16(buf: &mut [u8], off: usize, v: u16) {
    if let Some([a, b]) = buf.get_mut(off..off.wrapping_add(2)) {
        [*a, *b] = v.to_be_bytes();
    }
}

/// Writes a big-endian `u32` at `off` if in range.
#[inline]
pub(crate) fn set_u32(buf: &mut [u8], off: usize, v: u32) {
    if let Some([a, b, c, d]) = buf.get_mut(off..off.wrapping_add(4)) {
        [*a, *b, *c, *d] = v.to_be_bytes();
    }
}

/// Copies `src` to `off` if the whole destination range is in the buffer.
#[inline]
pub(crate) fn set_bytes(buf: &mut [u8], off: usize, src: &[u8]) {
    if let Some(d) = buf.get_mut(off..off.wrapping_add(src.len())) {
        d.copy_from_slice(src);
    }
}

/// `buf[start..end]` with `end` clamped to the buffer; empty if `start` is
/// past the (clamped) end.
#[inline]
pub(crate) fn sub(buf: &[u8], start: usize, end: usize) -> &[u8] {
    buf.get(start..end.min(buf.len())).unwrap_or_default()
}

/// Mutable counterpart of [`sub`].
#[inline]
pub(crate) fn sub_mut(buf: &mut [u8], start: usize, end: usize) -> &mut [u8] {
    let len = buf.len();
    buf.get_mut(start..end.min(len)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_never_panic_out_of_range() {
        let mut b = [1u8, 2, 3];
        assert_eq!(get_u16(&b, 1), 0x0203);
        assert_eq!(get_u16(&b, 2), 0);
        assert_eq!(get_u32(&b, 0), 0);
        assert_eq!(get_u16(&b, usize::MAX), 0);
        assert_eq!(get_array::<2>(&b, usize::MAX - 1), [0, 0]);
        set_u16(&mut b, 2, 0xffff);
        set_u32(&mut b, usize::MAX - 1, 0xffff_ffff);
        set_bytes(&mut b, 2, &[9, 9]);
        assert_eq!(b, [1, 2, 3]);
        assert_eq!(sub(&b, 2, 10), &[3]);
        assert!(sub(&b, 5, 1).is_empty());
        assert!(sub_mut(&mut b, 4, 9).is_empty());
    }
}
