//! TOA ("TCP option address", Alibaba LVS / DPVS FullNAT): after FullNAT
//! the real server sees the appliance's local address as the peer, so the
//! client's address and port travel in an 8-byte TCP option, kind 254,
//! length 8, port then IPv4 address in network order:
//! `FE 08 pp pp aa aa aa aa`. A TOA kernel module on the real server reads
//! it from the handshake-completing ACK and reports it as the peer
//! address; LVS and DPVS therefore add it to the first ACK/data segment of
//! a connection (the caller decides which segments get it).
//!
//! An IPv6 client's address travels in the IPv6 TOA option (DPVS), kind
//! 253, length 20: `FD 14 pp pp` and the 16 address bytes. Which option is
//! inserted follows the client address's family, whatever the segment's
//! own family: an IPv6 client over NAT64 gets the 253 option in an IPv4
//! segment.
//!
//! [`insert_toa`] places the option right after the 20-byte fixed TCP
//! header, shifting existing options and payload; [`parse_toa`] reads
//! either kind back.

use crate::checksum::{fold, sum, update16, update16_partial};
use crate::nat::Csum;
use crate::packet::{Kind, Packet};
use crate::wire::tcp::{self, OPT_TOA};
use crate::wire::vnet::VnetHdr;
use crate::wire::{get_array, get_u16, get_u8, ipv4, ipv6, set_bytes, set_u16, set_u8};
use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Length of the IPv4 TOA option.
pub const TOA_LEN: usize = 8;
/// Option kind of the IPv6 TOA.
pub const OPT_TOA_V6: u8 = 253;
/// Length of the IPv6 TOA option.
pub const TOA6_LEN: usize = 20;

/// Why [`insert_toa`] left the frame unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ToaError {
    /// The TCP options would exceed 40 bytes (data offset 15), or a GSO
    /// super-frame's `gso_size` is too small to give up 8 bytes.
    NoRoom,
    /// The frame would not fit the buffer, or the IP packet would exceed
    /// 65535 bytes.
    TooBig,
    /// Not a TCP packet, or `pkt` does not describe a TCP segment inside
    /// `buf[..frame_len]`.
    NotTcp,
}

impl fmt::Display for ToaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ToaError::NoRoom => "no room for the TOA option in the TCP header",
            ToaError::TooBig => "frame too big for the TOA option",
            ToaError::NotTcp => "not a TCP segment",
        })
    }
}

impl std::error::Error for ToaError {}

/// The 8 option bytes for `client:cport`.
#[inline]
pub fn toa_option(client: Ipv4Addr, cport: u16) -> [u8; TOA_LEN] {
    let [p0, p1] = cport.to_be_bytes();
    let [a, b, c, d] = client.octets();
    [OPT_TOA, TOA_LEN as u8, p0, p1, a, b, c, d]
}

/// The 20 option bytes of the IPv6 TOA for `client:cport`.
#[inline]
pub fn toa6_option(client: Ipv6Addr, cport: u16) -> [u8; TOA6_LEN] {
    let mut o = [0u8; TOA6_LEN];
    let [p0, p1] = cport.to_be_bytes();
    o[..4].copy_from_slice(&[OPT_TOA_V6, TOA6_LEN as u8, p0, p1]);
    o[4..].copy_from_slice(&client.octets());
    o
}

/// Inserts the TOA option for `client:cport` into the TCP segment of the
/// Ethernet frame `buf[..frame_len]` (classified as `pkt`), right after the
/// fixed TCP header: options and payload move right by 8, the data offset
/// grows by 2, the IPv4 total length by 8. Ethernet padding is dropped.
///
/// Checksums: the IPv4 header checksum is updated incrementally. A full TCP
/// checksum ([`Csum::Full`]) is updated incrementally for the data offset
/// word, the 8 new bytes and the pseudo-header length (the shifted bytes
/// move by an even amount, so their sum is unchanged). A partial one
/// ([`Csum::Partial`], the pseudo-header sum) is updated for the length
/// change only; `csum_start` and `csum_offset` stay valid since the
/// checksum field is in the fixed header.
///
/// If `hdr` is given, its `hdr_len` (when non-zero) grows by 8, and for a
/// GSO super-frame `gso_size` shrinks by 8, so that every segment the
/// device cuts (each repeating the option) keeps its size on the wire.
///
/// The checksum kind comes from `hdr` ([`Csum::from_vnet`]); without
/// `hdr` the checksum is taken as full. Returns the new frame length. On
/// error nothing is changed.
///
/// An IPv6 `client` inserts the 20-byte IPv6 TOA (kind 253): data offset
/// plus 5 words, lengths plus 20, `hdr_len` plus 20, `gso_size` minus 20. In an IPv6
/// segment the IPv6 payload length grows instead of the IPv4 total length
/// (no header checksum); the segment's family and the option's are
/// independent.
pub fn insert_toa(
    buf: &mut [u8],
    frame_len: usize,
    pkt: &Packet,
    hdr: Option<&mut VnetHdr>,
    client: impl Into<IpAddr>,
    cport: u16,
) -> Result<usize, ToaError> {
    let csum = hdr
        .as_deref()
        .map_or(Csum::Full, |h| Csum::from_vnet(h, pkt));
    insert_toa_with(buf, frame_len, pkt, csum, hdr, client, cport)
}

/// [`insert_toa`] with the checksum kind given explicitly instead of taken
/// from `hdr`; `hdr`, if given, is still adjusted.
pub fn insert_toa_with(
    buf: &mut [u8],
    frame_len: usize,
    pkt: &Packet,
    csum: Csum,
    hdr: Option<&mut VnetHdr>,
    client: impl Into<IpAddr>,
    cport: u16,
) -> Result<usize, ToaError> {
    match client.into() {
        IpAddr::V4(a) => insert_opt(buf, frame_len, pkt, csum, hdr, &toa_option(a, cport)),
        IpAddr::V6(a) => insert_opt(buf, frame_len, pkt, csum, hdr, &toa6_option(a, cport)),
    }
}

/// Inserts `opt` (8 or 20 bytes: a multiple of 4) after the fixed TCP
/// header; see [`insert_toa`].
fn insert_opt(
    buf: &mut [u8],
    frame_len: usize,
    pkt: &Packet,
    csum: Csum,
    hdr: Option<&mut VnetHdr>,
    opt: &[u8],
) -> Result<usize, ToaError> {
    let olen = opt.len();
    if !pkt.is_tcp() {
        return Err(ToaError::NotTcp);
    }
    let v6 = pkt.kind == Kind::Ipv6;
    let ip_hl = if v6 {
        ipv6::HEADER_LEN
    } else {
        ipv4::MIN_HEADER_LEN
    };
    let (l3, l4, end) = (pkt.l3, pkt.l4, pkt.ip_end());
    let thl = pkt.l4_header_len();
    // Ordered so that no addition can overflow.
    if !(frame_len <= buf.len()
        && end <= frame_len
        && l4 <= end
        && l3 <= l4
        && l3 + ip_hl <= l4
        && thl >= tcp::MIN_HEADER_LEN
        && l4 + thl <= end)
    {
        return Err(ToaError::NotTcp);
    }
    if thl + olen > tcp::MAX_HEADER_LEN {
        return Err(ToaError::NoRoom);
    }
    if let Some(h) = &hdr {
        if h.is_gso() && usize::from(h.gso_size) <= olen {
            return Err(ToaError::NoRoom);
        }
    }
    // Lengths as the frame has them (`end` comes from `pkt`): the IPv4
    // total length or the IPv6 payload length.
    let len_off = l3
        + if v6 {
            ipv6::field::PAYLOAD_LEN
        } else {
            ipv4::field::TOTAL_LEN
        };
    let old_total = get_u16(buf, len_off);
    let new_total = u16::try_from(usize::from(old_total) + olen).map_err(|_| ToaError::TooBig)?;
    // The upper-layer length must stay a 16-bit number too.
    let old_l4_len = u16::try_from(end - l4).map_err(|_| ToaError::TooBig)?;
    let new_l4_len = u16::try_from(end - l4 + olen).map_err(|_| ToaError::TooBig)?;
    let new_end = end + olen;
    if new_end > buf.len() {
        return Err(ToaError::TooBig);
    }

    // Everything checked: modify.
    let opt_at = l4 + tcp::field::OPTIONS;
    buf.copy_within(opt_at..end, opt_at + olen);
    set_bytes(buf, opt_at, opt);

    let doff_off = l4 + tcp::field::DATA_OFF;
    let old_word = get_u16(buf, doff_off);
    let doff = get_u8(buf, doff_off);
    set_u8(buf, doff_off, doff.wrapping_add(((olen / 4) as u8) << 4));
    let new_word = get_u16(buf, doff_off);

    set_u16(buf, len_off, new_total);
    if !v6 {
        let ip_csum = l3 + ipv4::field::CHECKSUM;
        let c = get_u16(buf, ip_csum);
        set_u16(buf, ip_csum, update16(c, old_total, new_total));
    }

    let c_off = l4 + tcp::field::CHECKSUM;
    let c = get_u16(buf, c_off);
    let c = match csum {
        Csum::Partial => update16_partial(c, old_l4_len, new_l4_len),
        Csum::Full => !fold(
            u64::from(!c)
                + u64::from(!old_word)
                + u64::from(new_word)
                + u64::from(sum(opt))
                + u64::from(!old_l4_len)
                + u64::from(new_l4_len),
        ),
    };
    set_u16(buf, c_off, c);

    if let Some(h) = hdr {
        if h.hdr_len != 0 {
            h.hdr_len = h.hdr_len.saturating_add(olen as u16);
        }
        if h.is_gso() {
            h.gso_size = h.gso_size.saturating_sub(olen as u16);
        }
    }
    Ok(new_end)
}

/// Reads the TOA option from TCP options bytes (the header after its
/// first 20 bytes): the client address and port of the first option of
/// kind 254 with length 8 (IPv4) or, failing that, of kind 253 with length
/// 20 (IPv6); `None` if neither (no such option, another length, or a
/// malformed option list before it).
pub fn parse_toa(tcp_options: &[u8]) -> Option<(IpAddr, u16)> {
    if let Some((at, TOA_LEN)) = tcp::find_option(tcp_options, OPT_TOA) {
        let port = get_u16(tcp_options, at + 2);
        let addr = Ipv4Addr::from(get_array::<4>(tcp_options, at + 4));
        return Some((IpAddr::V4(addr), port));
    }
    let (at, TOA6_LEN) = tcp::find_option(tcp_options, OPT_TOA_V6)? else {
        return None;
    };
    let port = get_u16(tcp_options, at + 2);
    let addr = Ipv6Addr::from(get_array::<16>(tcp_options, at + 4));
    Some((IpAddr::V6(addr), port))
}
