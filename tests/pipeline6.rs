//! The frame pipeline with IPv6, frames in and frames out (no root, no TAP): Neighbour
//! Solicitations for a VIP and for the appliance's own and link-local addresses answered with
//! correct advertisements, neighbours learnt from advertisements (held frames released),
//! ICMPv6 echo answered, a NAT service's TCP SYN rewritten to the real server (checksum equal
//! to a full recomputation) and its reply rewritten back, DR rewriting the MACs only, hop
//! limit 1 answered with time exceeded, a packet over the egress MTU answered with Packet Too
//! Big, martian sources and malformed frames counted by reason, FullNAT with an IPv6 local
//! address and the IPv6 TOA.
//!
//! The snapshot is built from the config's ports and routes and hand-made services: the
//! control table (tapvsadm's model) does not hold IPv6 services yet.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use etherparse::PacketBuilder;
use modes::Forward;
use tapvs::datapath::acl::Access;
use tapvs::datapath::ha::NO_STANDBY;
use tapvs::datapath::neigh::{NeighCache, NeighEvent, NeighTable};
use tapvs::datapath::persist::Templates;
use tapvs::datapath::pipeline::{Env, Pipeline, Sink, Verdict};
use tapvs::datapath::route::Router;
use tapvs::datapath::service::{Service, Snapshot};
use tapvs::datapath::stats::Drop;
use tapvs::datapath::tcp_state::Timeouts;
use tapvs::sys::tap::MAX_FRAME;

const EXT: usize = 0;
const INT: usize = 1;
const EXT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const INT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const CLIENT_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 0x02];

fn ip(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn ext6() -> Ipv6Addr {
    ip("2001:db8:c::1")
}
fn int6() -> Ipv6Addr {
    ip("2001:db8:5::1")
}
fn client() -> Ipv6Addr {
    ip("2001:db8:c::2")
}
fn vip6() -> Ipv6Addr {
    ip("2001:db8:f::80")
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

/// A real server's MAC, derived from its address.
fn mac_of(a: Ipv6Addr) -> [u8; 6] {
    let o = a.octets();
    [0x02, 0x5e, 0x66, o[13], o[14], o[15]]
}

const CONFIG: &str = r#"
workers = 1
max_connections = 1000

[[port]]
name = "ext"
tap = "t6-ext"
mac = "02:00:00:00:00:01"
addresses = ["10.0.0.1/24", "2001:db8:c::1/64"]

[[port]]
name = "int"
tap = "t6-int"
mac = "02:00:00:00:00:02"
addresses = ["172.16.0.1/24", "2001:db8:5::1/64"]
mtu = 1400
"#;

fn service(vport: u16, real: Ipv6Addr, rport: u16, fwd: Forward, id: u32) -> Service {
    let dests = vec![Arc::new(sched::Dest::new(IpAddr::V6(real), rport, 1))];
    let sched: Arc<dyn sched::Scheduler> =
        sched::build(&sched::SchedSpec::new("rr".to_string()), &dests)
            .unwrap()
            .into();
    Service {
        proto: modes::Protocol::Tcp,
        vip: IpAddr::V6(vip6()),
        vport,
        dests,
        dest_ids: vec![id],
        forward: vec![fwd],
        sched,
        persistent: None,
        netmask: u128::MAX,
        ops: false,
        local_addresses: Arc::from(Vec::<IpAddr>::new()),
        toa: false,
        toa_on_syn: false,
        sloppy_tcp: false,
        access: Access::default(),
        synproxy: false,
    }
}

#[derive(Default)]
struct Collect(Vec<(usize, Vec<u8>)>);

impl Sink for Collect {
    fn send(&mut self, port: usize, frame: &[u8]) -> bool {
        self.0.push((port, frame.to_vec()));
        true
    }
}

struct Rig {
    pipe: Pipeline,
    snap: Snapshot,
    cache: NeighCache,
    neigh: NeighTable,
    templates: Templates,
    sink: Collect,
}

impl Rig {
    fn new() -> Rig {
        let cfg = tapvs::config::parse(CONFIG, std::path::Path::new("t6.toml")).unwrap();
        let ports = Snapshot::ports_of(&cfg);
        let router = Router::new(&cfg.ports, &cfg.routes);
        let mut fnat = service(82, rs_fnat(), 8082, Forward::FullNat, 2);
        fnat.local_addresses = Arc::from(vec![IpAddr::V6(lip6())]);
        fnat.toa = true;
        let snap = Snapshot::new(
            ports,
            router,
            vec![
                service(80, rs_nat(), 8080, Forward::Nat, 0),
                service(81, rs_dr(), 81, Forward::Dr, 1),
                fnat,
            ],
        );
        let mut pipe = Pipeline::new(0, 1, 1000, Timeouts::new(900, 120, 300));
        pipe.reserve_dests(3);
        let mut r = Rig {
            pipe,
            snap,
            cache: NeighCache::new(100, 300),
            neigh: NeighTable::default(),
            templates: Templates::default(),
            sink: Collect::default(),
        };
        r.learn(client(), EXT, CLIENT_MAC);
        r
    }

    fn learn(&mut self, a: Ipv6Addr, port: usize, mac: [u8; 6]) {
        self.cache.learn(a, mac, port, 10);
        if let Some(t) = self.cache.take_update() {
            self.neigh = t;
        }
    }

    fn feed(&mut self, port: usize, frame: &[u8]) -> Verdict {
        let mut buf = vec![0u8; MAX_FRAME];
        buf[12..12 + frame.len()].copy_from_slice(frame);
        let env = Env {
            snap: &self.snap,
            neigh: &self.neigh,
            templates: &self.templates,
            now_ms: 10_000,
            expire_nodest: false,
            host_stack: false,
            standby: &NO_STANDBY,
        };
        self.pipe.process(
            &env,
            port,
            &mut buf,
            12 + frame.len(),
            false,
            &mut self.sink,
        )
    }

    /// The frames sent since the last call, without their virtio-net headers.
    fn sent(&mut self) -> Vec<(usize, Vec<u8>)> {
        std::mem::take(&mut self.sink.0)
            .into_iter()
            .map(|(p, f)| (p, f[12..].to_vec()))
            .collect()
    }

    fn drops(&mut self, d: Drop) -> u64 {
        self.pipe.counters().drops[d as usize]
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
    assert_eq!(
        rig.feed(EXT, &syn),
        Verdict::Transmit {
            port: INT,
            hop: IpAddr::V6(rs_nat())
        }
    );
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
    assert_eq!(
        rig.feed(INT, &reply),
        Verdict::Transmit {
            port: EXT,
            hop: IpAddr::V6(client())
        }
    );
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
    assert_eq!(
        rig.feed(EXT, &syn),
        Verdict::Transmit {
            port: INT,
            hop: IpAddr::V6(rs_fnat())
        }
    );
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
    let ack = tcp(
        (EXT_MAC, CLIENT_MAC),
        (client(), 40010),
        (vip6(), 82),
        64,
        false,
        &[],
    );
    assert!(matches!(
        rig.feed(EXT, &ack),
        Verdict::Transmit { port: INT, .. }
    ));
    let sent = rig.sent();
    let f = &sent[0].1;
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
