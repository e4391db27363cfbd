//! NAT forwarding (`ipvsadm -m`, masquerading): in-place rewrites of a frame
//! already classified by [`crate::packet::parse`]. [`dnat`] turns
//! VIP:vport into RIP:rport on requests, [`snat`] turns RIP:rport back into
//! VIP:vport on replies; both keep the IPv4 header checksum and the TCP/UDP
//! checksum valid by RFC 1624 incremental update, for full checksums and
//! for partial ones ([`Csum::Partial`], virtio `NEEDS_CSUM`, GSO
//! super-frames included). Header lengths, `csum_start` and `csum_offset`
//! never change, so the frame's vnet header stays valid as it is. Also the
//! TTL (IPv6: hop limit) decrement and the MAC rewrite.
//!
//! Both families go through the same functions: the new address is an
//! `impl Into<IpAddr>` ([`Ipv4Addr`] or [`Ipv6Addr`] or [`IpAddr`]) and must
//! be of the packet's family (otherwise nothing changes). IPv6 has no header
//! checksum; its 16-byte addresses enter the TCP/UDP/ICMPv6 checksum through
//! the pseudo-header (RFC 8200 §8.1), and a UDP checksum over IPv6 is never
//! left or made 0 (a result of 0 is sent as `0xffff`). With a Routing
//! header the pseudo-header holds the final destination, not the IPv6
//! destination field: such packets are rewritten as if it were the final
//! destination (tapvs does not forward source-routed traffic).

use crate::checksum::{delta128, delta16, delta32, fold, udp_finish};
use crate::packet::{Kind, Packet, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};
use crate::wire::ethernet::{self, EthernetAddress};
use crate::wire::vnet::VnetHdr;
use crate::wire::{get_array, get_u8, icmpv6, ipv4, ipv6, set_bytes, set_u8, tcp, udp};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What the frame's TCP/UDP checksum field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Csum {
    /// A complete checksum (or, for UDP, 0 = none).
    #[default]
    Full,
    /// The uncomplemented pseudo-header sum; the device (or
    /// [`crate::offload::complete_partial`]) finishes it.
    Partial,
}

impl Csum {
    /// `Partial` when the vnet header has `NEEDS_CSUM`, `csum_start` is the
    /// packet's L4 offset and, for TCP/UDP, `csum_offset` is that
    /// protocol's checksum field (16 / 6); `Full` otherwise (a `NEEDS_CSUM`
    /// pointing elsewhere is not the L4 checksum this crate rewrites).
    #[inline]
    pub fn from_vnet(hdr: &VnetHdr, pkt: &Packet) -> Csum {
        if !hdr.needs_csum() || usize::from(hdr.csum_start) != pkt.l4 {
            return Csum::Full;
        }
        let expected = match (pkt.kind, pkt.proto) {
            (Kind::Ipv4 | Kind::Ipv6, PROTO_TCP) => tcp::field::CHECKSUM,
            (Kind::Ipv4 | Kind::Ipv6, PROTO_UDP) => udp::field::CHECKSUM,
            (Kind::Ipv6, PROTO_ICMPV6) => icmpv6::field::CHECKSUM,
            _ => return Csum::Partial,
        };
        if usize::from(hdr.csum_offset) == expected {
            Csum::Partial
        } else {
            Csum::Full
        }
    }
}

// The checksum arithmetic below follows RFC 1624 eqn. 3,
// `HC' = ~(~HC + ~m + m')`, on words read in *native* byte order: the
// one's-complement sum commutes with byte swapping (RFC 1071 §2(B)), so
// reading the checksum and the changed fields with `from_ne_bytes` and
// storing the result with `to_ne_bytes` gives the same bytes as big-endian
// arithmetic, without the byte swaps. A change is carried as its unfolded
// `~m + m'` ([`delta32`], [`delta16`]) so that one fold serves an address and
// a port together.

/// Applies an unfolded delta to a full checksum.
#[inline(always)]
fn apply(csum: u16, delta: u64) -> u16 {
    !fold(u64::from(!csum) + delta)
}

/// Which end of the packet a rewrite changes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// Source address and port.
    Src,
    /// Destination address and port.
    Dst,
}

impl End {
    /// Offset of the address in the IPv4 header.
    #[inline(always)]
    const fn addr_field(self) -> usize {
        match self {
            End::Src => ipv4::field::SRC,
            End::Dst => ipv4::field::DST,
        }
    }

    /// Offset of the port in the TCP/UDP header (the same for both).
    #[inline(always)]
    const fn port_field(self) -> usize {
        match self {
            End::Src => tcp::field::SRC_PORT,
            End::Dst => tcp::field::DST_PORT,
        }
    }
}

/// Writes the new address into the IPv4 header `ip` and updates its
/// checksum; returns the old and new address as native-order words.
#[inline(always)]
fn rewrite_addr(ip: &mut [u8; ipv4::MIN_HEADER_LEN], end: End, new_addr: Ipv4Addr) -> (u32, u32) {
    let new_octets = new_addr.octets();
    let new = u32::from_ne_bytes(new_octets);
    let old = u32::from_ne_bytes(get_array::<4>(ip, end.addr_field()));
    if old != new {
        set_bytes(ip, end.addr_field(), &new_octets);
        let c = u16::from_ne_bytes(get_array::<2>(ip, ipv4::field::CHECKSUM));
        let c = apply(c, delta32(old, new));
        set_bytes(ip, ipv4::field::CHECKSUM, &c.to_ne_bytes());
    }
    (old, new)
}

/// The address rewrite plus the port in the L4 header `l4` (TCP or UDP,
/// `N` bytes long: its checksum field is the last two) and the L4
/// checksum for the address and port change.
#[inline(always)]
fn rewrite_addr_port<const N: usize>(
    ip: &mut [u8; ipv4::MIN_HEADER_LEN],
    l4: &mut [u8; N],
    udp: bool,
    csum: Csum,
    end: End,
    new_addr: Ipv4Addr,
    new_port: u16,
) {
    let (old, new) = rewrite_addr(ip, end, new_addr);
    let new_port_bytes = new_port.to_be_bytes();
    let old_port = u16::from_ne_bytes(get_array::<2>(l4, end.port_field()));
    let new_port = u16::from_ne_bytes(new_port_bytes);
    if old == new && old_port == new_port {
        return;
    }
    set_bytes(l4, end.port_field(), &new_port_bytes);
    let ck = N - 2;
    let c = u16::from_ne_bytes(get_array::<2>(l4, ck));
    let addr_delta = delta32(old, new);
    let c = match csum {
        // Ports are not in the pseudo-header: only an address change
        // touches a partial sum (P' = ~update32(~P, old, new)).
        Csum::Partial if old != new => !apply(!c, addr_delta),
        Csum::Partial => return,
        // UDP checksum 0 means none: leave it (0 and 0xffff read the same
        // in either byte order).
        Csum::Full if udp && c == 0 => return,
        Csum::Full => {
            let c = apply(c, addr_delta + delta16(old_port, new_port));
            if udp {
                udp_finish(c)
            } else {
                c
            }
        }
    };
    set_bytes(l4, ck, &c.to_ne_bytes());
}

/// Rewrites the IPv4 source or destination address and, for TCP/UDP, the
/// matching port, updating both checksums incrementally.
#[inline(always)]
fn rewrite(
    frame: &mut [u8],
    pkt: &Packet,
    csum: Csum,
    end: End,
    new_addr: Ipv4Addr,
    new_port: u16,
) {
    if pkt.kind != Kind::Ipv4 {
        return;
    }
    // One check per header up front (offsets beyond the frame, as from a
    // `Packet` not of this frame, fail them); fixed-size arrays after that.
    // The IPv4 header must end at or before the L4 offset, and nothing is
    // touched unless every field written is in the frame.
    let Some((head, l4)) = frame.split_at_mut_checked(pkt.l4) else {
        return;
    };
    let Some(ip) = head
        .get_mut(pkt.l3..)
        .and_then(|h| h.first_chunk_mut::<{ ipv4::MIN_HEADER_LEN }>())
    else {
        return;
    };
    match pkt.proto {
        PROTO_TCP => {
            if let Some(h) = l4.first_chunk_mut::<{ tcp::field::CHECKSUM + 2 }>() {
                rewrite_addr_port(ip, h, false, csum, end, new_addr, new_port);
            }
        }
        PROTO_UDP => {
            if let Some(h) = l4.first_chunk_mut::<{ udp::field::CHECKSUM + 2 }>() {
                rewrite_addr_port(ip, h, true, csum, end, new_addr, new_port);
            }
        }
        _ => {
            rewrite_addr(ip, end, new_addr);
        }
    }
}

/// IPv6: rewrites the source or destination address and, for TCP/UDP, the
/// matching port; the TCP/UDP/ICMPv6 checksum follows (full or partial),
/// a UDP one is never 0 afterwards.
#[inline(never)]
fn rewrite6(
    frame: &mut [u8],
    pkt: &Packet,
    csum: Csum,
    end: End,
    new_addr: Ipv6Addr,
    new_port: u16,
) {
    if pkt.kind != Kind::Ipv6 {
        return;
    }
    let Some((head, l4)) = frame.split_at_mut_checked(pkt.l4) else {
        return;
    };
    let Some(ip) = head
        .get_mut(pkt.l3..)
        .and_then(|h| h.first_chunk_mut::<{ ipv6::HEADER_LEN }>())
    else {
        return;
    };
    let addr_field = match end {
        End::Src => ipv6::field::SRC,
        End::Dst => ipv6::field::DST,
    };
    let old = Ipv6Addr::from(get_array::<16>(ip, addr_field));
    // (checksum offset in the L4 header, port carried, UDP)
    let (ck, port, is_udp) = match pkt.proto {
        PROTO_TCP => (tcp::field::CHECKSUM, true, false),
        PROTO_UDP => (udp::field::CHECKSUM, true, true),
        PROTO_ICMPV6 => (icmpv6::field::CHECKSUM, false, false),
        _ => {
            set_bytes(ip, addr_field, &new_addr.octets());
            return;
        }
    };
    let Some(h) = l4.get_mut(..ck + 2) else {
        return;
    };
    set_bytes(ip, addr_field, &new_addr.octets());
    let addr_delta = delta128(old, new_addr);
    let port_delta = if port {
        let old_port = u16::from_be_bytes(get_array::<2>(h, end.port_field()));
        set_bytes(h, end.port_field(), &new_port.to_be_bytes());
        delta16(old_port, new_port)
    } else {
        0
    };
    let c = u16::from_be_bytes(get_array::<2>(h, ck));
    let c = match csum {
        Csum::Partial => !apply(!c, addr_delta),
        Csum::Full => {
            let c = apply(c, addr_delta + port_delta);
            if is_udp {
                udp_finish(c)
            } else {
                c
            }
        }
    };
    set_bytes(h, ck, &c.to_be_bytes());
}

/// Request direction: rewrites the destination address to `new_dst` and,
/// for TCP/UDP, the destination port to `new_dport` (ignored for other
/// protocols), updating the IPv4 header checksum and the TCP/UDP checksum
/// incrementally according to `csum`. Over IPv4 a UDP checksum of 0 stays
/// 0; over IPv6 the TCP/UDP/ICMPv6 checksum is updated for the
/// pseudo-header and a UDP result of 0 is sent as `0xffff`. Does nothing
/// for ARP, for an address of the other family, or if `frame` is shorter
/// than `pkt` says.
#[inline]
pub fn dnat(
    frame: &mut [u8],
    pkt: &Packet,
    csum: Csum,
    new_dst: impl Into<IpAddr>,
    new_dport: u16,
) {
    match new_dst.into() {
        IpAddr::V4(a) => rewrite(frame, pkt, csum, End::Dst, a, new_dport),
        IpAddr::V6(a) => rewrite6(frame, pkt, csum, End::Dst, a, new_dport),
    }
}

/// Reply direction: rewrites the source address to `new_src` and, for
/// TCP/UDP, the source port to `new_sport`; otherwise as [`dnat`].
#[inline]
pub fn snat(
    frame: &mut [u8],
    pkt: &Packet,
    csum: Csum,
    new_src: impl Into<IpAddr>,
    new_sport: u16,
) {
    match new_src.into() {
        IpAddr::V4(a) => rewrite(frame, pkt, csum, End::Src, a, new_sport),
        IpAddr::V6(a) => rewrite6(frame, pkt, csum, End::Src, a, new_sport),
    }
}

/// Decrements the IPv4 TTL with an incremental header checksum update, or
/// the IPv6 hop limit (no header checksum). Returns false, changing
/// nothing, if the TTL/hop limit is ≤ 1 (the caller drops the packet or
/// sends ICMP time exceeded), for ARP, or if the frame is too short.
#[inline]
pub fn decrement_ttl(frame: &mut [u8], pkt: &Packet) -> bool {
    if pkt.kind != Kind::Ipv4 {
        return decrement_hop_limit(frame, pkt);
    }
    let Some(ip) = frame
        .get_mut(pkt.l3..)
        .and_then(|h| h.first_chunk_mut::<{ ipv4::MIN_HEADER_LEN }>())
    else {
        return false;
    };
    let ttl = get_u8(ip, ipv4::field::TTL);
    if ttl <= 1 {
        return false;
    }
    set_u8(ip, ipv4::field::TTL, ttl - 1);
    // TTL and protocol form one 16-bit word m; m' = m − 0x0100, so in
    // RFC 1624's HC' = ~(~HC + ~m + m') the term ~m + m' is 0xfeff for any
    // protocol (the same sum `update16` forms). Native byte order as
    // above: the constant is byte-swapped along with the words.
    const DELTA: u16 = u16::from_ne_bytes(0xfeff_u16.to_be_bytes());
    let c = u16::from_ne_bytes(get_array::<2>(ip, ipv4::field::CHECKSUM));
    let c = apply(c, u64::from(DELTA));
    set_bytes(ip, ipv4::field::CHECKSUM, &c.to_ne_bytes());
    true
}

/// The IPv6 half of [`decrement_ttl`].
#[inline(never)]
fn decrement_hop_limit(frame: &mut [u8], pkt: &Packet) -> bool {
    if pkt.kind != Kind::Ipv6 {
        return false;
    }
    let at = pkt.l3.saturating_add(ipv6::field::HOP_LIMIT);
    match frame.get_mut(at) {
        Some(h) if *h > 1 => {
            *h -= 1;
            true
        }
        _ => false,
    }
}

/// Sets the Ethernet source and destination MACs (no-op on a frame shorter
/// than the Ethernet header).
#[inline]
pub fn set_macs(frame: &mut [u8], src: EthernetAddress, dst: EthernetAddress) {
    if frame.len() < ethernet::HEADER_LEN {
        return;
    }
    set_bytes(frame, ethernet::field::DST, &dst.0);
    set_bytes(frame, ethernet::field::SRC, &src.0);
}
