//! `sloppy_tcp` in the frame pipeline, driven directly without root (as `tests/pipeline.rs`):
//! a TCP packet of an unknown flow that is not a SYN (a flow ECMP moved to this instance) is
//! scheduled and its connection created mid-stream, ESTABLISHED, when the service (or the
//! global `control.sloppy_tcp`) says so; a RST never creates one; without sloppy the packet is
//! refused as before. Two pipelines built from the same config stand for two scale-out
//! instances: the one that saw the SYN and the one the flow moved to pick the same real
//! server under `mh`.

use std::net::Ipv4Addr;

use etherparse::{EtherType, Ethernet2Header, IpNumber, Ipv4Header, SlicedPacket, TcpHeader};
use tapvs::control::table::Table;
use tapvs::datapath::conn::{FlowKey, Xmit};
use tapvs::datapath::neigh::{NeighCache, NeighTable};
use tapvs::datapath::persist::Templates;
use tapvs::datapath::pipeline::{owner_of, Env, Pipeline, Sink, Verdict};
use tapvs::datapath::service::Snapshot;
use tapvs::datapath::stats::Drop;
use tapvs::datapath::tcp_state::{State, Timeouts};
use tapvs::sys::tap::MAX_FRAME;

const PORT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const ROUTER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
const ADDR: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 11);
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
const RS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 88, 0, 101),
    Ipv4Addr::new(10, 88, 0, 102),
    Ipv4Addr::new(10, 88, 0, 103),
];
const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// DR, mh, sloppy by its own setting.
const V_DR: u16 = 80;
/// TUN, mh, sloppy from the global setting.
const V_TUN: u16 = 81;
/// DR, mh, `sloppy_tcp = false` overriding the global setting.
const V_STRICT: u16 = 82;

fn mac_of(a: Ipv4Addr) -> [u8; 6] {
    let o = a.octets();
    [0x02, 0x5e, o[0], o[1], o[2], o[3]]
}

/// One port on the segment of the router and the real servers, as a scale-out instance.
fn config(global_sloppy: bool) -> String {
    let mut s = format!(
        r#"
[control]
socket = ""
sloppy_tcp = {global_sloppy}

[[port]]
name = "seg"
tap = "tp0"
mac = "02:00:00:00:00:01"
addresses = ["{ADDR}/24"]

[[route]]
to = "default"
via = "{ROUTER}"
"#
    );
    for (vport, fwd, sloppy) in [
        (V_DR, "dr", "sloppy_tcp = true\n"),
        (V_TUN, "tun", ""),
        (V_STRICT, "dr", "sloppy_tcp = false\n"),
    ] {
        s.push_str(&format!(
            "\n[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:{vport}\"\nscheduler = \"mh\"\n{sloppy}"
        ));
        for rs in RS {
            s.push_str(&format!(
                "[[service.real]]\naddress = \"{rs}:{vport}\"\nforward = \"{fwd}\"\n"
            ));
        }
    }
    s
}

#[derive(Default)]
struct Collect(Vec<Vec<u8>>);

impl Sink for Collect {
    fn send(&mut self, _port: usize, frame: &[u8]) -> bool {
        // Frames go out after their virtio-net header.
        self.0.push(frame[12..].to_vec());
        true
    }
}

/// One instance: its snapshot, neighbours and one pipeline per worker.
struct Instance {
    snap: Snapshot,
    neigh: NeighTable,
    templates: Templates,
    pipes: Vec<Pipeline>,
    sink: Collect,
}

impl Instance {
    fn new(global_sloppy: bool, workers: usize) -> Instance {
        let cfg = tapvs::config::parse(&config(global_sloppy), std::path::Path::new("so.toml"))
            .expect("config");
        let (_, snap) = Table::from_config(&cfg).expect("snapshot");
        let mut cache = NeighCache::new(64, 3600);
        for a in [ROUTER, RS[0], RS[1], RS[2]] {
            cache.learn(a, mac_of(a), 0, 1);
        }
        let neigh = cache.take_update().expect("a published table");
        let pipes = (0..workers)
            .map(|w| {
                let mut p = Pipeline::new(w, workers, 4096, Timeouts::default());
                p.reserve_dests(snap.dest_id_bound() as usize);
                p
            })
            .collect();
        Instance {
            snap,
            neigh,
            templates: Templates::default(),
            pipes,
            sink: Collect::default(),
        }
    }

    /// Feeds a frame from the router to the flow's worker (as the steering program does);
    /// returns the verdict and what was sent.
    fn feed(&mut self, frame: &[u8]) -> (Verdict, Vec<Vec<u8>>) {
        let p = SlicedPacket::from_ethernet(frame).expect("a valid frame");
        let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Tcp(t))) =
            (&p.net, &p.transport)
        else {
            panic!("not TCP/IPv4")
        };
        let w = owner_of(ip.header().source_addr(), t.source_port(), self.pipes.len());
        let mut buf = vec![0u8; MAX_FRAME];
        buf[12..12 + frame.len()].copy_from_slice(frame);
        let env = Env {
            snap: &self.snap,
            neigh: &self.neigh,
            templates: &self.templates,
            now_ms: 10_000,
            expire_nodest: false,
            host_stack: false,
            standby: &tapvs::datapath::ha::NO_STANDBY,
        };
        let v = self.pipes[w].process(&env, 0, &mut buf, 12 + frame.len(), false, &mut self.sink);
        (v, std::mem::take(&mut self.sink.0))
    }

    fn conn(&self, client: (Ipv4Addr, u16), vport: u16) -> Option<(std::net::IpAddr, State, Xmit)> {
        let key = FlowKey::new(6, client.0, client.1, VIP, vport);
        self.pipes.iter().find_map(|p| {
            let t = p.table();
            t.lookup(&key).map(|f| {
                let c = t.get(f.slot);
                (c.daddr, c.state, c.xmit)
            })
        })
    }

    /// Connections in all workers.
    fn conns(&self) -> usize {
        self.pipes.iter().map(|p| p.table().len()).sum()
    }

    /// A drop counter summed over the workers, and the RSTs sent.
    fn counted(&mut self, d: Drop) -> (u64, u64) {
        self.pipes.iter_mut().fold((0, 0), |(n, r), p| {
            let k = p.counters();
            (n + k.drops[d as usize], r + k.rst_sent)
        })
    }
}

/// A client's TCP segment to the VIP as the router forwards it: `flags` from "S", "A", "R",
/// "F" letters, with a payload.
fn segment(client: (Ipv4Addr, u16), vport: u16, flags: &str, payload: &[u8]) -> Vec<u8> {
    let mut t = TcpHeader::new(client.1, vport, 77_777, 4096);
    t.syn = flags.contains('S');
    t.ack = flags.contains('A');
    t.rst = flags.contains('R');
    t.fin = flags.contains('F');
    t.psh = !payload.is_empty();
    if t.ack {
        t.acknowledgment_number = 123_456;
    }
    let mut ip = Ipv4Header::new(0, 61, IpNumber::TCP, client.0.octets(), VIP.octets()).unwrap();
    ip.set_payload_len(t.header_len() + payload.len()).unwrap();
    ip.header_checksum = ip.calc_header_checksum();
    t.checksum = t.calc_checksum_ipv4(&ip, payload).unwrap();
    let eth = Ethernet2Header {
        source: ROUTER_MAC,
        destination: PORT_MAC,
        ether_type: EtherType::IPV4,
    };
    [
        eth.to_bytes().as_slice(),
        &ip.to_bytes(),
        &t.to_bytes(),
        payload,
    ]
    .concat()
}

fn client(i: u32) -> (Ipv4Addr, u16) {
    (Ipv4Addr::from(0x0a4d_0000 + 3 * i + 2), 30_000 + i as u16)
}

/// The real server a DR frame was sent to (by its MAC), checking it is the client's segment
/// unchanged but for the MACs (and TTL).
fn dr_target(sent: &[Vec<u8>], payload: &[u8]) -> Ipv4Addr {
    assert_eq!(sent.len(), 1, "one frame forwarded");
    let p = SlicedPacket::from_ethernet(&sent[0]).expect("parses");
    let dst_mac = match p.link {
        Some(etherparse::LinkSlice::Ethernet2(e)) => e.destination(),
        _ => panic!("not Ethernet"),
    };
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    assert_eq!(ip.header().destination_addr(), VIP, "DR keeps the VIP");
    assert!(sent[0].ends_with(payload), "payload unchanged");
    *RS.iter()
        .find(|a| mac_of(**a) == dst_mac)
        .expect("sent to a real server's MAC")
}

#[test]
fn mid_stream_ack_creates_an_established_connection_on_the_same_real_server() {
    // Instance A saw the SYNs; B (another worker count, another history) gets the flows
    // mid-stream, as after an ECMP change.
    let mut a = Instance::new(false, 1);
    let mut b = Instance::new(false, 4);
    // B schedules other flows first.
    for i in 500..520 {
        b.feed(&segment(client(i), V_DR, "S", b""));
    }
    let data = b"mid-stream data";
    let mut spread = [0u32; 3];
    for i in 0..200 {
        let c = client(i);
        let (v, sent) = a.feed(&segment(c, V_DR, "S", b""));
        assert!(matches!(v, Verdict::Transmit { .. }), "SYN on A: {v:?}");
        let on_a = a.conn(c, V_DR).expect("A has the connection").0;
        assert_eq!(dr_target(&sent, b""), on_a);
        let (v, sent) = b.feed(&segment(c, V_DR, "A", data));
        assert!(matches!(v, Verdict::Transmit { .. }), "ACK on B: {v:?}");
        let (daddr, state, xmit) = b.conn(c, V_DR).expect("B created the connection");
        assert_eq!(daddr, on_a, "flow {i}: B chose another real server than A");
        assert_eq!(dr_target(&sent, data), on_a);
        assert_eq!(state, State::Established);
        assert_eq!(xmit, Xmit::Dr);
        spread[RS.iter().position(|r| *r == on_a).unwrap()] += 1;
    }
    assert!(
        spread.iter().all(|&n| n > 20),
        "mh spreads the flows: {spread:?}"
    );
    assert_eq!(b.counted(Drop::NoConnectionTcp), (0, 0));
    assert_eq!(b.conns(), 220);
}

#[test]
fn rst_never_creates_a_connection() {
    let mut b = Instance::new(true, 1);
    for (i, flags) in [(1, "R"), (2, "RA")] {
        for vport in [V_DR, V_TUN] {
            let (v, sent) = b.feed(&segment(client(i), vport, flags, b""));
            assert_eq!(
                v,
                Verdict::Drop(Drop::NoConnectionTcp),
                "{flags} to {vport}"
            );
            assert!(sent.is_empty(), "no RST answers a RST");
            assert!(b.conn(client(i), vport).is_none());
        }
    }
    assert_eq!(b.conns(), 0);
}

#[test]
fn without_sloppy_a_mid_stream_packet_is_refused() {
    // Global sloppy on, but the service says false.
    let mut b = Instance::new(true, 1);
    let (v, sent) = b.feed(&segment(client(3), V_STRICT, "A", b"data"));
    assert_eq!(v, Verdict::Drop(Drop::NoConnectionTcp));
    assert_eq!(sent.len(), 1, "answered with a RST, as before");
    assert_eq!(b.conns(), 0);
    // Global off: the TUN service (no setting of its own) refuses too.
    let mut c = Instance::new(false, 1);
    let (v, _) = c.feed(&segment(client(3), V_TUN, "A", b"data"));
    assert_eq!(v, Verdict::Drop(Drop::NoConnectionTcp));
    assert_eq!(c.conns(), 0);
}

#[test]
fn global_sloppy_applies_to_services_without_their_own_setting() {
    let mut a = Instance::new(true, 1);
    let mut b = Instance::new(true, 2);
    let c = client(7);
    a.feed(&segment(c, V_TUN, "S", b""));
    let on_a = a.conn(c, V_TUN).expect("A has it").0;
    let data = b"tunnelled mid-stream";
    let (v, sent) = b.feed(&segment(c, V_TUN, "A", data));
    assert!(matches!(v, Verdict::Transmit { .. }), "{v:?}");
    let (daddr, state, xmit) = b.conn(c, V_TUN).expect("created mid-stream");
    assert_eq!((daddr, state), (on_a, State::Established));
    assert!(matches!(xmit, Xmit::Tun { .. }));
    // IPIP from the instance's address to the real server, the client's packet inside.
    assert_eq!(sent.len(), 1);
    let p = SlicedPacket::from_ethernet(&sent[0]).expect("parses");
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    assert_eq!(ip.header().protocol(), IpNumber::IPV4);
    assert_eq!(ip.header().source_addr(), ADDR);
    assert_eq!(ip.header().destination_addr(), on_a);
    assert!(sent[0].ends_with(data));
    // A FIN mid-stream is scheduled as well (the flow is closing on this instance).
    let (v, _) = b.feed(&segment(client(8), V_TUN, "FA", b""));
    assert!(matches!(v, Verdict::Transmit { .. }), "{v:?}");
    assert!(b.conn(client(8), V_TUN).is_some());
}
