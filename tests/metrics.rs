//! The Prometheus endpoint in the lab: a scrape taken while traffic flows passes
//! `promtool check metrics` with nothing reported (HELP on every metric, conventional names);
//! the series of a deleted service and its real servers are gone on the next scrape; a
//! connection-state gauge returns to 0 once its connections expire.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::lab::{self, Lab};
use common::{any, http_servers, scrape};
use tapvs_lab::netns::{precheck, skip_or_fail, wait_until};
use tapvs_lab::traffic::{self, UdpEcho};

/// The value of the series `series` (name with its labels, as rendered), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Whether `promtool` can be run (`scripts/deps` installs it, package `prometheus`).
fn promtool_found() -> bool {
    Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `promtool check metrics` on `text`: its exit status and everything it printed.
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let mut said = String::from_utf8_lossy(&o.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&o.stderr));
    (o.status.success(), said)
}

#[test]
fn scrape_during_traffic_passes_promtool() {
    if !precheck() {
        return;
    }
    if !promtool_found() {
        skip_or_fail("promtool not found (scripts/deps installs the prometheus package)");
        return;
    }
    let mut lab = Lab::build(2).unwrap();
    lab.start(&format!(
        "{}{}",
        lab::base_config(2),
        lab::nat_service("tcp", 80, "rr", &[(0, 80, 1), (1, 80, 1)])
    ))
    .unwrap();
    let _http = http_servers(&lab, 80);
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let client = lab.client.spawn_thread(move || {
        let mut n = 0;
        while stop_rx.try_recv().is_err() {
            traffic::http_split(lab::vip(80), 4, Duration::from_secs(5)).unwrap();
            n += 4;
        }
        n
    });
    let mut body = String::new();
    let moving = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        body = scrape(&lab).1;
        value(&body, "tapvs_connections_created_total").is_some_and(|v| v > 0.0)
    });
    assert!(moving, "{body}");
    let (status, during) = scrape(&lab);
    stop_tx.send(()).unwrap();
    assert!(client.join().unwrap() > 0);
    assert_eq!(status, 200);
    let (ok, said) = promtool_check(&during);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics:\n{said}\n{during}"
    );
    for series in [
        "tapvs_frames_total{direction=\"in\"}",
        "tapvs_frames_total{direction=\"out\"}",
        "tapvs_frame_bytes_total{direction=\"in\"}",
        "tapvs_tcp_resets_sent_total",
        "tapvs_arp_replies_sent_total",
        "tapvs_drops_total{reason=\"no_route\"}",
        "tapvs_parse_drops_total{reason=\"bad_ip_checksum\"}",
        "tapvs_connections{state=\"SYN_RECV\"}",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            value(&during, series).is_some(),
            "{series} missing:\n{during}"
        );
    }
    assert!(
        during.lines().any(|l| l.starts_with("tapvs_build_info{")
            && l.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && l.ends_with(" 1")),
        "{during}"
    );
    assert!(!during.contains("direction=\"rx\""), "{during}");
}

#[test]
fn deleted_service_series_disappear() {
    if !precheck() {
        return;
    }
    let lab = {
        let mut lab = Lab::build(1).unwrap();
        lab.start(&lab::base_config(2)).unwrap();
        lab
    };
    let _http = http_servers(&lab, 80);
    let run = |args: &str| {
        let args: Vec<String> = args.split_whitespace().map(String::from).collect();
        let r = lab.daemon().execute(&args, "");
        assert_eq!(r.code, 0, "{args:?}: {r:?}");
    };
    let (vip, rs1) = (lab::VIP.to_string(), lab::real_addr(0));
    run(&format!("-A -t {vip}:80 -s rr"));
    run(&format!("-a -t {vip}:80 -r {rs1}:80 -m"));
    run(&format!("-A -t {vip}:81 -s rr"));
    run(&format!("-a -t {vip}:81 -r {rs1}:80 -m"));
    lab.client
        .run(|| traffic::http_split(lab::vip(80), 3, Duration::from_secs(5)))
        .unwrap();
    let svc80 = format!("service=\"{vip}:80\"");
    let svc81 = format!("service=\"{vip}:81\"");
    let mut body = String::new();
    assert!(
        wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
            body = scrape(&lab).1;
            body.lines()
                .any(|l| l.starts_with("tapvs_real_packets_total") && l.contains(&svc80))
        }),
        "{body}"
    );
    assert!(body.contains(&svc81), "{body}");
    run(&format!("-D -t {vip}:80"));
    let after = scrape(&lab).1;
    assert!(
        !after.contains(&svc80),
        "series of the deleted service remain:\n{after}"
    );
    assert!(after.contains(&svc81), "{after}");
    run(&format!("-d -t {vip}:81 -r {rs1}:80"));
    let after = scrape(&lab).1;
    assert!(
        !after.contains(&format!("real=\"{rs1}:80\"")),
        "series of the deleted real server remain:\n{after}"
    );
    assert!(
        value(
            &after,
            &format!("tapvs_service_connections_total{{protocol=\"tcp\",{svc81}}}")
        )
        .is_some(),
        "{after}"
    );
}

#[test]
fn state_gauge_returns_to_zero_after_expiry() {
    if !precheck() {
        return;
    }
    let mut lab = Lab::build(1).unwrap();
    lab.start(&format!(
        "{}\n[timeouts]\nudp = 1\n\n{}",
        lab::base_config(2),
        lab::nat_service("udp", 53, "rr", &[(0, 5353, 1)])
    ))
    .unwrap();
    let _echo = lab.reals[0]
        .run(|| UdpEcho::start(any(5353), "rs1"))
        .unwrap();
    let reply = lab
        .client
        .run(|| traffic::udp_request(lab::vip(53), "x", Duration::from_secs(3)))
        .unwrap();
    assert_eq!(reply, "rs1:x");
    let udp = "tapvs_connections{state=\"UDP\"}";
    let mut body = String::new();
    assert!(
        wait_until(Duration::from_secs(3), Duration::from_millis(20), || {
            body = scrape(&lab).1;
            value(&body, udp) == Some(1.0)
        }),
        "{body}"
    );
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            body = scrape(&lab).1;
            value(&body, udp) == Some(0.0)
        }),
        "the UDP gauge did not return to 0:\n{body}"
    );
    assert!(
        value(&body, "tapvs_connections_expired_total").is_some_and(|v| v >= 1.0),
        "{body}"
    );
}
