//! Frames the appliance originates for high availability: the complete
//! Ethernet/IPv4 frame of a VRRP advertisement ([`vrrp_advert`]), its
//! Ethernet/IPv6 version 3 counterpart ([`vrrp_advert6`]), and of a UDP
//! datagram whose payload the caller already wrote in place (IPVS sync
//! messages, [`udp_in_place`]). Pure, no allocation: the caller's buffer
//! receives the frame.

use crate::wire::ethernet::{self, EthernetAddress, EthernetFrame, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use crate::wire::ipv4::{self, Ipv4Packet, PROTO_UDP};
use crate::wire::ipv6::{self, Ipv6Packet, Ipv6Repr};
use crate::wire::udp::{self, UdpPacket};
use crate::wire::vrrp::{VrrpPacket, VrrpRepr, PROTO_VRRP, TTL};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The Ethernet multicast address of an IPv6 group (33:33 and its last 32 bits), for adverts
/// to ff02::12.
pub use crate::reply::ipv6_multicast_mac;

/// Type of service of adverts (precedence "internetwork control", as keepalived).
pub const ADVERT_TOS: u8 = 0xc0;

/// The Ethernet multicast address of an IPv4 multicast group (RFC 1112:
/// 01:00:5e and the low 23 bits of the group).
pub fn ipv4_multicast_mac(group: Ipv4Addr) -> EthernetAddress {
    let o = group.octets();
    EthernetAddress([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]])
}

/// Writes an advertisement frame: Ethernet from `src_mac` to `dst_mac`, IPv4
/// from `src` to `dst` with TTL 255, TOS 0xc0, identification `ident`,
/// protocol 112, then the message of `repr` with `addrs`. Returns its length,
/// or `None` if `out` is too small.
#[allow(clippy::too_many_arguments)]
pub fn vrrp_advert(
    out: &mut [u8],
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    repr: &VrrpRepr,
    addrs: &[Ipv4Addr],
) -> Option<usize> {
    let msg_len = repr.buffer_len();
    let ip_len = ipv4::MIN_HEADER_LEN + msg_len;
    let len = ethernet::HEADER_LEN + ip_len;
    let buf = out.get_mut(..len)?;
    buf.fill(0);
    let mut eth = EthernetFrame::new_unchecked(&mut *buf);
    eth.set_dst_addr(dst_mac);
    eth.set_src_addr(src_mac);
    eth.set_ethertype(ETHERTYPE_IPV4);
    let ipb = buf.get_mut(ethernet::HEADER_LEN..)?;
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut *ipb);
        ip.set_version(4);
        ip.set_ihl(5);
        ip.set_tos(ADVERT_TOS);
        ip.set_total_len(u16::try_from(ip_len).ok()?);
        ip.set_ident(ident);
        ip.set_ttl(TTL);
        ip.set_protocol(PROTO_VRRP);
        ip.set_src_addr(src);
        ip.set_dst_addr(dst);
        ip.fill_checksum();
    }
    let msg = ipb.get_mut(ipv4::MIN_HEADER_LEN..)?;
    repr.emit(&mut VrrpPacket::new_unchecked(msg), addrs, src, dst);
    Some(len)
}

/// Writes a version 3 advertisement over IPv6 (RFC 5798 §5.1.2): Ethernet
/// from `src_mac` to `dst_mac`, IPv6 from `src` (the port's link-local
/// address) to `dst` (ff02::12 and 33:33:00:00:00:12, or a unicast peer)
/// with hop limit 255 and next header 112, then the message of `repr` with
/// `addrs` (checksum over the IPv6 pseudo-header). Returns its length, or
/// `None` if `out` is too small.
pub fn vrrp_advert6(
    out: &mut [u8],
    src_mac: EthernetAddress,
    dst_mac: EthernetAddress,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    repr: &VrrpRepr,
    addrs: &[Ipv6Addr],
) -> Option<usize> {
    let msg_len = repr.buffer_len6();
    let len = ethernet::HEADER_LEN + ipv6::HEADER_LEN + msg_len;
    let buf = out.get_mut(..len)?;
    buf.fill(0);
    let mut eth = EthernetFrame::new_unchecked(&mut *buf);
    eth.set_dst_addr(dst_mac);
    eth.set_src_addr(src_mac);
    eth.set_ethertype(ETHERTYPE_IPV6);
    let ipb = buf.get_mut(ethernet::HEADER_LEN..)?;
    Ipv6Repr {
        src,
        dst,
        next_header: PROTO_VRRP,
        payload_len: u16::try_from(msg_len).ok()?,
        hop_limit: TTL,
    }
    .emit(&mut Ipv6Packet::new_unchecked(&mut *ipb));
    let msg = ipb.get_mut(ipv6::HEADER_LEN..)?;
    repr.emit6(&mut VrrpPacket::new_unchecked6(msg), addrs, src, dst);
    Some(len)
}

/// Where [`udp_in_place`] expects the payload: after Ethernet, IPv4 and UDP headers.
pub const UDP_PAYLOAD_OFF: usize = ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN + udp::HEADER_LEN;

/// Addresses and header fields of a generated UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpHdr {
    /// Ethernet source.
    pub src_mac: EthernetAddress,
    /// Ethernet destination.
    pub dst_mac: EthernetAddress,
    /// IP source.
    pub src: Ipv4Addr,
    /// IP destination.
    pub dst: Ipv4Addr,
    /// IP TTL.
    pub ttl: u8,
    /// IP identification.
    pub ident: u16,
    /// UDP source port.
    pub sport: u16,
    /// UDP destination port.
    pub dport: u16,
}

/// Writes the Ethernet, IPv4 (no options, DF clear) and UDP headers (with a full checksum)
/// in front of the `payload_len` bytes already at `out[UDP_PAYLOAD_OFF..]`. Returns the frame
/// length, or `None` if `out` is too small or the datagram too long.
pub fn udp_in_place(out: &mut [u8], h: &UdpHdr, payload_len: usize) -> Option<usize> {
    let udp_len = udp::HEADER_LEN + payload_len;
    let ip_len = ipv4::MIN_HEADER_LEN + udp_len;
    let len = ethernet::HEADER_LEN + ip_len;
    let buf = out.get_mut(..len)?;
    let ip_total = u16::try_from(ip_len).ok()?;
    let mut eth = EthernetFrame::new_unchecked(&mut *buf);
    eth.set_dst_addr(h.dst_mac);
    eth.set_src_addr(h.src_mac);
    eth.set_ethertype(ETHERTYPE_IPV4);
    let ipb = buf.get_mut(ethernet::HEADER_LEN..)?;
    if let Some(hdr) = ipb.get_mut(..ipv4::MIN_HEADER_LEN) {
        hdr.fill(0);
    }
    {
        let mut ip = Ipv4Packet::new_unchecked(&mut *ipb);
        ip.set_version(4);
        ip.set_ihl(5);
        ip.set_total_len(ip_total);
        ip.set_ident(h.ident);
        ip.set_ttl(h.ttl);
        ip.set_protocol(PROTO_UDP);
        ip.set_src_addr(h.src);
        ip.set_dst_addr(h.dst);
        ip.fill_checksum();
    }
    let ub = ipb.get_mut(ipv4::MIN_HEADER_LEN..)?;
    let mut u = UdpPacket::new_unchecked(ub);
    u.set_src_port(h.sport);
    u.set_dst_port(h.dport);
    u.set_len(u16::try_from(udp_len).ok()?);
    u.fill_checksum(h.src, h.dst);
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::vrrp::{pass_data, AUTH_PASS, MCAST_GROUP, MCAST_GROUP6};

    #[test]
    fn advert_frame_parses_back() {
        let mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
        let src = Ipv4Addr::new(10, 0, 0, 2);
        let repr = VrrpRepr {
            version: 2,
            vrid: 9,
            priority: 200,
            naddr: 1,
            auth_type: AUTH_PASS,
            adver_int_cs: 100,
            auth: pass_data("pw"),
        };
        let mut out = [0u8; 128];
        let n = vrrp_advert(
            &mut out,
            mac,
            ipv4_multicast_mac(MCAST_GROUP),
            src,
            MCAST_GROUP,
            7,
            &repr,
            &[Ipv4Addr::new(10, 0, 0, 100)],
        )
        .unwrap();
        assert_eq!(n, 14 + 20 + 20);
        assert_eq!(&out[..6], &[1, 0, 0x5e, 0, 0, 0x12]);
        let ip = Ipv4Packet::new_checked(&out[14..n]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.ttl(), ip.protocol(), ip.tos()), (255, 112, 0xc0));
        let v = VrrpPacket::new_checked(ip.payload()).unwrap();
        assert!(v.verify_checksum(src, MCAST_GROUP));
        assert_eq!(VrrpRepr::parse(&v).unwrap(), repr);
        assert!(vrrp_advert(&mut out[..40], mac, mac, src, src, 0, &repr, &[]).is_none());
        assert_eq!(
            ipv4_multicast_mac(Ipv4Addr::new(239, 129, 2, 3)),
            EthernetAddress([1, 0, 0x5e, 1, 2, 3])
        );
    }

    #[test]
    fn ipv6_advert_frame_is_v3_to_ff02_12_with_hop_limit_255() {
        let mac = EthernetAddress([2, 0x74, 0x76, 0, 1, 1]);
        let ll: Ipv6Addr = "fe80::74:76ff:fe00:101".parse().unwrap();
        let vip: Ipv6Addr = "2001:db8:f::80".parse().unwrap();
        let repr = VrrpRepr {
            version: 3,
            vrid: 61,
            priority: 150,
            naddr: 1,
            auth_type: 0,
            adver_int_cs: 100,
            auth: [0; 8],
        };
        let g = ipv6_multicast_mac(MCAST_GROUP6);
        let mut out = [0u8; 128];
        let n = vrrp_advert6(&mut out, mac, g, ll, MCAST_GROUP6, &repr, &[vip]).unwrap();
        assert_eq!(n, 14 + 40 + 8 + 16);
        // An independent parser: Ethernet to 33:33:00:00:00:12, IPv6 from the
        // link-local address to ff02::12, hop limit 255, next header 112.
        let e = etherparse::SlicedPacket::from_ethernet(&out[..n]).unwrap();
        let Some(etherparse::LinkSlice::Ethernet2(eth)) = e.link else {
            panic!("not Ethernet II");
        };
        assert_eq!(eth.destination(), [0x33, 0x33, 0, 0, 0, 0x12]);
        assert_eq!(eth.source(), mac.0);
        let Some(etherparse::NetSlice::Ipv6(ip)) = e.net else {
            panic!("not IPv6");
        };
        let h = ip.header();
        assert_eq!(h.source_addr(), ll);
        assert_eq!(h.destination_addr(), MCAST_GROUP6);
        assert_eq!(h.hop_limit(), 255);
        assert_eq!(u8::from(h.next_header()), 112);
        assert_eq!(usize::from(h.payload_length()), 24);
        let msg = &out[54..n];
        let v = VrrpPacket::new_checked6(msg).unwrap();
        assert!(v.verify_checksum6(ll, MCAST_GROUP6));
        assert_eq!(VrrpRepr::parse(&v).unwrap(), repr);
        assert_eq!(v.addr6(0), vip);
        let mut short = [0u8; 77];
        assert!(vrrp_advert6(&mut short, mac, g, ll, MCAST_GROUP6, &repr, &[vip]).is_none());
    }

    #[test]
    fn udp_in_place_frames_parse_back() {
        let h = UdpHdr {
            src_mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_mac: ipv4_multicast_mac(Ipv4Addr::new(224, 0, 0, 81)),
            src: Ipv4Addr::new(172, 16, 0, 1),
            dst: Ipv4Addr::new(224, 0, 0, 81),
            ttl: 1,
            ident: 9,
            sport: 8848,
            dport: 8848,
        };
        let mut out = [0xeeu8; 100];
        out[UDP_PAYLOAD_OFF..UDP_PAYLOAD_OFF + 4].copy_from_slice(b"sync");
        let n = udp_in_place(&mut out, &h, 4).unwrap();
        assert_eq!(n, 46);
        let ip = Ipv4Packet::new_checked(&out[14..n]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.ttl(), ip.protocol(), ip.dont_frag()), (1, 17, false));
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(u.verify_checksum(h.src, h.dst));
        assert_eq!(
            (u.src_port(), u.dst_port(), u.payload()),
            (8848, 8848, &b"sync"[..])
        );
        assert!(udp_in_place(&mut out[..45], &h, 4).is_none());
    }
}
