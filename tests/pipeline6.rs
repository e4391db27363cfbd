//! The frame pipeline with IPv6, frames in and frames out (no root, no TAP): Neighbour
//! Solicitations for a VIP and for the appliance's own and link-local addresses answered with
//! correct advertisements, neighbours learnt from advertisements (held frames released),
//! ICMPv6 echo answered, a NAT service's TCP SYN rewritten to the real server (checksum equal
//! to a full recomputation) and its reply rewritten back, DR rewriting the MACs only, hop
//! limit 1 answered with time exceeded, a packet over the egress MTU answered with Packet Too
//! Big, martian sources and malformed frames counted by reason, FullNAT with an IPv6 local
//! address and the IPv6 TOA, TUN as IPv6-in-IPv6 (MSS clamp, Packet Too Big for the outer
//! header, GSO super-frames segmented), NAT64 (an IPv4 FullNAT real server behind the IPv6
//! VIP: both directions translated, TOA kind 253 in the IPv4 segment, GSO super-frames),
//! ICMPv6 errors from the servers' side about NAT and FullNAT connections translated back.
//!
//! The snapshot is built from the config's ports and routes and hand-made services: the
//! control table (tapvsadm's model) does not hold IPv6 services yet.

#[path = "common/rig6.rs"]
mod rig6;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use etherparse::PacketBuilder;
use modes::Forward;
use rig6::{client, ip, one_real as service, vip6, Rig, CLIENT_MAC, EXT, EXT_MAC, INT, INT_MAC};
use tapvs::datapath::ha::{Standby, NO_STANDBY};
use tapvs::datapath::neigh::NeighEvent;
use tapvs::datapath::pipeline::Verdict;
use tapvs::datapath::stats::Drop;

fn ext6() -> Ipv6Addr {
    ip("2001:db8:c::1")
}
fn int6() -> Ipv6Addr {
    ip("2001:db8:5::1")
}
fn rs_nat() -> Ipv6Addr {
    ip("2001:db8:5::2")
}
fn rs_dr() -> Ipv6Addr {
    ip("2001:db8:5::3")
}
fn rs_fnat() -> Ipv6Addr {
    ip("2001:db8:5::5")
}
fn lip6() -> Ipv6Addr {
    ip("2001:db8:5::100")
}
fn rs_tun() -> Ipv6Addr {
    ip("2001:db8:5::4")
}
/// NAT64's IPv4 real server and local address.
const RS64: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 6);
const LIP4: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 100);

/// A real server's MAC, derived from its address.
fn mac_of(a: Ipv6Addr) -> [u8; 6] {
    let o = a.octets();
    [0x02, 0x5e, 0x66, o[13], o[14], o[15]]
}

/// The verdict of a frame forwarded to the client.
fn to_client() -> Verdict {
    Verdict::Transmit {
        port: EXT,
        hop: IpAddr::V6(client()),
    }
}

/// The verdict of a frame forwarded on the server side to next hop `hop`.
fn to_int(hop: impl Into<IpAddr>) -> Verdict {
    Verdict::Transmit {
        port: INT,
        hop: hop.into(),
    }
}

/// Feeds the client's empty ACK from port `cport` to VIP6:`vport`; the first frame it sent on the
/// server side.
fn client_ack(rig: &mut Rig, cport: u16, vport: u16) -> Vec<u8> {
    let ack = tcp(
        (EXT_MAC, CLIENT_MAC),
        (client(), cport),
        (vip6(), vport),
        64,
        false,
        &[],
    );
    assert!(matches!(
        rig.feed(EXT, &ack),
        Verdict::Transmit { port: INT, .. }
    ));
    rig.sent().swap_remove(0).1
}

impl Rig {
    /// The rig with a NAT, a DR, a FullNAT (IPv6 local address, TOA), a TUN and a NAT64
    /// service on VIP6 ports 80..=84; the server side's MTU 1400.
    fn new() -> Rig {
        Rig::with_mtu(1400)
    }

    /// [`Rig::new`] with the server side's MTU `mtu`.
    fn with_mtu(mtu: u32) -> Rig {
        let mut fnat = service(82, rs_fnat(), 8082, Forward::FullNat, 2);
        fnat.local_addresses = Arc::from(vec![IpAddr::V6(lip6())]);
        fnat.toa = true;
        let mut nat64 = service(84, RS64, 8084, Forward::FullNat, 4);
        nat64.local_addresses = Arc::from(vec![IpAddr::V4(LIP4)]);
        nat64.toa = true;
        Rig::build(
            mtu,
            vec![
                service(80, rs_nat(), 8080, Forward::Nat, 0),
                service(81, rs_dr(), 81, Forward::Dr, 1),
                fnat,
                service(83, rs_tun(), 83, Forward::Tun, 3),
                nat64,
            ],
        )
    }
}

/// An ICMPv6 message (type, code 0, body after the 4-byte header) as a frame; `eth` is
/// (destination, source).
fn icmp6(
    eth: ([u8; 6], [u8; 6]),
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop: u8,
    t: u8,
    body: &[u8],
) -> Vec<u8> {
    let mut msg = vec![t, 0, 0, 0];
    msg.extend_from_slice(body);
    let sum = modes::checksum::l4_checksum_v6(src, dst, 58, &msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    let b = PacketBuilder::ethernet2(eth.1, eth.0).ipv6(src.octets(), dst.octets(), hop);
    let mut out = Vec::new();
    b.write(&mut out, etherparse::IpNumber::IPV6_ICMP, &msg)
        .unwrap();
    out
}

fn solicited(t: Ipv6Addr) -> (Ipv6Addr, [u8; 6]) {
    let o = t.octets();
    let g = Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ]);
    (g, [0x33, 0x33, 0xff, o[13], o[14], o[15]])
}

/// A Neighbour Solicitation for `target` from the client (source link-layer option).
fn ns(target: Ipv6Addr) -> Vec<u8> {
    let (group, gmac) = solicited(target);
    let mut body = vec![0u8; 4];
    body.extend_from_slice(&target.octets());
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&CLIENT_MAC);
    icmp6((gmac, CLIENT_MAC), client(), group, 255, 135, &body)
}

/// The advertisement the appliance should answer `ns(target)` with from `mac`.
fn na_for(target: Ipv6Addr, mac: [u8; 6]) -> Vec<u8> {
    let mut body = vec![0x60, 0, 0, 0];
    body.extend_from_slice(&target.octets());
    body.extend_from_slice(&[2, 1]);
    body.extend_from_slice(&mac);
    icmp6((CLIENT_MAC, mac), target, client(), 255, 136, &body)
}

fn tcp(
    eth: ([u8; 6], [u8; 6]),
    src: (Ipv6Addr, u16),
    dst: (Ipv6Addr, u16),
    hop: u8,
    syn: bool,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(eth.1, eth.0)
        .ipv6(src.0.octets(), dst.0.octets(), hop)
        .tcp(src.1, dst.1, 1000, 64240);
    let b = if syn { b.syn() } else { b.ack(5000) };
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

#[test]
fn neighbour_solicitations_for_vip_own_and_link_local_addresses_are_answered() {
    let mut rig = Rig::new();
    for (target, port, mac) in [
        (vip6(), EXT, EXT_MAC),
        (ext6(), EXT, EXT_MAC),
        (ip("fe80::ff:fe00:1"), EXT, EXT_MAC),
    ] {
        assert_eq!(rig.feed(port, &ns(target)), Verdict::Answer, "{target}");
        assert_eq!(rig.sent(), vec![(port, na_for(target, mac))], "{target}");
    }
    assert_eq!(rig.pipe.counters().traffic.nd_replies, 3);
    // The sender was learnt from its source link-layer option (already fresh: no event) and
    // a stranger's address is not answered.
    assert_eq!(
        rig.feed(EXT, &ns(ip("2001:db8:c::77"))),
        Verdict::Drop(Drop::NdIgnored)
    );
    assert!(rig.sent().is_empty());
    // A solicitation with a hop limit other than 255 is not Neighbour Discovery.
    let mut bad = ns(vip6());
    bad[14 + 7] = 64;
    assert_eq!(rig.feed(EXT, &bad), Verdict::Drop(Drop::NdIgnored));
    assert!(rig.sent().is_empty());
}

#[test]
fn echo_requests_to_the_vip_and_own_address_are_answered() {
    let mut rig = Rig::new();
    for dst in [vip6(), ext6()] {
        let req = icmp6(
            (EXT_MAC, CLIENT_MAC),
            client(),
            dst,
            64,
            128,
            &[0, 7, 0, 1, 9, 9],
        );
        assert_eq!(rig.feed(EXT, &req), Verdict::Answer);
        let want = icmp6(
            (CLIENT_MAC, EXT_MAC),
            dst,
            client(),
            64,
            129,
            &[0, 7, 0, 1, 9, 9],
        );
        let got = rig.sent();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, EXT);
        // The hop limit of an answer is the stack's choice; everything else is exact.
        let (mut g, mut w) = (got[0].1.clone(), want);
        g[14 + 7] = 0;
        w[14 + 7] = 0;
        assert_eq!(g, w, "echo reply from {dst}");
    }
}

#[test]
fn nat_rewrites_a_tcp_syn_to_the_real_server_and_the_reply_back() {
    let mut rig = Rig::new();
    rig.learn(rs_nat(), INT, mac_of(rs_nat()));
    let syn = tcp(
        (EXT_MAC, CLIENT_MAC),
        (client(), 40000),
        (vip6(), 80),
        64,
        true,
        &[],
    );
    assert_eq!(rig.feed(EXT, &syn), to_int(rs_nat()));
    // Destination rewritten, hop limit decremented, checksum as a full recomputation gives.
    let want = tcp(
        (mac_of(rs_nat()), INT_MAC),
        (client(), 40000),
        (rs_nat(), 8080),
        63,
        true,
        &[],
    );
    assert_eq!(rig.sent(), vec![(INT, want)]);
    let c = rig
        .pipe
        .table()
        .lookup(&tapvs::datapath::conn::FlowKey::new(
            6,
            IpAddr::V6(client()),
            40000,
            IpAddr::V6(vip6()),
            80,
        ))
        .expect("connection");
    assert_eq!(rig.pipe.table().get(c.slot).daddr, IpAddr::V6(rs_nat()));
    // The reply: source rewritten to the VIP, to the client.
    let reply = tcp(
        (INT_MAC, mac_of(rs_nat())),
        (rs_nat(), 8080),
        (client(), 40000),
        64,
        false,
        b"hello",
    );
    assert_eq!(rig.feed(INT, &reply), to_client());
    let want = tcp(
        (CLIENT_MAC, EXT_MAC),
        (vip6(), 80),
        (client(), 40000),
        63,
        false,
        b"hello",
    );
    assert_eq!(rig.sent(), vec![(EXT, want)]);
}

#[test]
fn dr_rewrites_the_macs_only() {
    let mut rig = Rig::new();
    rig.learn(rs_dr(), INT, mac_of(rs_dr()));
    let syn = tcp(
        (EXT_MAC, CLIENT_MAC),
        (client(), 40001),
        (vip6(), 81),
        64,
        true,
        &[],
    );
    assert!(matches!(
        rig.feed(EXT, &syn),
        Verdict::Transmit { port: INT, .. }
    ));
    let want = tcp(
        (mac_of(rs_dr()), INT_MAC),
        (client(), 40001),
        (vip6(), 81),
        63,
        true,
        &[],
    );
    assert_eq!(rig.sent(), vec![(INT, want)]);
}

#[test]
fn an_unresolved_real_server_is_solicited_and_released_by_its_advertisement() {
    let mut rig = Rig::new();
    let syn = tcp(
        (EXT_MAC, CLIENT_MAC),
        (client(), 40002),
        (vip6(), 80),
        64,
        true,
        &[],
    );
    assert_eq!(
        rig.feed(EXT, &syn),
        Verdict::Hold {
            port: INT,
            hop: IpAddr::V6(rs_nat())
        }
    );
    assert_eq!(
        rig.pipe.drain_events().collect::<Vec<_>>(),
        [NeighEvent::Wanted {
            ip: IpAddr::V6(rs_nat()),
            port: INT
        }]
    );
    assert!(rig.sent().is_empty());
    // The real server's advertisement (solicited, with its link-layer address) releases it.
    let mut body = vec![0x60, 0, 0, 0];
    body.extend_from_slice(&rs_nat().octets());
    body.extend_from_slice(&[2, 1]);
    body.extend_from_slice(&mac_of(rs_nat()));
    let na = icmp6(
        (INT_MAC, mac_of(rs_nat())),
        rs_nat(),
        int6(),
        255,
        136,
        &body,
    );
    rig.feed(INT, &na);
    let want = tcp(
        (mac_of(rs_nat()), INT_MAC),
        (client(), 40002),
        (rs_nat(), 8080),
        63,
        true,
        &[],
    );
    assert_eq!(rig.sent(), vec![(INT, want)]);
    assert!(rig.pipe.drain_events().any(|e| e
        == NeighEvent::Learned {
            ip: IpAddr::V6(rs_nat()),
            mac: mac_of(rs_nat()),
            port: INT
        }));
}

#[test]
fn hop_limit_one_gets_time_exceeded_and_is_dropped() {
    let mut rig = Rig::new();
    rig.learn(rs_nat(), INT, mac_of(rs_nat()));
    let syn = tcp(
        (EXT_MAC, CLIENT_MAC),
        (client(), 40003),
        (vip6(), 80),
        1,
        true,
        &[],
    );
    assert_eq!(rig.feed(EXT, &syn), Verdict::Drop(Drop::TtlExceeded));
    let sent = rig.sent();
    assert_eq!(sent.len(), 1);
    let (port, f) = &sent[0];
    assert_eq!(*port, EXT);
    // ICMPv6 time exceeded (3/0) from the port's address to the client, quoting the SYN.
    assert_eq!(&f[12..14], &[0x86, 0xdd]);
    assert_eq!(&f[14 + 8..14 + 24], &ext6().octets());
    assert_eq!(&f[14 + 24..14 + 40], &client().octets());
    assert_eq!(f[14 + 6], 58);
    assert_eq!(&f[54..56], &[3, 0]);
    assert_eq!(&f[62..62 + 40], &syn[14..54], "the quoted IPv6 header");
}

#[test]
fn a_packet_over_the_egress_mtu_gets_packet_too_big() {
    let mut rig = Rig::new();
    rig.learn(rs_nat(), INT, mac_of(rs_nat()));
    let syn = tcp(
        (EXT_MAC, CLIENT_MAC),
        (client(), 40004),
        (vip6(), 80),
        64,
        true,
        &[],
    );
    assert!(matches!(rig.feed(EXT, &syn), Verdict::Transmit { .. }));
    rig.sent();
    // 1400-byte MTU on the server side: a 1440-byte packet does not fit.
    let big = tcp(
        (EXT_MAC, CLIENT_MAC),
        (client(), 40004),
        (vip6(), 80),
        64,
        false,
        &[0u8; 1380],
    );
    assert_eq!(rig.feed(EXT, &big), Verdict::Drop(Drop::FragNeeded));
    let sent = rig.sent();
    assert_eq!(sent.len(), 1);
    let f = &sent[0].1;
    assert_eq!(&f[54..56], &[2, 0], "ICMPv6 Packet Too Big");
    assert_eq!(u32::from_be_bytes([f[58], f[59], f[60], f[61]]), 1400);
    assert_eq!(&f[14 + 24..14 + 40], &client().octets());
}

#[test]
fn martian_sources_and_malformed_frames_are_counted_by_reason() {
    let mut rig = Rig::new();
    for src in [ip("::1"), ip("ff02::1"), ip("::ffff:10.0.0.9")] {
        let syn = tcp(
            (EXT_MAC, CLIENT_MAC),
            (src, 40005),
            (vip6(), 80),
            64,
            true,
            &[],
        );
        assert_eq!(
            rig.feed(EXT, &syn),
            Verdict::Drop(Drop::MartianSource),
            "{src}"
        );
    }
    assert_eq!(rig.drops(Drop::MartianSource), 3);
    // A packet from the VIP itself (a DR real server answering the wrong way).
    let from_vip = tcp(
        (EXT_MAC, CLIENT_MAC),
        (vip6(), 80),
        (client(), 1),
        64,
        false,
        &[],
    );
    assert_eq!(rig.feed(EXT, &from_vip), Verdict::Drop(Drop::VipSourced));
    // A payload length past the frame: malformed, counted by its parse reason.
    let mut short = tcp(
        (EXT_MAC, CLIENT_MAC),
        (client(), 40006),
        (vip6(), 80),
        64,
        true,
        &[],
    );
    short[14 + 5] = 200;
    let v = rig.feed(EXT, &short);
    let Verdict::Malformed(r) = v else {
        panic!("{v:?}")
    };
    assert_eq!(rig.pipe.counters().parse_drops[r as usize], 1);
    // A fragment: its own reason.
    let mut frag = tcp(
        (EXT_MAC, CLIENT_MAC),
        (client(), 40007),
        (vip6(), 80),
        64,
        true,
        &[],
    );
    frag[14 + 6] = 44;
    let mut with_frag = frag[..54].to_vec();
    with_frag.extend_from_slice(&[6, 0, 0, 1, 0, 0, 0, 9]);
    with_frag.extend_from_slice(&frag[54..]);
    let pl = (with_frag.len() - 54) as u16;
    with_frag[18..20].copy_from_slice(&pl.to_be_bytes());
    assert!(matches!(rig.feed(EXT, &with_frag), Verdict::Malformed(_)));
}

#[test]
fn fullnat_rewrites_both_ends_and_the_handshake_ack_carries_the_ipv6_toa() {
    let mut rig = Rig::new();
    rig.learn(rs_fnat(), INT, mac_of(rs_fnat()));
    let syn = tcp(
        (EXT_MAC, CLIENT_MAC),
        (client(), 40010),
        (vip6(), 82),
        64,
        true,
        &[],
    );
    assert_eq!(rig.feed(EXT, &syn), to_int(rs_fnat()));
    let t = rig.pipe.table();
    let fd = t
        .lookup(&tapvs::datapath::conn::FlowKey::new(
            6,
            IpAddr::V6(client()),
            40010,
            IpAddr::V6(vip6()),
            82,
        ))
        .expect("connection");
    let (lip, lport) = t.get(fd.slot).local().expect("a local address");
    assert_eq!(lip, IpAddr::V6(lip6()));
    let want = tcp(
        (mac_of(rs_fnat()), INT_MAC),
        (lip6(), lport),
        (rs_fnat(), 8082),
        63,
        true,
        &[],
    );
    assert_eq!(rig.sent(), vec![(INT, want)]);
    // The server's answer to LIP:lport goes back to the client from VIP:82.
    let back = tcp(
        (INT_MAC, mac_of(rs_fnat())),
        (rs_fnat(), 8082),
        (lip6(), lport),
        64,
        false,
        &[],
    );
    assert!(matches!(
        rig.feed(INT, &back),
        Verdict::Transmit { port: EXT, .. }
    ));
    let want = tcp(
        (CLIENT_MAC, EXT_MAC),
        (vip6(), 82),
        (client(), 40010),
        63,
        false,
        &[],
    );
    assert_eq!(rig.sent(), vec![(EXT, want)]);
    // The client's ACK carries the IPv6 TOA (kind 253: port, address) to the server.
    let f = &client_ack(&mut rig, 40010, 82);
    let mut toa = vec![253, 20];
    toa.extend_from_slice(&40010u16.to_be_bytes());
    toa.extend_from_slice(&client().octets());
    assert!(f[54..].windows(20).any(|w| w == toa), "TOA6 in {f:02x?}");
    assert_eq!(&f[14 + 8..14 + 24], &lip6().octets());
    assert_eq!(rig.pipe.counters().traffic.toa_added, 1);
    // The checksum still holds over the grown segment.
    let seg = &f[54..];
    let sum = modes::checksum::l4_checksum_v6(lip6(), rs_fnat(), 6, seg);
    assert!(sum == 0 || sum == 0xffff, "checksum {sum:#x}");
}

/// `tcp` with an MSS option on the SYN.
fn tcp_mss(
    eth: ([u8; 6], [u8; 6]),
    src: (Ipv6Addr, u16),
    dst: (Ipv6Addr, u16),
    hop: u8,
    mss: u16,
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(eth.1, eth.0)
        .ipv6(src.0.octets(), dst.0.octets(), hop)
        .tcp(src.1, dst.1, 1000, 64240)
        .syn()
        .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(mss)])
        .unwrap();
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

/// The MSS option of the TCP header at `l4` in `f`.
fn mss_of(f: &[u8], l4: usize) -> Option<u16> {
    let end = l4 + usize::from(f[l4 + 12] >> 4) * 4;
    let mut i = l4 + 20;
    while i + 1 < end {
        match f[i] {
            0 => return None,
            1 => i += 1,
            2 => return Some(u16::from_be_bytes([f[i + 2], f[i + 3]])),
            _ => i += usize::from(f[i + 1].max(2)),
        }
    }
    None
}

/// Whether the one's-complement sum of a checksummed region verifies.
fn sum_ok(sum: u16) -> bool {
    sum == 0 || sum == 0xffff
}

/// A TCPv6 GSO super-frame (client → `vport`, 2500 bytes of data in segments of 1000,
/// partial checksum) and its virtio-net header.
fn gso6(cport: u16, vport: u16) -> ([u8; 12], Vec<u8>) {
    let data: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
    let mut f = tcp(
        (EXT_MAC, CLIENT_MAC),
        (client(), cport),
        (vip6(), vport),
        64,
        false,
        &data,
    );
    let ph = modes::checksum::pseudo_header_v6(client(), vip6(), 6, 20 + 2500);
    f[14 + 40 + 16..14 + 40 + 18].copy_from_slice(&ph.to_be_bytes());
    let mut h = [0u8; 12];
    h[0] = 1; // NEEDS_CSUM
    h[1] = 4; // GSO_TCPV6
    h[2..4].copy_from_slice(&74u16.to_le_bytes());
    h[4..6].copy_from_slice(&1000u16.to_le_bytes());
    h[6..8].copy_from_slice(&54u16.to_le_bytes());
    h[8..10].copy_from_slice(&16u16.to_le_bytes());
    (h, f)
}

#[test]
fn tun_encapsulates_a_syn_in_ipv6_with_its_mss_clamped() {
    let mut rig = Rig::new();
    rig.learn(rs_tun(), INT, mac_of(rs_tun()));
    let syn = tcp_mss(
        (EXT_MAC, CLIENT_MAC),
        (client(), 40020),
        (vip6(), 83),
        64,
        1460,
    );
    assert_eq!(rig.feed(EXT, &syn), to_int(rs_tun()));
    let sent = rig.sent();
    assert_eq!(sent.len(), 1);
    let (port, f) = &sent[0];
    assert_eq!(*port, INT);
    assert_eq!(&f[..6], &mac_of(rs_tun()));
    assert_eq!(&f[6..12], &INT_MAC);
    assert_eq!(&f[12..14], &[0x86, 0xdd]);
    // Outer header: next header 41, payload the whole inner packet, the server-side port's
    // address to the real server.
    assert_eq!(f[14 + 6], 41, "next header IPv6");
    let inner = &f[54..];
    assert_eq!(usize::from(u16::from_be_bytes([f[18], f[19]])), inner.len());
    assert_eq!(&f[14 + 8..14 + 24], &int6().octets());
    assert_eq!(&f[14 + 24..14 + 40], &rs_tun().octets());
    assert_eq!(f[14 + 7], 63);
    // The inner packet as the client sent it, hop limit decremented and the MSS clamped to
    // MTU − 40 − 40 − 20 (checksum as a full recomputation gives).
    let want = tcp_mss(
        (EXT_MAC, CLIENT_MAC),
        (client(), 40020),
        (vip6(), 83),
        63,
        1300,
    );
    assert_eq!(inner, &want[14..]);
    assert_eq!(mss_of(inner, 40), Some(1300));
}

#[test]
fn tun_answers_packet_too_big_with_room_for_the_outer_header() {
    let mut rig = Rig::with_mtu(1500);
    rig.learn(rs_tun(), INT, mac_of(rs_tun()));
    let syn = tcp(
        (EXT_MAC, CLIENT_MAC),
        (client(), 40021),
        (vip6(), 83),
        64,
        true,
        &[],
    );
    assert!(matches!(rig.feed(EXT, &syn), Verdict::Transmit { .. }));
    rig.sent();
    let data = |n: usize| {
        tcp(
            (EXT_MAC, CLIENT_MAC),
            (client(), 40021),
            (vip6(), 83),
            64,
            false,
            &vec![7u8; n],
        )
    };
    // 1500 bytes of IPv6 do not fit a 1500-byte MTU with 40 more: Packet Too Big, 1460.
    let big = data(1500 - 60);
    assert_eq!(rig.feed(EXT, &big), Verdict::Drop(Drop::FragNeeded));
    let sent = rig.sent();
    assert_eq!(sent.len(), 1);
    let (port, f) = &sent[0];
    assert_eq!(*port, EXT);
    assert_eq!(&f[54..56], &[2, 0], "ICMPv6 Packet Too Big");
    assert_eq!(u32::from_be_bytes([f[58], f[59], f[60], f[61]]), 1460);
    assert_eq!(&f[14 + 24..14 + 40], &client().octets());
    assert_eq!(&f[62..62 + 40], &big[14..54], "the quoted IPv6 header");
    // 1460 bytes fit exactly: sent as 1500 bytes of outer packet.
    let fits = data(1460 - 60);
    assert!(matches!(rig.feed(EXT, &fits), Verdict::Transmit { .. }));
    let sent = rig.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1.len() - 14, 1500);
    assert_eq!(rig.drops(Drop::FragNeeded), 1);
}

#[test]
fn tun_segments_an_ipv6_gso_superframe_before_encapsulating() {
    let mut rig = Rig::new();
    rig.learn(rs_tun(), INT, mac_of(rs_tun()));
    let syn = tcp(
        (EXT_MAC, CLIENT_MAC),
        (client(), 40022),
        (vip6(), 83),
        64,
        true,
        &[],
    );
    assert!(matches!(rig.feed(EXT, &syn), Verdict::Transmit { .. }));
    rig.sent();
    let (h, frame) = gso6(40022, 83);
    assert_eq!(rig.feed_vnet(EXT, h, &frame), to_int(rs_tun()));
    let sent = rig.sent_vnet();
    assert_eq!(sent.len(), 3);
    let mut data = Vec::new();
    for (i, (port, w)) in sent.iter().enumerate() {
        assert_eq!(*port, INT);
        assert_eq!(
            &w[..12],
            &[0u8; 12],
            "plain frames: no offload inside the tunnel"
        );
        let f = &w[12..];
        assert_eq!(f[14 + 6], 41);
        assert_eq!(&f[14 + 8..14 + 24], &int6().octets());
        assert_eq!(&f[14 + 24..14 + 40], &rs_tun().octets());
        let inner = &f[54..];
        assert_eq!(usize::from(u16::from_be_bytes([f[18], f[19]])), inner.len());
        assert_eq!(inner[7], 63, "inner hop limit");
        let seg = &inner[40..];
        let seq = u32::from_be_bytes([seg[4], seg[5], seg[6], seg[7]]);
        assert_eq!(seq, 1000 + 1000 * i as u32);
        let plen = usize::from(u16::from_be_bytes([inner[4], inner[5]]));
        assert_eq!(plen, seg.len());
        assert!(
            sum_ok(modes::checksum::l4_checksum_v6(client(), vip6(), 6, seg)),
            "segment {i}"
        );
        data.extend_from_slice(&seg[20..]);
    }
    assert_eq!(data, frame[74..]);
    assert_eq!(rig.pipe.counters().segments, 3);
}

/// The IPv4 header of frame `f` verifies and carries `src` → `dst`, protocol 6, DF.
fn assert_ipv4(f: &[u8], src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) {
    assert_eq!(&f[12..14], &[0x08, 0x00]);
    let h = &f[14..34];
    assert_eq!(h[0], 0x45);
    assert!(
        sum_ok(!modes::checksum::checksum(h)),
        "IPv4 header checksum"
    );
    assert_eq!(usize::from(u16::from_be_bytes([h[2], h[3]])), f.len() - 14);
    assert_eq!((h[8], h[9]), (ttl, 6));
    assert_eq!(h[6] & 0x40, 0x40, "DF");
    assert_eq!(&h[12..16], &src.octets());
    assert_eq!(&h[16..20], &dst.octets());
}

#[test]
fn nat64_translates_to_ipv4_with_the_toa_and_the_reply_back_to_ipv6() {
    let mut rig = Rig::new();
    rig.learn(RS64, INT, [0x02, 0x44, 0, 0, 0, 6]);
    let syn = tcp_mss(
        (EXT_MAC, CLIENT_MAC),
        (client(), 40030),
        (vip6(), 84),
        64,
        1460,
    );
    assert_eq!(rig.feed(EXT, &syn), to_int(RS64));
    let t = rig.pipe.table();
    let fd = t
        .lookup(&tapvs::datapath::conn::FlowKey::new(
            6,
            IpAddr::V6(client()),
            40030,
            IpAddr::V6(vip6()),
            84,
        ))
        .expect("connection");
    let c = t.get(fd.slot);
    assert_eq!(c.daddr, IpAddr::V4(RS64));
    let (lip, lport) = c.local().expect("a local address");
    assert_eq!(lip, IpAddr::V4(LIP4));
    let sent = rig.sent();
    assert_eq!(sent.len(), 1);
    let (port, f) = &sent[0];
    assert_eq!(*port, INT);
    assert_eq!(&f[..6], &[0x02, 0x44, 0, 0, 0, 6]);
    assert_ipv4(f, LIP4, RS64, 63);
    let seg = &f[34..];
    assert_eq!(
        &seg[..4],
        &[&lport.to_be_bytes()[..], &8084u16.to_be_bytes()].concat()[..]
    );
    assert!(sum_ok(modes::checksum::l4_checksum_v4(LIP4, RS64, 6, seg)));
    // MSS clamped for the IPv4 side with the 20-byte IPv6 TOA: 1400 − 20 − 20 − 20.
    assert_eq!(mss_of(seg, 0), Some(1340));
    // An ICMP error about the IPv4 side (fragmentation needed, MTU 1200) becomes the
    // client's ICMPv6 Packet Too Big (MTU 1280: 1220 is below the IPv6 minimum), from the VIP,
    // quoting its own packet (client:40030 → VIP:84).
    let mut msg = vec![3, 4, 0, 0, 0, 0, 0x04, 0xb0];
    msg.extend_from_slice(&f[14..14 + 28]);
    let sum = modes::checksum::checksum(&msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut err = Vec::new();
    PacketBuilder::ethernet2([0x02, 0x44, 0, 0, 0, 6], INT_MAC)
        .ipv4(RS64.octets(), LIP4.octets(), 64)
        .write(&mut err, etherparse::IpNumber::ICMP, &msg)
        .unwrap();
    assert_eq!(rig.feed(INT, &err), to_client());
    let sent = rig.sent();
    let e = &sent[0].1;
    assert_eq!(sent.len(), 1);
    assert_eq!(&e[..12], &[&CLIENT_MAC[..], &EXT_MAC[..]].concat()[..]);
    assert_eq!(&e[12..14], &[0x86, 0xdd]);
    assert_eq!(e[20], 58, "ICMPv6");
    assert_eq!(e[21], 63, "hop limit decremented");
    assert_eq!(&e[22..38], &vip6().octets());
    assert_eq!(&e[38..54], &client().octets());
    assert_eq!((e[54], e[55]), (2, 0), "Packet Too Big");
    assert_eq!(&e[58..62], &1280u32.to_be_bytes());
    assert!(sum_ok(modes::checksum::l4_checksum_v6(
        vip6(),
        client(),
        58,
        &e[54..]
    )));
    assert_eq!(&e[70..86], &client().octets(), "quoted source");
    assert_eq!(&e[86..102], &vip6().octets(), "quoted destination");
    assert_eq!(
        &e[102..106],
        &[&40030u16.to_be_bytes()[..], &84u16.to_be_bytes()].concat()[..]
    );
    assert_eq!(e.len(), 14 + 40 + 8 + 40 + 8);
    // Not translatable (parameter problem): counted and dropped.
    let mut bad = err.clone();
    bad[34] = 12;
    bad[36..38].fill(0);
    let sum = modes::checksum::checksum(&bad[34..]);
    bad[36..38].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(rig.feed(INT, &bad), Verdict::Drop(Drop::IcmpIgnored));
    assert!(rig.sent().is_empty());
    // The server's reply to LIP:lport becomes IPv6 from VIP:84 to the client.
    let b = PacketBuilder::ethernet2([0x02, 0x44, 0, 0, 0, 6], INT_MAC)
        .ipv4(RS64.octets(), LIP4.octets(), 64)
        .tcp(8084, lport, 1000, 64240)
        .ack(5000);
    let mut back = Vec::new();
    b.write(&mut back, b"hello").unwrap();
    assert_eq!(rig.feed(INT, &back), to_client());
    let want = tcp(
        (CLIENT_MAC, EXT_MAC),
        (vip6(), 84),
        (client(), 40030),
        63,
        false,
        b"hello",
    );
    assert_eq!(rig.sent(), vec![(EXT, want)]);
    // The client's handshake ACK carries the IPv6 TOA (kind 253) in the IPv4 segment.
    let f = &client_ack(&mut rig, 40030, 84);
    assert_ipv4(f, LIP4, RS64, 63);
    let seg = &f[34..];
    let hl = usize::from(seg[12] >> 4) * 4;
    assert_eq!(
        modes::toa::parse_toa(&seg[20..hl]),
        Some((IpAddr::V6(client()), 40030))
    );
    assert!(sum_ok(modes::checksum::l4_checksum_v4(LIP4, RS64, 6, seg)));
    assert_eq!(rig.pipe.counters().traffic.toa_added, 1);
}

#[test]
fn nat64_keeps_a_gso_superframe_whole_as_tcpv4() {
    let mut rig = Rig::new();
    rig.learn(RS64, INT, [0x02, 0x44, 0, 0, 0, 6]);
    for syn in [true, false] {
        let f = tcp(
            (EXT_MAC, CLIENT_MAC),
            (client(), 40031),
            (vip6(), 84),
            64,
            syn,
            &[],
        );
        assert!(matches!(rig.feed(EXT, &f), Verdict::Transmit { .. }));
    }
    rig.sent();
    let fd = rig
        .pipe
        .table()
        .lookup(&tapvs::datapath::conn::FlowKey::new(
            6,
            IpAddr::V6(client()),
            40031,
            IpAddr::V6(vip6()),
            84,
        ))
        .unwrap();
    let (_, lport) = rig.pipe.table().get(fd.slot).local().unwrap();
    let (h, frame) = gso6(40031, 84);
    assert!(matches!(
        rig.feed_vnet(EXT, h, &frame),
        Verdict::Transmit { port: INT, .. }
    ));
    let sent = rig.sent_vnet();
    assert_eq!(sent.len(), 1, "one super-frame");
    let w = &sent[0].1;
    // TCPv4 GSO, checksum still partial from the IPv4 header's end, headers 20 bytes shorter.
    assert_eq!((w[0], w[1]), (1, 1));
    assert_eq!(u16::from_le_bytes([w[2], w[3]]), 54);
    assert_eq!(u16::from_le_bytes([w[4], w[5]]), 1000);
    assert_eq!(u16::from_le_bytes([w[6], w[7]]), 34);
    assert_eq!(u16::from_le_bytes([w[8], w[9]]), 16);
    let f = &w[12..];
    assert_ipv4(f, LIP4, RS64, 63);
    let seg = &f[34..];
    assert_eq!(&seg[..2], &lport.to_be_bytes());
    let partial = modes::checksum::pseudo_header_v4(LIP4, RS64, 6, seg.len() as u16);
    assert_eq!(u16::from_be_bytes([seg[16], seg[17]]), partial);
    assert_eq!(&seg[20..], &frame[74..]);
}

/// A router on the servers' side, sending ICMPv6 errors.
fn router6() -> Ipv6Addr {
    ip("2001:db8:5::fe")
}

/// A Packet Too Big (MTU 1280) from `router6` to `dst`, quoting `quoted` (an IPv6 packet).
fn ptb_from_router(dst: Ipv6Addr, quoted: &[u8]) -> Vec<u8> {
    let mut body = 1280u32.to_be_bytes().to_vec();
    body.extend_from_slice(quoted);
    icmp6((INT_MAC, mac_of(router6())), router6(), dst, 64, 2, &body)
}

/// Checks an ICMPv6 Packet Too Big sent to the client from the VIP, quoting `want_quote`.
fn assert_ptb_to_client(sent: &[(usize, Vec<u8>)], want_quote: &[u8]) {
    assert_eq!(sent.len(), 1);
    let (port, f) = &sent[0];
    assert_eq!(*port, EXT);
    assert_eq!(&f[..6], &CLIENT_MAC);
    assert_eq!(
        &f[14 + 8..14 + 24],
        &vip6().octets(),
        "outer source: the VIP"
    );
    assert_eq!(&f[14 + 24..14 + 40], &client().octets());
    assert_eq!(f[14 + 7], 63);
    let msg = &f[54..];
    assert_eq!(&msg[..2], &[2, 0]);
    assert_eq!(&msg[4..8], &1280u32.to_be_bytes());
    assert!(sum_ok(modes::checksum::l4_checksum_v6(
        vip6(),
        client(),
        58,
        msg
    )));
    assert_eq!(&msg[8..], want_quote);
}

#[test]
fn icmpv6_errors_about_a_nat_connection_go_back_to_the_client_from_the_vip() {
    let mut rig = Rig::new();
    rig.learn(rs_nat(), INT, mac_of(rs_nat()));
    let syn = tcp(
        (EXT_MAC, CLIENT_MAC),
        (client(), 40040),
        (vip6(), 80),
        64,
        true,
        &[],
    );
    assert!(matches!(rig.feed(EXT, &syn), Verdict::Transmit { .. }));
    let fwd = rig.sent().remove(0).1;
    // The server-side path's error quotes the SYN as forwarded (client → RIP:8080).
    let ptb = ptb_from_router(client(), &fwd[14..]);
    assert_eq!(rig.feed(INT, &ptb), to_client());
    // The client sees its own SYN (client → VIP:80, checksum still valid) quoted.
    let want = tcp(
        (mac_of(rs_nat()), INT_MAC),
        (client(), 40040),
        (vip6(), 80),
        63,
        true,
        &[],
    );
    assert_ptb_to_client(&rig.sent(), &want[14..]);
    // An error quoting a flow the appliance does not know is dropped.
    let stranger = tcp(
        (mac_of(rs_nat()), INT_MAC),
        (client(), 40041),
        (rs_nat(), 8080),
        63,
        true,
        &[],
    );
    let ptb = ptb_from_router(client(), &stranger[14..]);
    assert_eq!(rig.feed(INT, &ptb), Verdict::Drop(Drop::NoConnection));
    assert!(rig.sent().is_empty());
}

#[test]
fn icmpv6_errors_about_a_fullnat_connection_are_translated_on_both_ends() {
    let mut rig = Rig::new();
    rig.learn(rs_fnat(), INT, mac_of(rs_fnat()));
    let syn = tcp(
        (EXT_MAC, CLIENT_MAC),
        (client(), 40042),
        (vip6(), 82),
        64,
        true,
        &[],
    );
    assert!(matches!(rig.feed(EXT, &syn), Verdict::Transmit { .. }));
    let fwd = rig.sent().remove(0).1;
    assert_eq!(&fwd[14 + 8..14 + 24], &lip6().octets());
    // The error goes to the local address, quoting LIP:lport → RIP:8082.
    let ptb = ptb_from_router(lip6(), &fwd[14..]);
    assert_eq!(rig.feed(INT, &ptb), to_client());
    // The quote as the client sent it (the MSS-clamped SYN: its option is what the server saw).
    let mut want = fwd[14..].to_vec();
    want[8..24].copy_from_slice(&client().octets());
    want[24..40].copy_from_slice(&vip6().octets());
    want[40..42].copy_from_slice(&40042u16.to_be_bytes());
    want[42..44].copy_from_slice(&82u16.to_be_bytes());
    want[56..58].fill(0);
    let sum = modes::checksum::l4_checksum_v6(client(), vip6(), 6, &want[40..]);
    want[56..58].copy_from_slice(&sum.to_be_bytes());
    assert_ptb_to_client(&rig.sent(), &want);
}

#[test]
fn nat64_mtu_check_counts_the_shorter_ipv4_header() {
    let mut rig = Rig::new();
    rig.learn(RS64, INT, [0x02, 0x44, 0, 0, 0, 6]);
    let pkt = |syn: bool, n: usize| {
        tcp(
            (EXT_MAC, CLIENT_MAC),
            (client(), 40032),
            (vip6(), 84),
            64,
            syn,
            &vec![5u8; n],
        )
    };
    for f in [pkt(true, 0), pkt(false, 0)] {
        assert!(matches!(rig.feed(EXT, &f), Verdict::Transmit { .. }));
    }
    rig.sent();
    // 1420 bytes of IPv6 are 1400 of IPv4: they fit the 1400-byte MTU.
    assert!(matches!(
        rig.feed(EXT, &pkt(false, 1420 - 60)),
        Verdict::Transmit { port: INT, .. }
    ));
    let sent = rig.sent();
    assert_eq!(sent[0].1.len() - 14, 1400);
    assert_ipv4(&sent[0].1, LIP4, RS64, 63);
    // One byte more: Packet Too Big with 1420, the IPv6 size that fits.
    assert_eq!(
        rig.feed(EXT, &pkt(false, 1421 - 60)),
        Verdict::Drop(Drop::FragNeeded)
    );
    let sent = rig.sent();
    assert_eq!(sent.len(), 1);
    let f = &sent[0].1;
    assert_eq!(&f[54..56], &[2, 0]);
    assert_eq!(u32::from_be_bytes([f[58], f[59], f[60], f[61]]), 1420);
}

/// Hot standby over IPv6: while VRRP does not own an IPv6 VIP here, solicitations for it go
/// unanswered and packets to it (TCP, echo requests) are dropped as `standby`, with no
/// connection made; own addresses are still answered. Once master, all are answered again.
#[test]
fn a_down_ipv6_vip_is_neither_solicited_nor_forwarded() {
    let mut rig = Rig::new();
    rig.learn(rs_nat(), INT, mac_of(rs_nat()));
    rig.standby = Standby {
        vrrp: true,
        down: vec![vip6().into()],
        ..NO_STANDBY.clone()
    };
    let syn = tcp(
        (EXT_MAC, CLIENT_MAC),
        (client(), 40000),
        (vip6(), 80),
        64,
        true,
        &[],
    );
    let echo = icmp6(
        (EXT_MAC, CLIENT_MAC),
        client(),
        vip6(),
        64,
        128,
        &[0, 7, 0, 1, 9, 9],
    );
    assert_eq!(rig.feed(EXT, &ns(vip6())), Verdict::Drop(Drop::NdIgnored));
    assert_eq!(rig.feed(EXT, &syn), Verdict::Drop(Drop::Standby));
    assert_eq!(rig.feed(EXT, &echo), Verdict::Drop(Drop::Standby));
    assert!(rig.sent().is_empty());
    assert!(rig.pipe.table().is_empty());
    assert_eq!(rig.drops(Drop::Standby), 2);
    assert_eq!(rig.feed(EXT, &ns(ext6())), Verdict::Answer);
    assert_eq!(rig.sent(), vec![(EXT, na_for(ext6(), EXT_MAC))]);
    // Becoming master: the VIP is answered and forwarded again.
    rig.standby.down.clear();
    assert_eq!(rig.feed(EXT, &ns(vip6())), Verdict::Answer);
    assert_eq!(rig.sent(), vec![(EXT, na_for(vip6(), EXT_MAC))]);
    assert_eq!(rig.feed(EXT, &syn), to_int(rs_nat()));
}

/// VRRP version 3 over IPv6: an advert to ff02::12 is handed to the VRRP thread when VRRP
/// runs (dropped as an unsupported protocol when it does not), and a floating IPv6 address of
/// a MASTER instance (a link-local gateway, a global one) is answered in Neighbour Discovery on
/// its port only, and only while it floats here.
#[test]
fn ipv6_vrrp_adverts_reach_the_vrrp_thread_and_floating_addresses_are_answered() {
    use modes::advert::{ipv6_multicast_mac, vrrp_advert6};
    use modes::wire::ethernet::EthernetAddress;
    use modes::wire::vrrp::{VrrpRepr, MCAST_GROUP6};
    let mut rig = Rig::new();
    let peer_ll = ip("fe80::2cc:ff:fe00:2");
    let repr = VrrpRepr {
        version: 3,
        vrid: 61,
        priority: 150,
        naddr: 1,
        auth_type: 0,
        adver_int_cs: 100,
        auth: [0; 8],
    };
    let mut advert = vec![0u8; 128];
    let n = vrrp_advert6(
        &mut advert,
        EthernetAddress(CLIENT_MAC),
        ipv6_multicast_mac(MCAST_GROUP6),
        peer_ll,
        MCAST_GROUP6,
        &repr,
        &[vip6()],
    )
    .unwrap();
    advert.truncate(n);
    assert_eq!(
        rig.feed(EXT, &advert),
        Verdict::Drop(Drop::UnsupportedProtocol)
    );
    rig.standby = Standby {
        vrrp: true,
        ..NO_STANDBY.clone()
    };
    assert_eq!(rig.feed(EXT, &advert), Verdict::Vrrp);
    assert!(rig.sent().is_empty());

    let (gw_ll, gw) = (ip("fe80::1"), ip("2001:db8:c::fe"));
    assert_eq!(rig.feed(EXT, &ns(gw_ll)), Verdict::Drop(Drop::NdIgnored));
    assert_eq!(rig.feed(EXT, &ns(gw)), Verdict::Drop(Drop::NdIgnored));
    rig.standby.floating = vec![(EXT, gw_ll.into()), (EXT, gw.into())];
    for a in [gw_ll, gw] {
        assert_eq!(rig.feed(EXT, &ns(a)), Verdict::Answer, "{a}");
        assert_eq!(rig.sent(), vec![(EXT, na_for(a, EXT_MAC))], "{a}");
    }
    // Floating on the other port only: not answered here.
    rig.standby.floating = vec![(INT, gw.into())];
    assert_eq!(rig.feed(EXT, &ns(gw)), Verdict::Drop(Drop::NdIgnored));
    assert!(rig.sent().is_empty());
}
