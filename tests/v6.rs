//! IPv6 end to end in network namespaces (issue 13), mirroring the IPv4 tests of `nat.rs` and
//! `modes.rs` in the dual-stack lab (`Lab::build_dual`): NAT rr 50/50 and wrr 75/25, the
//! client's Neighbour Discovery and ping6 of the VIP and of the appliance, IPv4 and IPv6 VIPs on
//! the same ports at once, DR with `rs-setup`, TUN (IPv6-in-IPv6) with `rs-decap` and a Packet
//! Too Big that lowers the client's path MTU, FullNAT with the IPv6 TOA (kind 253), NAT64, 200 MB
//! per mode with the same SHA-256, and 100,000 malformed IPv6 frames counted by reason.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::lab::{self, Lab};
use common::{rs_decap, selftest_transfer, wait_stats};
use tapvs_lab::netns::{precheck, wait_for_tcp_listen, wait_until, Netns};
use tapvs_lab::traffic::{self, BulkSink, HttpServer};

const BIN: &str = env!("CARGO_BIN_EXE_tapvs");
const MB200: u64 = 200 * 1024 * 1024;

/// `[::]:port`: a socket that takes both families.
fn any6(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)
}

/// The dual-stack lab with tapvs started on `services`.
fn lab_with(n_reals: usize, services: &str) -> Lab {
    let mut lab = Lab::build_dual(n_reals).expect("build dual lab");
    lab.start(&format!("{}{}", lab::base_config_dual(2), services))
        .expect("start tapvs");
    lab
}

/// HTTP servers named rs1, rs2, ... on `[::]:port` in every real server.
fn http_servers6(lab: &Lab, port: u16) -> Vec<HttpServer> {
    lab.reals
        .iter()
        .enumerate()
        .map(|(i, rs)| {
            let name = format!("rs{}", i + 1);
            rs.run(move || HttpServer::start(any6(port), &name))
                .expect("http server")
        })
        .collect()
}

/// `n` HTTP requests to `vip` from the client: how many each real server answered.
fn split(lab: &Lab, vip: SocketAddr, n: u64) -> std::collections::BTreeMap<String, u64> {
    lab.client
        .run(|| traffic::http_split(vip, n, Duration::from_secs(5)))
        .expect("requests through the VIP")
}

#[test]
fn nat6_rr_splits_evenly_and_wrr_by_weight() {
    if !precheck() {
        return;
    }
    let services = format!(
        "{}{}",
        lab::service6("tcp", 80, "rr", "nat", &[(0, 80, 1), (1, 80, 1)]),
        lab::service6("tcp", 81, "wrr", "nat", &[(0, 8080, 3), (1, 8080, 1)])
    );
    let lab = lab_with(2, &services);
    let _s80 = http_servers6(&lab, 80);
    let _s8080 = http_servers6(&lab, 8080);
    let rr = split(&lab, lab::vip6(80), 100);
    assert_eq!(rr.get("rs1"), Some(&50), "{rr:?}");
    assert_eq!(rr.get("rs2"), Some(&50), "{rr:?}");
    let wrr = split(&lab, lab::vip6(81), 100);
    assert_eq!(wrr.get("rs1"), Some(&75), "{wrr:?}");
    assert_eq!(wrr.get("rs2"), Some(&25), "{wrr:?}");
    let stats = wait_stats(&lab, |s| s.conns_created >= 200);
    assert_eq!(stats.conns_created, 200);
    assert!(stats.fwd_in > 0 && stats.fwd_out > 0, "{stats:?}");
    // The steering program classifies IPv6 as IPv4: no frame changes worker.
    assert!(lab.daemon().steering_active());
    assert_eq!(
        stats.redirected,
        0,
        "steering active: {}, {stats:?}",
        lab.daemon().steering_active()
    );
    // The listing shows the services in ipvsadm's IPv6 format.
    let out = common::tapvsadm(&lab.socket(), "-L -n", None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("TCP  [{}]:80 rr", lab::VIP6)),
        "{text}"
    );
    assert!(
        text.contains(&format!("  -> [{}]:8080", lab::real_addr6(0))),
        "{text}"
    );
}

#[test]
fn ndp_and_ping6_of_vip_and_own_address() {
    if !precheck() {
        return;
    }
    let lab = lab_with(1, &lab::service6("tcp", 80, "rr", "nat", &[(0, 80, 1)]));
    // The VIP on-link for the client, so the client resolves the VIP itself by NDP.
    lab.client
        .ip(&[
            "-6",
            "route",
            "replace",
            &format!("{}/128", lab::VIP6),
            "dev",
            "eth0",
        ])
        .unwrap();
    for target in [lab::VIP6.to_string(), lab::EXT6.to_string()] {
        let out = lab
            .client
            .exec(&["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", &target])
            .unwrap_or_else(|e| panic!("ping {target}: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("3 received"), "{text}");
    }
    for target in [lab::VIP6, lab::EXT6] {
        let neigh = lab
            .client
            .ip(&["-6", "neigh", "show", &target.to_string()])
            .unwrap();
        assert!(
            neigh.contains(lab::EXT_MAC),
            "client resolved {target} to our MAC: {neigh}"
        );
    }
    let stats = wait_stats(&lab, |s| s.echo_replies >= 6);
    assert_eq!(stats.echo_replies, 6, "{stats:?}");
    assert!(stats.traffic.nd_replies >= 2, "{stats:?}");
}

#[test]
fn dual_stack_vips_on_the_same_ports() {
    if !precheck() {
        return;
    }
    let services = format!(
        "{}{}",
        lab::nat_service("tcp", 80, "rr", &[(0, 80, 1), (1, 80, 1)]),
        lab::service6("tcp", 80, "rr", "nat", &[(0, 80, 1), (1, 80, 1)])
    );
    let lab = lab_with(2, &services);
    let _servers = http_servers6(&lab, 80);
    // Both families at the same time.
    let (v4, v6) = std::thread::scope(|s| {
        let a = s.spawn(|| split(&lab, lab::vip(80), 100));
        let b = s.spawn(|| split(&lab, lab::vip6(80), 100));
        (a.join().unwrap(), b.join().unwrap())
    });
    for m in [&v4, &v6] {
        assert_eq!(m.get("rs1"), Some(&50), "{m:?}");
        assert_eq!(m.get("rs2"), Some(&50), "{m:?}");
    }
    let stats = wait_stats(&lab, |s| s.conns_created >= 200);
    assert_eq!(stats.conns_created, 200);
}

/// 200 MB from the client to `vip` (a sink on `[::]:9000` in real server 0), same SHA-256.
fn bulk(lab: &Lab, vip: SocketAddr) -> f64 {
    let sink = lab.reals[0]
        .run(|| BulkSink::start(any6(9000)))
        .expect("sink");
    let t0 = Instant::now();
    let sent = lab
        .client
        .run(|| traffic::bulk_send(vip, MB200, 3, Duration::from_secs(180)))
        .expect("bulk send");
    let (n, got) = sink.wait(Duration::from_secs(60)).expect("sink");
    assert_eq!(n, MB200);
    assert_eq!(got, sent, "SHA-256 differs");
    MB200 as f64 * 8.0 / t0.elapsed().as_secs_f64() / 1e9
}

#[test]
fn nat6_bulk_200mb_with_offloads() {
    if !precheck() {
        return;
    }
    let lab = lab_with(1, &lab::service6("tcp", 9000, "rr", "nat", &[(0, 9000, 1)]));
    let gbps = bulk(&lab, lab::vip6(9000));
    let stats = wait_stats(&lab, |s| s.fwd_out > 0);
    eprintln!("NAT6 bulk: {gbps:.2} Gbit/s, {stats:?}");
    assert!(stats.rx_gso > 0, "offloads on: {stats:?}");
}

fn rs_setup(rs: &Netns, mode: &str) {
    let vip = lab::VIP6.to_string();
    let out = rs
        .exec(&[BIN, "rs-setup", "--mode", mode, "--vip", &vip])
        .expect("tapvs rs-setup");
    assert!(out.status.success(), "{out:?}");
}

/// The VIP on-link for the client, so it resolves VIP6 by NDP itself.
fn vip6_on_link(lab: &Lab) {
    lab.client
        .ip(&[
            "-6",
            "route",
            "replace",
            &format!("{}/128", lab::VIP6),
            "dev",
            "eth0",
        ])
        .unwrap();
}

#[test]
fn dr6_with_rs_setup_and_bulk() {
    if !precheck() {
        return;
    }
    let mut lab = Lab::build_dual(1).unwrap();
    lab.reals_on_client_segment().unwrap();
    rs_setup(&lab.reals[0], "dr");
    let lo = lab.reals[0]
        .ip(&["-6", "addr", "show", "dev", "lo"])
        .unwrap();
    assert!(lo.contains(&format!("{}/128", lab::VIP6)), "{lo}");
    let services = format!(
        "{}{}",
        lab::service6("tcp", 8080, "rr", "dr", &[(0, 8080, 1)]),
        lab::service6("tcp", 9000, "rr", "dr", &[(0, 9000, 1)])
    );
    lab.start(&format!("{}{}", lab::base_config_dual(2), services))
        .unwrap();
    // Only the appliance answers the client's Neighbour Solicitation for the VIP (the real
    // server, which holds the VIP on lo and shares the segment, does not).
    vip6_on_link(&lab);
    let (sent, got) = selftest_transfer(&lab, lab::vip6(8080));
    assert_eq!(got, sent, "DR6: 32 bytes intact");
    let neigh = lab
        .client
        .ip(&["-6", "neigh", "show", &lab::VIP6.to_string()])
        .unwrap();
    assert!(
        neigh.contains(lab::EXT_MAC),
        "VIP6 resolved to tapvs: {neigh}"
    );
    let gbps = bulk(&lab, lab::vip6(9000));
    let stats = wait_stats(&lab, |s| s.fwd_in > 0);
    eprintln!("DR6 bulk: {gbps:.2} Gbit/s, {stats:?}");
    assert_eq!(stats.fwd_out, 0, "DR6: the director forwards no reply");
    assert!(stats.rx_gso > 0, "offloads on");
}

#[test]
fn tun6_with_rs_decap_packet_too_big_and_bulk() {
    if !precheck() {
        return;
    }
    let mut lab = Lab::build_dual(1).unwrap();
    lab.reals_on_client_segment().unwrap();
    let _decap = rs_decap(&lab.reals[0]);
    rs_setup(&lab.reals[0], "tun");
    let services = format!(
        "{}{}{}",
        lab::service6("udp", 5000, "rr", "tun", &[(0, 5000, 1)]),
        lab::service6("tcp", 8080, "rr", "tun", &[(0, 8080, 1)]),
        lab::service6("tcp", 9000, "rr", "tun", &[(0, 9000, 1)])
    );
    lab.start(&format!("{}{}", lab::base_config_dual(2), services))
        .unwrap();
    // A 1500-byte IPv6 packet does not fit the server side once 40 bytes of outer header are
    // added: the client gets a Packet Too Big with 1460 and lowers its path MTU. The socket
    // stays open while the client learns it.
    let s = lab
        .client
        .run(|| {
            let s = std::net::UdpSocket::bind(any6(0))?;
            s.connect(lab::vip6(5000))?;
            s.send(&[0u8; 1452])?;
            Ok::<_, std::io::Error>(s)
        })
        .expect("a full-MTU datagram");
    let st = wait_stats(&lab, |s| s.icmp_errors_sent > 0);
    assert!(st.icmp_errors_sent > 0, "{st:?}");
    let vip = lab::VIP6.to_string();
    let mut route = String::new();
    let learnt = wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
        route = lab.client.ip(&["-6", "route", "get", &vip]).unwrap();
        route.contains("mtu 1460")
    });
    assert!(learnt, "the client learnt the tunnel MTU: {route}");
    drop(s);
    let (sent, got) = selftest_transfer(&lab, lab::vip6(8080));
    assert_eq!(got, sent, "TUN6: 32 bytes intact");
    let gbps = bulk(&lab, lab::vip6(9000));
    let stats = wait_stats(&lab, |s| s.fwd_in > 0);
    eprintln!("TUN6 bulk: {gbps:.2} Gbit/s, {stats:?}");
    assert_eq!(stats.fwd_out, 0, "TUN6: the director forwards no reply");
    assert!(stats.segments > 0, "GSO super-frames segmented first");
}

/// The FullNAT lab for IPv6 (or NAT64 with `v4_real`): the real server moves to a subnet of its
/// own with no route beyond it (2001:db8:9::2/64, or 172.16.9.2/24); tapvs has ::1 / .1 there
/// and the local address ::100 / .100. Services `[VIP6]`:80 → 8080, :81 → 8081, :9000 → 9000.
fn fullnat_lab(v4_real: bool) -> Lab {
    let mut lab = Lab::build_dual(1).unwrap();
    let rs = &lab.reals[0];
    rs.ip(&["addr", "flush", "dev", "eth0"]).unwrap();
    let (port_addr, real, local) = if v4_real {
        rs.add_addr("eth0", "172.16.9.2/24").unwrap();
        ("172.16.9.1/24", "172.16.9.2", "172.16.9.100")
    } else {
        rs.ip(&[
            "-6",
            "addr",
            "add",
            "2001:db8:9::2/64",
            "dev",
            "eth0",
            "nodad",
        ])
        .unwrap();
        ("2001:db8:9::1/64", "[2001:db8:9::2]", "2001:db8:9::100")
    };
    // No way back to the client but through tapvs's local address: the default routes go.
    let _ = rs.ip(&["-6", "route", "del", "default"]);
    let _ = rs.ip(&["-4", "route", "del", "default"]);
    let fam = if v4_real { "-4" } else { "-6" };
    let routes = rs.ip(&[fam, "route", "show"]).unwrap();
    assert!(
        !routes.contains("default"),
        "no route to the client: {routes}"
    );
    let cfg = lab::base_config_dual(2).replace(
        &format!("\"{}/{}\"]", lab::INT6, lab::PREFIX6_LEN),
        &format!("\"{}/{}\", \"{port_addr}\"]", lab::INT6, lab::PREFIX6_LEN),
    );
    let mut services = String::new();
    for (vport, rport) in [(80, 8080), (81, 8081), (9000, 9000)] {
        services.push_str(&format!(
            "\n[[service]]\nprotocol = \"tcp\"\naddress = \"[{}]:{vport}\"\nscheduler = \"rr\"\nlocal_addresses = [\"{local}\"]\n\n[[service.real]]\naddress = \"{real}:{rport}\"\nforward = \"fullnat\"\n",
            lab::VIP6
        ));
    }
    lab.start(&format!("{cfg}{services}")).unwrap();
    lab
}

/// For a TCP segment to `port` with ACK and without SYN: the TOA option it carries, if any.
fn ack_toa(frame: &[u8], port: u16) -> Option<Option<(IpAddr, u16)>> {
    let p = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    let Some(etherparse::TransportSlice::Tcp(t)) = p.transport else {
        return None;
    };
    (t.destination_port() == port && t.ack() && !t.syn())
        .then(|| modes::toa::parse_toa(t.options()))
}

/// Connects to `[VIP6]:81` (real port 8081) and returns the real server's view: the peer
/// address it accepted from and the TOA of the handshake-completing ACK, with the client port.
fn toa_seen(lab: &Lab) -> (SocketAddr, Option<Option<(IpAddr, u16)>>, u16) {
    let rs = &lab.reals[0];
    let cap = rs
        .run(|| tapvs::sys::PacketSocket::open("eth0"))
        .expect("capture socket");
    let listener = rs.run(|| TcpListener::bind(any6(8081))).unwrap();
    wait_for_tcp_listen(rs, any6(8081), Duration::from_secs(5)).unwrap();
    let client = lab
        .client
        .run(|| TcpStream::connect_timeout(&lab::vip6(81), Duration::from_secs(5)))
        .expect("connect through FullNAT");
    let cport = client.local_addr().unwrap().port();
    let (_srv, peer) = listener.accept().unwrap();
    let mut buf = vec![0u8; 70000];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut toa = None;
    while Instant::now() < deadline {
        let Some(n) = cap.recv(&mut buf, 100).unwrap() else {
            continue;
        };
        if let Some(opt) = ack_toa(&buf[..n], 8081) {
            toa = Some(opt);
            break;
        }
    }
    (peer, toa, cport)
}

#[test]
fn fullnat6_toa_253_and_bulk() {
    if !precheck() {
        return;
    }
    let lab = fullnat_lab(false);
    let (peer, toa, cport) = toa_seen(&lab);
    let local: IpAddr = "2001:db8:9::100".parse().unwrap();
    assert_eq!(peer.ip(), local, "the RS sees the local address");
    assert_eq!(
        toa,
        Some(Some((IpAddr::V6(lab::CLIENT6), cport))),
        "TOA (kind 253) in the handshake-completing ACK decodes to the client"
    );
    let _servers = http_servers6(&lab, 8080);
    let m = split(&lab, lab::vip6(80), 200);
    assert_eq!(m.get("rs1"), Some(&200), "{m:?}");
    let gbps = bulk(&lab, lab::vip6(9000));
    let stats = wait_stats(&lab, |s| s.fwd_out > 0 && s.toa_added > 0);
    eprintln!("FullNAT6 bulk: {gbps:.2} Gbit/s, {stats:?}");
    assert!(stats.rx_gso > 0, "offloads on: {stats:?}");
    assert_eq!(
        stats.redirected,
        0,
        "steering active: {}, {stats:?}",
        lab.daemon().steering_active()
    );
}

#[test]
fn nat64_http_from_an_ipv6_client_to_an_ipv4_server_with_toa() {
    if !precheck() {
        return;
    }
    let lab = fullnat_lab(true);
    let _server = lab.reals[0]
        .run(|| HttpServer::start(common::any(8080), "rs1"))
        .expect("http server");
    let m = split(&lab, lab::vip6(80), 20);
    assert_eq!(m.get("rs1"), Some(&20), "{m:?}");
    let (peer, toa, cport) = toa_seen(&lab);
    assert_eq!(
        peer.ip().to_canonical(),
        IpAddr::V4(Ipv4Addr::new(172, 16, 9, 100)),
        "the IPv4 server sees the local address"
    );
    assert_eq!(
        toa,
        Some(Some((IpAddr::V6(lab::CLIENT6), cport))),
        "the TOA decodes to the client's IPv6 address and port"
    );
    let gbps = bulk(&lab, lab::vip6(9000));
    eprintln!("NAT64 bulk: {gbps:.2} Gbit/s");
}

/// Malformed IPv6 frame of kind `i % 4` from a client to our MAC.
fn malformed6(i: u32, ours: [u8; 6], theirs: [u8; 6]) -> Vec<u8> {
    let mut f = Vec::with_capacity(160);
    f.extend_from_slice(&ours);
    f.extend_from_slice(&theirs);
    f.extend_from_slice(&[0x86, 0xdd]);
    let hdr = |f: &mut Vec<u8>, plen: u16, nh: u8| {
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&plen.to_be_bytes());
        f.extend_from_slice(&[nh, 64]);
        f.extend_from_slice(&lab::CLIENT6.octets());
        f.extend_from_slice(&lab::VIP6.octets());
    };
    match i % 4 {
        // Payload length beyond the frame.
        0 => {
            hdr(&mut f, 1000, 6);
            f.extend_from_slice(&[0; 20]);
        }
        // An extension-header chain that runs off the end: a Destination Options header
        // claiming 64 bytes in a 16-byte payload.
        1 => {
            hdr(&mut f, 16, 60);
            f.extend_from_slice(&[6, 7, 1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        // A fragment.
        2 => {
            hdr(&mut f, 16, 44);
            f.extend_from_slice(&[6, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0]);
        }
        // A bogus next header: No Next Header with a payload.
        _ => {
            hdr(&mut f, 8, 59);
            f.extend_from_slice(&[0; 8]);
        }
    }
    f
}

#[test]
fn hundred_thousand_malformed_ipv6_frames_are_counted_by_reason() {
    if !precheck() {
        return;
    }
    let lab = lab_with(
        2,
        &lab::service6("tcp", 80, "rr", "nat", &[(0, 80, 1), (1, 80, 1)]),
    );
    let _servers = http_servers6(&lab, 80);
    let ours = tapvs::config::parse_mac(lab::EXT_MAC).unwrap();
    let theirs = [0x02, 0xaa, 0, 0, 0, 9];
    const N: u32 = 100_000;
    const BURST: u32 = 2_000;
    const REASONS: [&str; 4] = [
        "ipv6_bad_payload_len",
        "ipv6_truncated",
        "ipv6_fragment",
        "ipv6_bogus_next_header",
    ];
    let total =
        |s: &tapvs::datapath::stats::Stats| REASONS.iter().map(|r| s.dropped(r)).sum::<u64>();
    let base = total(&lab.daemon().stats());
    let sock = lab
        .client
        .run(|| tapvs::sys::PacketSocket::open("eth0"))
        .expect("packet socket");
    let frames: Vec<Vec<u8>> = (0..4).map(|i| malformed6(i, ours, theirs)).collect();
    for burst in 0..N / BURST {
        for i in burst * BURST..(burst + 1) * BURST {
            let f = &frames[(i % 4) as usize];
            // A full device queue refuses a frame; retry it a bounded number of times.
            for _ in 0..100 {
                if sock.send(f).is_ok() {
                    break;
                }
                std::thread::yield_now();
            }
        }
        // Let the appliance drain this burst (readiness on its counters, bounded).
        let want = u64::from((burst + 1) * BURST) * 99 / 100;
        wait_stats(&lab, |s| total(s) - base >= want);
    }
    let stats = wait_stats(&lab, |s| total(s) - base >= u64::from(N));
    let got = total(&stats) - base;
    eprintln!("malformed IPv6: {got} of {N} counted: {:?}", stats.drops);
    assert!(
        got >= u64::from(N) * 99 / 100,
        "{got} of {N}: {:?}",
        stats.drops
    );
    for reason in REASONS {
        assert!(
            stats.dropped(reason) >= u64::from(N) / 4 * 98 / 100,
            "{reason}: {:?}",
            stats.drops
        );
    }
    // Traffic still flows afterwards.
    let m = split(&lab, lab::vip6(80), 10);
    assert_eq!(m.values().sum::<u64>(), 10);
}
