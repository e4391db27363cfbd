//! IPv6 in the per-mode rewrites and host replies, against etherparse as
//! the oracle: NAT (full and partial checksums, UDPv6 zero rule, hop
//! limit), ICMPv6 echo, Neighbor Discovery, RSTs and ICMPv6 errors; and no
//! panic on arbitrary bytes.

use etherparse::{Icmpv6Type, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use modes::checksum;
use modes::nat::{self, Csum};
use modes::offload::complete_partial;
use modes::packet::{parse, Packet};
use modes::reply;
use modes::wire::EthernetAddress;
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const CMAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const OMAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn a(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn tcp6(src: Ipv6Addr, dst: Ipv6Addr, sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CMAC, OMAC)
        .ipv6(src.octets(), dst.octets(), 64)
        .tcp(sp, dp, 1000, 4000)
        .ack(77)
        .write(&mut v, payload)
        .unwrap();
    v
}

fn udp6(src: Ipv6Addr, dst: Ipv6Addr, sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CMAC, OMAC)
        .ipv6(src.octets(), dst.octets(), 64)
        .udp(sp, dp)
        .write(&mut v, payload)
        .unwrap();
    v
}

fn echo6(src: Ipv6Addr, dst: Ipv6Addr, hop: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CMAC, OMAC)
        .ipv6(src.octets(), dst.octets(), hop)
        .icmpv6_echo_request(9, 3)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// Turns the frame's L4 checksum into a partial one (the pseudo-header
/// sum) and returns its (csum_start, csum_offset).
fn make_partial(frame: &mut [u8]) -> (usize, usize) {
    let p = parse(frame).unwrap();
    let (IpAddr::V6(s), IpAddr::V6(d)) = (p.src, p.dst) else {
        panic!()
    };
    let off = if p.proto == 6 { 16 } else { 6 };
    let ph = checksum::pseudo_header_v6(s, d, p.proto, u32::from(p.l4_len));
    frame[p.l4 + off..p.l4 + off + 2].copy_from_slice(&ph.to_be_bytes());
    (p.l4, off)
}

/// The upper-layer checksum of a v6 frame verifies.
fn l4_ok(frame: &[u8]) -> bool {
    let p = parse(frame).unwrap();
    let (IpAddr::V6(s), IpAddr::V6(d)) = (p.src, p.dst) else {
        return false;
    };
    let seg = &frame[p.l4..p.ip_end()];
    checksum::l4_checksum_v6(s, d, p.proto, seg) == 0
}

#[test]
fn dnat_snat_v6_equal_rebuilt_frames() {
    let (c, v, r) = (a("2001:db8:c::2"), a("2001:db8:f::80"), a("2001:db8:5::2"));
    for len in [0usize, 1, 7, 100, 1400] {
        let data: Vec<u8> = (0..len).map(|i| (i * 13 + 5) as u8).collect();
        for udp in [false, true] {
            let mk = |s, d, sp, dp| {
                if udp {
                    udp6(s, d, sp, dp, &data)
                } else {
                    tcp6(s, d, sp, dp, &data)
                }
            };
            // Request: CIP:40000 -> VIP:80 becomes CIP:40000 -> RIP:8080.
            let mut f = mk(c, v, 40000, 80);
            let p = parse(&f).unwrap();
            nat::dnat(&mut f, &p, Csum::Full, r, 8080);
            assert_eq!(f, mk(c, r, 40000, 8080), "dnat udp={udp} len={len}");
            assert!(l4_ok(&f));
            // Reply: RIP:8080 -> CIP becomes VIP:80 -> CIP.
            let mut f = mk(r, c, 8080, 40000);
            let p = parse(&f).unwrap();
            nat::snat(&mut f, &p, Csum::Full, IpAddr::V6(v), 80);
            assert_eq!(f, mk(v, c, 80, 40000), "snat udp={udp} len={len}");
            // Partial: rewritten, completed, equal to the rebuilt frame.
            let mut f = mk(c, v, 40000, 80);
            let (start, off) = make_partial(&mut f);
            let p = parse(&f).unwrap();
            nat::dnat(&mut f, &p, Csum::Partial, r, 8080);
            assert!(complete_partial(&mut f, start, off));
            assert_eq!(f, mk(c, r, 40000, 8080), "partial udp={udp} len={len}");
        }
    }
    // An address of the other family changes nothing.
    let mut f = tcp6(c, v, 1, 2, b"x");
    let before = f.clone();
    let p = parse(&f).unwrap();
    nat::dnat(&mut f, &p, Csum::Full, Ipv4Addr::new(10, 0, 0, 1), 9);
    assert_eq!(f, before);
}

#[test]
fn icmpv6_dnat_updates_its_checksum() {
    let (c, v, r) = (a("2001:db8:c::2"), a("2001:db8:f::80"), a("2001:db8:5::2"));
    let mut f = echo6(c, v, 64, b"hello");
    let p = parse(&f).unwrap();
    nat::dnat(&mut f, &p, Csum::Full, r, 0);
    assert_eq!(f, echo6(c, r, 64, b"hello"));
}

#[test]
fn udp6_checksum_is_never_zero() {
    // Search for a destination whose rewrite makes the checksum 0 before
    // the UDP rule: the field must then read 0xffff.
    let (c, v) = (a("2001:db8:c::2"), a("2001:db8:f::80"));
    let f0 = udp6(c, v, 1000, 53, b"q");
    let p = parse(&f0).unwrap();
    let want_zero = {
        // The checksum for RIP differs from the one for VIP by the
        // address delta; pick the last word of RIP to make it 0xffff.
        let stored = u16::from_be_bytes([f0[p.l4 + 6], f0[p.l4 + 7]]);
        // sum(VIP-version) = !stored; changing the last word w of the
        // destination from 0x80 to x adds (x - 0x80).
        let s = !stored;
        // want new sum 0xffff  => x = 0x80 + (0xffff - s) (one's complement)
        checksum::add(0x80, !s)
    };
    let r = Ipv6Addr::from((u128::from(v) & !0xffff) | u128::from(want_zero));
    let mut f = f0.clone();
    nat::dnat(&mut f, &p, Csum::Full, r, 53);
    assert_eq!(u16::from_be_bytes([f[p.l4 + 6], f[p.l4 + 7]]), 0xffff);
    assert!(l4_ok(&f));
}

#[test]
fn hop_limit_decrement() {
    let mut f = echo6(a("2001:db8:c::2"), a("2001:db8:f::80"), 2, b"");
    let p = parse(&f).unwrap();
    assert!(nat::decrement_ttl(&mut f, &p));
    assert_eq!(f[14 + 7], 1);
    let p = parse(&f).unwrap();
    let before = f.clone();
    assert!(!nat::decrement_ttl(&mut f, &p));
    assert_eq!(f, before);
    assert!(!nat::decrement_ttl(&mut f[..20], &p));
}

fn mac(b: [u8; 6]) -> EthernetAddress {
    EthernetAddress(b)
}

#[test]
fn echo_reply_v6() {
    let (c, v) = (a("2001:db8:c::2"), a("2001:db8:f::80"));
    let f = echo6(c, v, 64, b"abcdefgh");
    let p = parse(&f).unwrap();
    let mut out = [0u8; 200];
    let n = reply::icmp_echo_reply(&mut out, &f, &p, mac(OMAC)).unwrap();
    let mut want = Vec::new();
    PacketBuilder::ethernet2(OMAC, CMAC)
        .ipv6(v.octets(), c.octets(), 64)
        .icmpv6_echo_reply(9, 3)
        .write(&mut want, b"abcdefgh")
        .unwrap();
    assert_eq!(&out[..n], &want[..]);
    // Not to multicast, not from ::, not with too small a buffer.
    for (s, d) in [(c, a("ff02::1")), (Ipv6Addr::UNSPECIFIED, v)] {
        let f = echo6(s, d, 64, b"x");
        let p = parse(&f).unwrap();
        assert_eq!(reply::icmp_echo_reply(&mut out, &f, &p, mac(OMAC)), None);
    }
    assert_eq!(
        reply::icmp_echo_reply(&mut out[..60], &f, &p, mac(OMAC)),
        None
    );
}

fn ns_frame(src: Ipv6Addr, dst: Ipv6Addr, target: Ipv6Addr, sll: Option<[u8; 6]>) -> Vec<u8> {
    use modes::wire::icmpv6::{Icmpv6Packet, Icmpv6Repr};
    let r = Icmpv6Repr::NeighborSolicit {
        target,
        source_ll: sll.map(EthernetAddress),
    };
    let mut body = vec![0u8; r.buffer_len()];
    r.emit(src, dst, &mut Icmpv6Packet::new_unchecked(&mut body[..]))
        .unwrap();
    let mut v = Vec::new();
    let eth_dst = if dst.is_multicast() {
        reply::ipv6_multicast_mac(dst).0
    } else {
        OMAC
    };
    let mut h = vec![];
    h.extend_from_slice(&eth_dst);
    h.extend_from_slice(&CMAC);
    h.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&[58, 255]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    v.extend_from_slice(&h);
    v.extend_from_slice(&body);
    v
}

/// Parses an NA with etherparse, returns (eth dst, ip src, ip dst, hop,
/// flags byte, target).
fn read_na(frame: &[u8]) -> ([u8; 6], Ipv6Addr, Ipv6Addr, u8, u8, Ipv6Addr) {
    let s = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &s.net else {
        panic!()
    };
    let h = ip.header();
    let Some(TransportSlice::Icmpv6(icmp)) = &s.transport else {
        panic!()
    };
    let (src, dst) = (h.source_addr(), h.destination_addr());
    let body = icmp.slice();
    assert_eq!((body[0], body[1]), (136, 0));
    assert_eq!(
        checksum::l4_checksum_v6(src, dst, 58, body),
        0,
        "NA checksum"
    );
    let eth: [u8; 6] = frame[..6].try_into().unwrap();
    (
        eth,
        src,
        dst,
        h.hop_limit(),
        body[4],
        Ipv6Addr::from(<[u8; 16]>::try_from(&body[8..24]).unwrap()),
    )
}

#[test]
fn neighbour_discovery() {
    let (c, vip) = (a("2001:db8:c::2"), a("2001:db8:f::80"));
    let sn = reply::solicited_node(vip);
    assert_eq!(sn, a("ff02::1:ff00:80"));
    let mut out = [0u8; 128];
    // Solicitation to the solicited-node address with a source LL option.
    let f = ns_frame(c, sn, vip, Some([2, 9, 9, 9, 9, 9]));
    let p = parse(&f).unwrap();
    assert_eq!(reply::ns_target(&f, &p), Some(vip));
    let n = reply::neighbour_advert(&mut out, &f, &p, mac(OMAC), vip).unwrap();
    assert_eq!(n, 14 + 40 + 32);
    let (eth, s, d, hop, flags, t) = read_na(&out[..n]);
    assert_eq!(
        (eth, s, d, hop, flags, t),
        ([2, 9, 9, 9, 9, 9], vip, c, 255, 0x60, vip)
    );
    assert_eq!(&out[n - 8..n], &[2, 1, 2, 0, 0, 0, 0, 2]);
    let q = parse(&out[..n]).unwrap();
    assert_eq!(reply::na_info(&out[..n], &q), Some((vip, Some(mac(OMAC)))));
    // Unicast NS without option: to the frame's Ethernet source.
    let f = ns_frame(c, vip, vip, None);
    let p = parse(&f).unwrap();
    let n = reply::neighbour_advert(&mut out, &f, &p, mac(OMAC), vip).unwrap();
    assert_eq!(read_na(&out[..n]).0, CMAC);
    // DAD probe: to all-nodes, no S flag.
    let f = ns_frame(Ipv6Addr::UNSPECIFIED, sn, vip, None);
    let p = parse(&f).unwrap();
    let n = reply::neighbour_advert(&mut out, &f, &p, mac(OMAC), vip).unwrap();
    let (eth, _, d, _, flags, _) = read_na(&out[..n]);
    assert_eq!(
        (eth, d, flags),
        ([0x33, 0x33, 0, 0, 0, 1], reply::ALL_NODES, 0x20)
    );
    // Refusals: another target, DAD with an LL option, wrong hop limit,
    // bad checksum, dst neither target nor its solicited-node group.
    let f = ns_frame(c, sn, vip, None);
    let p = parse(&f).unwrap();
    assert_eq!(
        reply::neighbour_advert(&mut out, &f, &p, mac(OMAC), c),
        None
    );
    let f = ns_frame(Ipv6Addr::UNSPECIFIED, sn, vip, Some([2, 1, 1, 1, 1, 1]));
    let p = parse(&f).unwrap();
    assert_eq!(
        reply::neighbour_advert(&mut out, &f, &p, mac(OMAC), vip),
        None
    );
    let mut f = ns_frame(c, sn, vip, None);
    f[14 + 7] = 64;
    let p = parse(&f).unwrap();
    assert_eq!(
        reply::neighbour_advert(&mut out, &f, &p, mac(OMAC), vip),
        None
    );
    let mut f = ns_frame(c, sn, vip, None);
    f[14 + 40 + 10] ^= 1;
    let p = parse(&f).unwrap();
    assert_eq!(
        reply::neighbour_advert(&mut out, &f, &p, mac(OMAC), vip),
        None
    );
    let f = ns_frame(c, a("ff02::1"), vip, None);
    let p = parse(&f).unwrap();
    assert_eq!(
        reply::neighbour_advert(&mut out, &f, &p, mac(OMAC), vip),
        None
    );
    assert_eq!(
        reply::neighbour_advert(
            &mut out[..80],
            &ns_frame(c, sn, vip, None),
            &parse(&ns_frame(c, sn, vip, None)).unwrap(),
            mac(OMAC),
            vip
        ),
        None
    );

    // Unsolicited NA and NS.
    let n = reply::unsolicited_na(&mut out, mac(OMAC), vip).unwrap();
    let (eth, s, d, hop, flags, t) = read_na(&out[..n]);
    assert_eq!(
        (eth, s, d, hop, flags, t),
        (
            [0x33, 0x33, 0, 0, 0, 1],
            vip,
            reply::ALL_NODES,
            255,
            0x20,
            vip
        )
    );
    let rs = a("2001:db8:5::2");
    let int6 = a("2001:db8:5::1");
    let n = reply::neighbour_solicit(&mut out, mac(OMAC), int6, rs).unwrap();
    let f = out[..n].to_vec();
    assert_eq!(&f[..6], &[0x33, 0x33, 0xff, 0, 0, 2]);
    let p = parse(&f).unwrap();
    assert_eq!(p.dst, IpAddr::V6(a("ff02::1:ff00:2")));
    assert_eq!(reply::ns_target(&f, &p), Some(rs));
    // The solicitation we send is one we would answer.
    assert!(reply::neighbour_advert(&mut [0u8; 128], &f, &p, mac(CMAC), rs).is_some());
    assert_eq!(
        reply::neighbour_solicit(&mut out[..85], mac(OMAC), int6, rs),
        None
    );
}

#[test]
fn rst_v6() {
    let (c, v) = (a("2001:db8:c::2"), a("2001:db8:f::80"));
    let f = tcp6(c, v, 40000, 81, b"data");
    let p = parse(&f).unwrap();
    let mut out = [0u8; 100];
    let n = reply::tcp_rst(&mut out, &f, &p, mac(OMAC)).unwrap();
    assert_eq!(n, 74);
    let q = parse(&out[..n]).unwrap();
    assert_eq!(
        (q.src, q.dst, q.sport, q.dport),
        (IpAddr::V6(v), IpAddr::V6(c), 81, 40000)
    );
    assert_eq!(q.tcp_flags, 0x04);
    assert!(l4_ok(&out[..n]));
    assert_eq!(&out[58..62], &77u32.to_be_bytes()); // seq = SEG.ACK
}

#[test]
fn icmpv6_errors() {
    let (c, v, me) = (a("2001:db8:c::2"), a("2001:db8:f::80"), a("2001:db8:c::1"));
    let big: Vec<u8> = (0..1400).map(|i| i as u8).collect();
    let f = tcp6(c, v, 40000, 80, &big);
    let p = parse(&f).unwrap();
    let mut out = [0u8; 2000];
    let n = reply::packet_too_big(&mut out, &f, &p, Csum::Full, mac(OMAC), me, 1400).unwrap();
    assert_eq!(n, 14 + 1280);
    {
        let s = SlicedPacket::from_ethernet(&out[..n]).unwrap();
        let Some(TransportSlice::Icmpv6(icmp)) = &s.transport else {
            panic!()
        };
        assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 1400 });
        assert_eq!(checksum::l4_checksum_v6(me, c, 58, icmp.slice()), 0);
        assert_eq!(&icmp.slice()[8..], &f[14..14 + 1232]);
    }
    // Unreachable (port) and time exceeded, short packet quoted whole.
    let f = udp6(c, v, 5, 53, b"abc");
    let p = parse(&f).unwrap();
    let n = reply::icmp_unreachable(&mut out, &f, &p, Csum::Full, mac(OMAC), me, 3).unwrap();
    assert_eq!(n, 14 + 40 + 8 + (f.len() - 14));
    assert_eq!((out[54], out[55]), (1, 4));
    assert_eq!(&out[62..n], &f[14..]);
    let n = reply::icmp_time_exceeded(&mut out, &f, &p, Csum::Full, mac(OMAC), me).unwrap();
    assert_eq!((out[54], out[55]), (3, 0));
    assert!(l4_ok(&out[..n]));
    // Partial checksum completed in the quote.
    let mut g = f.clone();
    make_partial(&mut g);
    let p = parse(&g).unwrap();
    let n = reply::icmp_time_exceeded(&mut out, &g, &p, Csum::Partial, mac(OMAC), me).unwrap();
    assert_eq!(&out[62..n], &f[14..]);
    // Never about an ICMPv6 error, nor to ::/multicast, nor with v4 source.
    let q = out[..n].to_vec();
    let qp = parse(&q).unwrap();
    assert_eq!(
        reply::icmp_time_exceeded(&mut out, &q, &qp, Csum::Full, mac(OMAC), me),
        None
    );
    let f = udp6(Ipv6Addr::UNSPECIFIED, v, 5, 53, b"abc");
    let p = parse(&f).unwrap();
    assert_eq!(
        reply::icmp_unreachable(&mut out, &f, &p, Csum::Full, mac(OMAC), me, 3),
        None
    );
    let f = udp6(c, a("ff0e::1"), 5, 53, b"abc");
    let p = parse(&f).unwrap();
    assert_eq!(
        reply::icmp_unreachable(&mut out, &f, &p, Csum::Full, mac(OMAC), me, 3),
        None
    );
    let f = udp6(c, v, 5, 53, b"abc");
    let p = parse(&f).unwrap();
    assert_eq!(
        reply::icmp_unreachable(
            &mut out,
            &f,
            &p,
            Csum::Full,
            mac(OMAC),
            Ipv4Addr::LOCALHOST,
            3
        ),
        None
    );
    // An echo request (a query) does get an error.
    let f = echo6(c, v, 1, b"x");
    let p = parse(&f).unwrap();
    assert!(reply::icmp_time_exceeded(&mut out, &f, &p, Csum::Full, mac(OMAC), me).is_some());
}

/// Every v6 entry point on `frame` (parsed, or a fabricated packet whose
/// offsets may lie): no panic.
fn exercise(frame: &[u8], pkt: &Packet) {
    let me = a("2001:db8:c::1");
    let mut f = frame.to_vec();
    for csum in [Csum::Full, Csum::Partial] {
        nat::dnat(&mut f, pkt, csum, me, 1);
        nat::snat(&mut f, pkt, csum, me, 2);
    }
    nat::decrement_ttl(&mut f, pkt);
    let mut out = vec![0u8; 1600];
    let m = mac(OMAC);
    let _ = reply::icmp_echo_reply(&mut out, frame, pkt, m);
    let _ = reply::tcp_rst(&mut out, frame, pkt, m);
    let _ = reply::icmp_unreachable(&mut out, frame, pkt, Csum::Partial, m, me, 3);
    let _ = reply::icmp_time_exceeded(&mut out, frame, pkt, Csum::Full, m, me);
    let _ = reply::packet_too_big(&mut out, frame, pkt, Csum::Partial, m, me, 1280);
    let _ = reply::neighbour_advert(&mut out, frame, pkt, m, me);
    let _ = reply::ns_target(frame, pkt);
    let _ = reply::na_info(frame, pkt);
    let mut b = frame.to_vec();
    b.resize(frame.len() + 40, 0);
    let _ = modes::tun::encapsulate(&mut b, frame.len(), pkt, me, me, 64);
    let _ = modes::tun::decapsulate(frame.get(14..).unwrap_or_default());
    let _ = modes::tun::mss_clamp(&mut b, pkt, Csum::Full, 1000);
    let mut f = frame.to_vec();
    for csum in [Csum::Full, Csum::Partial] {
        modes::fullnat::fnat_in(&mut f, pkt, csum, me, 1, me, 2);
        modes::fullnat::fnat_out(&mut f, pkt, csum, me, 1, me, 2);
    }
    let mut b = frame.to_vec();
    b.resize(frame.len() + 20, 0);
    let _ = modes::toa::insert_toa_with(&mut b, frame.len(), pkt, Csum::Partial, None, me, 1);
    let _ = modes::toa::parse_toa(frame.get(54..).unwrap_or_default());
    let mut b = frame.to_vec();
    b.resize(frame.len() + 20, 0);
    let _ = modes::icmp_nat::quoted_tuple(frame, pkt);
    let mut b2 = frame.to_vec();
    let _ = modes::icmp_nat::nat_out(&mut b2, pkt, me, 1);
    let _ = modes::icmp_nat::nat_in(&mut b2, pkt, me, 1);
    let _ = modes::icmp_nat::set_outer_addrs(&mut b2, pkt, me, me);
    let v4 = (Ipv4Addr::new(10, 0, 0, 1), 1);
    for csum in [Csum::Full, Csum::Partial] {
        let _ = modes::nat64::to_v4(&mut b.clone(), frame.len(), pkt, csum, None, v4, v4);
        let _ = modes::nat64::to_v6(
            &mut b.clone(),
            frame.len(),
            pkt,
            csum,
            None,
            (me, 1),
            (me, 2),
        );
    }
}

proptest! {
    #[test]
    fn v6_functions_never_panic(
        tail in proptest::collection::vec(any::<u8>(), 0..200),
        proto in prop_oneof![Just(6u8), Just(17), Just(58), any::<u8>()],
        cut in 0usize..300,
        l4 in 0usize..400,
        tl in 0u32..70000,
    ) {
        let mut f = vec![0u8; 14 + 40];
        f[12] = 0x86;
        f[13] = 0xdd;
        f[14] = 0x60;
        f[14 + 4..14 + 6].copy_from_slice(&(tail.len() as u16).to_be_bytes());
        f[14 + 6] = proto;
        f[14 + 7] = 255;
        f.extend_from_slice(&tail);
        if let Ok(p) = parse(&f) {
            exercise(&f, &p);
            let short = &f[..cut.min(f.len())];
            exercise(short, &p);
            let lie = Packet { l4, ip_total_len: tl, ..p };
            exercise(&f, &lie);
        }
    }
}

#[test]
fn tun_6in6_round_trip() {
    use modes::tun;
    let (c, v) = (a("2001:db8:c::2"), a("2001:db8:f::80"));
    let (lo, rs) = (a("2001:db8:5::1"), a("2001:db8:5::2"));
    for len in [0usize, 1, 1000] {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let mut f = tcp6(c, v, 40000, 80, &data);
        f[14 + 1] = 0x0a; // a flow label to copy
        let orig = f.clone();
        let p = parse(&f).unwrap();
        let n0 = f.len();
        f.resize(n0 + tun::OVERHEAD6, 0);
        let n = tun::encapsulate(&mut f, n0, &p, lo, rs, 64).unwrap();
        assert_eq!(n, n0 + 40);
        let s = SlicedPacket::from_ethernet(&f[..n]).unwrap();
        let Some(NetSlice::Ipv6(ip)) = &s.net else {
            panic!()
        };
        let h = ip.header();
        assert_eq!(
            (
                h.source_addr(),
                h.destination_addr(),
                h.next_header().0,
                h.hop_limit()
            ),
            (lo, rs, 41, 64)
        );
        assert_eq!(usize::from(h.payload_length()), n0 - 14);
        assert_eq!(&f[14..18], &orig[14..18]);
        assert_eq!(&f[54..n], &orig[14..]);
        let q = parse(&f[..n]).unwrap();
        assert_eq!(q.proto, 41);
        assert_eq!(tun::decapsulate(&f[14..n]), Some((40, n0 - 14)));
        assert_eq!(tun::inner_ipv6(&f[54..n]), Some(n0 - 14));
        // Truncated outer or inner, wrong next header: refused.
        assert_eq!(tun::decapsulate(&f[14..n - 1]), None);
        let mut g = f.clone();
        g[14 + 6] = 4;
        assert_eq!(tun::decapsulate(&g[14..n]), None);
        let mut g = f.clone();
        g[54] = 0x40;
        assert_eq!(tun::decapsulate(&g[14..n]), None);
        // No room, mixed families: nothing changed.
        let mut g = orig.clone();
        assert_eq!(tun::encapsulate(&mut g, n0, &p, lo, rs, 64), None);
        let mut g = orig.clone();
        g.resize(n0 + 40, 0);
        assert_eq!(
            tun::encapsulate(&mut g, n0, &p, Ipv4Addr::LOCALHOST, rs, 64),
            None
        );
        assert_eq!(&g[..n0], &orig[..]);
    }
    let f = tcp6(c, v, 1, 2, b"");
    let p = parse(&f).unwrap();
    assert!(tun::dont_fragment(&f, &p));
    assert_eq!(tun::max_mss(&p, 1500), 1400);
    assert_eq!(tun::overhead(&p), 40);
}

#[test]
fn mss_clamp_v6() {
    use modes::tun;
    let (c, v) = (a("2001:db8:c::2"), a("2001:db8:f::80"));
    let syn = |mss: u16, odd: bool| {
        let mut opts = vec![];
        if odd {
            opts.push(1);
        }
        opts.extend_from_slice(&[2, 4]);
        opts.extend_from_slice(&mss.to_be_bytes());
        while opts.len() % 4 != 0 {
            opts.push(1);
        }
        let mut out = Vec::new();
        PacketBuilder::ethernet2(CMAC, OMAC)
            .ipv6(c.octets(), v.octets(), 64)
            .tcp(40000, 80, 5, 1000)
            .syn()
            .options_raw(&opts)
            .unwrap()
            .write(&mut out, &[])
            .unwrap();
        out
    };
    for odd in [false, true] {
        let mut f = syn(1440, odd);
        let p = parse(&f).unwrap();
        assert!(tun::mss_clamp(
            &mut f,
            &p,
            Csum::Full,
            tun::max_mss(&p, 1500)
        ));
        assert_eq!(f, syn(1400, odd));
        let p = parse(&f).unwrap();
        assert!(!tun::mss_clamp(&mut f, &p, Csum::Full, 1400));
    }
}

fn tcp6_opts(src: Ipv6Addr, dst: Ipv6Addr, sp: u16, dp: u16, opts: &[u8], data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CMAC, OMAC)
        .ipv6(src.octets(), dst.octets(), 64)
        .tcp(sp, dp, 1000, 4000)
        .ack(77)
        .options_raw(opts)
        .unwrap()
        .write(&mut v, data)
        .unwrap();
    v
}

fn tcp4_opts(src: Ipv4Addr, dst: Ipv4Addr, opts: &[u8], data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CMAC, OMAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(40000, 80, 1000, 4000)
        .ack(77)
        .options_raw(opts)
        .unwrap()
        .write(&mut v, data)
        .unwrap();
    v
}

#[test]
fn fullnat_v6_equal_rebuilt_frames() {
    use modes::fullnat;
    let (c, v) = (a("2001:db8:c::2"), a("2001:db8:f::80"));
    let (l, r) = (a("2001:db8:5::100"), a("2001:db8:5::2"));
    for len in [0usize, 3, 900] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        for udp in [false, true] {
            let mk = |s, d, sp, dp| {
                if udp {
                    udp6(s, d, sp, dp, &data)
                } else {
                    tcp6(s, d, sp, dp, &data)
                }
            };
            for csum in [Csum::Full, Csum::Partial] {
                let mut f = mk(c, v, 40000, 80);
                let part = (csum == Csum::Partial).then(|| make_partial(&mut f));
                let p = parse(&f).unwrap();
                fullnat::fnat_in(&mut f, &p, csum, l, 5000, r, 8080);
                if let Some((s, o)) = part {
                    assert!(complete_partial(&mut f, s, o));
                }
                assert_eq!(f, mk(l, r, 5000, 8080), "in udp={udp} {csum:?}");
                let mut f = mk(r, l, 8080, 5000);
                let p = parse(&f).unwrap();
                fullnat::fnat_out(&mut f, &p, Csum::Full, v, 80, c, 40000);
                assert_eq!(f, mk(v, c, 80, 40000), "out udp={udp}");
            }
        }
    }
    // Mixed families: nothing changes.
    let mut f = tcp6(c, v, 1, 2, b"");
    let before = f.clone();
    let p = parse(&f).unwrap();
    fullnat::fnat_in(&mut f, &p, Csum::Full, Ipv4Addr::LOCALHOST, 1, r, 2);
    assert_eq!(f, before);
}

#[test]
fn toa_v6_insert_and_parse() {
    use modes::toa::{self, ToaError};
    use modes::wire::vnet::{VnetHdr, GSO_TCPV6};
    let c = a("2001:db8:c::2");
    let (l, r) = (a("2001:db8:5::100"), a("2001:db8:5::2"));
    let opt6 = toa::toa6_option(c, 40000);
    assert_eq!(opt6[..4], [253, 20, 0x9c, 0x40]);
    assert_eq!(toa::parse_toa(&opt6), Some((IpAddr::V6(c), 40000)));
    let ts = [1u8, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    for existing in [&[][..], &ts[..]] {
        for csum in [Csum::Full, Csum::Partial] {
            let data = b"GET / HTTP/1.0\r\n\r\n";
            let mut f = tcp6_opts(l, r, 40000, 80, existing, data);
            let part = (csum == Csum::Partial).then(|| make_partial(&mut f));
            let p = parse(&f).unwrap();
            let n0 = f.len();
            f.resize(n0 + 20, 0);
            let n = toa::insert_toa_with(&mut f, n0, &p, csum, None, c, 40000).unwrap();
            assert_eq!(n, n0 + 20);
            if let Some((s, o)) = part {
                assert!(complete_partial(&mut f, s, o));
            }
            let mut opts = opt6.to_vec();
            opts.extend_from_slice(existing);
            assert_eq!(f, tcp6_opts(l, r, 40000, 80, &opts, data), "{csum:?}");
            let q = parse(&f).unwrap();
            assert_eq!(
                toa::parse_toa(&f[q.l4 + 20..q.payload_offset()]),
                Some((IpAddr::V6(c), 40000))
            );
        }
    }
    // The IPv6 TOA in an IPv4 segment (NAT64), and the IPv4 TOA in an IPv6 one.
    let (l4a, r4a) = (Ipv4Addr::new(10, 0, 5, 100), Ipv4Addr::new(10, 0, 5, 2));
    let mut f = tcp4_opts(l4a, r4a, &[], b"x");
    let p = parse(&f).unwrap();
    let n0 = f.len();
    f.resize(n0 + 20, 0);
    let n = toa::insert_toa(&mut f, n0, &p, None, c, 40000).unwrap();
    assert_eq!(&f[..n], &tcp4_opts(l4a, r4a, &opt6, b"x")[..]);
    let mut f = tcp6_opts(l, r, 40000, 80, &[], b"y");
    let p = parse(&f).unwrap();
    let n0 = f.len();
    f.resize(n0 + 8, 0);
    let n = toa::insert_toa(&mut f, n0, &p, None, Ipv4Addr::new(192, 0, 2, 7), 9).unwrap();
    let opt4 = toa::toa_option(Ipv4Addr::new(192, 0, 2, 7), 9);
    assert_eq!(&f[..n], &tcp6_opts(l, r, 40000, 80, &opt4, b"y")[..]);
    // 24 bytes of options + 20 > 40: no room; nothing changed.
    let long = [1u8; 24];
    let mut f = tcp6_opts(l, r, 1, 2, &long, b"");
    let before = f.clone();
    let p = parse(&f).unwrap();
    f.resize(before.len() + 20, 0);
    assert_eq!(
        toa::insert_toa(&mut f, before.len(), &p, None, c, 1),
        Err(ToaError::NoRoom)
    );
    assert_eq!(&f[..before.len()], &before[..]);
    // But 20 + 20 fits exactly (data offset 15).
    let mut f = tcp6_opts(l, r, 1, 2, &long[..20], b"");
    let p = parse(&f).unwrap();
    let n0 = f.len();
    f.resize(n0 + 20, 0);
    assert!(toa::insert_toa(&mut f, n0, &p, None, c, 1).is_ok());
    assert_eq!(f[54 + 12] >> 4, 15);
    // No room in the buffer.
    let mut f = tcp6_opts(l, r, 1, 2, &[], b"");
    let p = parse(&f).unwrap();
    let n0 = f.len();
    assert_eq!(
        toa::insert_toa(&mut f, n0, &p, None, c, 1),
        Err(ToaError::TooBig)
    );
    // GSO: gso_size and hdr_len follow the 20 bytes.
    let data = vec![7u8; 3000];
    let mut f = tcp6_opts(l, r, 1, 2, &[], &data);
    let (s, o) = make_partial(&mut f);
    let p = parse(&f).unwrap();
    let mut h = VnetHdr {
        flags: modes::wire::vnet::NEEDS_CSUM,
        gso_type: GSO_TCPV6,
        hdr_len: 74,
        gso_size: 1440,
        csum_start: s as u16,
        csum_offset: o as u16,
        ..VnetHdr::default()
    };
    let n0 = f.len();
    f.resize(n0 + 20, 0);
    assert!(toa::insert_toa(&mut f, n0, &p, Some(&mut h), c, 1).is_ok());
    assert_eq!((h.hdr_len, h.gso_size), (94, 1420));
}

fn udp4(src: Ipv4Addr, dst: Ipv4Addr, sp: u16, dp: u16, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CMAC, OMAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sp, dp)
        .write(&mut v, data)
        .unwrap();
    v
}

fn tcp4(src: Ipv4Addr, dst: Ipv4Addr, sp: u16, dp: u16, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(CMAC, OMAC)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sp, dp, 1000, 4000)
        .ack(77)
        .write(&mut v, data)
        .unwrap();
    v
}

#[test]
fn nat64_translates_both_ways() {
    use modes::nat64;
    use modes::wire::vnet::{VnetHdr, GSO_TCPV4, GSO_TCPV6, NEEDS_CSUM};
    let (c, v) = (a("2001:db8:c::2"), a("2001:db8:f::80"));
    let (l, r) = (Ipv4Addr::new(10, 0, 5, 100), Ipv4Addr::new(10, 0, 5, 2));
    for len in [0usize, 1, 500, 1400] {
        let data: Vec<u8> = (0..len).map(|i| (i * 3 + 1) as u8).collect();
        for udp in [false, true] {
            for csum in [Csum::Full, Csum::Partial] {
                let mk6 = |s, d, sp, dp| {
                    if udp {
                        udp6(s, d, sp, dp, &data)
                    } else {
                        tcp6(s, d, sp, dp, &data)
                    }
                };
                let mk4 = |s, d, sp, dp| {
                    if udp {
                        udp4(s, d, sp, dp, &data)
                    } else {
                        tcp4(s, d, sp, dp, &data)
                    }
                };
                // Request: [c]:40000 -> [v]:80 becomes l:5000 -> r:8080.
                let mut f = mk6(c, v, 40000, 80);
                let part = (csum == Csum::Partial).then(|| make_partial(&mut f));
                let p = parse(&f).unwrap();
                let n0 = f.len();
                let n = nat64::to_v4(&mut f, n0, &p, csum, None, (l, 5000), (r, 8080)).unwrap();
                assert_eq!(n, n0 - 20);
                f.truncate(n);
                if let Some((_, o)) = part {
                    assert!(complete_partial(&mut f, 34, o));
                }
                let want = mk4(l, r, 5000, 8080);
                let q = parse(&f).expect("valid IPv4 (header checksum too)");
                assert_eq!(q.ttl, 64);
                assert_eq!(f[14 + 6] & 0x40, 0x40, "DF");
                assert_eq!(&f[34..], &want[34..], "L4 udp={udp} {csum:?} len={len}");
                assert_eq!(&f[..14], &want[..14]);
                // Reply: r:8080 -> l:5000 becomes [v]:80 -> [c]:40000.
                let mut g = mk4(r, l, 8080, 5000);
                let part = (csum == Csum::Partial).then(|| make_partial4(&mut g));
                let p = parse(&g).unwrap();
                let n0 = g.len();
                g.resize(n0 + 20, 0);
                let n = nat64::to_v6(&mut g, n0, &p, csum, None, (v, 80), (c, 40000)).unwrap();
                assert_eq!(n, n0 + 20);
                if let Some((_, o)) = part {
                    assert!(complete_partial(&mut g, 54, o));
                }
                assert_eq!(
                    g,
                    mk6(v, c, 80, 40000),
                    "reply udp={udp} {csum:?} len={len}"
                );
            }
        }
    }
    // UDP without a checksum over IPv4 gets one over IPv6.
    let mut g = udp4(r, l, 53, 5000, b"abc");
    g[34 + 6] = 0;
    g[34 + 7] = 0;
    let p = parse(&g).unwrap();
    let n0 = g.len();
    g.resize(n0 + 20, 0);
    nat64::to_v6(&mut g, n0, &p, Csum::Full, None, (v, 53), (c, 40000)).unwrap();
    assert_eq!(g, udp6(v, c, 53, 40000, b"abc"));
    // GSO: offsets and type follow.
    let data = vec![1u8; 4000];
    let mut f = tcp6(c, v, 40000, 80, &data);
    make_partial(&mut f);
    let p = parse(&f).unwrap();
    let mut h = VnetHdr {
        flags: NEEDS_CSUM,
        gso_type: GSO_TCPV6,
        hdr_len: 74,
        gso_size: 1440,
        csum_start: 54,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    let n0 = f.len();
    let n = nat64::to_v4(&mut f, n0, &p, Csum::Partial, Some(&mut h), (l, 1), (r, 2)).unwrap();
    assert_eq!(
        (h.gso_type, h.hdr_len, h.csum_start, h.gso_size),
        (GSO_TCPV4, 54, 34, 1440)
    );
    let q = parse(&f[..n]).unwrap();
    assert_eq!(Csum::from_vnet(&h, &q), Csum::Partial);
    // Refusals: ICMPv6, no room, wrong family.
    let mut f = echo6(c, v, 64, b"x");
    let p = parse(&f).unwrap();
    let n0 = f.len();
    assert_eq!(
        nat64::to_v4(&mut f, n0, &p, Csum::Full, None, (l, 1), (r, 2)),
        None
    );
    let mut g = tcp4(r, l, 1, 2, b"");
    let p = parse(&g).unwrap();
    let n0 = g.len();
    assert_eq!(
        nat64::to_v6(&mut g, n0, &p, Csum::Full, None, (v, 1), (c, 2)),
        None
    );
    let mut f = tcp6(c, v, 1, 2, b"");
    let p = parse(&f).unwrap();
    let n0 = f.len();
    assert_eq!(
        nat64::to_v6(&mut f, n0, &p, Csum::Full, None, (v, 1), (c, 2)),
        None
    );
}

#[test]
fn nat64_with_toa_v6() {
    use modes::{nat64, toa};
    let (c, v) = (a("2001:db8:c::2"), a("2001:db8:f::80"));
    let (l, r) = (Ipv4Addr::new(10, 0, 5, 100), Ipv4Addr::new(10, 0, 5, 2));
    let mut f = tcp6(c, v, 40000, 80, b"GET /");
    let p = parse(&f).unwrap();
    let n0 = f.len();
    let n = nat64::to_v4(&mut f, n0, &p, Csum::Full, None, (l, 5000), (r, 8080)).unwrap();
    let q = parse(&f[..n]).unwrap();
    let n = toa::insert_toa(&mut f, n, &q, None, c, 40000).unwrap();
    let q = parse(&f[..n]).unwrap();
    assert_eq!(
        toa::parse_toa(&f[q.l4 + 20..q.payload_offset()]),
        Some((IpAddr::V6(c), 40000))
    );
    let mut want = Vec::new();
    PacketBuilder::ethernet2(CMAC, OMAC)
        .ipv4(l.octets(), r.octets(), 64)
        .tcp(5000, 8080, 1000, 4000)
        .ack(77)
        .options_raw(&toa::toa6_option(c, 40000))
        .unwrap()
        .write(&mut want, b"GET /")
        .unwrap();
    assert_eq!(&f[34..n], &want[34..]);
}

/// [`make_partial`] for IPv4.
fn make_partial4(frame: &mut [u8]) -> (usize, usize) {
    let p = parse(frame).unwrap();
    let (IpAddr::V4(s), IpAddr::V4(d)) = (p.src, p.dst) else {
        panic!()
    };
    let off = if p.proto == 6 { 16 } else { 6 };
    let ph = checksum::pseudo_header_v4(s, d, p.proto, p.l4_len);
    frame[p.l4 + off..p.l4 + off + 2].copy_from_slice(&ph.to_be_bytes());
    (p.l4, off)
}

#[test]
fn icmpv6_error_nat_both_ways() {
    use modes::icmp_nat;
    let (c, v, r) = (a("2001:db8:c::2"), a("2001:db8:f::80"), a("2001:db8:5::2"));
    let m = mac(OMAC);
    let err = |quoted: &[u8], from: Ipv6Addr, udp: bool| {
        let p = parse(quoted).unwrap();
        let mut out = vec![0u8; 1400];
        let n = if udp {
            reply::icmp_unreachable(&mut out, quoted, &p, Csum::Full, m, from, 3)
        } else {
            reply::packet_too_big(&mut out, quoted, &p, Csum::Full, m, from, 1280)
        }
        .unwrap();
        out.truncate(n);
        out
    };
    for udp in [false, true] {
        for len in [0usize, 20, 1300] {
            let data = vec![0x5au8; len];
            let mk = |s, d, sp, dp| {
                if udp {
                    udp6(s, d, sp, dp, &data)
                } else {
                    tcp6(s, d, sp, dp, &data)
                }
            };
            // The real server's error about CIP -> RIP:8080 becomes one from
            // the VIP about CIP -> VIP:80.
            let mut e = err(&mk(c, r, 40000, 8080), r, udp);
            let p = parse(&e).unwrap();
            let proto = if udp { 17 } else { 6 };
            assert_eq!(
                icmp_nat::quoted_tuple(&e, &p),
                Some((proto, c.into(), 40000, r.into(), 8080))
            );
            assert!(icmp_nat::nat_out(&mut e, &p, v, 80));
            assert_eq!(
                e,
                err(&mk(c, v, 40000, 80), v, udp),
                "out udp={udp} len={len}"
            );
            // The client's error about VIP:80 -> CIP goes to the real server
            // about RIP:8080 -> CIP.
            let mut e = err(&mk(v, c, 80, 40000), c, udp);
            let p = parse(&e).unwrap();
            assert!(icmp_nat::nat_in(&mut e, &p, r, 8080));
            let mut want = err(&mk(v, c, 80, 40000), c, udp);
            let wp = parse(&want).unwrap();
            // Outer destination r; the quote as rebuilt from r:8080.
            let q = err(&mk(r, c, 8080, 40000), c, udp);
            want[14 + 24..14 + 40].copy_from_slice(&r.octets());
            want[62..].copy_from_slice(&q[62..]);
            let ck = checksum::l4_checksum_v6(c, r, 58, &{
                let mut b = want[wp.l4..].to_vec();
                b[2] = 0;
                b[3] = 0;
                b
            });
            want[wp.l4 + 2..wp.l4 + 4].copy_from_slice(&ck.to_be_bytes());
            assert_eq!(e, want, "in udp={udp} len={len}");
            assert!(l4_ok(&e));
        }
    }
    // Refusals: an echo (not an error), a quote with an extension header,
    // a quote too short for the ports, mixed families.
    let mut f = echo6(c, v, 64, b"12345678");
    let p = parse(&f).unwrap();
    assert_eq!(icmp_nat::quoted_tuple(&f, &p), None);
    assert!(!icmp_nat::nat_out(&mut f, &p, v, 80));
    let mut e = err(&tcp6(c, r, 1, 2, b""), r, false);
    let before = e.clone();
    e[62 + 6] = 60; // quoted next header: Destination Options
    let p = parse(&e).unwrap();
    assert_eq!(icmp_nat::quoted_tuple(&e, &p), None);
    let mut e = before.clone();
    let p = parse(&e).unwrap();
    assert!(!icmp_nat::nat_out(&mut e, &p, Ipv4Addr::LOCALHOST, 80));
    assert!(!icmp_nat::rewrite_inner(
        &mut e,
        &p,
        c,
        1,
        Ipv4Addr::LOCALHOST,
        2
    ));
    assert_eq!(e, before);
}

fn arb_v6() -> impl Strategy<Value = Ipv6Addr> {
    any::<u128>().prop_map(Ipv6Addr::from)
}

proptest! {
    /// NAT, FullNAT and NAT64 there and back equal frames built from
    /// scratch, for random addresses, ports, payloads and checksum kinds.
    #[test]
    fn v6_rewrites_equal_rebuilt_frames(
        c in arb_v6(), v in arb_v6(), r in arb_v6(), l in arb_v6(),
        l4a in any::<u32>(), r4a in any::<u32>(),
        ports in any::<[u16; 4]>(),
        data in proptest::collection::vec(any::<u8>(), 0..300),
        udp in any::<bool>(), partial in any::<bool>(),
    ) {
        let [cp, vp, rp, lp] = ports;
        let csum = if partial { Csum::Partial } else { Csum::Full };
        let mk = |s, d, sp, dp| if udp { udp6(s, d, sp, dp, &data) } else { tcp6(s, d, sp, dp, &data) };
        let fin = |f: &mut Vec<u8>, part: Option<(usize, usize)>| {
            if let Some((s, o)) = part {
                assert!(complete_partial(f, s, o));
            }
        };
        let mut f = mk(c, v, cp, vp);
        let part = partial.then(|| make_partial(&mut f));
        let p = parse(&f).unwrap();
        nat::dnat(&mut f, &p, csum, r, rp);
        fin(&mut f, part);
        prop_assert_eq!(&f, &mk(c, r, cp, rp));

        let mut f = mk(c, v, cp, vp);
        let part = partial.then(|| make_partial(&mut f));
        let p = parse(&f).unwrap();
        modes::fullnat::fnat_in(&mut f, &p, csum, l, lp, r, rp);
        fin(&mut f, part);
        prop_assert_eq!(&f, &mk(l, r, lp, rp));

        // NAT64 there and back.
        let (l4a, r4a) = (Ipv4Addr::from(l4a), Ipv4Addr::from(r4a));
        let mut f = mk(c, v, cp, vp);
        let part = partial.then(|| make_partial(&mut f));
        let p = parse(&f).unwrap();
        let n0 = f.len();
        let n = modes::nat64::to_v4(&mut f, n0, &p, csum, None, (l4a, lp), (r4a, rp)).unwrap();
        f.truncate(n);
        if let Some((_, o)) = part {
            assert!(complete_partial(&mut f, 34, o));
        }
        let mk4 = |s, d, sp, dp| if udp { udp4(s, d, sp, dp, &data) } else { tcp4(s, d, sp, dp, &data) };
        let want4 = mk4(l4a, r4a, lp, rp);
        prop_assert_eq!(&f[34..], &want4[34..]);
        let mut g = mk4(r4a, l4a, rp, lp);
        let p = parse(&g).unwrap();
        let n0 = g.len();
        g.resize(n0 + 20, 0);
        let n = modes::nat64::to_v6(&mut g, n0, &p, Csum::Full, None, (v, vp), (c, cp)).unwrap();
        g.truncate(n);
        prop_assert_eq!(&g, &mk(v, c, vp, cp));
    }

    /// IPv4 frames through the NAT64 reverse path and the v6-aware
    /// functions: no panic, whatever the bytes after a valid header.
    #[test]
    fn v4_frames_never_panic_in_v6_paths(
        tail in proptest::collection::vec(any::<u8>(), 0..120),
        proto in prop_oneof![Just(6u8), Just(17), Just(1), any::<u8>()],
        cut in 0usize..200,
    ) {
        let mut f = vec![0u8; 34];
        f[12] = 8;
        f[14] = 0x45;
        f[14 + 2..14 + 4].copy_from_slice(&((20 + tail.len()) as u16).to_be_bytes());
        f[14 + 8] = 64;
        f[14 + 9] = proto;
        f[26..34].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        let ck = checksum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&ck.to_be_bytes());
        f.extend_from_slice(&tail);
        if let Ok(p) = parse(&f) {
            let me = a("2001:db8::1");
            let mut b = f.clone();
            b.resize(f.len() + 20, 0);
            let n = cut.min(f.len());
            for csum in [Csum::Full, Csum::Partial] {
                let _ = modes::nat64::to_v6(&mut b.clone(), f.len(), &p, csum, None, (me, 1), (me, 2));
                let _ = modes::nat64::to_v6(&mut b.clone()[..n], n, &p, csum, None, (me, 1), (me, 2));
            }
            exercise(&f, &p);
            exercise(&f[..n], &p);
        }
    }
}

#[test]
fn nat64_gso_super_frame_segments_verify() {
    use modes::gso::segment_tcp4;
    use modes::wire::vnet::{VnetHdr, GSO_TCPV6, NEEDS_CSUM};
    let (c, v) = (a("2001:db8:c::2"), a("2001:db8:f::80"));
    let (l, r) = (Ipv4Addr::new(10, 0, 5, 100), Ipv4Addr::new(10, 0, 5, 2));
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let mut f = tcp6(c, v, 40000, 80, &data);
    make_partial(&mut f);
    let p = parse(&f).unwrap();
    let mut h = VnetHdr {
        flags: NEEDS_CSUM,
        gso_type: GSO_TCPV6,
        hdr_len: 74,
        gso_size: 1400,
        csum_start: 54,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    let n0 = f.len();
    let n = modes::nat64::to_v4(
        &mut f,
        n0,
        &p,
        Csum::Partial,
        Some(&mut h),
        (l, 5000),
        (r, 8080),
    )
    .unwrap();
    let q = parse(&f[..n]).unwrap();
    let n = modes::toa::insert_toa(&mut f, n, &q, Some(&mut h), c, 40000).unwrap();
    let q = parse(&f[..n]).unwrap();
    let mut out = vec![0u8; 70_000];
    let mut got = Vec::new();
    segment_tcp4(&f[..n], &h, &q, &mut out, |s| got.push(s.to_vec()));
    assert_eq!(got.len(), 5000usize.div_ceil(1380));
    let mut joined = Vec::new();
    for s in &got {
        let sp = parse(s).expect("segment parses (IPv4 header checksum)");
        let seg = &s[sp.l4..sp.ip_end()];
        assert_eq!(checksum::l4_checksum_v4(l, r, 6, seg), 0, "TCP checksum");
        assert_eq!(
            modes::toa::parse_toa(&s[sp.l4 + 20..sp.payload_offset()]),
            Some((IpAddr::V6(c), 40000))
        );
        assert!(s.len() - 14 <= 1400 + 20 + 40);
        joined.extend_from_slice(&s[sp.payload_offset()..sp.ip_end()]);
    }
    assert_eq!(joined, data);
}

#[test]
fn eui64_link_local() {
    assert_eq!(
        reply::link_local([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]),
        "fe80::ff:fe00:1".parse::<Ipv6Addr>().unwrap()
    );
    assert_eq!(
        reply::link_local([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]),
        "fe80::5054:ff:fe12:3456".parse::<Ipv6Addr>().unwrap()
    );
}

/// An ICMPv4 error (`kind`, `code`, bytes 4..8 `rest`) from a router to a NAT64 local address,
/// quoting `quote` (an IPv4 packet the appliance sent to the IPv4 server).
fn icmp4_error(kind: u8, code: u8, rest: [u8; 4], quote: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 0, 1])
        .ipv4([172, 16, 0, 254], [172, 16, 0, 100], 64)
        .icmpv4_raw(kind, code, rest)
        .write(&mut f, quote)
        .unwrap();
    f
}

/// The IPv4 packet a NAT64 connection's client packet became: 172.16.0.100:5000 →
/// 172.16.0.6:8080, TCP with `data`.
fn quoted_tcp4(data: &[u8]) -> Vec<u8> {
    let mut q = Vec::new();
    PacketBuilder::ipv4([172, 16, 0, 100], [172, 16, 0, 6], 63)
        .tcp(5000, 8080, 1, 64240)
        .write(&mut q, data)
        .unwrap();
    q
}

#[test]
fn nat64_icmp_errors_become_the_clients_icmpv6_errors() {
    let (c6, v6) = (a("2001:db8:c::2"), a("2001:db8:f::80"));
    let (c, v) = (c6, v6);
    let translate = |f: &[u8]| {
        let p = parse(f).unwrap();
        let mut buf = vec![0u8; 2000];
        buf[..f.len()].copy_from_slice(f);
        let mut h = modes::wire::vnet::VnetHdr::default();
        let n =
            modes::nat64::icmp_to_v6(&mut buf, f.len(), &p, Some(&mut h), (c6, 40000), (v6, 80))?;
        buf.truncate(n);
        Some(buf)
    };
    // Fragmentation needed (MTU 1400): Packet Too Big with 1420, the quote is the client's
    // packet (client → VIP, its ports), its TCP checksum right for that packet.
    let q = quoted_tcp4(b"0123456789");
    let out = translate(&icmp4_error(3, 4, [0, 0, 0x05, 0x78], &q)).unwrap();
    assert_eq!(out.len(), 14 + 40 + 8 + 40 + 30);
    let s = SlicedPacket::from_ethernet(&out).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &s.net else {
        panic!("not IPv6")
    };
    assert_eq!(
        (ip.header().source_addr(), ip.header().destination_addr()),
        (v6, c6)
    );
    assert_eq!(ip.header().hop_limit(), 64);
    let Some(TransportSlice::Icmpv6(icmp)) = &s.transport else {
        panic!("not ICMPv6")
    };
    assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 1420 });
    assert_eq!(checksum::l4_checksum_v6(v, c, 58, icmp.slice()), 0);
    let quoted = &icmp.slice()[8..];
    let qip = etherparse::Ipv6HeaderSlice::from_slice(quoted).unwrap();
    assert_eq!((qip.source_addr(), qip.destination_addr()), (c6, v6));
    assert_eq!((qip.payload_length(), qip.hop_limit()), (30, 63));
    assert_eq!(u8::from(qip.next_header()), 6);
    let seg = &quoted[40..];
    assert_eq!(&seg[..4], &[0x9c, 0x40, 0, 80], "ports 40000 → 80");
    assert_eq!(&seg[20..], b"0123456789");
    assert_eq!(
        checksum::l4_checksum_v6(c, v, 6, seg),
        0,
        "quoted TCP checksum"
    );

    // A small MTU still gives at least the IPv6 minimum.
    let out = translate(&icmp4_error(3, 4, [0, 0, 0x02, 0x40], &q)).unwrap();
    let s = SlicedPacket::from_ethernet(&out).unwrap();
    let Some(TransportSlice::Icmpv6(icmp)) = &s.transport else {
        panic!("not ICMPv6")
    };
    assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu: 1280 });

    // Unreachable codes and time exceeded map as RFC 7915 says.
    for (kind, code, want) in [
        (3u8, 3u8, (1u8, 4u8)),
        (3, 1, (1, 0)),
        (3, 13, (1, 1)),
        (11, 0, (3, 0)),
        (11, 1, (3, 1)),
    ] {
        let out = translate(&icmp4_error(kind, code, [0; 4], &q)).unwrap();
        assert_eq!((out[54], out[55]), want, "ICMPv4 {kind}/{code}");
        assert_eq!(checksum::l4_checksum_v6(v, c, 58, &out[54..]), 0);
    }
    // Not translated: parameter problem, redirect, an unknown unreachable code, a quote
    // that is not TCP/UDP or too short.
    for (kind, code) in [(12u8, 0u8), (5, 1), (3, 14)] {
        assert!(translate(&icmp4_error(kind, code, [0; 4], &q)).is_none());
    }
    assert!(translate(&icmp4_error(3, 3, [0; 4], &q[..26])).is_none());

    // A long quote is cut so the ICMPv6 error fits 1280 bytes.
    let big: Vec<u8> = (0..1400).map(|i| i as u8).collect();
    let q = quoted_tcp4(&big);
    let out = translate(&icmp4_error(3, 3, [0; 4], &q)).unwrap();
    assert_eq!(out.len(), 14 + 1280);
    assert_eq!(checksum::l4_checksum_v6(v, c, 58, &out[54..]), 0);
    // The quoted header still says the client's packet's full length.
    assert_eq!(u16::from_be_bytes([out[66], out[67]]), 1420);
}
