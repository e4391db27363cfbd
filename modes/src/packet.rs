//! The fast-path classifier: [`parse`] validates one Ethernet frame (vnet
//! header already stripped) and returns a small `Copy` summary, [`Packet`],
//! with the offsets, addresses, ports and lengths the data path needs, or
//! the [`DropReason`] that names the first check it failed. Only ARP and
//! unfragmented IPv4 are accepted; 802.1Q tags are unknown ethertypes.

use crate::checksum;
use crate::wire::arp;
use crate::wire::ethernet::{self, ETHERTYPE_ARP, ETHERTYPE_IPV4};
use crate::wire::ipv4;
use crate::wire::{get_array, get_u16, get_u8, icmpv4, tcp, udp};
use core::fmt;
use std::net::Ipv4Addr;

pub use crate::wire::ipv4::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};

/// Why [`parse`] rejected a frame. `#[repr(u8)]`, numbered densely from 0 in
/// the order of [`DropReason::ALL`], so it can index a counter array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than the 14-byte Ethernet header.
    TruncatedEthernet = 0,
    /// Ethertype neither IPv4 nor ARP (includes 802.1Q).
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
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 14;

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
        }
    }

    /// The discriminant as an index (`< COUNT`).
    pub const fn index(self) -> usize {
        self as usize
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Packet {
    /// ARP or IPv4.
    pub kind: Kind,
    /// Offset of the L3 header (always 14: no VLAN).
    pub l3: usize,
    /// Offset of the L4 header.
    pub l4: usize,
    /// IP protocol ([`PROTO_TCP`], [`PROTO_UDP`], [`PROTO_ICMP`], other).
    pub proto: u8,
    /// IPv4 source (ARP: sender protocol address).
    pub src: Ipv4Addr,
    /// IPv4 destination (ARP: target protocol address).
    pub dst: Ipv4Addr,
    /// TCP/UDP source port, else 0.
    pub sport: u16,
    /// TCP/UDP destination port, else 0.
    pub dport: u16,
    /// TCP flag byte (CWR..FIN, see [`crate::wire::tcp`]), else 0.
    pub tcp_flags: u8,
    /// IPv4 TTL.
    pub ttl: u8,
    /// IPv4 total length.
    pub ip_total_len: u16,
    /// Length of the IP payload (L4 header plus data).
    pub l4_len: u16,
    /// Bytes after the L4 header.
    pub payload_len: u16,
}

impl Packet {
    /// True for TCP.
    #[inline]
    pub const fn is_tcp(&self) -> bool {
        matches!(self.kind, Kind::Ipv4) && self.proto == PROTO_TCP
    }

    /// True for UDP.
    #[inline]
    pub const fn is_udp(&self) -> bool {
        matches!(self.kind, Kind::Ipv4) && self.proto == PROTO_UDP
    }

    /// True for ICMP.
    #[inline]
    pub const fn is_icmp(&self) -> bool {
        matches!(self.kind, Kind::Ipv4) && self.proto == PROTO_ICMP
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
/// the TCP/UDP/ICMP header against the IP payload. GSO super-frames (IP
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
    } else if ethertype == ETHERTYPE_ARP.to_be_bytes() {
        let (src, dst) = parse_arp(l3)?;
        Ok(Packet {
            kind: Kind::Arp,
            l3: L3,
            l4: L3,
            proto: 0,
            src,
            dst,
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
    // Each L4 header is read as an array after one length check.
    let (sport, dport, tcp_flags, l4_hdr) = if proto == PROTO_TCP {
        let Some(t) = seg.first_chunk::<{ tcp::MIN_HEADER_LEN }>() else {
            return Err(DropReason::TruncatedTcp);
        };
        let doff = usize::from(get_u8(t, tcp::field::DATA_OFF) >> 4) * 4;
        if doff < tcp::MIN_HEADER_LEN || doff > seg.len() {
            return Err(DropReason::BadTcpOffset);
        }
        (
            get_u16(t, tcp::field::SRC_PORT),
            get_u16(t, tcp::field::DST_PORT),
            get_u8(t, tcp::field::FLAGS),
            doff,
        )
    } else if proto == PROTO_UDP {
        let Some(u) = seg.first_chunk::<{ udp::HEADER_LEN }>() else {
            return Err(DropReason::TruncatedUdp);
        };
        if usize::from(get_u16(u, udp::field::LENGTH)) != seg.len() {
            return Err(DropReason::BadUdpLength);
        }
        (
            get_u16(u, udp::field::SRC_PORT),
            get_u16(u, udp::field::DST_PORT),
            0,
            udp::HEADER_LEN,
        )
    } else if proto == PROTO_ICMP {
        if seg.len() < icmpv4::HEADER_LEN {
            return Err(DropReason::TruncatedIcmp);
        }
        (0, 0, 0, icmpv4::HEADER_LEN)
    } else {
        (0, 0, 0, 0)
    };
    // tl ≤ 65535 (it came from a u16), so every length below fits a u16.
    let l4_len16 = total.saturating_sub(hl as u16);
    Ok(Packet {
        kind: Kind::Ipv4,
        l3: L3,
        l4: L3 + hl,
        proto,
        src: Ipv4Addr::from(get_array::<4>(h, ipv4::field::SRC)),
        dst: Ipv4Addr::from(get_array::<4>(h, ipv4::field::DST)),
        sport,
        dport,
        tcp_flags,
        ttl: get_u8(h, ipv4::field::TTL),
        ip_total_len: total,
        l4_len: l4_len16,
        payload_len: l4_len16.saturating_sub(l4_hdr as u16),
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
