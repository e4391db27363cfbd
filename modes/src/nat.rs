//! NAT forwarding (`ipvsadm -m`, masquerading): in-place rewrites of a frame
//! already classified by [`crate::packet::parse`]. [`dnat`] turns
//! VIP:vport into RIP:rport on requests, [`snat`] turns RIP:rport back into
//! VIP:vport on replies; both keep the IPv4 header checksum and the TCP/UDP
//! checksum valid by RFC 1624 incremental update, for full checksums and
//! for partial ones ([`Csum::Partial`], virtio `NEEDS_CSUM`, GSO
//! super-frames included). Header lengths, `csum_start` and `csum_offset`
//! never change, so the frame's vnet header stays valid as it is. Also the
//! TTL decrement and the MAC rewrite.

use crate::checksum::{fold, udp_finish, update16, update32, update32_partial};
use crate::packet::{Kind, Packet, PROTO_TCP, PROTO_UDP};
use crate::wire::ethernet::{self, EthernetAddress};
use crate::wire::vnet::VnetHdr;
use crate::wire::{get_u16, get_u32, ipv4, set_bytes, set_u16, set_u32, tcp, udp};
use std::net::Ipv4Addr;

/// What the frame's TCP/UDP checksum field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Csum {
    /// A complete checksum (or, for UDP, 0 = none).
    #[default]
    Full,
    /// The uncomplemented pseudo-header sum; the device (or
    /// [`crate::checksum::complete_partial`]) finishes it.
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
            (Kind::Ipv4, PROTO_TCP) => tcp::field::CHECKSUM,
            (Kind::Ipv4, PROTO_UDP) => udp::field::CHECKSUM,
            _ => return Csum::Partial,
        };
        if usize::from(hdr.csum_offset) == expected {
            Csum::Partial
        } else {
            Csum::Full
        }
    }
}

/// RFC 1624 update of a full checksum for a 32-bit and a 16-bit field
/// change at once (one fold instead of two).
#[inline]
fn update_addr_port(csum: u16, old: u32, new: u32, old_port: u16, new_port: u16) -> u16 {
    !fold(
        u64::from(!csum)
            + u64::from(!((old >> 16) as u16))
            + u64::from(!(old as u16))
            + u64::from((new >> 16) as u16)
            + u64::from(new as u16)
            + u64::from(!old_port)
            + u64::from(new_port),
    )
}

/// Rewrites the IPv4 address at `l3 + addr_field` and, for TCP/UDP, the
/// port at `l4 + port_field`, updating both checksums incrementally.
#[inline]
fn rewrite(
    frame: &mut [u8],
    pkt: &Packet,
    csum: Csum,
    addr_field: usize,
    port_field: usize,
    new_addr: Ipv4Addr,
    new_port: u16,
) {
    // Offsets beyond the frame (a `Packet` not from this frame) would also
    // make the additions below overflow-prone: refuse them first.
    if pkt.kind != Kind::Ipv4 || pkt.l3 > frame.len() || pkt.l4 > frame.len() {
        return;
    }
    let l4_csum = match pkt.proto {
        PROTO_TCP => Some(pkt.l4 + tcp::field::CHECKSUM),
        PROTO_UDP => Some(pkt.l4 + udp::field::CHECKSUM),
        _ => None,
    };
    // Touch nothing unless every field we write is in the frame.
    let need = match l4_csum {
        Some(f) => f + 2,
        None => pkt.l3 + ipv4::MIN_HEADER_LEN,
    };
    if frame.len() < need || pkt.l4 < pkt.l3 + ipv4::MIN_HEADER_LEN {
        return;
    }

    let addr_off = pkt.l3 + addr_field;
    let old = get_u32(frame, addr_off);
    let new = u32::from(new_addr);
    if old != new {
        set_u32(frame, addr_off, new);
        let ip_csum = pkt.l3 + ipv4::field::CHECKSUM;
        let c = get_u16(frame, ip_csum);
        set_u16(frame, ip_csum, update32(c, old, new));
    }

    let Some(f) = l4_csum else {
        return;
    };
    let port_off = pkt.l4 + port_field;
    let old_port = get_u16(frame, port_off);
    if old == new && old_port == new_port {
        return;
    }
    set_u16(frame, port_off, new_port);
    let c = get_u16(frame, f);
    let c = match csum {
        // Ports are not in the pseudo-header: only an address change
        // touches a partial sum.
        Csum::Partial if old != new => update32_partial(c, old, new),
        Csum::Partial => return,
        // UDP checksum 0 means none: leave it.
        Csum::Full if pkt.proto == PROTO_UDP && c == 0 => return,
        Csum::Full if pkt.proto == PROTO_UDP => {
            udp_finish(update_addr_port(c, old, new, old_port, new_port))
        }
        Csum::Full => update_addr_port(c, old, new, old_port, new_port),
    };
    set_u16(frame, f, c);
}

/// Request direction: rewrites the destination address to `new_dst` and,
/// for TCP/UDP, the destination port to `new_dport` (ignored for other
/// protocols), updating the IPv4 header checksum and the TCP/UDP checksum
/// incrementally according to `csum`. A UDP checksum of 0 stays 0. Does
/// nothing for ARP or if `frame` is shorter than `pkt` says.
#[inline]
pub fn dnat(frame: &mut [u8], pkt: &Packet, csum: Csum, new_dst: Ipv4Addr, new_dport: u16) {
    rewrite(
        frame,
        pkt,
        csum,
        ipv4::field::DST,
        tcp::field::DST_PORT,
        new_dst,
        new_dport,
    );
}

/// Reply direction: rewrites the source address to `new_src` and, for
/// TCP/UDP, the source port to `new_sport`; otherwise as [`dnat`].
#[inline]
pub fn snat(frame: &mut [u8], pkt: &Packet, csum: Csum, new_src: Ipv4Addr, new_sport: u16) {
    rewrite(
        frame,
        pkt,
        csum,
        ipv4::field::SRC,
        tcp::field::SRC_PORT,
        new_src,
        new_sport,
    );
}

/// Decrements the IPv4 TTL with an incremental header checksum update.
/// Returns false, changing nothing, if the TTL is ≤ 1 (the caller drops the
/// packet or sends ICMP time exceeded), for ARP, or if the frame is too
/// short.
#[inline]
pub fn decrement_ttl(frame: &mut [u8], pkt: &Packet) -> bool {
    if pkt.kind != Kind::Ipv4 || frame.len().saturating_sub(pkt.l3) < ipv4::MIN_HEADER_LEN {
        return false;
    }
    // TTL and protocol form one 16-bit word of the header.
    let off = pkt.l3 + ipv4::field::TTL;
    let old = get_u16(frame, off);
    if old >> 8 <= 1 {
        return false;
    }
    let new = old - 0x0100;
    set_u16(frame, off, new);
    let ip_csum = pkt.l3 + ipv4::field::CHECKSUM;
    let c = get_u16(frame, ip_csum);
    set_u16(frame, ip_csum, update16(c, old, new));
    true
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
