//! NAT mode end to end in network namespaces (issue: data path foundation, tests b–f): HTTP
//! balanced by rr and wrr, UDP request/response, a 200 MB bulk transfer with offloads on, ARP
//! and ping of the VIP, 10,000 malformed frames, and martian sources (issue 20).

mod common;

use std::time::{Duration, Instant};

use common::lab::{self, Lab};
use common::{any, http_servers, wait_stats};
use tapvs_lab::netns::precheck;
use tapvs_lab::traffic::{self, BulkSink, UdpEcho};

fn lab_with(n_reals: usize, services: &str) -> Lab {
    let mut lab = Lab::build(n_reals).expect("build lab");
    lab.start(&format!("{}{}", lab::base_config(2), services))
        .expect("start tapvs");
    lab
}

/// 100 HTTP requests through VIP:80 (rr over two servers on port 80) split 50/50; returns the
/// counters once all 100 connections are counted.
fn hundred_requests_split_evenly(lab: &Lab) -> tapvs::datapath::stats::Stats {
    let servers = http_servers(lab, 80);
    let split = lab
        .client
        .run(|| traffic::http_split(lab::vip(80), 100, Duration::from_secs(5)))
        .expect("requests through the VIP");
    assert_eq!(split.get("rs1"), Some(&50), "{split:?}");
    assert_eq!(split.get("rs2"), Some(&50), "{split:?}");
    assert_eq!(servers[0].served() + servers[1].served(), 100);
    let stats = wait_stats(lab, |s| s.conns_created >= 100);
    assert_eq!(stats.conns_created, 100);
    assert!(stats.fwd_in > 0 && stats.fwd_out > 0, "{stats:?}");
    stats
}

#[test]
fn http_rr_splits_evenly() {
    if !precheck() {
        return;
    }
    let lab = lab_with(
        2,
        &lab::nat_service("tcp", 80, "rr", &[(0, 80, 1), (1, 80, 1)]),
    );
    let stats = hundred_requests_split_evenly(&lab);
    // eBPF steering puts both directions of every connection on its owner's queue from the
    // first frame: no frame is handed between workers, and both workers carry traffic.
    assert!(lab.daemon().steering_active());
    assert_eq!(stats.redirected, 0, "{stats:?}");
    let per_worker = lab.daemon().worker_stats();
    assert!(
        per_worker.iter().all(|w| w.fwd_in >= 20 && w.fwd_out >= 20),
        "{:?}",
        per_worker
            .iter()
            .map(|w| (w.fwd_in, w.fwd_out))
            .collect::<Vec<_>>()
    );
}

/// With the kernel's own flow steering (`steering = "flow"`), frames that reach another
/// worker's queue are handed to their owner, and every request is still answered.
#[test]
fn flow_steering_hands_frames_to_their_owner() {
    if !precheck() {
        return;
    }
    let mut lab = Lab::build(2).expect("build lab");
    let cfg = lab::base_config(2).replace("workers = 2\n", "workers = 2\nsteering = \"flow\"\n");
    lab.start(&format!(
        "{cfg}{}",
        lab::nat_service("tcp", 80, "rr", &[(0, 80, 1), (1, 80, 1)])
    ))
    .expect("start tapvs");
    assert!(!lab.daemon().steering_active());
    let stats = hundred_requests_split_evenly(&lab);
    assert_eq!(stats.dropped("redirect_full"), 0, "{stats:?}");
    eprintln!(
        "flow steering: {} frames handed between workers",
        stats.redirected
    );
}

#[test]
fn http_wrr_splits_by_weight_with_port_mapping() {
    if !precheck() {
        return;
    }
    // VIP:80 is mapped to port 8080 on the real servers.
    let lab = lab_with(
        2,
        &lab::nat_service("tcp", 80, "wrr", &[(0, 8080, 3), (1, 8080, 1)]),
    );
    let _servers = http_servers(&lab, 8080);
    let split = lab
        .client
        .run(|| traffic::http_split(lab::vip(80), 100, Duration::from_secs(5)))
        .expect("requests through the VIP");
    assert_eq!(split.get("rs1"), Some(&75), "{split:?}");
    assert_eq!(split.get("rs2"), Some(&25), "{split:?}");
}

#[test]
fn udp_request_response_through_nat() {
    if !precheck() {
        return;
    }
    let lab = lab_with(
        2,
        &lab::nat_service("udp", 53, "rr", &[(0, 5353, 1), (1, 5353, 1)]),
    );
    let _echo: Vec<UdpEcho> = lab
        .reals
        .iter()
        .enumerate()
        .map(|(i, rs)| {
            let name = format!("rs{}", i + 1);
            rs.run(move || UdpEcho::start(any(5353), &name))
                .expect("udp echo")
        })
        .collect();
    // Each request uses a new socket from its own source port, hence a new connection; the
    // client's socket is connected to the VIP, so a reply only arrives if it was SNATed back.
    let replies: Vec<String> = lab.client.run(|| {
        (0..20u16)
            .map(|i| {
                let (vip, q) = (lab::vip(53), format!("q{i}"));
                traffic::udp_request_from(41000 + i, vip, &q, Duration::from_secs(2))
                    .expect("udp reply")
            })
            .collect()
    });
    for (i, r) in replies.iter().enumerate() {
        assert!(r.ends_with(&format!(":q{i}")), "{r}");
    }
    let rs1 = replies.iter().filter(|r| r.starts_with("rs1:")).count();
    let rs2 = replies.iter().filter(|r| r.starts_with("rs2:")).count();
    assert_eq!((rs1, rs2), (10, 10), "{replies:?}");
    let stats = wait_stats(&lab, |s| s.connections.get("UDP").copied() == Some(20));
    assert_eq!(stats.connections.get("UDP"), Some(&20), "{stats:?}");
}

/// 200 MB through NAT with offloads on, the workers' I/O by `backend` (`[io] backend`):
/// the same bytes arrive, GSO super-frames and partial checksums cross; returns the system
/// calls the workers made per frame read.
fn bulk_200mb(backend: &str) -> f64 {
    let services = format!(
        "[io]\nbackend = \"{backend}\"\n\n{}",
        lab::nat_service("tcp", 9000, "rr", &[(0, 9000, 1)])
    );
    let lab = lab_with(1, &services);
    let sink = lab.reals[0]
        .run(|| BulkSink::start(any(9000)))
        .expect("sink");
    const BYTES: u64 = 200 * 1024 * 1024;
    let t0 = Instant::now();
    let sent = lab
        .client
        .run(|| traffic::bulk_send(lab::vip(9000), BYTES, 7, Duration::from_secs(120)))
        .expect("bulk send");
    let (bytes, got) = sink.wait(Duration::from_secs(30)).expect("sink result");
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(bytes, BYTES);
    assert_eq!(got, sent, "SHA-256 of received data differs");
    let stats = wait_stats(&lab, |s| s.rx_gso > 0);
    let per_frame = stats.syscalls as f64 / stats.rx_frames.max(1) as f64;
    eprintln!(
        "bulk ({backend}): {BYTES} bytes in {secs:.2} s = {:.2} Gbit/s; frames in {} (GSO {}, partial csum {}); {per_frame:.2} system calls per frame",
        BYTES as f64 * 8.0 / secs / 1e9,
        stats.rx_frames,
        stats.rx_gso,
        stats.rx_partial_csum
    );
    assert!(
        stats.rx_gso > 0,
        "offloads on: GSO super-frames must cross the TAP"
    );
    assert!(stats.rx_partial_csum > 0, "partial checksums must be seen");
    per_frame
}

#[test]
fn bulk_200mb_with_offloads_arrives_intact() {
    if !precheck() {
        return;
    }
    // io_uring (this kernel has it, so `auto` uses it): a read and a write per frame are
    // batched into the rounds' one `io_uring_enter`; with poll the same needs at least 2.
    let per_frame = bulk_200mb("uring");
    assert!(per_frame < 2.0, "{per_frame} system calls per frame");
}

#[test]
fn bulk_200mb_with_the_poll_backend_arrives_intact() {
    if !precheck() {
        return;
    }
    // A read and a write per frame, plus the polls.
    let per_frame = bulk_200mb("poll");
    assert!(per_frame >= 2.0, "{per_frame} system calls per frame");
}

#[test]
fn arp_and_ping_of_vip_and_own_address() {
    if !precheck() {
        return;
    }
    let lab = lab_with(1, &lab::nat_service("tcp", 80, "rr", &[(0, 80, 1)]));
    // Make the VIP on-link for the client so it resolves the VIP itself by ARP.
    lab.client
        .ip(&[
            "route",
            "replace",
            &format!("{}/32", lab::VIP),
            "dev",
            "eth0",
        ])
        .unwrap();
    for target in [lab::VIP.to_string(), lab::EXT_ADDR.to_string()] {
        let out = lab
            .client
            .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", &target])
            .unwrap_or_else(|e| panic!("ping {target}: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("3 received"), "{text}");
    }
    let neigh = lab
        .client
        .ip(&["neigh", "show", &lab::VIP.to_string()])
        .unwrap();
    assert!(
        neigh.contains(lab::EXT_MAC),
        "client resolved the VIP to our MAC: {neigh}"
    );
    let stats = wait_stats(&lab, |s| s.echo_replies >= 6);
    assert!(stats.arp_replies >= 2, "{stats:?}");
    assert_eq!(stats.echo_replies, 6);
}

/// Builds the malformed frame number `i` (of several kinds) from a client to our MAC.
fn malformed(i: u32, ours: [u8; 6], theirs: [u8; 6], rng: &mut u64) -> Vec<u8> {
    let mut next = || {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    };
    let mut f = Vec::with_capacity(128);
    f.extend_from_slice(&ours);
    f.extend_from_slice(&theirs);
    let ip_hdr = |f: &mut Vec<u8>, ihl_ver: u8, total: u16, frag: u16| {
        f.extend_from_slice(&[0x08, 0x00, ihl_ver, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 1]);
        f.extend_from_slice(&frag.to_be_bytes());
        f.extend_from_slice(&[64, 6, 0, 0, 10, 0, 0, 2, 207, 175, 44, 110]);
        // A valid header checksum, so each frame fails for the reason it was built for.
        let h = f.len() - 20;
        let mut sum: u32 = f[h..]
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        f[h + 10..h + 12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    };
    match i % 7 {
        // Truncated IPv4 header.
        0 => f.extend_from_slice(&[0x08, 0x00, 0x45, 0, 0, 40]),
        // IHL below 5.
        1 => ip_hdr(&mut f, 0x43, 40, 0),
        // Total length beyond the frame.
        2 => ip_hdr(&mut f, 0x45, 1400, 0),
        // A fragment (MF set).
        3 => {
            ip_hdr(&mut f, 0x45, 28, 0x2000);
            f.extend_from_slice(&[0; 8]);
        }
        // Unknown ethertype.
        4 => f.extend_from_slice(&[0x88, 0xb5, 1, 2, 3, 4]),
        // IPv4 with a truncated TCP header.
        5 => {
            ip_hdr(&mut f, 0x45, 30, 0);
            f.extend_from_slice(&[0; 10]);
        }
        // Random bytes after a valid Ethernet header.
        _ => {
            let n = 1 + (next() % 200) as usize;
            f.truncate(12);
            f.extend((0..n).map(|_| next() as u8));
        }
    }
    f
}

#[test]
fn malformed_frames_are_counted_and_dropped() {
    if !precheck() {
        return;
    }
    let lab = lab_with(
        2,
        &lab::nat_service("tcp", 80, "rr", &[(0, 80, 1), (1, 80, 1)]),
    );
    let _servers = http_servers(&lab, 80);
    let ours = tapvs::config::parse_mac(lab::EXT_MAC).unwrap();
    let theirs = [0x02, 0xaa, 0, 0, 0, 9];
    const N: u32 = 10_000;
    const BURST: u32 = 1_000;
    let total = |s: &tapvs::datapath::stats::Stats| s.drops.values().sum::<u64>();
    let base = total(&lab.daemon().stats());
    let sock = lab
        .client
        .run(|| tapvs::sys::PacketSocket::open("eth0"))
        .expect("packet socket");
    let mut rng = 0x1234_5678_9abc_def0u64;
    for burst in 0..N / BURST {
        for i in burst * BURST..(burst + 1) * BURST {
            let f = malformed(i, ours, theirs, &mut rng);
            // A full device queue refuses a frame; retry it a bounded number of times.
            for _ in 0..100 {
                if sock.send(&f).is_ok() {
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
    eprintln!("malformed: {got} of {N} counted: {:?}", stats.drops);
    assert!(
        got >= u64::from(N) * 99 / 100,
        "{got} of {N} counted: {:?}",
        stats.drops
    );
    for reason in [
        "truncated_ipv4",
        "bad_ihl",
        "bad_ip_length",
        "fragment",
        "unknown_ethertype",
        "truncated_tcp",
    ] {
        assert!(
            stats.dropped(reason) >= u64::from(N) / 7 * 98 / 100,
            "{reason}: {:?}",
            stats.drops
        );
    }
    // Traffic still flows afterwards.
    let split = lab
        .client
        .run(|| traffic::http_split(lab::vip(80), 10, Duration::from_secs(5)))
        .expect("traffic after the malformed frames");
    assert_eq!(split.values().sum::<u64>(), 10);
}

#[test]
fn vip_port_without_service_is_refused_like_a_host() {
    if !precheck() {
        return;
    }
    let lab = lab_with(1, &lab::nat_service("tcp", 80, "rr", &[(0, 80, 1)]));
    lab.client.run(|| {
        let e = std::net::TcpStream::connect_timeout(&lab::vip(81), Duration::from_secs(3))
            .expect_err("no service on port 81");
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "TCP RST expected: {e}"
        );
        let s = std::net::UdpSocket::bind(any(0)).unwrap();
        s.connect(lab::vip(54)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send(b"x").unwrap();
        let mut buf = [0u8; 16];
        let e = s.recv(&mut buf).expect_err("no service on udp 54");
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "ICMP port unreachable expected: {e}"
        );
    });
    let stats = wait_stats(&lab, |s| s.rst_sent >= 1 && s.icmp_errors_sent >= 1);
    assert!(stats.dropped("no_service") >= 2, "{stats:?}");
    assert!(
        stats.rst_sent >= 1 && stats.icmp_errors_sent >= 1,
        "{stats:?}"
    );
}

#[test]
fn icmp_errors_from_a_real_server_are_translated_back_to_the_client() {
    if !precheck() {
        return;
    }
    // Nothing listens on the real server's UDP port: its kernel answers port unreachable about
    // the NATed datagram (client -> RIP:rport); the client's socket, connected to VIP:vport,
    // only reports it if tapvs translates the quoted packet and the source back.
    let lab = lab_with(1, &lab::nat_service("udp", 53, "rr", &[(0, 5999, 1)]));
    lab.client.run(|| {
        let s = std::net::UdpSocket::bind(any(0)).unwrap();
        s.connect(lab::vip(53)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send(b"q").unwrap();
        let e = s.recv(&mut [0u8; 8]).expect_err("port unreachable");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    });
    let stats = wait_stats(&lab, |s| s.fwd_out > 0);
    assert_eq!(
        stats.fwd_out, 1,
        "the ICMP error went back through tapvs: {stats:?}"
    );
    assert_eq!(stats.dropped("no_service"), 0);
}

/// A TCP SYN to VIP:80 from `src`, addressed to our MAC (no virtio-net header).
fn syn_from(src: std::net::Ipv4Addr, sport: u16, ours: [u8; 6], theirs: [u8; 6]) -> Vec<u8> {
    let b = etherparse::PacketBuilder::ethernet2(theirs, ours)
        .ipv4(src.octets(), lab::VIP.octets(), 64)
        .tcp(sport, 80, 1000, 64240)
        .syn();
    let mut f = Vec::with_capacity(b.size(0));
    b.write(&mut f, &[]).expect("build SYN");
    f
}

/// The IPv4 source and TCP source port of an Ethernet frame carrying TCP over IPv4 (with a
/// 20-byte IP header, as every SYN the test sends has). Other frames, such as the real server's
/// own IGMP or ARP traffic, are not the test's business.
fn tcp_source(frame: &[u8]) -> Option<(std::net::Ipv4Addr, u16)> {
    (frame.len() >= 54 && frame[12..14] == [0x08, 0x00] && frame[14] == 0x45 && frame[23] == 6)
        .then(|| {
            (
                std::net::Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]),
                u16::from_be_bytes([frame[34], frame[35]]),
            )
        })
}

/// Issue 20: SYNs to the VIP from every class of martian source, injected on the client
/// segment, are counted as `martian_source` and none reaches the real server; a SYN from the
/// client injected the same way does (the capture sees it).
#[test]
fn martian_sources_never_reach_a_real_server() {
    if !precheck() {
        return;
    }
    let lab = lab_with(1, &lab::nat_service("tcp", 80, "rr", &[(0, 80, 1)]));
    let ip = std::net::Ipv4Addr::new;
    let martians = [
        ip(127, 0, 0, 1),
        ip(0, 0, 0, 0),
        ip(0, 1, 2, 3),
        ip(255, 255, 255, 255),
        ip(224, 0, 0, 9),
        ip(239, 1, 1, 1),
        ip(240, 0, 0, 1),
        ip(10, 0, 0, 255),
        ip(172, 16, 0, 255),
        lab::EXT_ADDR,
        lab::INT_ADDR,
    ];
    let ours = tapvs::config::parse_mac(lab::EXT_MAC).unwrap();
    let theirs = [0x02, 0xaa, 0, 0, 0, 20];
    let cap = lab.reals[0]
        .run(|| tapvs::sys::PacketSocket::open("eth0"))
        .expect("capture socket on the real server");
    let sock = lab
        .client
        .run(|| tapvs::sys::PacketSocket::open("eth0"))
        .expect("packet socket on the client");
    for (i, &src) in martians.iter().enumerate() {
        sock.send(&syn_from(src, 41000 + i as u16, ours, theirs))
            .expect("send martian SYN");
    }
    let n = martians.len() as u64;
    let stats = wait_stats(&lab, |s| s.dropped("martian_source") >= n || s.fwd_in >= n);
    // A control: the client's own SYN, injected the same way, is forwarded and captured.
    sock.send(&syn_from(lab::CLIENT, 42000, ours, theirs))
        .expect("send the client's SYN");
    let mut buf = vec![0u8; 70000];
    let mut seen_client = false;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let Some(len) = cap.recv(&mut buf, 100).unwrap() else {
            if seen_client {
                break;
            }
            continue;
        };
        let Some((src, sport)) = tcp_source(&buf[..len]) else {
            continue;
        };
        let martian_port = (41000..41000 + martians.len() as u16).contains(&sport);
        assert!(
            !(martians.contains(&src) && martian_port),
            "the SYN from martian {src}:{sport} reached the real server"
        );
        seen_client |= src == lab::CLIENT && sport == 42000;
    }
    assert!(seen_client, "the capture saw the client's SYN");
    assert_eq!(stats.dropped("martian_source"), n, "{:?}", stats.drops);
    assert_eq!(
        stats.conns_created, 0,
        "no connection from a martian: {stats:?}"
    );
    assert_eq!(stats.fwd_in, 0, "{stats:?}");
    let stats = wait_stats(&lab, |s| s.conns_created >= 1);
    assert_eq!(stats.conns_created, 1, "{stats:?}");
    assert_eq!(stats.dropped("martian_source"), n, "{:?}", stats.drops);
}
