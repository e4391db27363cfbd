//! The Prometheus endpoint. On each scrape of `/metrics` the workers' published counters are
//! folded and recorded, with absolute values, into a fresh recorder of the `metrics` crate's
//! Prometheus exporter (used locally rather than installed globally, so several daemons can
//! live in one process), which then renders the exposition text. Building the recorder per
//! scrape makes the output a view of the current state: series of deleted services and real
//! servers disappear on the next scrape, and every gauge is set, zero included. Nothing here
//! runs on the data path: workers only count into their own plain counters.
//!
//! Names follow Prometheus conventions (`tapvs_` prefix, `_total` for counters, bytes and
//! seconds as base units, HELP text on every metric); one label vocabulary: `direction` is
//! `in` (client to server, or frames read) or `out` (server to client, or frames written);
//! real-server series carry `protocol`, `service` and `real` labels. The standard `process_*`
//! metrics are read from `/proc/self` and rendered after the exporter's text (the `metrics`
//! crate's counters are integers; CPU seconds are not).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, gauge, with_local_recorder};
use metrics_exporter_prometheus::PrometheusBuilder;
use modes::packet::DropReason;

use crate::control::shared::Shared;
use crate::control::socket;
use crate::control::table::sock;
use crate::datapath::stats::{Counters, Drop, Traffic};
use crate::datapath::tcp_state::State;

/// Counters: name and HELP text.
const COUNTERS: &[(&str, &str)] = &[
    (
        "tapvs_frames_total",
        "Ethernet frames read (direction=in) and written (direction=out) on the TAP ports.",
    ),
    (
        "tapvs_frame_bytes_total",
        "Bytes of Ethernet frames read (in) and written (out), without the virtio-net header.",
    ),
    (
        "tapvs_gso_frames_received_total",
        "GSO super-frames read from the TAP ports.",
    ),
    (
        "tapvs_partial_checksum_frames_received_total",
        "Frames read with a partial checksum (NEEDS_CSUM).",
    ),
    (
        "tapvs_forwarded_packets_total",
        "Packets forwarded client to server (in) and server to client (out).",
    ),
    (
        "tapvs_redirected_frames_total",
        "Frames handed to the worker that owns their connection.",
    ),
    ("tapvs_arp_replies_sent_total", "ARP replies sent."),
    (
        "tapvs_icmp_echo_replies_sent_total",
        "ICMP echo replies sent.",
    ),
    ("tapvs_tcp_resets_sent_total", "TCP RSTs sent."),
    ("tapvs_icmp_errors_sent_total", "ICMP errors sent."),
    ("tapvs_toa_added_total", "FullNAT: TOA options inserted."),
    (
        "tapvs_toa_skipped_total",
        "FullNAT: TOA options that did not fit (the packet went without).",
    ),
    (
        "tapvs_tun_gso_segments_total",
        "TUN: segments cut from GSO super-frames before encapsulation.",
    ),
    ("tapvs_connections_created_total", "Connections created."),
    ("tapvs_connections_expired_total", "Connections expired."),
    (
        "tapvs_icmp_ratelimited_total",
        "ICMP errors not sent: over the [defence] ICMP rate limits.",
    ),
    (
        "tapvs_synproxy_syn_cookies_sent_total",
        "SYNPROXY: syncookie SYN/ACKs sent to clients.",
    ),
    (
        "tapvs_synproxy_ack_valid_total",
        "SYNPROXY: client ACKs with a valid cookie.",
    ),
    (
        "tapvs_synproxy_syns_sent_total",
        "SYNPROXY: SYNs sent to real servers (retransmissions included).",
    ),
    (
        "tapvs_synproxy_syn_retries_total",
        "SYNPROXY: SYNs retransmitted to real servers.",
    ),
    (
        "tapvs_synproxy_established_total",
        "SYNPROXY: handshakes completed by the real server's SYN/ACK.",
    ),
    (
        "tapvs_synproxy_server_resets_total",
        "SYNPROXY: handshakes refused by the real server (RST forwarded).",
    ),
    (
        "tapvs_synproxy_timeouts_total",
        "SYNPROXY: handshakes given up after the last SYN retransmission.",
    ),
    (
        "tapvs_synproxy_reused_total",
        "SYNPROXY: TIME_WAIT/CLOSE connections replaced by a valid-cookie ACK.",
    ),
    (
        "tapvs_connections_evicted_total",
        "Connections evicted under table pressure, by class (embryonic, udp_unreplied, closing).",
    ),
    (
        "tapvs_table_pressure_episodes_total",
        "Times a worker's connection table came under pressure (above [defence] pressure_high).",
    ),
    (
        "tapvs_worker_syscalls_total",
        "System calls the workers made for their I/O (poll, read, write, io_uring_enter, doorbells).",
    ),
    (
        "tapvs_worker_wakeups_total",
        "Rounds of the workers' loops, each after one wait for work.",
    ),
    (
        "tapvs_nd_replies_sent_total",
        "IPv6 Neighbour Advertisements sent in answer to solicitations.",
    ),
    (
        "tapvs_sync_skipped_ipv6_total",
        "Connection updates the sync master did not send: mixed families (NAT64), which sync v1 cannot express.",
    ),
    (
        "tapvs_drops_total",
        "Frames dropped by the data path, by reason.",
    ),
    (
        "tapvs_parse_drops_total",
        "Frames dropped because they failed to parse, by reason.",
    ),
    (
        "tapvs_service_connections_total",
        "Connections scheduled for the virtual service.",
    ),
    (
        "tapvs_service_packets_total",
        "Packets of the virtual service, client to server (in) and server to client (out).",
    ),
    (
        "tapvs_service_bytes_total",
        "IP bytes of the virtual service, client to server (in) and server to client (out).",
    ),
    (
        "tapvs_real_connections_total",
        "Connections scheduled to the real server.",
    ),
    (
        "tapvs_real_packets_total",
        "Packets of the real server, client to server (in) and server to client (out).",
    ),
    (
        "tapvs_real_bytes_total",
        "IP bytes of the real server, client to server (in) and server to client (out).",
    ),
    (
        "tapvs_real_health_transitions_total",
        "Health-check verdict changes of the real server.",
    ),
    (
        "tapvs_capture_frames_total",
        "Frames delivered to tapvs capture clients.",
    ),
    (
        "tapvs_capture_dropped_frames_total",
        "Frames a capture matched but could not keep (no free slot or a full ring).",
    ),
];

/// Gauges: name and HELP text.
const GAUGES: &[(&str, &str)] = &[
    (
        "tapvs_build_info",
        "Build of the running daemon (value 1): version, target architecture and OS, profile.",
    ),
    ("tapvs_connections", "Live connections by IPVS state."),
    (
        "tapvs_table_pressure_workers",
        "Workers whose connection table is under pressure now.",
    ),
    (
        "tapvs_steering_fallback",
        "1 when eBPF steering failed and the ports fell back to the kernel's flow steering (the log says why), else 0.",
    ),
    (
        "tapvs_real_active_connections",
        "Connections of the real server in ESTABLISHED (ipvsadm ActiveConn).",
    ),
    (
        "tapvs_real_inactive_connections",
        "Connections of the real server in other states (ipvsadm InActConn).",
    ),
    (
        "tapvs_real_weight",
        "Weight of the real server as the scheduler uses it.",
    ),
    (
        "tapvs_real_up",
        "1 if the real server is available and not failed by health checks, else 0.",
    ),
];

/// A metric's one label: name and value.
type Label = (&'static str, &'static str);

/// The data-path scalars as exported: metric name, label (`direction` or `class`) and value. The exhaustive
/// destructuring makes a new field of [`Traffic`] (and so of the exit JSON) a compile error here
/// until it is exported.
fn scalars(t: &Traffic) -> [(&'static str, Option<Label>, u64); 35] {
    let Traffic {
        rx_frames,
        rx_bytes,
        tx_frames,
        tx_bytes,
        rx_gso,
        rx_partial_csum,
        fwd_in,
        fwd_out,
        redirected,
        arp_replies,
        echo_replies,
        rst_sent,
        icmp_errors_sent,
        toa_added,
        toa_skipped,
        segments,
        conns_created,
        conns_expired,
        icmp_ratelimited,
        synproxy_syn_cookies_sent,
        synproxy_ack_valid,
        synproxy_syns_sent,
        synproxy_syn_retries,
        synproxy_established,
        synproxy_server_rst,
        synproxy_timeouts,
        synproxy_reused,
        conns_evicted_embryonic,
        conns_evicted_udp,
        conns_evicted_closing,
        pressure_episodes,
        // A gauge, recorded by `record_datapath`.
        pressure_workers: _,
        syscalls,
        wakeups,
        nd_replies,
        sync_skipped_v6,
    } = *t;
    let dir = |d| Some(("direction", d));
    let class = |c| Some(("class", c));
    [
        ("tapvs_frames_total", dir("in"), rx_frames),
        ("tapvs_frames_total", dir("out"), tx_frames),
        ("tapvs_frame_bytes_total", dir("in"), rx_bytes),
        ("tapvs_frame_bytes_total", dir("out"), tx_bytes),
        ("tapvs_gso_frames_received_total", None, rx_gso),
        (
            "tapvs_partial_checksum_frames_received_total",
            None,
            rx_partial_csum,
        ),
        ("tapvs_forwarded_packets_total", dir("in"), fwd_in),
        ("tapvs_forwarded_packets_total", dir("out"), fwd_out),
        ("tapvs_redirected_frames_total", None, redirected),
        ("tapvs_arp_replies_sent_total", None, arp_replies),
        ("tapvs_icmp_echo_replies_sent_total", None, echo_replies),
        ("tapvs_tcp_resets_sent_total", None, rst_sent),
        ("tapvs_icmp_errors_sent_total", None, icmp_errors_sent),
        ("tapvs_toa_added_total", None, toa_added),
        ("tapvs_toa_skipped_total", None, toa_skipped),
        ("tapvs_tun_gso_segments_total", None, segments),
        ("tapvs_connections_created_total", None, conns_created),
        ("tapvs_connections_expired_total", None, conns_expired),
        ("tapvs_icmp_ratelimited_total", None, icmp_ratelimited),
        (
            "tapvs_synproxy_syn_cookies_sent_total",
            None,
            synproxy_syn_cookies_sent,
        ),
        ("tapvs_synproxy_ack_valid_total", None, synproxy_ack_valid),
        ("tapvs_synproxy_syns_sent_total", None, synproxy_syns_sent),
        (
            "tapvs_synproxy_syn_retries_total",
            None,
            synproxy_syn_retries,
        ),
        (
            "tapvs_synproxy_established_total",
            None,
            synproxy_established,
        ),
        (
            "tapvs_synproxy_server_resets_total",
            None,
            synproxy_server_rst,
        ),
        ("tapvs_synproxy_timeouts_total", None, synproxy_timeouts),
        ("tapvs_synproxy_reused_total", None, synproxy_reused),
        (
            "tapvs_connections_evicted_total",
            class("embryonic"),
            conns_evicted_embryonic,
        ),
        (
            "tapvs_connections_evicted_total",
            class("udp_unreplied"),
            conns_evicted_udp,
        ),
        (
            "tapvs_connections_evicted_total",
            class("closing"),
            conns_evicted_closing,
        ),
        (
            "tapvs_table_pressure_episodes_total",
            None,
            pressure_episodes,
        ),
        ("tapvs_worker_syscalls_total", None, syscalls),
        ("tapvs_worker_wakeups_total", None, wakeups),
        ("tapvs_nd_replies_sent_total", None, nd_replies),
        ("tapvs_sync_skipped_ipv6_total", None, sync_skipped_v6),
    ]
}

/// Registers the HELP text of every metric with the current recorder.
fn describe() {
    for &(name, help) in COUNTERS {
        describe_counter!(name, help);
    }
    for &(name, help) in GAUGES {
        describe_gauge!(name, help);
    }
}

/// Records what does not depend on the service table: build info and the folded data-path
/// counters (every drop reason and connection state, zeros included).
fn record_datapath(total: &Counters) {
    gauge!(
        "tapvs_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "arch" => std::env::consts::ARCH,
        "os" => std::env::consts::OS,
        "profile" => if cfg!(debug_assertions) { "debug" } else { "release" },
    )
    .set(1.0);
    for (name, direction, v) in scalars(&total.traffic) {
        match direction {
            Some((l, d)) => counter!(name, l => d).absolute(v),
            None => counter!(name).absolute(v),
        }
    }
    gauge!("tapvs_table_pressure_workers").set(total.pressure_workers as f64);
    for d in Drop::ALL {
        counter!("tapvs_drops_total", "reason" => d.as_str()).absolute(total.drops[d as usize]);
    }
    for r in DropReason::ALL {
        counter!("tapvs_parse_drops_total", "reason" => r.as_str())
            .absolute(total.parse_drops[r as usize]);
    }
    for s in State::ALL {
        gauge!("tapvs_connections", "state" => s.name()).set(total.conn_states[s as usize] as f64);
    }
}

/// Records the services and real servers of the live table.
fn record_table(shared: &Shared) {
    let listing = socket::listing(shared);
    let table = shared.table.lock().unwrap_or_else(|e| e.into_inner());
    record_services(&listing, &table);
}

/// Records the services and real servers of `listing` (counters filled in) with the health
/// and availability `table` knows of them. Addresses are labelled as `SocketAddr` prints
/// them (`10.0.0.1:80`, `[2001:db8::1]:80`).
fn record_services(listing: &tapvs_adm::Listing, table: &crate::control::table::Table) {
    // Real servers taken out by health checks are absent from the listing: still report them.
    for s in &table.listing().services {
        let key = (s.proto, sock(s.addr, s.port));
        for d in &s.dests {
            let daddr = sock(d.addr, d.port);
            let (Some(h), flips) = table.health(key, daddr) else {
                continue;
            };
            if h.down && !h.inhibit_on_failure {
                let l = [
                    ("protocol", s.proto.name().to_ascii_lowercase()),
                    ("service", sock(s.addr, s.port).to_string()),
                    ("real", sock(d.addr, d.port).to_string()),
                ];
                gauge!("tapvs_real_up", &l).set(0.0);
                counter!("tapvs_real_health_transitions_total", &l).absolute(flips);
            }
        }
    }
    for s in &listing.services {
        let proto = s.proto.name().to_ascii_lowercase();
        let svc = sock(s.addr, s.port).to_string();
        let key = (s.proto, sock(s.addr, s.port));
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
            let real = sock(d.addr, d.port).to_string();
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
            let daddr = sock(d.addr, d.port);
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

/// The exposition text for the current state: a fresh recorder, so only current series.
pub fn render(shared: &Shared) -> String {
    let mut total = Counters::default();
    for c in crate::control::shared::published(shared) {
        total.add(&c);
    }
    let recorder = PrometheusBuilder::new().build_recorder();
    with_local_recorder(&recorder, || {
        describe();
        record_datapath(&total);
        record_table(shared);
        let fell_back = shared
            .steering
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fell_back();
        gauge!("tapvs_steering_fallback").set(if fell_back { 1.0 } else { 0.0 });
        counter!("tapvs_capture_frames_total")
            .absolute(shared.capture.frames_total.load(Ordering::Relaxed));
        counter!("tapvs_capture_dropped_frames_total")
            .absolute(shared.capture.dropped_total.load(Ordering::Relaxed));
        crate::control::vrrp::record(shared);
    });
    let mut text = recorder.handle().render();
    process_metrics(&mut text);
    text
}

/// Appends the standard process metrics, read from `/proc/self` (nothing when unreadable).
fn process_metrics(out: &mut String) {
    let ticks = crate::sys::clock_ticks_per_second() as f64;
    let mut emit = |name: &str, kind: &str, help: &str, v: f64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n\n"
        ));
    };
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the command name (which may hold spaces), from field 3 (state) on.
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        if let (Some(utime), Some(stime)) = (field(14), field(15)) {
            emit(
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                (utime + stime) as f64 / ticks,
            );
        }
        let btime = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        if let (Some(start), Some(btime)) = (field(22), btime) {
            emit(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                btime as f64 + start as f64 / ticks,
            );
        }
        if let Some(vsize) = field(23) {
            emit(
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                vsize as f64,
            );
        }
        if let Some(rss) = field(24) {
            emit(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                (rss * crate::sys::page_size()) as f64,
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        emit(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Max open files"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        });
    if let Some(max) = max_fds {
        emit(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max as f64,
        );
    }
}

/// Largest request head (request line and headers) read from a scraper; a longer one is
/// answered 431 and the connection closed.
pub const MAX_HEAD: usize = 8 << 10;
/// Time a scraper has to send its whole request head; a slower one is answered 408.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// Time the answer may take to go out (a scraper that stops reading is cut off).
const WRITE_DEADLINE: Duration = Duration::from_secs(30);
/// Scrapes served at once, each on its own thread; one more is answered 503 at once.
pub const MAX_SCRAPES: usize = 8;

/// What reading a request head came to.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// The head, up to and including its empty line.
    Complete(usize),
    /// Longer than [`MAX_HEAD`].
    TooLarge,
    /// Not complete within [`HEAD_DEADLINE`].
    TimedOut,
    /// The client went away.
    Gone,
}

/// Reads a request head into `buf` (at most its length) by `deadline`: however slowly the
/// bytes come, the whole head must be there in time, and no more than `buf` is kept.
fn read_head(stream: &TcpStream, buf: &mut [u8], deadline: std::time::Instant) -> Head {
    use std::io::Read as _;
    let (mut have, mut searched) = (0usize, 0usize);
    loop {
        // Only what came since the last look (and the 3 bytes before it) is searched.
        let from = searched.saturating_sub(3);
        if let Some(end) = head_end(&buf[from..have]) {
            return Head::Complete(from + end);
        }
        searched = have;
        if have == buf.len() {
            return Head::TooLarge;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Head::TimedOut;
        }
        let mut r = stream;
        match r.read(&mut buf[have..]) {
            Ok(0) => return Head::Gone,
            Ok(n) => have += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Head::TimedOut
            }
            Err(_) => return Head::Gone,
        }
    }
}

/// Where the head in `b` ends (after its blank line, CRLF or bare LF), if it does.
fn head_end(b: &[u8]) -> Option<usize> {
    (0..b.len()).find_map(|i| {
        if b[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if b[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// Writes `bytes` by `deadline`.
fn write_by(stream: &TcpStream, bytes: &[u8], deadline: std::time::Instant) {
    let mut done = 0;
    while done < bytes.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || stream.set_write_timeout(Some(left)).is_err() {
            return;
        }
        let mut w = stream;
        match w.write(&bytes[done..]) {
            Ok(0) => return,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// An HTTP/1.1 answer that closes the connection.
fn response(status: &str, ctype: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Answers one scraper: reads its request head (bounded in size and time), renders.
fn answer(shared: &Shared, stream: TcpStream) {
    let mut buf = [0u8; MAX_HEAD];
    let deadline = std::time::Instant::now() + HEAD_DEADLINE;
    let text = match read_head(&stream, &mut buf, deadline) {
        Head::Complete(n) => {
            let head = String::from_utf8_lossy(&buf[..n]);
            let line = head.lines().next().unwrap_or("");
            let path = line.split_whitespace().nth(1).unwrap_or("");
            if line.starts_with("GET ") && path == "/metrics" {
                response("200 OK", "text/plain; version=0.0.4", &render(shared))
            } else {
                response("404 Not Found", "text/plain", "not found\n")
            }
        }
        Head::TooLarge => response(
            "431 Request Header Fields Too Large",
            "text/plain",
            &format!("request head over {MAX_HEAD} bytes\n"),
        ),
        Head::TimedOut => response(
            "408 Request Timeout",
            "text/plain",
            &format!("request head not received within {HEAD_DEADLINE:?}\n"),
        ),
        Head::Gone => return,
    };
    write_by(
        &stream,
        text.as_bytes(),
        std::time::Instant::now() + WRITE_DEADLINE,
    );
    // Whatever the client still sends is not read: closing resets the connection.
}

/// Serves `/metrics` on `listener` until the daemon stops: each scrape on its own thread (at
/// most [`MAX_SCRAPES`] at once; beyond that a 503 at once), so a slow or greedy client
/// delays no other; each bounded by [`MAX_HEAD`] and [`HEAD_DEADLINE`].
pub fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let _ = listener.set_nonblocking(true);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut threads: Vec<std::thread::JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let mut pfd = [crate::sys::poll_in(fd)];
        if crate::sys::poll(&mut pfd, 100).unwrap_or(0) == 0 {
            continue;
        }
        let Ok((s, _)) = listener.accept() else {
            continue;
        };
        threads.retain(|t| !t.is_finished());
        if busy.fetch_add(1, Ordering::AcqRel) >= MAX_SCRAPES {
            busy.fetch_sub(1, Ordering::AcqRel);
            // A fresh socket's send buffer takes this short answer without blocking.
            let mut w = &s;
            let _ = w.write_all(
                response(
                    "503 Service Unavailable",
                    "text/plain",
                    "too many scrapes at once; try again\n",
                )
                .as_bytes(),
            );
            continue;
        }
        let _ = s.set_nonblocking(false);
        let (sh, b) = (shared.clone(), busy.clone());
        let spawned = std::thread::Builder::new()
            .name("tapvs-scrape".into())
            .spawn(move || {
                answer(&sh, s);
                b.fetch_sub(1, Ordering::AcqRel);
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(_) => {
                busy.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
    for t in threads {
        let _ = t.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datapath_text(total: &Counters) -> String {
        let recorder = PrometheusBuilder::new().build_recorder();
        with_local_recorder(&recorder, || {
            describe();
            record_datapath(total);
        });
        recorder.handle().render()
    }

    #[test]
    fn every_exit_counter_is_exported_zeros_included() {
        let json = serde_json::to_value(Traffic::default()).unwrap();
        assert_eq!(
            json.as_object().unwrap().len(),
            scalars(&Traffic::default()).len() + 1,
            "one series per field of the exit JSON's scalars (pressure_workers: a gauge)"
        );
        let text = datapath_text(&Counters::default());
        for (name, direction, _) in scalars(&Traffic::default()) {
            let series = match direction {
                Some((l, d)) => format!("{name}{{{l}=\"{d}\"}} 0\n"),
                None => format!("{name} 0\n"),
            };
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
        for d in Drop::ALL {
            let s = format!("tapvs_drops_total{{reason=\"{}\"}} 0\n", d.as_str());
            assert!(text.contains(&s), "{s} missing:\n{text}");
        }
        for r in DropReason::ALL {
            let s = format!("tapvs_parse_drops_total{{reason=\"{}\"}} 0\n", r.as_str());
            assert!(text.contains(&s), "{s} missing:\n{text}");
        }
        for s in State::ALL {
            let s = format!("tapvs_connections{{state=\"{}\"}} 0\n", s.name());
            assert!(text.contains(&s), "{s} missing:\n{text}");
        }
        assert!(text.contains("tapvs_build_info{"), "{text}");
        assert!(text.contains("tapvs_table_pressure_workers 0\n"), "{text}");
        assert!(
            !text.contains("\"rx\"") && !text.contains("\"tx\""),
            "{text}"
        );
    }

    #[test]
    fn every_metric_has_help_and_follows_the_naming_rules() {
        let mut total = Counters::default();
        total.conn_states[State::SynRecv as usize] = 3;
        let text = datapath_text(&total);
        assert!(text.contains("tapvs_connections{state=\"SYN_RECV\"} 3\n"));
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut w = line.split_whitespace().skip(2);
            let (name, kind) = (w.next().unwrap(), w.next().unwrap());
            assert!(
                text.contains(&format!("# HELP {name} ")),
                "no HELP for {name}"
            );
            assert_eq!(kind == "counter", name.ends_with("_total"), "{line}");
        }
        for &(name, _) in COUNTERS {
            assert!(name.ends_with("_total"), "{name}");
        }
        for &(name, _) in GAUGES {
            assert!(!name.ends_with("_total"), "{name}");
        }
    }

    #[test]
    fn a_state_gauge_falls_back_to_zero() {
        let mut total = Counters::default();
        total.conn_states[State::SynRecv as usize] = 959;
        assert!(datapath_text(&total).contains("tapvs_connections{state=\"SYN_RECV\"} 959\n"));
        total.conn_states[State::SynRecv as usize] = 0;
        let text = datapath_text(&total);
        assert!(
            text.contains("tapvs_connections{state=\"SYN_RECV\"} 0\n"),
            "{text}"
        );
    }

    #[test]
    fn request_heads_are_bounded_in_size_and_time() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let deadline = || std::time::Instant::now() + Duration::from_millis(300);
        // Complete, in pieces.
        let mut c = TcpStream::connect(addr).unwrap();
        let (s, _) = l.accept().unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r").unwrap();
        let w = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            c.write_all(b"\n\r\nrest").unwrap();
            c
        });
        let mut buf = [0u8; 64];
        assert_eq!(read_head(&s, &mut buf, deadline()), Head::Complete(34));
        drop(w.join());
        // Too large for the buffer.
        let mut c = TcpStream::connect(addr).unwrap();
        let (s, _) = l.accept().unwrap();
        c.write_all(&[b'a'; 100]).unwrap();
        assert_eq!(read_head(&s, &mut buf, deadline()), Head::TooLarge);
        // Too slow: the deadline is for the whole head, not per read.
        let mut c = TcpStream::connect(addr).unwrap();
        let (s, _) = l.accept().unwrap();
        let w = std::thread::spawn(move || {
            for _ in 0..10 {
                if c.write_all(b"G").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let t0 = std::time::Instant::now();
        assert_eq!(read_head(&s, &mut buf, deadline()), Head::TimedOut);
        assert!(t0.elapsed() < Duration::from_millis(600));
        drop(s);
        let _ = w.join();
        // Gone.
        let c = TcpStream::connect(addr).unwrap();
        let (s, _) = l.accept().unwrap();
        drop(c);
        assert_eq!(read_head(&s, &mut buf, deadline()), Head::Gone);
    }

    #[test]
    fn services_and_reals_of_both_families_are_labelled() {
        let cfg = crate::config::parse(
            r#"
[[port]]
name = "int"
tap = "t0"
addresses = ["172.16.0.1/24", "2001:db8:5::1/64"]

[[service]]
protocol = "tcp"
address = "192.0.2.1:80"
[[service.real]]
address = "172.16.0.2:80"

[[service]]
protocol = "tcp"
address = "[2001:db8:f::80]:80"
[[service.real]]
address = "[2001:db8:5::2]:8080"
weight = 3
[[service.real]]
address = "[2001:db8:5::3]:8080"
"#,
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let (mut table, _) = crate::control::table::Table::from_config(&cfg).unwrap();
        let svc6 = (modes::Protocol::Tcp, "[2001:db8:f::80]:80".parse().unwrap());
        let down = crate::control::table::Health {
            down: true,
            ..Default::default()
        };
        table
            .set_health(svc6, "[2001:db8:5::3]:8080".parse().unwrap(), down)
            .unwrap();
        let recorder = PrometheusBuilder::new().build_recorder();
        with_local_recorder(&recorder, || {
            describe();
            record_services(&table.effective(), &table);
        });
        let text = recorder.handle().render();
        let v6 = r#"protocol="tcp",service="[2001:db8:f::80]:80""#;
        for series in [
            format!("tapvs_service_connections_total{{{v6}}} 0\n"),
            format!("tapvs_real_weight{{{v6},real=\"[2001:db8:5::2]:8080\"}} 3\n"),
            format!("tapvs_real_up{{{v6},real=\"[2001:db8:5::2]:8080\"}} 1\n"),
            // Taken out by its checks: absent from the listing, still reported down.
            format!("tapvs_real_up{{{v6},real=\"[2001:db8:5::3]:8080\"}} 0\n"),
            format!(
                "tapvs_real_health_transitions_total{{{v6},real=\"[2001:db8:5::3]:8080\"}} 1\n"
            ),
            r#"tapvs_real_up{protocol="tcp",service="192.0.2.1:80",real="172.16.0.2:80"} 1"#
                .to_string()
                + "\n",
        ] {
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
    }

    #[test]
    fn process_metrics_from_proc_self() {
        let mut text = String::new();
        process_metrics(&mut text);
        for name in [
            "process_cpu_seconds_total",
            "process_start_time_seconds",
            "process_virtual_memory_bytes",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
        ] {
            let v: f64 = text
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
                .parse()
                .unwrap();
            assert!(v >= 0.0, "{name} {v}");
            assert!(text.contains(&format!("# HELP {name} ")), "{text}");
        }
        let rss: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(rss > 1e6, "{rss}");
    }
}
