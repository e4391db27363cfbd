//! DR, TUN and FullNAT end to end in network namespaces: the kernel selftest's DR and TUN cases
//! with tapvs as the director and `tapvs rs-setup` / `tapvs rs-decap` on the real server, a
//! FullNAT real server in a subnet with no route to the client that sees a local address and
//! a TOA option carrying the client, and a 200 MB transfer per mode with offloads on.

mod common;

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::lab::{self, Lab};
use common::{any, rs_decap, selftest_transfer, wait_stats};
use tapvs_lab::netns::{precheck, wait_for_tcp_listen, Netns};
use tapvs_lab::traffic::{self, BulkSink};

const BIN: &str = env!("CARGO_BIN_EXE_tapvs");
const MB200: u64 = 200 * 1024 * 1024;

fn service(proto: &str, vport: u16, forward: &str, real: &str, extra: &str) -> String {
    format!(
        "\n[[service]]\nprotocol = \"{proto}\"\naddress = \"{}:{vport}\"\nscheduler = \"rr\"\n{extra}\n\n[[service.real]]\naddress = \"{real}\"\nforward = \"{forward}\"\n",
        lab::VIP
    )
}

fn rs_setup(rs: &Netns, mode: &str) {
    let vip = lab::VIP.to_string();
    rs.exec(&[BIN, "rs-setup", "--mode", mode, "--vip", &vip])
        .expect("tapvs rs-setup");
}

fn bulk(lab: &Lab, vport: u16) -> f64 {
    let sink = lab.reals[0]
        .run(|| BulkSink::start(any(9000)))
        .expect("sink");
    let t0 = Instant::now();
    let sent = lab
        .client
        .run(|| traffic::bulk_send(lab::vip(vport), MB200, 3, Duration::from_secs(180)))
        .expect("bulk send");
    let (n, got) = sink.wait(Duration::from_secs(60)).expect("sink");
    assert_eq!(n, MB200);
    assert_eq!(got, sent, "SHA-256 differs");
    MB200 as f64 * 8.0 / t0.elapsed().as_secs_f64() / 1e9
}

#[test]
fn dr_selftest_case_and_bulk() {
    if !precheck() {
        return;
    }
    let mut lab = Lab::build(1).unwrap();
    lab.reals_on_client_segment().unwrap();
    rs_setup(&lab.reals[0], "dr");
    let services = format!(
        "{}{}",
        service(
            "tcp",
            8080,
            "dr",
            &format!("{}:8080", lab::real_addr(0)),
            ""
        ),
        service(
            "tcp",
            9000,
            "dr",
            &format!("{}:9000", lab::real_addr(0)),
            ""
        )
    );
    lab.start(&format!("{}{}", lab::base_config(2), services))
        .unwrap();
    let (sent, got) = selftest_transfer(&lab, lab::vip(8080));
    assert_eq!(got, sent, "DR: 32 bytes intact");
    let gbps = bulk(&lab, 9000);
    let stats = wait_stats(&lab, |s| s.fwd_in > 0);
    eprintln!("DR bulk: {gbps:.2} Gbit/s, {stats:?}");
    assert_eq!(stats.fwd_out, 0, "DR: the director forwards no reply");
    assert_eq!(
        stats.dropped("vip_sourced"),
        0,
        "DR: no reply reaches the director"
    );
    assert!(stats.rx_gso > 0, "offloads on");
}

#[test]
fn tun_selftest_case_with_rs_decap_and_bulk_at_1500_mtu() {
    if !precheck() {
        return;
    }
    let mut lab = Lab::build(1).unwrap();
    lab.reals_on_client_segment().unwrap();
    let _decap = rs_decap(&lab.reals[0]);
    rs_setup(&lab.reals[0], "tun");
    let services = format!(
        "{}{}{}",
        service(
            "udp",
            5000,
            "tun",
            &format!("{}:5000", lab::real_addr(0)),
            ""
        ),
        service(
            "tcp",
            8080,
            "tun",
            &format!("{}:8080", lab::real_addr(0)),
            ""
        ),
        service(
            "tcp",
            9000,
            "tun",
            &format!("{}:9000", lab::real_addr(0)),
            ""
        )
    );
    // The server side has a 1500-byte MTU path (the default), and TCP sets DF.
    lab.start(&format!("{}{}", lab::base_config(2), services))
        .unwrap();
    // A DF packet that only fits the 1500-byte path before encapsulation gets ICMP
    // fragmentation needed with the tunnel's MTU (1480), and the client learns it (as IPVS).
    // TCP relies on the same: the client's segments follow the real server's MSS.
    // The socket stays open: the kernel only applies the ICMP to a socket that still exists.
    let s = lab
        .client
        .run(|| {
            let s = std::net::UdpSocket::bind(any(0))?;
            s.connect(lab::vip(5000))?;
            s.send(&[0u8; 1472])?;
            Ok::<_, std::io::Error>(s)
        })
        .expect("a full-MTU DF datagram");
    let st = wait_stats(&lab, |s| s.dropped("frag_needed") > 0);
    assert!(
        st.dropped("frag_needed") > 0 && st.icmp_errors_sent > 0,
        "{st:?}"
    );
    let vip = lab::VIP.to_string();
    let mut route = String::new();
    let learnt =
        tapvs_lab::netns::wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
            route = lab.client.ip(&["route", "get", &vip]).unwrap();
            route.contains("mtu 1480")
        });
    assert!(learnt, "the client learnt the tunnel MTU: {route}");
    drop(s);
    let (sent, got) = selftest_transfer(&lab, lab::vip(8080));
    assert_eq!(got, sent, "TUN: 32 bytes intact");
    let gbps = bulk(&lab, 9000);
    let stats = wait_stats(&lab, |s| s.fwd_in > 0);
    eprintln!("TUN bulk: {gbps:.2} Gbit/s, {stats:?}");
    assert_eq!(stats.fwd_out, 0, "TUN: the director forwards no reply");
    assert_eq!(
        stats.dropped("vip_sourced"),
        0,
        "TUN: no reply reaches the director"
    );
    assert!(
        stats.segments > 0,
        "GSO super-frames were segmented before encapsulation"
    );
}

/// The FullNAT lab: the real server moves to 172.16.9.2/24 with no route beyond its subnet;
/// tapvs has 172.16.9.1 there and the local address 172.16.9.100.
fn fullnat_lab(extra: &str) -> Lab {
    let mut lab = Lab::build(1).unwrap();
    let rs = &lab.reals[0];
    rs.ip(&["addr", "flush", "dev", "eth0"]).unwrap();
    rs.add_addr("eth0", "172.16.9.2/24").unwrap();
    let routes = rs.ip(&["route", "show"]).unwrap();
    assert!(
        !routes.contains("default"),
        "no route to the client: {routes}"
    );
    let cfg = lab::base_config(2).replace(
        &format!("addresses = [\"{}/24\"]", lab::INT_ADDR),
        &format!("addresses = [\"{}/24\", \"172.16.9.1/24\"]", lab::INT_ADDR),
    );
    let services = format!(
        "{}{}",
        service(
            "tcp",
            80,
            "fullnat",
            "172.16.9.2:8080",
            &format!("local_addresses = [\"172.16.9.100\"]\n{extra}")
        ),
        service(
            "tcp",
            9000,
            "fullnat",
            "172.16.9.2:9000",
            "local_addresses = [\"172.16.9.100\"]"
        )
    );
    lab.start(&format!("{cfg}{services}")).unwrap();
    lab
}

/// A decoded TOA option: client address and port.
type Toa = Option<(Ipv4Addr, u16)>;

/// For a TCP segment to `port` with ACK and without SYN: the TOA option it carries, if any.
fn ack_toa(frame: &[u8], port: u16) -> Option<Toa> {
    let p = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    let Some(etherparse::TransportSlice::Tcp(t)) = p.transport else {
        return None;
    };
    (t.destination_port() == port && t.ack() && !t.syn()).then(|| {
        match modes::toa::parse_toa(t.options()) {
            Some((std::net::IpAddr::V4(a), port)) => Some((a, port)),
            _ => None,
        }
    })
}

#[test]
fn fullnat_rs_sees_local_address_and_toa_with_distinct_ports() {
    if !precheck() {
        return;
    }
    let lab = fullnat_lab("");
    let rs = &lab.reals[0];
    // Capture on the real server's interface.
    let cap = rs
        .run(|| tapvs::sys::PacketSocket::open("eth0"))
        .expect("capture socket");
    let listener = rs.run(|| TcpListener::bind(any(8080))).unwrap();
    wait_for_tcp_listen(rs, "0.0.0.0:8080".parse().unwrap(), Duration::from_secs(5)).unwrap();
    let client = lab
        .client
        .run(|| TcpStream::connect_timeout(&lab::vip(80), Duration::from_secs(5)))
        .expect("connect through FullNAT");
    let cport = client.local_addr().unwrap().port();
    let (_srv, peer) = listener.accept().unwrap();
    let SocketAddr::V4(peer) = peer else { panic!() };
    assert_eq!(
        *peer.ip(),
        Ipv4Addr::new(172, 16, 9, 100),
        "the RS sees the local address"
    );
    // The handshake-completing ACK (first ACK without SYN to 8080) carries TOA = client.
    let mut buf = vec![0u8; 70000];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut toa = None;
    while Instant::now() < deadline {
        let Some(n) = cap.recv(&mut buf, 100).unwrap() else {
            continue;
        };
        if let Some(opt) = ack_toa(&buf[..n], 8080) {
            toa = Some(opt);
            break;
        }
    }
    assert_eq!(
        toa,
        Some(Some((lab::CLIENT, cport))),
        "TOA in the handshake-completing ACK decodes to the client"
    );
    // 1000 concurrent connections from one client: distinct (LIP, port) pairs.
    const N: usize = 1000;
    let acceptor = std::thread::spawn(move || {
        let mut peers = HashSet::new();
        let mut held = Vec::new();
        while peers.len() < N {
            let (s, p) = listener.accept().expect("accept");
            peers.insert(p);
            held.push(s);
        }
        peers
    });
    let conns: Vec<TcpStream> = lab.client.run(|| {
        (0..N)
            .map(|_| {
                TcpStream::connect_timeout(&lab::vip(80), Duration::from_secs(5)).expect("connect")
            })
            .collect()
    });
    let peers = acceptor.join().unwrap();
    assert_eq!(peers.len(), N, "distinct (LIP, port) pairs");
    assert!(peers
        .iter()
        .all(|p| p.ip() == std::net::IpAddr::V4(Ipv4Addr::new(172, 16, 9, 100))));
    drop(conns);
    let stats = wait_stats(&lab, |s| s.toa_added > N as u64);
    assert!(stats.toa_added > N as u64, "{stats:?}");
    // Client frames steer by the client, replies to the local address by its port: every
    // frame reaches its owner directly.
    assert_eq!(stats.redirected, 0, "{stats:?}");
}

#[test]
fn fullnat_bulk_200mb() {
    if !precheck() {
        return;
    }
    let lab = fullnat_lab("");
    let gbps = bulk(&lab, 9000);
    let stats = wait_stats(&lab, |s| s.fwd_out > 0);
    eprintln!("FullNAT bulk: {gbps:.2} Gbit/s, {stats:?}");
    assert!(stats.rx_gso > 0 && stats.fwd_out > 0);
}
