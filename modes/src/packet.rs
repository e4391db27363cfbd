//! The fast-path classifier: [`parse`] validates one Ethernet frame (vnet
//! header already stripped) and returns a small `Copy` summary, [`Packet`],
//! with the offsets, addresses, ports and lengths the data path needs, or
//! the [`DropReason`] that names the first check it failed. ARP, unfragmented
//! IPv4 and unfragmented IPv6 (its extension headers walked by
//! [`ipv6::upper_layer`]) are accepted; 802.1Q tags are unknown ethertypes.

use crate::checksum;
use crate::wire::arp;
use crate::wire::ethernet::{self, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::ipv4;
use crate::wire::ipv6::{self, V6Error};
use crate::wire::{get_array, get_u16, get_u8, icmpv4, tcp, udp};
use core::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use crate::wire::ipv4::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};

/// ICMPv6's next-header number.
pub const PROTO_ICMPV6: u8 = ipv6::NH_ICMPV6;

/// Why [`parse`] rejected a frame. `#[repr(u8)]`, numbered densely from 0 in
/// the order of [`DropReason::ALL`], so it can index a counter array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than the 14-byte Ethernet header.
    TruncatedEthernet = 0,
    /// Ethertype neither IPv4, IPv6 nor ARP (includes 802.1Q).
    UnknownEthertype = 1,
    /// Less than 20 bytes after the Ethernet header.
    TruncatedIpv4 = 2,
    /// IP version is not 4.
    BadIpVersion = 3,
    /// IHL < 5 or the header is longer than the frame.
    BadIhl = 4,
    /// Total length < header length or > the bytes in the frame.
    BadIpLength = 5,
    /// IPv4 header checksum does not verify.
    BadIpChecksum = 6,
    /// A fragment (MF set or a non-zero offset).
    Fragment = 7,
    /// IP payload shorter than a TCP header.
    TruncatedTcp = 8,
    /// TCP data offset < 5 or beyond the IP payload.
    BadTcpOffset = 9,
    /// IP payload shorter than a UDP header.
    TruncatedUdp = 10,
    /// UDP length field different from the IP payload length.
    BadUdpLength = 11,
    /// IP payload shorter than the 8-byte ICMP header.
    TruncatedIcmp = 12,
    /// ARP not Ethernet/IPv4 (htype/ptype/hlen/plen) or truncated.
    BadArp = 13,
    /// IPv6: shorter than the 40-byte header, or an extension header runs
    /// past the end of the frame.
    Ipv6Truncated = 14,
    /// IPv6: the version nibble is not 6.
    Ipv6BadVersion = 15,
    /// IPv6: payload length 0 (jumbograms are not supported), beyond the
    /// frame, or shorter than the extension headers it holds.
    Ipv6BadPayloadLen = 16,
    /// IPv6: a Fragment header.
    Ipv6Fragment = 17,
    /// IPv6: more than [`ipv6::MAX_EXT_HEADERS`] extension headers.
    Ipv6ExtChainTooLong = 18,
    /// IPv6: No Next Header, a misplaced Hop-by-Hop header, or an extension
    /// header that is not walked (AH, Mobility, HIP, Shim6, experimental).
    Ipv6BogusNextHeader = 19,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 20;

    /// Every reason, in discriminant order (`ALL[r as usize] == r`).
    pub const ALL: [DropReason; DropReason::COUNT] = [
        DropReason::TruncatedEthernet,
        DropReason::UnknownEthertype,
        DropReason::TruncatedIpv4,
        DropReason::BadIpVersion,
        DropReason::BadIhl,
        DropReason::BadIpLength,
        DropReason::BadIpChecksum,
        DropReason::Fragment,
        DropReason::TruncatedTcp,
        DropReason::BadTcpOffset,
        DropReason::TruncatedUdp,
        DropReason::BadUdpLength,
        DropReason::TruncatedIcmp,
        DropReason::BadArp,
        DropReason::Ipv6Truncated,
        DropReason::Ipv6BadVersion,
        DropReason::Ipv6BadPayloadLen,
        DropReason::Ipv6Fragment,
        DropReason::Ipv6ExtChainTooLong,
        DropReason::Ipv6BogusNextHeader,
    ];

    /// Stable snake_case name for metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::TruncatedEthernet => "truncated_ethernet",
            DropReason::UnknownEthertype => "unknown_ethertype",
            DropReason::TruncatedIpv4 => "truncated_ipv4",
            DropReason::BadIpVersion => "bad_ip_version",
            DropReason::BadIhl => "bad_ihl",
            DropReason::BadIpLength => "bad_ip_length",
            DropReason::BadIpChecksum => "bad_ip_checksum",
            DropReason::Fragment => "fragment",
            DropReason::TruncatedTcp => "truncated_tcp",
            DropReason::BadTcpOffset => "bad_tcp_offset",
            DropReason::TruncatedUdp => "truncated_udp",
            DropReason::BadUdpLength => "bad_udp_length",
            DropReason::TruncatedIcmp => "truncated_icmp",
            DropReason::BadArp => "bad_arp",
            DropReason::Ipv6Truncated => "ipv6_truncated",
            DropReason::Ipv6BadVersion => "ipv6_bad_version",
            DropReason::Ipv6BadPayloadLen => "ipv6_bad_payload_len",
            DropReason::Ipv6Fragment => "ipv6_fragment",
            DropReason::Ipv6ExtChainTooLong => "ipv6_ext_chain_too_long",
            DropReason::Ipv6BogusNextHeader => "ipv6_bogus_next_header",
        }
    }

    /// The discriminant as an index (`< COUNT`).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The reason for an IPv6 header or extension-chain refusal.
    pub const fn from_v6(e: V6Error) -> DropReason {
        match e {
            V6Error::Truncated => DropReason::Ipv6Truncated,
            V6Error::BadVersion => DropReason::Ipv6BadVersion,
            V6Error::BadPayloadLen => DropReason::Ipv6BadPayloadLen,
            V6Error::Fragment => DropReason::Ipv6Fragment,
            V6Error::ExtChainTooLong => DropReason::Ipv6ExtChainTooLong,
            V6Error::BogusNextHeader => DropReason::Ipv6BogusNextHeader,
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for DropReason {}

/// What the frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An Ethernet/IPv4 ARP packet.
    Arp,
    /// An unfragmented IPv4 packet.
    Ipv4,
    /// An unfragmented IPv6 packet (extension headers, if any, walked).
    Ipv6,
}

/// Summary of a frame accepted by [`parse`]. All offsets are from the start
/// of the Ethernet frame and, with the lengths, lie within the frame.
///
/// For [`Kind::Arp`]: `src`/`dst` are the sender/target protocol addresses,
/// `l3 == l4 ==` 14 and every other field is 0.
///
/// For [`Kind::Ipv4`]: `l4 = l3 + IHL×4`, `l4_len = ip_total_len − IHL×4`
/// (the IP payload; Ethernet padding excluded) and `payload_len` is what
/// follows the L4 header: TCP data offset, UDP 8 bytes, ICMP 8 bytes; for
/// other protocols there is no L4 header and `payload_len == l4_len`.
///
/// For [`Kind::Ipv6`]: `proto` is the upper-layer next header (after any
/// extension headers), `l4` its offset, `ip_total_len = 40 + payload
/// length` (up to 65575 for a GSO super-frame), `l4_len` the bytes from
/// `l4` to the end of the IPv6 payload, `ttl` the hop limit; ICMPv6 has an
/// 8-byte header like ICMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Packet {
    /// ARP, IPv4 or IPv6.
    pub kind: Kind,
    /// Offset of the L3 header (always 14: no VLAN).
    pub l3: usize,
    /// Offset of the L4 header.
    pub l4: usize,
    /// IP protocol ([`PROTO_TCP`], [`PROTO_UDP`], [`PROTO_ICMP`], for IPv6
    /// [`PROTO_ICMPV6`], other).
    pub proto: u8,
    /// IP source (ARP: sender protocol address).
    pub src: IpAddr,
    /// IP destination (ARP: target protocol address).
    pub dst: IpAddr,
    /// TCP/UDP source port, else 0.
    pub sport: u16,
    /// TCP/UDP destination port, else 0.
    pub dport: u16,
    /// TCP flag byte (CWR..FIN, see [`crate::wire::tcp`]), else 0.
    pub tcp_flags: u8,
    /// IPv4 TTL, IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 total length; IPv6 40 + payload length.
    pub ip_total_len: u32,
    /// Length of the IP payload (L4 header plus data).
    pub l4_len: u16,
    /// Bytes after the L4 header.
    pub payload_len: u16,
}

impl Packet {
    /// True for TCP (either family).
    #[inline]
    pub const fn is_tcp(&self) -> bool {
        matches!(self.kind, Kind::Ipv4 | Kind::Ipv6) && self.proto == PROTO_TCP
    }

    /// True for UDP (either family).
    #[inline]
    pub const fn is_udp(&self) -> bool {
        matches!(self.kind, Kind::Ipv4 | Kind::Ipv6) && self.proto == PROTO_UDP
    }

    /// True for ICMP (IPv4).
    #[inline]
    pub const fn is_icmp(&self) -> bool {
        matches!(self.kind, Kind::Ipv4) && self.proto == PROTO_ICMP
    }

    /// True for ICMPv6.
    #[inline]
    pub const fn is_icmpv6(&self) -> bool {
        matches!(self.kind, Kind::Ipv6) && self.proto == PROTO_ICMPV6
    }

    /// True for IPv6.
    #[inline]
    pub const fn is_v6(&self) -> bool {
        matches!(self.kind, Kind::Ipv6)
    }

    /// The IPv4 source (ARP: sender), or `0.0.0.0` for IPv6.
    #[inline]
    pub const fn src4(&self) -> Ipv4Addr {
        match self.src {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        }
    }

    /// The IPv4 destination (ARP: target), or `0.0.0.0` for IPv6.
    #[inline]
    pub const fn dst4(&self) -> Ipv4Addr {
        match self.dst {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
        }
    }

    /// Length of the L4 header (`l4_len − payload_len`).
    #[inline]
    pub const fn l4_header_len(&self) -> usize {
        (self.l4_len as usize).saturating_sub(self.payload_len as usize)
    }

    /// Offset of the L4 payload.
    #[inline]
    pub const fn payload_offset(&self) -> usize {
        self.l4.saturating_add(self.l4_header_len())
    }

    /// Offset just past the IP packet (`l3 + ip_total_len`); Ethernet
    /// padding, if any, starts here.
    #[inline]
    pub const fn ip_end(&self) -> usize {
        self.l3.saturating_add(self.ip_total_len as usize)
    }
}

/// Classifies an Ethernet frame (without vnet header). Never panics; every
/// rejection is a distinct [`DropReason`]. Checks, in order: Ethernet
/// length, ethertype; for ARP the Ethernet/IPv4 format and length; for IPv4
/// length, version, IHL, total length, header checksum, fragmentation, then
/// the TCP/UDP/ICMP header against the IP payload; for IPv6 the header,
/// payload length and extension-header chain ([`ipv6::upper_layer`]), then
/// the TCP/UDP/ICMPv6 header against what remains. GSO super-frames (IP
/// total length up to 65535) parse like any other frame.
#[inline]
pub fn parse(frame: &[u8]) -> Result<Packet, DropReason> {
    let Some((eth, l3)) = frame.split_first_chunk::<{ ethernet::HEADER_LEN }>() else {
        return Err(DropReason::TruncatedEthernet);
    };
    // Compared in network byte order, without a byte swap.
    let ethertype = get_array::<2>(eth, ethernet::field::ETHERTYPE);
    if ethertype == ETHERTYPE_IPV4.to_be_bytes() {
        parse_ipv4(l3)
    } else if ethertype == ETHERTYPE_IPV6.to_be_bytes() {
        parse_ipv6(l3)
    } else if ethertype == ETHERTYPE_ARP.to_be_bytes() {
        let (src, dst) = parse_arp(l3)?;
        Ok(Packet {
            kind: Kind::Arp,
            l3: L3,
            l4: L3,
            proto: 0,
            src: IpAddr::V4(src),
            dst: IpAddr::V4(dst),
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            ttl: 0,
            ip_total_len: 0,
            l4_len: 0,
            payload_len: 0,
        })
    } else {
        Err(DropReason::UnknownEthertype)
    }
}

const L3: usize = ethernet::HEADER_LEN;

/// ARP: `body` is everything after the Ethernet header; returns the sender
/// and target protocol addresses.
#[cold]
fn parse_arp(body: &[u8]) -> Result<(Ipv4Addr, Ipv4Addr), DropReason> {
    let a = arp::ArpPacket::new_checked(body).map_err(|_| DropReason::BadArp)?;
    Ok((a.spa(), a.tpa()))
}

/// IPv4: `ip` is everything after the Ethernet header. Each length is
/// checked once; the fixed headers are then read as arrays, at constant
/// offsets, without further bounds checks.
#[inline]
fn parse_ipv4(ip: &[u8]) -> Result<Packet, DropReason> {
    let Some(h) = ip.first_chunk::<{ ipv4::MIN_HEADER_LEN }>() else {
        return Err(DropReason::TruncatedIpv4);
    };
    let ver_ihl = get_u8(h, ipv4::field::VER_IHL);
    // Version 4 with a 20-byte header (the common case) passes both
    // header checks at once: `h` is that header. The header sum is taken
    // here (the header lies within `ip`) but only checked after the total
    // length, the order the checks are documented in.
    let (hl, hdr_sum) = if ver_ihl == 0x45 {
        (ipv4::MIN_HEADER_LEN, checksum::sum20(h))
    } else {
        if ver_ihl >> 4 != 4 {
            return Err(DropReason::BadIpVersion);
        }
        let hl = usize::from(ver_ihl & 0x0f) * 4;
        if hl < ipv4::MIN_HEADER_LEN || hl > ip.len() {
            return Err(DropReason::BadIhl);
        }
        (hl, checksum::sum(ip.get(..hl).unwrap_or_default()))
    };
    let total = get_u16(h, ipv4::field::TOTAL_LEN);
    let tl = usize::from(total);
    if tl < hl || tl > ip.len() {
        return Err(DropReason::BadIpLength);
    }
    if hdr_sum != 0xffff {
        return Err(DropReason::BadIpChecksum);
    }
    if ipv4::Ipv4Packet::new_unchecked(h.as_slice()).is_fragment() {
        return Err(DropReason::Fragment);
    }
    let seg = ip.get(hl..tl).unwrap_or_default();
    let proto = get_u8(h, ipv4::field::PROTOCOL);
    let (sport, dport, tcp_flags, l4_hdr) = l4_header(seg, proto, PROTO_ICMP)?;
    // tl ≤ 65535 (it came from a u16), so every length below fits a u16.
    let l4_len16 = total.saturating_sub(hl as u16);
    Ok(Packet {
        kind: Kind::Ipv4,
        l3: L3,
        l4: L3 + hl,
        proto,
        src: IpAddr::V4(Ipv4Addr::from(get_array::<4>(h, ipv4::field::SRC))),
        dst: IpAddr::V4(Ipv4Addr::from(get_array::<4>(h, ipv4::field::DST))),
        sport,
        dport,
        tcp_flags,
        ttl: get_u8(h, ipv4::field::TTL),
        ip_total_len: u32::from(total),
        l4_len: l4_len16,
        payload_len: l4_len16.saturating_sub(l4_hdr as u16),
    })
}

/// The L4 header of `seg` (the IP payload from the upper-layer header on):
/// source and destination port, TCP flags and the header's length. `icmp`
/// is the protocol number with an 8-byte ICMP header (1 for IPv4, 58 for
/// IPv6); other protocols have no header here.
#[inline]
fn l4_header(seg: &[u8], proto: u8, icmp: u8) -> Result<(u16, u16, u8, usize), DropReason> {
    // Each L4 header is read as an array after one length check.
    if proto == PROTO_TCP {
        let Some(t) = seg.first_chunk::<{ tcp::MIN_HEADER_LEN }>() else {
            return Err(DropReason::TruncatedTcp);
        };
        let doff = usize::from(get_u8(t, tcp::field::DATA_OFF) >> 4) * 4;
        if doff < tcp::MIN_HEADER_LEN || doff > seg.len() {
            return Err(DropReason::BadTcpOffset);
        }
        Ok((
            get_u16(t, tcp::field::SRC_PORT),
            get_u16(t, tcp::field::DST_PORT),
            get_u8(t, tcp::field::FLAGS),
            doff,
        ))
    } else if proto == PROTO_UDP {
        let Some(u) = seg.first_chunk::<{ udp::HEADER_LEN }>() else {
            return Err(DropReason::TruncatedUdp);
        };
        if usize::from(get_u16(u, udp::field::LENGTH)) != seg.len() {
            return Err(DropReason::BadUdpLength);
        }
        Ok((
            get_u16(u, udp::field::SRC_PORT),
            get_u16(u, udp::field::DST_PORT),
            0,
            udp::HEADER_LEN,
        ))
    } else if proto == icmp {
        if seg.len() < icmpv4::HEADER_LEN {
            return Err(DropReason::TruncatedIcmp);
        }
        Ok((0, 0, 0, icmpv4::HEADER_LEN))
    } else {
        Ok((0, 0, 0, 0))
    }
}

/// IPv6: `ip` is everything after the Ethernet header. The extension-header
/// chain is walked by [`ipv6::upper_layer`] (bounded; fragments refused);
/// a UDP length must match the rest of the payload (a GSO super-frame's
/// UDP length is its own, so UDP super-frames are not accepted, as with
/// IPv4).
#[cold]
fn parse_ipv6(ip: &[u8]) -> Result<Packet, DropReason> {
    let (proto, off) = ipv6::upper_layer(ip).map_err(DropReason::from_v6)?;
    let Some(h) = ip.first_chunk::<{ ipv6::HEADER_LEN }>() else {
        return Err(DropReason::Ipv6Truncated);
    };
    let plen = u32::from(get_u16(h, ipv6::field::PAYLOAD_LEN));
    let end = ipv6::HEADER_LEN + plen as usize;
    let seg = ip.get(off..end).unwrap_or_default();
    let (sport, dport, tcp_flags, l4_hdr) = l4_header(seg, proto, PROTO_ICMPV6)?;
    // `end` ≤ 65575 and `off` ≥ 40, so the upper-layer length fits a u16.
    let l4_len = u16::try_from(seg.len()).unwrap_or(u16::MAX);
    Ok(Packet {
        kind: Kind::Ipv6,
        l3: L3,
        l4: L3 + off,
        proto,
        src: IpAddr::V6(Ipv6Addr::from(get_array::<16>(h, ipv6::field::SRC))),
        dst: IpAddr::V6(Ipv6Addr::from(get_array::<16>(h, ipv6::field::DST))),
        sport,
        dport,
        tcp_flags,
        ttl: get_u8(h, ipv6::field::HOP_LIMIT),
        ip_total_len: ipv6::HEADER_LEN as u32 + plen,
        l4_len,
        payload_len: l4_len.saturating_sub(l4_hdr as u16),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_reason_table_is_consistent() {
        let mut names = std::collections::HashSet::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(*r as u8 as usize, i);
            assert!(names.insert(r.as_str()), "duplicate {}", r.as_str());
            assert!(r
                .as_str()
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_'));
            assert_eq!(r.to_string(), r.as_str());
        }
        assert_eq!(names.len(), DropReason::COUNT);
    }
}
