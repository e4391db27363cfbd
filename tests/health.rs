//! Health checks end to end in network namespaces, run by the appliance from its own address
//! through its own TAP: a stopped listener leaves the pool within delay_loop × (retry + 1) +
//! connect_timeout and comes back; HTTP_GET fails on a 500 and on a wrong digest;
//! inhibit_on_failure keeps the server at weight 0; below quorum the sorry server takes the
//! traffic; alpha starts servers down; MISC_CHECK and misc_dynamic set weights; SSL_GET passes
//! against a TLS server with a test certificate; the checks' packets leave from the appliance's
//! address (captured on a real server); notify_up/notify_down and quorum_up/quorum_down scripts
//! run on the verdicts.

mod common;

use std::time::{Duration, Instant};

use common::lab::{self, Lab};
use common::{any, scrape, tls::TlsServer};
use tapvs_lab::netns::{precheck, wait_until};
use tapvs_lab::traffic::{self, HttpServer};

const TCP: &str = "\n[[service.real.check]]\ntype = \"tcp\"\n";

/// A TCP service on VIP:80 (rr) with `health` settings and real servers
/// `(index, weight, extra real settings, checks)`.
fn service(health: &str, reals: &[(usize, u32, &str, &str)]) -> String {
    let mut s = format!(
        "\n[[service]]\nprotocol = \"tcp\"\naddress = \"{}:80\"\nscheduler = \"rr\"\nhealth = {{ {health} }}\n",
        lab::VIP
    );
    for (i, w, extra, checks) in reals {
        s.push_str(&format!(
            "\n[[service.real]]\naddress = \"{}:80\"\nweight = {w}\nforward = \"nat\"\n{extra}\n{checks}",
            lab::real_addr(*i)
        ));
    }
    s
}

fn started(reals: usize, services: &str) -> Lab {
    let mut lab = Lab::build(reals).unwrap();
    lab.start(&format!("{}{services}", lab::base_config(2)))
        .expect("start tapvs");
    lab
}

fn listing(lab: &Lab) -> String {
    lab.daemon().execute(&["-L".into(), "-n".into()], "").stdout
}

/// The listing line of real server `i`, if it is in the pool.
fn line(lab: &Lab, i: usize) -> Option<String> {
    let addr = format!("{}:80", lab::real_addr(i));
    listing(lab)
        .lines()
        .find(|l| l.starts_with(&format!("  -> {addr} ")))
        .map(String::from)
}

fn weight_of(lab: &Lab, i: usize) -> Option<u32> {
    line(lab, i).and_then(|l| l.split_whitespace().nth(3).and_then(|w| w.parse().ok()))
}

fn serve(lab: &Lab, i: usize) -> HttpServer {
    let name = format!("rs{}", i + 1);
    lab.reals[i]
        .run(move || HttpServer::start(any(80), &name))
        .expect("http server")
}

fn split(lab: &Lab, n: u64) -> std::collections::BTreeMap<String, u64> {
    lab.client
        .run(|| traffic::http_split(lab::vip(80), n, Duration::from_secs(5)))
        .expect("requests")
}

fn wait(secs: u64, f: impl FnMut() -> bool) -> bool {
    wait_until(Duration::from_secs(secs), Duration::from_millis(20), f)
}

const FAST: &str =
    "delay_loop = 1, connect_timeout = 1, retry = 1, delay_before_retry = 1, warmup = 0";

#[test]
fn tcp_check_removes_a_stopped_server_in_time_and_restores_it() {
    if !precheck() {
        return;
    }
    let lab = started(2, &service(FAST, &[(0, 1, "", TCP), (1, 1, "", TCP)]));
    let _rs1 = serve(&lab, 0);
    let rs2 = serve(&lab, 1);
    // The checks come from the appliance's address and MAC on the servers' side.
    let cap = lab.reals[0]
        .run(|| tapvs::sys::PacketSocket::open("eth0"))
        .unwrap();
    let mut buf = vec![0u8; 70000];
    let mut seen = false;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen && Instant::now() < deadline {
        let Some(n) = cap.recv(&mut buf, 100).unwrap() else {
            continue;
        };
        if let Ok(p) = etherparse::SlicedPacket::from_ethernet(&buf[..n]) {
            let from_us = matches!(&p.net, Some(etherparse::NetSlice::Ipv4(ip))
                if ip.header().source_addr() == lab::INT_ADDR);
            let syn = matches!(&p.transport, Some(etherparse::TransportSlice::Tcp(t))
                if t.syn() && !t.ack() && t.destination_port() == 80);
            let mac = tapvs::config::parse_mac(lab::INT_MAC).unwrap();
            seen = from_us && syn && buf[6..12] == mac;
        }
    }
    assert!(
        seen,
        "a check SYN from {} / {} reached rs1",
        lab::INT_ADDR,
        lab::INT_MAC
    );
    assert!(line(&lab, 1).is_some(), "{}", listing(&lab));
    // Stop rs2's listener: out within delay_loop × (retry + 1) + connect_timeout = 3 s.
    drop(rs2);
    let t0 = Instant::now();
    assert!(wait(10, || line(&lab, 1).is_none()), "{}", listing(&lab));
    let took = t0.elapsed();
    assert!(
        took <= Duration::from_millis(3500),
        "left the pool after {took:?}"
    );
    assert_eq!(
        split(&lab, 10).get("rs1"),
        Some(&10),
        "all new connections to rs1"
    );
    // The change is counted in metrics.
    let metrics = scrape(&lab).1;
    let rs2 = format!("real=\"{}:80\"", lab::real_addr(1));
    let value = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains(&rs2))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert_eq!(value("tapvs_real_up"), Some(0.0), "{metrics}");
    assert_eq!(
        value("tapvs_real_health_transitions_total"),
        Some(1.0),
        "{metrics}"
    );
    // Start it again: it comes back.
    let _rs2 = serve(&lab, 1);
    assert!(wait(10, || line(&lab, 1).is_some()), "{}", listing(&lab));
    let s = split(&lab, 10);
    assert_eq!(s.get("rs2"), Some(&5), "{s:?}");
    let stats = lab.daemon().stats();
    assert!(stats.dropped("no_service") == 0, "{stats:?}");
}

#[test]
fn http_get_fails_on_500_and_on_a_wrong_digest() {
    if !precheck() {
        return;
    }
    let http = |extra: &str| {
        format!(
            "\n[[service.real.check]]\ntype = \"http_get\"\ndelay_before_retry = 1\nurl = [{{ path = \"/\", status_code = \"200\"{extra} }}]\n"
        )
    };
    // rs2's expected digest is not the MD5 of its body ("rs2").
    let wrong = http(", digest = \"0123456789abcdef0123456789abcdef\"");
    let lab = started(
        2,
        &service(FAST, &[(0, 1, "", &http("")), (1, 1, "", &wrong)]),
    );
    let rs1 = serve(&lab, 0);
    let _rs2 = serve(&lab, 1);
    assert!(
        wait(10, || line(&lab, 1).is_none()),
        "wrong digest: {}",
        listing(&lab)
    );
    assert!(line(&lab, 0).is_some(), "{}", listing(&lab));
    rs1.set_status(500);
    assert!(
        wait(10, || line(&lab, 0).is_none()),
        "status 500: {}",
        listing(&lab)
    );
    rs1.set_status(200);
    assert!(wait(10, || line(&lab, 0).is_some()), "{}", listing(&lab));
}

#[test]
fn http_get_passes_with_the_right_digest() {
    if !precheck() {
        return;
    }
    // MD5("rs1") computed here, independently of the checker.
    use md5::{Digest, Md5};
    let digest: String = Md5::digest(b"rs1")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let check = format!(
        "\n[[service.real.check]]\ntype = \"http_get\"\nurl = [{{ path = \"/\", digest = \"{digest}\" }}]\n"
    );
    let lab = started(
        1,
        &service(&format!("{FAST}, alpha = true"), &[(0, 1, "", &check)]),
    );
    assert!(line(&lab, 0).is_none(), "alpha: down until checked");
    let _rs1 = serve(&lab, 0);
    assert!(wait(10, || line(&lab, 0).is_some()), "{}", listing(&lab));
}

#[test]
fn inhibit_on_failure_keeps_weight_zero() {
    if !precheck() {
        return;
    }
    let lab = started(
        2,
        &service(
            FAST,
            &[
                (0, 1, "", TCP),
                (1, 3, "health = { inhibit_on_failure = true }", TCP),
            ],
        ),
    );
    let _rs1 = serve(&lab, 0);
    let rs2 = serve(&lab, 1);
    assert_eq!(weight_of(&lab, 1), Some(3));
    drop(rs2);
    assert!(
        wait(10, || weight_of(&lab, 1) == Some(0)),
        "{}",
        listing(&lab)
    );
    assert!(line(&lab, 1).is_some(), "inhibited, not removed");
    let _rs2 = serve(&lab, 1);
    assert!(
        wait(10, || weight_of(&lab, 1) == Some(3)),
        "{}",
        listing(&lab)
    );
}

#[test]
fn below_quorum_the_sorry_server_takes_the_traffic() {
    if !precheck() {
        return;
    }
    let sorry = format!("{}:80", lab::real_addr(2));
    let lab = started(
        3,
        &service(
            &format!("{FAST}, quorum = 2, sorry_server = \"{sorry}\""),
            &[(0, 1, "", TCP), (1, 1, "", TCP)],
        ),
    );
    let _rs1 = serve(&lab, 0);
    let rs2 = serve(&lab, 1);
    let _rs3 = serve(&lab, 2);
    assert!(
        line(&lab, 2).is_none(),
        "sorry server idle while quorum holds"
    );
    drop(rs2);
    assert!(wait(10, || line(&lab, 2).is_some()), "{}", listing(&lab));
    assert!(
        line(&lab, 0).is_none(),
        "without quorum only the sorry server serves"
    );
    assert_eq!(split(&lab, 4).get("rs3"), Some(&4));
    let _rs2 = serve(&lab, 1);
    assert!(
        wait(10, || line(&lab, 2).is_none() && line(&lab, 1).is_some()),
        "{}",
        listing(&lab)
    );
    let s = split(&lab, 4);
    assert_eq!((s.get("rs1"), s.get("rs2")), (Some(&2), Some(&2)), "{s:?}");
}

#[test]
fn alpha_starts_servers_down_and_without_alpha_they_start_up() {
    if !precheck() {
        return;
    }
    // No server listens at all: with alpha the server is absent from the start, without alpha
    // it is present until its checks fail.
    let slow = "delay_loop = 5, connect_timeout = 1, retry = 1, delay_before_retry = 5, warmup = 0";
    let with = started(
        1,
        &service(&format!("{slow}, alpha = true"), &[(0, 1, "", TCP)]),
    );
    assert!(line(&with, 0).is_none(), "{}", listing(&with));
    let without = started(1, &service(slow, &[(0, 1, "", TCP)]));
    assert!(line(&without, 0).is_some(), "{}", listing(&without));
    let _rs = serve(&with, 0);
    assert!(wait(10, || line(&with, 0).is_some()), "{}", listing(&with));
}

#[test]
fn misc_check_and_misc_dynamic_set_weights() {
    if !precheck() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tapvs-misc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let code = dir.join("code");
    let script = dir.join("check.sh");
    std::fs::write(&script, format!("exit $(cat {})\n", code.display())).unwrap();
    std::fs::write(&code, "0").unwrap();
    let misc = format!(
        "\n[[service.real.check]]\ntype = \"misc\"\nmisc_path = \"/bin/sh {}\"\nmisc_timeout = 2\nmisc_dynamic = true\n",
        script.display()
    );
    let lab = started(1, &service(FAST, &[(0, 4, "", &misc)]));
    let _rs1 = serve(&lab, 0);
    assert_eq!(weight_of(&lab, 0), Some(4));
    std::fs::write(&code, "9").unwrap();
    assert!(
        wait(10, || weight_of(&lab, 0) == Some(7)),
        "exit 9: weight 7: {}",
        listing(&lab)
    );
    std::fs::write(&code, "1").unwrap();
    assert!(
        wait(10, || line(&lab, 0).is_none()),
        "exit 1: down: {}",
        listing(&lab)
    );
    std::fs::write(&code, "0").unwrap();
    assert!(
        wait(10, || weight_of(&lab, 0) == Some(4)),
        "exit 0: configured weight: {}",
        listing(&lab)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ssl_get_passes_against_a_tls_server() {
    if !precheck() {
        return;
    }
    let ssl = "\n[[service.real.check]]\ntype = \"ssl_get\"\nsni = \"rs.test\"\nurl = [{ path = \"/\" }]\n";
    let lab = started(
        1,
        &service(&format!("{FAST}, alpha = true"), &[(0, 1, "", ssl)]),
    );
    assert!(line(&lab, 0).is_none());
    let tls = lab.reals[0]
        .run(|| TlsServer::start(any(80), "rs1"))
        .expect("tls server");
    assert!(
        wait(10, || line(&lab, 0).is_some()),
        "SSL_GET passed: {}",
        listing(&lab)
    );
    drop(tls);
    assert!(wait(10, || line(&lab, 0).is_none()), "{}", listing(&lab));
}

#[test]
fn ping_and_udp_checks_run_through_the_host_stack() {
    if !precheck() {
        return;
    }
    // rs1: ping (answered by its kernel); rs2: UDP check on 5353 requiring "rs2:" + payload.
    let udp = format!(
        "\n[[service.real.check]]\ntype = \"udp\"\nconnect_port = 5353\npayload = \"{}\"\nrequire_reply = \"{}\"\n",
        "71",                     // "q"
        "7273323a71"              // "rs2:q"
    );
    let ping = "\n[[service.real.check]]\ntype = \"ping\"\n";
    let lab = started(
        2,
        &service(
            &format!("{FAST}, alpha = true"),
            &[(0, 1, "", ping), (1, 1, "", &udp)],
        ),
    );
    assert!(
        wait(10, || line(&lab, 0).is_some()),
        "PING_CHECK passed: {}",
        listing(&lab)
    );
    assert!(line(&lab, 1).is_none(), "no UDP responder yet");
    let echo = lab.reals[1]
        .run(|| traffic::UdpEcho::start(any(5353), "rs2"))
        .unwrap();
    assert!(
        wait(10, || line(&lab, 1).is_some()),
        "UDP_CHECK passed: {}",
        listing(&lab)
    );
    drop(echo);
    // Without the responder the kernel answers port unreachable: the check fails.
    assert!(wait(10, || line(&lab, 1).is_none()), "{}", listing(&lab));
}

#[test]
fn notify_and_quorum_scripts_run_on_down_and_up() {
    if !precheck() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tapvs-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("events");
    let log = log.display();
    let real = format!(
        "notify_up = \"echo real $TAPVS_REAL $TAPVS_STATE >> {log}\"\n\
         notify_down = \"echo real $TAPVS_REAL $TAPVS_STATE >> {log}\"\n"
    );
    let health = format!(
        "{FAST}, quorum_up = \"echo quorum $TAPVS_PROTOCOL $TAPVS_SERVICE $TAPVS_STATE >> {log}\", \
         quorum_down = \"echo quorum $TAPVS_PROTOCOL $TAPVS_SERVICE $TAPVS_STATE >> {log}\""
    );
    let (lab, rs1) = serve_first_then_start(&health, &real);
    let events = || std::fs::read_to_string(dir.join("events")).unwrap_or_default();
    let rs_addr = format!("{}:80", lab::real_addr(0));
    let down = format!("real {rs_addr} DOWN");
    let up = format!("real {rs_addr} UP");
    let q_down = format!("quorum TCP {}:80 DOWN", lab::VIP);
    let q_up = format!("quorum TCP {}:80 UP", lab::VIP);
    // Up from the start (no alpha): no script runs until a verdict changes.
    assert!(wait(5, || line(&lab, 0).is_some()), "{}", listing(&lab));
    assert_eq!(events(), "", "nothing ran at start");
    drop(rs1);
    assert!(
        wait(10, || {
            let e = events();
            e.contains(&down) && e.contains(&q_down)
        }),
        "{:?}",
        events()
    );
    assert!(!events().contains(&up), "{:?}", events());
    let _rs1 = serve(&lab, 0);
    assert!(
        wait(10, || {
            let e = events();
            e.contains(&up) && e.contains(&q_up)
        }),
        "{:?}",
        events()
    );
    let e = events();
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 4, "{e:?}");
    let pos = |s: &str| lines.iter().position(|l| *l == s).unwrap();
    assert!(pos(&down) < pos(&up) && pos(&q_down) < pos(&q_up), "{e:?}");
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A lab with one real server whose listener runs before tapvs starts (so it is up from the
/// first check), with the given service `health` and real-server settings.
fn serve_first_then_start(health: &str, real: &str) -> (Lab, HttpServer) {
    let mut lab = Lab::build(1).unwrap();
    let rs = serve(&lab, 0);
    lab.start(&format!(
        "{}{}",
        lab::base_config(2),
        service(health, &[(0, 1, real, TCP)])
    ))
    .expect("start tapvs");
    (lab, rs)
}

/// A dual-stack lab with `reals` real servers and an IPv6 TCP service on VIP6:80 (rr, `health`
/// settings) over the first two, each with a TCP check.
fn started6(reals: usize, health: &str) -> Lab {
    let mut s = format!(
        "\n[[service]]\nprotocol = \"tcp\"\naddress = \"[{}]:80\"\nscheduler = \"rr\"\nhealth = {{ {health} }}\n",
        lab::VIP6
    );
    for i in 0..2 {
        s.push_str(&format!(
            "\n[[service.real]]\naddress = \"[{}]:80\"\nweight = 1\nforward = \"nat\"\n{TCP}",
            lab::real_addr6(i)
        ));
    }
    let mut lab = Lab::build_dual(reals).unwrap();
    lab.start(&format!("{}{s}", lab::base_config_dual(2)))
        .expect("start tapvs");
    lab
}

/// An HTTP server answering `rs{i+1}` on [::]:80 in real server `i`.
fn serve6(lab: &Lab, i: usize) -> HttpServer {
    let name = format!("rs{}", i + 1);
    lab.reals[i]
        .run(move || HttpServer::start("[::]:80".parse().unwrap(), &name))
        .expect("http server")
}

/// The listing line of real server `i`'s IPv6 address on port 80, if it is in the pool.
fn line6(lab: &Lab, i: usize) -> Option<String> {
    let addr = format!("[{}]:80", lab::real_addr6(i));
    listing(lab)
        .lines()
        .find(|l| l.starts_with(&format!("  -> {addr} ")))
        .map(String::from)
}

#[test]
fn tcp_check_over_ipv6_removes_a_stopped_server_and_restores_it() {
    if !precheck() {
        return;
    }
    let lab = started6(2, FAST);
    let _rs1 = serve6(&lab, 0);
    let rs2 = serve6(&lab, 1);
    // Both pass their checks over IPv6 (smoltcp solicits the servers' addresses itself).
    assert!(
        wait(10, || line6(&lab, 0).is_some() && line6(&lab, 1).is_some()),
        "{}",
        listing(&lab)
    );
    // Stop rs2's listener: it leaves the pool.
    drop(rs2);
    assert!(wait(10, || line6(&lab, 1).is_none()), "{}", listing(&lab));
    assert!(line6(&lab, 0).is_some(), "{}", listing(&lab));
    let split6 = |lab: &Lab| {
        lab.client
            .run(|| traffic::http_split(lab::vip6(80), 6, Duration::from_secs(5)))
            .expect("requests")
    };
    assert_eq!(split6(&lab).get("rs1"), Some(&6), "all to rs1");
    // Start it again: back in the pool.
    let _rs2 = serve6(&lab, 1);
    assert!(wait(10, || line6(&lab, 1).is_some()), "{}", listing(&lab));
    let metrics = scrape(&lab).1;
    let up = format!(
        "tapvs_real_up{{protocol=\"tcp\",service=\"[{}]:80\",real=\"[{}]:80\"}} 1",
        lab::VIP6,
        lab::real_addr6(1)
    );
    assert!(metrics.contains(&up), "{up} missing:\n{metrics}");
}

/// Below quorum an IPv6 service's IPv6 sorry server takes the traffic, and leaves when the
/// quorum is back.
#[test]
fn below_quorum_the_ipv6_sorry_server_takes_the_traffic() {
    if !precheck() {
        return;
    }
    let sorry = format!(
        "{FAST}, quorum = 2, sorry_server = \"{}\"",
        lab::real_addr6(2)
    );
    let lab = started6(3, &sorry);
    let split6 = |lab: &Lab| {
        lab.client
            .run(|| traffic::http_split(lab::vip6(80), 4, Duration::from_secs(5)))
            .expect("requests")
    };
    let _rs1 = serve6(&lab, 0);
    let rs2 = serve6(&lab, 1);
    let _rs3 = serve6(&lab, 2);
    assert!(
        wait(10, || line6(&lab, 0).is_some() && line6(&lab, 1).is_some()),
        "{}",
        listing(&lab)
    );
    assert!(
        line6(&lab, 2).is_none(),
        "sorry server idle while quorum holds"
    );
    drop(rs2);
    assert!(wait(10, || line6(&lab, 2).is_some()), "{}", listing(&lab));
    assert!(
        line6(&lab, 0).is_none(),
        "without quorum only the sorry server serves: {}",
        listing(&lab)
    );
    assert_eq!(split6(&lab).get("rs3"), Some(&4));
    let _rs2 = serve6(&lab, 1);
    assert!(
        wait(10, || line6(&lab, 2).is_none() && line6(&lab, 1).is_some()),
        "{}",
        listing(&lab)
    );
    let s = split6(&lab);
    assert_eq!((s.get("rs1"), s.get("rs2")), (Some(&2), Some(&2)), "{s:?}");
}

#[test]
fn ping_and_udp_checks_over_ipv6() {
    if !precheck() {
        return;
    }
    // rs1: ICMPv6 echo (answered by its kernel); rs2: UDP check on 5353 requiring "rs2:q".
    let checks = [
        "\n[[service.real.check]]\ntype = \"ping\"\n".to_string(),
        "\n[[service.real.check]]\ntype = \"udp\"\nconnect_port = 5353\npayload = \"71\"\nrequire_reply = \"7273323a71\"\n".to_string(),
    ];
    let mut s = format!(
        "\n[[service]]\nprotocol = \"tcp\"\naddress = \"[{}]:80\"\nscheduler = \"rr\"\nhealth = {{ {FAST}, alpha = true }}\n",
        lab::VIP6
    );
    for (i, check) in checks.iter().enumerate() {
        s.push_str(&format!(
            "\n[[service.real]]\naddress = \"[{}]:80\"\nweight = 1\nforward = \"nat\"\n{check}",
            lab::real_addr6(i)
        ));
    }
    let mut lab = Lab::build_dual(2).unwrap();
    lab.start(&format!("{}{s}", lab::base_config_dual(2)))
        .expect("start tapvs");
    assert!(
        wait(10, || line6(&lab, 0).is_some()),
        "PING_CHECK over ICMPv6 passed: {}",
        listing(&lab)
    );
    assert!(line6(&lab, 1).is_none(), "no UDP responder yet");
    let echo = lab.reals[1]
        .run(|| traffic::UdpEcho::start("[::]:5353".parse().unwrap(), "rs2"))
        .unwrap();
    assert!(
        wait(10, || line6(&lab, 1).is_some()),
        "UDP_CHECK over IPv6 passed: {}",
        listing(&lab)
    );
    drop(echo);
    assert!(wait(10, || line6(&lab, 1).is_none()), "{}", listing(&lab));
}
