//! Floods against tapvs in the lab topology (issue 20, "Done when"): hping3 from a second client
//! namespace with random sources, for 20 s at the highest rate it reaches, while a legitimate
//! client in the first client namespace keeps making requests (one per connection or datagram,
//! short timeouts). Asserted: >= 90 % of the legitimate requests succeed during the flood and
//! all of them in the 5 s after it; printed: success and p99 per phase, the packets hping3 sent
//! and tapvs read, evictions, live connections, the process's RSS before and after (tapvs runs
//! in-process here, so the test's own few MiB are included).
//!
//! The floods run one at a time (a lock), since they share the machine's cores.

mod common;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use common::flood::{
    have_hping3, packets_transmitted, rss_kib, tx_dropped, Flood, Legit, Phase, SynCounter,
};
use common::lab::{self, Lab, CLIENT, VIP};
use tapvs::datapath::stats::Stats;
use tapvs_lab::netns::{precheck, wait_until};
use tapvs_lab::traffic::{http_get, udp_request, UdpEcho};

/// One flood at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// How long each flood runs.
const FLOOD: Duration = Duration::from_secs(20);
/// Legitimate traffic before the flood, and the window after it that must be all successes.
const BEFORE: Duration = Duration::from_secs(3);
const AFTER: Duration = Duration::from_secs(5);
/// The table bound: small, so that the floods run the pressure path.
const MAX_CONNS: usize = 10_000;
/// Pause between two legitimate requests.
const GAP: Duration = Duration::from_millis(20);

/// The lab's config with `MAX_CONNS`, two workers, a TCP service on :80 and a UDP service on
/// :53 (NAT, rr over both real servers), plus `extra` (service keys, e.g. `synproxy = true`,
/// for the TCP service).
fn config(extra: &str) -> String {
    let mut text = lab::base_config(2).replace(
        "max_connections = 100000",
        &format!("max_connections = {MAX_CONNS}"),
    );
    let mut tcp = lab::nat_service("tcp", 80, "rr", &[(0, 80, 1), (1, 80, 1)]);
    if !extra.is_empty() {
        tcp = tcp.replacen(
            "scheduler = \"rr\"\n",
            &format!("scheduler = \"rr\"\n{extra}\n"),
            1,
        );
    }
    text.push_str(&tcp);
    text.push_str(&lab::nat_service(
        "udp",
        53,
        "rr",
        &[(0, 5353, 1), (1, 5353, 1)],
    ));
    text
}

/// The lab with HTTP servers on :80 and UDP echo servers on :5353, and a second client
/// namespace for the flood; `None` (test skipped) without root namespaces or hping3.
fn setup(extra: &str) -> Option<(Lab, Vec<tapvs_lab::traffic::HttpServer>, Vec<UdpEcho>)> {
    if !precheck() {
        return None;
    }
    if !have_hping3() {
        tapvs_lab::netns::skip_or_fail("hping3 is not installed (scripts/deps installs it)");
        return None;
    }
    let mut lab = Lab::build(2).expect("lab");
    lab.add_clients(1).expect("flood client");
    lab.start(&config(extra)).expect("tapvs");
    let http = common::http_servers(&lab, 80);
    let udp: Vec<UdpEcho> = lab
        .reals
        .iter()
        .enumerate()
        .map(|(i, rs)| {
            let name = format!("rs{}", i + 1);
            rs.run(move || UdpEcho::start(common::any(5353), &name))
                .expect("udp echo")
        })
        .collect();
    // Ready: a request through the VIP answers (bounded).
    let ready = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        lab.client
            .run(|| http_get(lab::vip(80), "/", Duration::from_secs(1)).is_ok())
    });
    assert!(ready, "no answer through the VIP before the flood");
    Some((lab, http, udp))
}

/// One HTTP request on a new connection, 2 s at most (a lost SYN is retransmitted after 1 s).
fn http_ok(vip: SocketAddr) -> bool {
    http_get(vip, "/", Duration::from_secs(2)).is_ok_and(|(code, _)| code == 200)
}

/// One UDP request from a new socket, 1 s at most over its attempts.
fn udp_ok(vip: SocketAddr) -> bool {
    udp_request(vip, "hello", Duration::from_secs(1)).is_ok_and(|r| r.ends_with(":hello"))
}

/// What the test prints and asserts about one flood.
struct Outcome {
    name: &'static str,
    before: Phase,
    during: Phase,
    after: Phase,
}

impl Outcome {
    fn of(
        name: &'static str,
        samples: &[common::flood::Sample],
        start: Duration,
        end: Duration,
    ) -> Outcome {
        Outcome {
            name,
            before: Phase::of(samples, Duration::ZERO, start),
            during: Phase::of(samples, start, end),
            after: Phase::of(samples, end, end + AFTER),
        }
    }

    fn print(&self) {
        eprintln!(
            "  {}: before {}; during {}; after {}",
            self.name, self.before, self.during, self.after
        );
    }

    #[track_caller]
    fn assert(&self) {
        assert!(
            self.during.n >= 50,
            "{}: too few requests during the flood: {}",
            self.name,
            self.during
        );
        assert!(
            self.during.success() >= 0.90,
            "{}: during the flood: {}",
            self.name,
            self.during
        );
        assert!(
            self.after.n >= 20,
            "{}: too few requests after the flood: {}",
            self.name,
            self.after
        );
        assert_eq!(
            self.after.ok, self.after.n,
            "{}: after the flood: {}",
            self.name, self.after
        );
    }
}

/// What [`run_flood`] returns.
struct Flooded {
    /// Per legitimate client.
    outcomes: Vec<Outcome>,
    /// The daemon's stats when the flood started, when it ended, and [`AFTER`] later.
    stats0: Stats,
    stats1: Stats,
    stats2: Stats,
}

/// Runs `hping3 ARGS` from the flood client for [`FLOOD`] while `legit` loops run, then
/// [`AFTER`]; prints the figures and returns them.
fn run_flood(lab: &Lab, args: &[&str], legit: Vec<(&'static str, Legit)>) -> Flooded {
    let pid = std::process::id();
    std::thread::sleep(BEFORE); // legitimate traffic alone: the baseline phase
    let stats0 = lab.daemon().stats();
    let rss0 = rss_kib(pid);
    let tap_drops0 = tx_dropped(&lab.director, lab::EXT_TAP);
    let start = legit[0].1.now();
    let flood = Flood::start(&lab.clients[0], args);
    // The flood runs its time (bounded; it only ends early if hping3 fails).
    wait_until(FLOOD, Duration::from_millis(200), || !flood.running());
    let report = flood.stop();
    let end = legit[0].1.now();
    let stats1 = lab.daemon().stats();
    let rss1 = rss_kib(pid);
    let tap_drops = tx_dropped(&lab.director, lab::EXT_TAP) - tap_drops0;
    std::thread::sleep(AFTER + Duration::from_millis(200));
    let stats2 = lab.daemon().stats();
    let outcomes: Vec<Outcome> = legit
        .into_iter()
        .map(|(name, l)| {
            let s = l.finish();
            Outcome::of(name, &s, start, end)
        })
        .collect();
    eprintln!(
        "flood `hping3 {}`: {:.1} s, {} packets sent ({:.0}/s), {} frames read by tapvs, {} dropped by the client-side TAP (queue full)",
        args.join(" "),
        report.ran.as_secs_f64(),
        report.sent,
        report.sent as f64 / report.ran.as_secs_f64(),
        stats1.rx_frames - stats0.rx_frames,
        tap_drops
    );
    eprintln!(
        "  evicted: embryonic {}, udp_unreplied {}, closing {}; pressure episodes {}; prefix_rate_limit {}, conn_table_full {}, tcp_no_connection {}",
        stats1.conns_evicted_embryonic,
        stats1.conns_evicted_udp,
        stats1.conns_evicted_closing,
        stats1.pressure_episodes,
        stats1.dropped("prefix_rate_limit"),
        stats1.dropped("conn_table_full"),
        stats1.dropped("tcp_no_connection"),
    );
    eprintln!(
        "  live connections: before {}, at the end {}, {} s later {}; RSS {} KiB before, {} KiB after",
        stats0.live_connections(),
        stats1.live_connections(),
        AFTER.as_secs(),
        stats2.live_connections(),
        rss0,
        rss1
    );
    for o in &outcomes {
        o.print();
    }
    assert!(report.sent > 0, "hping3 sent nothing");
    Flooded {
        outcomes,
        stats0,
        stats1,
        stats2,
    }
}

#[test]
fn hping_statistics_and_phases_parse() {
    let text = "--- 207.175.44.110 hping statistic ---\n1234567 packets transmitted, 0 packets received, 100% packet loss\n";
    assert_eq!(packets_transmitted(text), Some(1_234_567));
    assert_eq!(packets_transmitted("nothing"), None);
    let ms = Duration::from_millis;
    let samples: Vec<common::flood::Sample> = (0..100)
        .map(|i| common::flood::Sample {
            at: ms(i * 10),
            ok: i % 10 != 0,
            took: ms(i),
        })
        .collect();
    let p = Phase::of(&samples, ms(0), ms(1000));
    assert_eq!((p.n, p.ok, p.p99), (100, 90, ms(98)));
    assert_eq!(Phase::of(&samples, ms(2000), ms(3000)).n, 0);
}

/// The flood's entries, made under pressure, lived `[defence] pressure_timeout` (5 s): the
/// flood filled the table to its high-water mark, and 5 s after it less than half of that is
/// left (the legitimate clients' entries: replied UDP for 300 s, TIME_WAIT for 120 s).
#[track_caller]
fn assert_recovered(f: &Flooded) {
    let (end, later) = (f.stats1.live_connections(), f.stats2.live_connections());
    assert!(
        end >= MAX_CONNS as u64 * 8 / 10,
        "the flood did not fill the table: {end}"
    );
    assert!(
        later < end / 2,
        "{AFTER:?} after the flood {later} of {end} connections are left"
    );
}

/// SYN flood, SYNPROXY off, `max_connections = 10000` (5,000 per worker): the table comes under
/// pressure, flood entries are evicted for new ones (the legitimate client's included) and live
/// 5 s; nothing is refused for a full table.
#[test]
fn syn_flood_without_synproxy_keeps_legitimate_clients_served() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((lab, _http, _udp)) = setup("") else {
        return;
    };
    let limit = BEFORE + FLOOD + AFTER + Duration::from_secs(10);
    let http = Legit::start(&lab.client, GAP, limit, || http_ok(lab::vip(80)));
    let vip = VIP.to_string();
    let f = run_flood(
        &lab,
        &["-S", "--flood", "--rand-source", "-p", "80", &vip],
        vec![("http", http)],
    );
    let stats = &f.stats1;
    assert!(
        stats.conns_evicted_embryonic > 0,
        "the pressure path did not run"
    );
    assert_eq!(stats.dropped("conn_table_full"), 0);
    assert_recovered(&f);
    for o in &f.outcomes {
        o.assert();
    }
}

/// UDP flood at the UDP service, `max_connections = 10000`: unreplied entries are evicted for
/// new ones; legitimate UDP (request/response) and TCP clients keep being served.
#[test]
fn udp_flood_keeps_legitimate_udp_and_tcp_clients_served() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((lab, _http, _udp)) = setup("") else {
        return;
    };
    let limit = BEFORE + FLOOD + AFTER + Duration::from_secs(10);
    let udp = Legit::start(&lab.client, GAP, limit, || udp_ok(lab::vip(53)));
    let http = Legit::start(&lab.client, GAP, limit, || http_ok(lab::vip(80)));
    let vip = VIP.to_string();
    let f = run_flood(
        &lab,
        &["--udp", "--flood", "--rand-source", "-p", "53", &vip],
        vec![("udp", udp), ("http", http)],
    );
    let stats = &f.stats1;
    assert!(stats.conns_evicted_udp > 0, "the pressure path did not run");
    assert_eq!(stats.dropped("conn_table_full"), 0);
    assert_recovered(&f);
    for o in &f.outcomes {
        o.assert();
    }
}

/// SYN flood against a service with `synproxy = true`: no flood SYN reaches a real server, the
/// connection count stays flat and memory does not grow; legitimate success and p99 with and
/// without the flood.
#[test]
fn syn_flood_with_synproxy_reaches_no_real_server() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let Some((lab, _http, _udp)) = setup("synproxy = true") else {
        return;
    };
    let counters: Vec<SynCounter> = lab
        .reals
        .iter()
        .map(|rs| SynCounter::install(rs, CLIENT, 80))
        .collect();
    let limit = BEFORE + FLOOD + AFTER + Duration::from_secs(10);
    let http = Legit::start(&lab.client, GAP, limit, || http_ok(lab::vip(80)));
    let vip = VIP.to_string();
    let rss0 = rss_kib(std::process::id());
    let Flooded {
        outcomes,
        stats0,
        stats1,
        ..
    } = run_flood(
        &lab,
        &["-S", "--flood", "--rand-source", "-p", "80", &vip],
        vec![("http", http)],
    );
    let rss1 = rss_kib(std::process::id());
    let (legit, others) = counters
        .iter()
        .map(SynCounter::count)
        .fold((0, 0), |a, c| (a.0 + c.0, a.1 + c.1));
    eprintln!(
        "  SYNs at the real servers: {legit} from the legitimate client, {others} from others; RSS {rss0} -> {rss1} KiB"
    );
    assert!(legit > 0, "the SYN counters counted nothing");
    assert_eq!(others, 0, "flood SYNs reached the real servers");
    // Flat: no more entries than the legitimate requests made meanwhile (each one connection,
    // TIME_WAIT for 120 s), give or take 50.
    let during = outcomes[0].during.n as u64;
    assert!(
        stats1.live_connections() <= stats0.live_connections() + during + 50,
        "connections grew: {} -> {} with {during} legitimate requests",
        stats0.live_connections(),
        stats1.live_connections()
    );
    assert!(rss1 < rss0 + 16 * 1024, "RSS grew: {rss0} -> {rss1} KiB");
    for o in &outcomes {
        o.assert();
    }
}
