//! Access control per service and the ICMP error limit end to end in network namespaces (issue
//! 20, items 3 and 4), with real clients through tapvs (two workers, NAT): a denied client gets
//! connection refused (RST) while another connects; an allow list admits only its prefix; with
//! `conn_limit` the connection beyond the limit is refused and a closed one frees its place;
//! with `conn_rate` a burst beyond the rate is refused and a second later connecting works
//! again; and 1000 UDP datagrams to a closed VIP port produce at most the per-host burst plus
//! the rate's share of ICMP errors at the client, the rest counted as `icmp_ratelimited` (also
//! in /metrics); a reload changes a service's lists and the `[defence]` limits live.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::lab::{self, Lab};
use common::{any, scrape, wait_stats};
use tapvs_lab::netns::{precheck, wait_until};

/// A lab with one real server and `services` (real server 0 on port 9000 unless said).
fn lab_with(services: &str) -> Lab {
    let mut lab = Lab::build(1).expect("build lab");
    lab.start(&format!("{}{}", lab::base_config(2), services))
        .expect("start tapvs");
    lab
}

/// A NAT TCP service on VIP:`vport` to real server 0's port 9000, with `settings`.
fn service(vport: u16, settings: &str) -> String {
    format!(
        "\n[[service]]\nprotocol = \"tcp\"\naddress = \"{}\"\n{settings}\n\
         [[service.real]]\naddress = \"{}:9000\"\nforward = \"nat\"\n",
        lab::vip(vport),
        lab::real_addr(0)
    )
}

/// A listener on real server 0's port 9000. Nothing accepts: the kernel completes the
/// handshakes into the backlog, which is all a held connection needs.
fn listener(lab: &Lab) -> TcpListener {
    lab.reals[0]
        .run(|| TcpListener::bind(any(9000)))
        .expect("listener")
}

/// Connects to `to` (from the calling thread's namespace): Ok, or the error's kind.
fn connect(to: SocketAddr) -> Result<TcpStream, std::io::ErrorKind> {
    TcpStream::connect_timeout(&to, Duration::from_secs(3)).map_err(|e| e.kind())
}

const REFUSED: std::io::ErrorKind = std::io::ErrorKind::ConnectionRefused;

#[test]
fn deny_and_allow_lists_refuse_with_rst() {
    if !precheck() {
        return;
    }
    // Client 10.0.0.2 is denied on :80 and outside the allow list of :81; client1
    // (10.0.0.10) is neither.
    let mut lab = lab_with(
        &(service(80, "deny = [\"10.0.0.2/32\", \"192.0.2.0/24\"]")
            + &service(81, "allow = [\"10.0.0.8/29\"]")),
    );
    lab.add_clients(1).expect("second client");
    let _l = listener(&lab);
    lab.client.run(|| {
        assert_eq!(connect(lab::vip(80)).err(), Some(REFUSED), "denied");
        assert_eq!(connect(lab::vip(81)).err(), Some(REFUSED), "not allowed");
    });
    lab.clients[0].run(|| {
        connect(lab::vip(80)).expect("not denied");
        connect(lab::vip(81)).expect("allowed");
    });
    let st = wait_stats(&lab, |s| {
        s.dropped("acl_denied") >= 1 && s.dropped("acl_not_allowed") >= 1 && s.conns_created >= 2
    });
    assert_eq!(st.dropped("acl_denied"), 1, "{st:?}");
    assert_eq!(st.dropped("acl_not_allowed"), 1, "{st:?}");
    assert!(st.rst_sent >= 2, "{st:?}");
    assert_eq!(st.conns_created, 2, "{st:?}");
    // tapvsadm -L shows the lists after the scheduler.
    let out = common::tapvsadm(&lab.socket(), "-L -n", None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "TCP  {} wlc deny 10.0.0.2/32,192.0.2.0/24\n",
            lab::vip(80)
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("TCP  {} wlc allow 10.0.0.8/29\n", lab::vip(81))),
        "{text}"
    );
    let (code, text) = scrape(&lab);
    assert_eq!(code, 200);
    assert!(
        text.contains("tapvs_drops_total{reason=\"acl_denied\"} 1"),
        "{text}"
    );
}

#[test]
fn conn_limit_refuses_beyond_the_limit_until_one_closes() {
    if !precheck() {
        return;
    }
    const LIMIT: usize = 3;
    let lab = lab_with(&service(80, &format!("conn_limit = {LIMIT}")));
    let _l = listener(&lab);
    lab.client.run(|| {
        let mut held: Vec<TcpStream> = (0..LIMIT)
            .map(|i| connect(lab::vip(80)).unwrap_or_else(|e| panic!("connection {i}: {e:?}")))
            .collect();
        assert_eq!(
            connect(lab::vip(80)).err(),
            Some(REFUSED),
            "beyond the limit"
        );
        // Closing one (FIN) frees its place: a new connection works once tapvs has seen the
        // FIN (polled, bounded).
        drop(held.pop());
        let mut again = None;
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            again = connect(lab::vip(80)).ok();
            again.is_some()
        });
        let again = again.expect("a connection after one closed");
        held.push(again);
        assert_eq!(connect(lab::vip(80)).err(), Some(REFUSED), "full again");
    });
    let st = wait_stats(&lab, |s| s.dropped("conn_limit") >= 2);
    assert!(st.dropped("conn_limit") >= 2, "{st:?}");
    assert_eq!(st.dropped("rate_limited"), 0, "{st:?}");
}

#[test]
fn conn_rate_refuses_a_burst_and_recovers_a_second_later() {
    if !precheck() {
        return;
    }
    const RATE: usize = 4;
    const BURST: usize = 24;
    let lab = lab_with(&service(
        80,
        &format!("conn_rate = {RATE}\nconn_rate_prefix = 24"),
    ));
    let _l = listener(&lab);
    let (ok, refused) = lab.client.run(|| {
        let mut ok = Vec::new();
        let mut refused = 0;
        for _ in 0..BURST {
            match connect(lab::vip(80)) {
                Ok(s) => ok.push(s),
                Err(e) => {
                    assert_eq!(e, REFUSED);
                    refused += 1;
                }
            }
        }
        (ok.len(), refused)
    });
    // At most one second's worth (split across the two workers), however the connections
    // spread; the rest refused.
    eprintln!("conn_rate {RATE}/s: {ok} admitted, {refused} refused of {BURST}");
    assert!((1..=RATE).contains(&ok), "{ok} admitted of {BURST}");
    assert_eq!(ok + refused, BURST);
    // The bucket refills at the rate: a second later a connection is admitted again.
    std::thread::sleep(Duration::from_millis(1100));
    lab.client.run(|| {
        connect(lab::vip(80)).expect("admitted again a second later");
    });
    let st = wait_stats(&lab, |s| s.dropped("rate_limited") as usize >= refused);
    assert_eq!(st.dropped("rate_limited") as usize, refused, "{st:?}");
}

#[test]
fn icmp_errors_to_a_host_are_rate_limited() {
    if !precheck() {
        return;
    }
    // Only TCP :80 exists on the VIP: UDP to it is a closed port.
    let lab = lab_with(&service(80, ""));
    let sock = lab
        .client
        .run(|| tapvs::sys::PacketSocket::open("eth0"))
        .expect("packet socket");
    const N: u64 = 1000;
    let mut errors = 0u64;
    let mut buf = vec![0u8; 2048];
    // Counts the ICMP errors the packet socket holds (it sees the datagrams going out as
    // well), waiting at most `wait_ms` for each next frame.
    let mut drain = |wait_ms: i32| {
        while let Some(n) = sock.recv(&mut buf, wait_ms).expect("recv") {
            errors += u64::from(is_port_unreachable_from_vip(&buf[..n]));
        }
    };
    // The gateway resolved beforehand: datagrams held for ARP would leave in one burst
    // with the next batch, and the capture (which holds a copy of each) would overflow and
    // drop the errors coming back.
    lab.client
        .ip(&[
            "neigh",
            "replace",
            &lab::EXT_ADDR.to_string(),
            "lladdr",
            lab::EXT_MAC,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])
        .unwrap();
    let start = Instant::now();
    let s = lab
        .client
        .run(|| std::net::UdpSocket::bind(any(0)))
        .unwrap();
    // In batches, draining in between, so the capture's buffer never overflows.
    for _ in 0..N / 50 {
        for _ in 0..50 {
            s.send_to(b"probe", lab::vip(9999)).unwrap();
        }
        drain(0);
    }
    // Every datagram counted, then the last ICMP errors.
    let st = wait_stats(&lab, |s| s.dropped("no_service") >= N);
    let elapsed = start.elapsed().as_secs_f64();
    drain(300);
    assert_eq!(st.dropped("no_service"), N, "{st:?}");
    // One source port: one worker, the per-host burst of 6 plus one per second.
    let most = 6 + elapsed.ceil() as u64;
    eprintln!("{N} datagrams in {elapsed:.2} s: {errors} ICMP errors reached the client");
    assert!(
        (1..=most).contains(&errors),
        "{errors} ICMP errors in {elapsed:.2} s: {st:?}"
    );
    assert_eq!(st.icmp_errors_sent, errors, "{st:?}");
    assert_eq!(st.icmp_ratelimited, N - errors, "{st:?}");
    let (_, text) = scrape(&lab);
    assert!(
        text.contains(&format!("tapvs_icmp_ratelimited_total {}", N - errors)),
        "{text}"
    );
}

/// Whether `frame` is an ICMP port unreachable from the VIP.
fn is_port_unreachable_from_vip(frame: &[u8]) -> bool {
    let Ok(p) = etherparse::SlicedPacket::from_ethernet(frame) else {
        return false;
    };
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
        return false;
    };
    if ip.header().source_addr() != lab::VIP {
        return false;
    }
    matches!(&p.transport, Some(etherparse::TransportSlice::Icmpv4(i))
        if i.type_u8() == 3 && i.code_u8() == 3)
}

/// A file removed when dropped (also on panic).
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn reload_changes_lists_and_icmp_limits_live() {
    if !precheck() {
        return;
    }
    let file = TempFile(
        std::env::temp_dir().join(format!("tapvs-acl-reload-{}.toml", std::process::id())),
    );
    let base = lab::base_config(2);
    std::fs::write(
        &file.0,
        format!("{base}{}", service(80, "deny = [\"10.0.0.0/24\"]")),
    )
    .unwrap();
    let mut lab = Lab::build(1).expect("build lab");
    lab.start_file(&file.0).expect("start tapvs");
    let _l = listener(&lab);
    let udp_errors = |lab: &Lab, n: u16| {
        lab.client.run(|| {
            let s = std::net::UdpSocket::bind(any(0)).unwrap();
            for _ in 0..n {
                s.send_to(b"probe", lab::vip(9999)).unwrap();
            }
        });
    };
    lab.client.run(|| {
        assert_eq!(connect(lab::vip(80)).err(), Some(REFUSED), "denied");
    });
    udp_errors(&lab, 20);
    let st = wait_stats(&lab, |s| s.dropped("no_service") >= 20);
    assert_eq!(
        (st.icmp_errors_sent, st.icmp_ratelimited),
        (6, 14),
        "{st:?}"
    );
    // The client's prefix moves to the allow list, and the ICMP limits are turned off.
    std::fs::write(
        &file.0,
        format!(
            "{base}\n[defence]\nicmp_ratelimit_ms = 0\nicmp_msgs_per_sec = 0\n{}",
            service(80, "allow = [\"10.0.0.0/24\"]")
        ),
    )
    .unwrap();
    let summary = lab.daemon().reload().expect("reload");
    assert!(summary.contains("2 change(s)"), "{summary}");
    lab.client.run(|| {
        connect(lab::vip(80)).expect("allowed after the reload");
    });
    udp_errors(&lab, 20);
    let st = wait_stats(&lab, |s| s.dropped("no_service") >= 40);
    assert_eq!(
        (st.icmp_errors_sent, st.icmp_ratelimited),
        (26, 14),
        "{st:?}"
    );
    let out = common::tapvsadm(&lab.socket(), "-L -n", None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("wlc allow 10.0.0.0/24\n"), "{text}");
}
