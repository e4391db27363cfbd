//! The Prometheus endpoint. On each scrape of `/metrics` the workers' published counters are
//! folded and recorded, with absolute values, into this daemon's own `metrics` recorder (the
//! Prometheus exporter's recorder, used locally rather than installed globally, so several
//! daemons can live in one process), which then renders the exposition text. Nothing here runs
//! on the data path: workers only count into their own plain counters.
//!
//! Names follow Prometheus conventions (`tapvs_` prefix, `_total` for counters, bytes as base
//! unit); real-server series carry `protocol`, `service` and `real` labels.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge, with_local_recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

use crate::control::shared::Shared;
use crate::control::socket;
use crate::datapath::stats::Stats;

fn record(shared: &Shared, stats: &Stats) {
    counter!("tapvs_frames_total", "direction" => "rx").absolute(stats.rx_frames);
    counter!("tapvs_frames_total", "direction" => "tx").absolute(stats.tx_frames);
    counter!("tapvs_frame_bytes_total", "direction" => "rx").absolute(stats.rx_bytes);
    counter!("tapvs_frame_bytes_total", "direction" => "tx").absolute(stats.tx_bytes);
    counter!("tapvs_forwarded_packets_total", "direction" => "in").absolute(stats.fwd_in);
    counter!("tapvs_forwarded_packets_total", "direction" => "out").absolute(stats.fwd_out);
    counter!("tapvs_connections_created_total").absolute(stats.conns_created);
    counter!("tapvs_connections_expired_total").absolute(stats.conns_expired);
    for (reason, n) in &stats.drops {
        counter!("tapvs_drops_total", "reason" => reason.clone()).absolute(*n);
    }
    for (state, n) in &stats.connections {
        gauge!("tapvs_connections", "state" => state.clone()).set(*n as f64);
    }
    let listing = socket::listing(shared);
    let table = shared.table.lock().unwrap_or_else(|e| e.into_inner());
    // Real servers taken out by health checks are absent from the listing: still report them.
    for s in &table.listing().services {
        let key = (s.proto, SocketAddrV4::new(s.addr, s.port));
        for d in &s.dests {
            let daddr = SocketAddrV4::new(d.addr, d.port);
            let (Some(h), flips) = table.health(key, daddr) else {
                continue;
            };
            if h.down && !h.inhibit_on_failure {
                let l = [
                    ("protocol", s.proto.name().to_ascii_lowercase()),
                    ("service", format!("{}:{}", s.addr, s.port)),
                    ("real", format!("{}:{}", d.addr, d.port)),
                ];
                gauge!("tapvs_real_up", &l).set(0.0);
                counter!("tapvs_real_health_transitions_total", &l).absolute(flips);
            }
        }
    }
    for s in &listing.services {
        let proto = s.proto.name().to_ascii_lowercase();
        let svc = format!("{}:{}", s.addr, s.port);
        let key = (s.proto, SocketAddrV4::new(s.addr, s.port));
        let sl = [("protocol", proto.clone()), ("service", svc.clone())];
        counter!("tapvs_service_connections_total", &sl).absolute(s.stats.conns);
        let sdir = |d: &'static str| {
            [
                ("protocol", proto.clone()),
                ("service", svc.clone()),
                ("direction", d.to_string()),
            ]
        };
        counter!("tapvs_service_packets_total", &sdir("in")).absolute(s.stats.inpkts);
        counter!("tapvs_service_packets_total", &sdir("out")).absolute(s.stats.outpkts);
        counter!("tapvs_service_bytes_total", &sdir("in")).absolute(s.stats.inbytes);
        counter!("tapvs_service_bytes_total", &sdir("out")).absolute(s.stats.outbytes);
        for d in &s.dests {
            let real = format!("{}:{}", d.addr, d.port);
            let l = [
                ("protocol", proto.clone()),
                ("service", svc.clone()),
                ("real", real.clone()),
            ];
            let dir = |d: &'static str| {
                [
                    ("protocol", proto.clone()),
                    ("service", svc.clone()),
                    ("real", real.clone()),
                    ("direction", d.to_string()),
                ]
            };
            counter!("tapvs_real_connections_total", &l).absolute(d.stats.conns);
            gauge!("tapvs_real_active_connections", &l).set(f64::from(d.active));
            gauge!("tapvs_real_inactive_connections", &l).set(f64::from(d.inactive));
            gauge!("tapvs_real_weight", &l).set(f64::from(d.weight));
            let daddr = SocketAddrV4::new(d.addr, d.port);
            let available = table.dest(key, daddr).is_some_and(|x| x.is_available());
            let (health, flips) = table.health(key, daddr);
            let up = available && health.is_none_or(|h| !h.down);
            gauge!("tapvs_real_up", &l).set(if up { 1.0 } else { 0.0 });
            counter!("tapvs_real_health_transitions_total", &l).absolute(flips);
            counter!("tapvs_real_packets_total", &dir("in")).absolute(d.stats.inpkts);
            counter!("tapvs_real_packets_total", &dir("out")).absolute(d.stats.outpkts);
            counter!("tapvs_real_bytes_total", &dir("in")).absolute(d.stats.inbytes);
            counter!("tapvs_real_bytes_total", &dir("out")).absolute(d.stats.outbytes);
        }
    }
}

/// The exposition text for the current state.
pub fn render(shared: &Shared, recorder: &PrometheusRecorder) -> String {
    let stats = crate::control::shared::fold(shared);
    with_local_recorder(recorder, || record(shared, &stats));
    recorder.handle().render()
}

fn answer(shared: &Shared, recorder: &PrometheusRecorder, stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    let mut reader = BufReader::new(&stream);
    if reader.read_line(&mut line).is_err() {
        return;
    }
    // Drain the request head.
    let mut h = String::new();
    while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
        h.clear();
    }
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let (status, body, ctype) = if line.starts_with("GET ") && path == "/metrics" {
        (
            "200 OK",
            render(shared, recorder),
            "text/plain; version=0.0.4",
        )
    } else {
        ("404 Not Found", "not found\n".to_string(), "text/plain")
    };
    let mut w = &stream;
    let _ = write!(
        w,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Serves `/metrics` on `listener` until the daemon stops.
pub fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let recorder = PrometheusBuilder::new().build_recorder();
    let _ = listener.set_nonblocking(true);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    while !shared.stop.load(Ordering::Relaxed) {
        let mut pfd = [crate::sys::poll_in(fd)];
        if crate::sys::poll(&mut pfd, 100).unwrap_or(0) == 0 {
            continue;
        }
        if let Ok((s, _)) = listener.accept() {
            let _ = s.set_nonblocking(false);
            answer(&shared, &recorder, s);
        }
    }
}
