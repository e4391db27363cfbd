//! Hot standby, the rest of keepalived's: two appliances in the lab (A: 10.0.0.11 /
//! 172.16.0.11, priority 150; B: 10.0.0.12 / 172.16.0.12, priority 100), each with a client-side
//! (VI_EXT: the VIP and the gateway 10.0.0.1) and a server-side (VI_INT: the real servers'
//! gateway 172.16.0.1) VRRP instance in one sync group.
//! - A tracked port of A goes down: both of A's instances go FAULT together, B becomes MASTER
//!   of both; the port back, A preempts both.
//! - Weighted service tracking: A's health check of the real server fails, the service loses
//!   its quorum, A's priority drops by 60 below B's and B preempts within the RFC time; the check
//!   passing again, A preempts back.
//! - Persistence templates are synced: a client's new connection through B after `kill -9` of A
//!   goes to the real server A's template named (not B's scheduler's pick), and the sync
//!   datagrams carry the template (flag 0x1000, client port 0), as tshark decodes them.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::appliance::{have, is_sync, tshark_fields, Appliance};
use common::lab::{self, Lab};
use modes::wire::ipvs_sync::{flags, SyncConn, SyncMessage};
use tapvs_lab::netns::{precheck, wait_until};

const A_EXT: &str = "10.0.0.11";
const A_INT: &str = "172.16.0.11";
const B_EXT: &str = "10.0.0.12";
const B_INT: &str = "172.16.0.12";

/// What differs between the tests' configs.
#[derive(Default)]
struct Opts {
    /// Real servers of the service (real_addr(0..n)), port 80.
    reals: usize,
    /// `persistent = 300` and `[sync]` master and backup.
    persistent: bool,
    /// A tcp health check of real server 0 on this port (quorum 1: lost when it fails).
    check_port: Option<u16>,
    /// Lines added to both VRRP instances.
    track: String,
    /// Lines added to the sync group.
    group: String,
}

/// One appliance's config: ports on the lab's bridges plus a port `trk` of its own (a TAP on
/// no bridge, for tracking), the service, VI_EXT and VI_INT in sync group G.
fn config(tag: &str, ext: &str, int: &str, prio: u8, state: &str, o: &Opts) -> String {
    let n = if tag == "a" { 1 } else { 2 };
    let socket = std::env::temp_dir().join(format!(
        "tapvs-vg-{tag}-{}-{}.sock",
        std::process::id(),
        o.reals
    ));
    let vip = lab::VIP;
    let mut reals = String::new();
    for i in 0..o.reals {
        reals.push_str(&format!(
            "\n[[service.real]]\naddress = \"{}:80\"\nforward = \"nat\"\n",
            lab::real_addr(i)
        ));
        if let (0, Some(p)) = (i, o.check_port) {
            reals.push_str(&format!(
                "[[service.real.check]]\ntype = \"tcp\"\nconnect_port = {p}\n"
            ));
        }
    }
    let health = if o.check_port.is_some() {
        "health = { delay_loop = 0.5, connect_timeout = 1, retry = 0, delay_before_retry = 0.5, warmup = 0 }"
    } else {
        ""
    };
    let (persistent, sync) = if o.persistent {
        (
            "persistent = 300",
            "[sync]\nmcast_interface = \"int\"\nsyncid = 7\nmaster = true\nbackup = true\n",
        )
    } else {
        ("", "")
    };
    format!(
        r#"workers = 2
max_connections = 10000

[control]
socket = "{socket}"

[metrics]
listen = "127.0.0.1:927{n}"

[[port]]
name = "ext"
tap = "tx{tag}"
mac = "02:74:76:00:0{n}:01"
addresses = ["{ext}/24"]
bridge = "{eb}"

[[port]]
name = "int"
tap = "ti{tag}"
mac = "02:74:76:00:0{n}:02"
addresses = ["{int}/24"]
bridge = "{ib}"

[[port]]
name = "trk"
tap = "tk{tag}"
mac = "02:74:76:00:0{n}:03"
addresses = ["192.168.7{n}.1/24"]

[[service]]
protocol = "tcp"
address = "{vip}:80"
scheduler = "rr"
{persistent}
{health}
{reals}

[[vrrp]]
name = "VI_EXT"
port = "ext"
virtual_router_id = 51
priority = {prio}
state = "{state}"
virtual_addresses = ["{vip}", "10.0.0.1"]
{track}

[[vrrp]]
name = "VI_INT"
port = "int"
virtual_router_id = 52
priority = {prio}
state = "{state}"
virtual_addresses = ["172.16.0.1"]
{track}

[[vrrp_sync_group]]
name = "G"
group = ["VI_EXT", "VI_INT"]
{group}

{sync}
"#,
        socket = socket.display(),
        eb = lab::EXT_BRIDGE,
        ib = lab::INT_BRIDGE,
        track = o.track,
        group = o.group,
    )
}

/// One test of this file at a time: two appliances each, and timing bounds.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A (150, MASTER) and B (100, BACKUP) with the same options; waits until A is MASTER and B
/// BACKUP of both instances.
fn pair(lab: &Lab, test: &str, a: &Opts, b: &Opts) -> (Appliance, Appliance) {
    let a = Appliance::start(
        lab,
        &format!("{test}-a"),
        &config("a", A_EXT, A_INT, 150, "MASTER", a),
        9271,
    );
    let b = Appliance::start(
        lab,
        &format!("{test}-b"),
        &config("b", B_EXT, B_INT, 100, "BACKUP", b),
        9272,
    );
    let t = Instant::now();
    assert!(
        a.wait_both(
            lab,
            "MASTER",
            t,
            Duration::from_secs(10),
            Duration::from_millis(50)
        )
        .is_some(),
        "A master of both"
    );
    assert!(b.both_in(lab, "BACKUP"), "B backup of both");
    (a, b)
}

/// HTTP GET / through the VIP from `ns`: the answering real server's name.
fn get(ns: &tapvs_lab::netns::Netns) -> Option<String> {
    let vip = SocketAddr::from((lab::VIP, 80));
    ns.run(|| tapvs_lab::traffic::http_get(vip, "/", Duration::from_secs(1)))
        .ok()
        .filter(|(s, _)| *s == 200)
        .map(|(_, body)| body.trim().to_string())
}

#[test]
fn sync_group_moves_together_on_a_tracked_port_fault() {
    if !precheck() {
        return;
    }
    let _one = serial();
    let started = Instant::now();
    let lab = Lab::build(1).expect("lab");
    let _servers = common::http_servers(&lab, 80);
    let flag = std::env::temp_dir().join(format!("tapvs-vg-fault-{}", std::process::id()));
    let _ = std::fs::remove_file(&flag);
    // Only VI_EXT tracks the port: VI_INT goes FAULT because its group does.
    let a_opts = Opts {
        reals: 1,
        group: format!("notify_fault = \"touch {}\"", flag.display()),
        ..Opts::default()
    };
    let mut a_text = config("a", A_EXT, A_INT, 150, "MASTER", &a_opts);
    a_text = a_text.replacen(
        "virtual_addresses = [\"207.175.44.110\", \"10.0.0.1\"]",
        "virtual_addresses = [\"207.175.44.110\", \"10.0.0.1\"]\ntrack_ports = [\"trk\"]",
        1,
    );
    assert!(a_text.contains("track_ports"), "{a_text}");
    let a = Appliance::start(&lab, "fault-a", &a_text, 9271);
    let b = Appliance::start(
        &lab,
        "fault-b",
        &config(
            "b",
            B_EXT,
            B_INT,
            100,
            "BACKUP",
            &Opts {
                reals: 1,
                ..Opts::default()
            },
        ),
        9272,
    );
    let t = Instant::now();
    assert!(
        a.wait_both(
            &lab,
            "MASTER",
            t,
            Duration::from_secs(10),
            Duration::from_millis(50)
        )
        .is_some(),
        "A master of both"
    );
    assert!(b.both_in(&lab, "BACKUP"));
    assert_eq!(get(&lab.client).as_deref(), Some("rs1"), "through A");

    // A's tracked port down.
    let t0 = Instant::now();
    lab.director
        .ip(&["link", "set", "tka", "down"])
        .expect("tka down");
    let fault = a
        .wait_both(
            &lab,
            "FAULT",
            t0,
            Duration::from_secs(3),
            Duration::from_millis(10),
        )
        .expect("both of A's instances FAULT");
    let took = b
        .wait_both(
            &lab,
            "MASTER",
            t0,
            Duration::from_secs(5),
            Duration::from_millis(10),
        )
        .expect("B master of both");
    // Tracking polls every 200 ms; B takes over Skew_Time ((256 − 100)/256 s) after A's
    // priority 0, plus a margin.
    let bound = Duration::from_millis(200 + 609 + 500);
    eprintln!("A FAULT (both) after {fault:?}, B MASTER (both) after {took:?} (bound {bound:?})");
    assert!(took <= bound, "B master after {took:?}");
    assert!(
        wait_until(Duration::from_secs(2), Duration::from_millis(20), || flag
            .exists()),
        "the group's notify_fault ran"
    );
    let group_state = |x: &Appliance, st: &str| {
        x.value(
            &lab,
            &format!("tapvs_vrrp_group_state{{group=\"G\",state=\"{st}\"}}"),
        )
    };
    assert_eq!(group_state(&a, "FAULT"), 1.0, "A's group FAULT");
    assert_eq!(group_state(&b, "MASTER"), 1.0, "B's group MASTER");
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || get(
            &lab.client
        )
        .as_deref()
            == Some("rs1")),
        "service through B"
    );

    // The port back: A leaves FAULT (BACKUP, full master-down timer) and preempts both.
    let t1 = Instant::now();
    lab.director
        .ip(&["link", "set", "tka", "up"])
        .expect("tka up");
    let back = a
        .wait_both(
            &lab,
            "MASTER",
            t1,
            Duration::from_secs(8),
            Duration::from_millis(20),
        )
        .expect("A preempts both");
    // 200 ms tracking, 3 × 1 s + (256 − 150)/256 s, a margin.
    let bound = Duration::from_millis(200 + 3414 + 500);
    eprintln!("A MASTER (both) again after {back:?} (bound {bound:?})");
    assert!(back <= bound);
    assert!(
        wait_until(Duration::from_secs(2), Duration::from_millis(20), || b
            .both_in(&lab, "BACKUP")),
        "B yields both"
    );
    let _ = std::fs::remove_file(&flag);
    eprintln!("sync group test took {:?}", started.elapsed());
}

#[test]
fn weighted_service_quorum_lets_the_backup_preempt() {
    if !precheck() {
        return;
    }
    let _one = serial();
    let started = Instant::now();
    let lab = Lab::build(1).expect("lab");
    let _servers = common::http_servers(&lab, 80);
    // A checks the real server on 8081 (a listener the test stops), B on 80 (always up).
    let listen = || {
        lab.reals[0]
            .run(|| std::net::TcpListener::bind("0.0.0.0:8081"))
            .expect("bind 8081")
    };
    let mut checked = Some(listen());
    let track = format!(
        "track_services = [{{ service = \"tcp:{}:80\", weight = -60 }}]",
        lab::VIP
    );
    let opts = |port| Opts {
        reals: 1,
        check_port: Some(port),
        track: track.clone(),
        ..Opts::default()
    };
    let (a, b) = pair(&lab, "quorum", &opts(8081), &opts(80));
    let prio = |x: &Appliance| x.value(&lab, "tapvs_vrrp_priority{instance=\"VI_EXT\"}");
    assert_eq!((prio(&a), prio(&b)), (150.0, 100.0));

    // A's check fails: quorum lost, priority 150 − 60 = 90 < 100.
    checked.take();
    let t0 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(10), || prio(
            &a
        )
            == 90.0),
        "A's priority drops by the weight"
    );
    let dropped = t0.elapsed();
    let t1 = Instant::now();
    let took = b
        .wait_both(
            &lab,
            "MASTER",
            t1,
            Duration::from_secs(8),
            Duration::from_millis(10),
        )
        .expect("B preempts both");
    // B ignores the lower adverts and takes over when its master-down timer runs out:
    // 3 × 1 s + (256 − 100)/256 s after A's last priority-150 advert, plus a margin.
    let bound = Duration::from_millis(3609 + 500);
    eprintln!("A priority 90 after {dropped:?}; B MASTER (both) {took:?} later (bound {bound:?})");
    assert!(took <= bound, "B preempted after {took:?}");
    assert!(
        wait_until(Duration::from_secs(2), Duration::from_millis(20), || a
            .both_in(&lab, "BACKUP")),
        "A yields both"
    );
    assert_eq!(prio(&b), 100.0, "B's check passes: no weight");

    // The check passes again: priority 150, A preempts back.
    checked = Some(listen());
    let t2 = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(10), || prio(
            &a
        )
            == 150.0),
        "A's priority restored"
    );
    let t3 = Instant::now();
    let back = a
        .wait_both(
            &lab,
            "MASTER",
            t3,
            Duration::from_secs(8),
            Duration::from_millis(10),
        )
        .expect("A preempts back");
    let bound = Duration::from_millis(3414 + 500);
    eprintln!(
        "A priority 150 after {:?}; A MASTER (both) {back:?} later (bound {bound:?})",
        t3 - t2
    );
    assert!(back <= bound);
    drop(checked);
    eprintln!("weighted quorum test took {:?}", started.elapsed());
}

#[test]
fn templates_are_synced_and_keep_the_client_on_its_server_after_failover() {
    if !precheck() {
        return;
    }
    if !have("tshark") {
        tapvs_lab::netns::skip_or_fail("tshark is needed (scripts/deps)");
        return;
    }
    let _one = serial();
    let started = Instant::now();
    let mut lab = Lab::build(2).expect("lab");
    lab.add_clients(2).expect("two more clients");
    let _servers = common::http_servers(&lab, 80);
    let pcap = std::env::temp_dir().join(format!("tapvs-vg-tpl-{}.pcap", std::process::id()));
    let capture = common::tshark::Capture::start(&lab.director, lab::INT_BRIDGE, is_sync);
    let opts = Opts {
        reals: 2,
        persistent: true,
        ..Opts::default()
    };
    let (mut a, b) = pair(&lab, "tpl", &opts, &opts);

    // Through A: the other client takes rr's first pick, so the client gets the second, and
    // keeps it (persistence).
    let other = get(&lab.clients[0]).expect("other client through A");
    let mine = get(&lab.client).expect("client through A");
    assert_ne!(mine, other, "rr gave the client the other server");
    for _ in 0..3 {
        assert_eq!(get(&lab.client).as_deref(), Some(mine.as_str()));
    }
    // B has A's entries: 2 templates and at least one entry per connection (ESTABLISHED).
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || b
            .value(&lab, "tapvs_sync_connections_applied_total")
            >= 7.0),
        "B applied A's entries: {}",
        b.value(&lab, "tapvs_sync_connections_applied_total")
    );
    let dropped = b.value(&lab, "tapvs_sync_connections_dropped_total");

    let t0 = Instant::now();
    a.kill9();
    let took = b
        .wait_both(
            &lab,
            "MASTER",
            t0,
            Duration::from_secs(8),
            Duration::from_millis(10),
        )
        .expect("B master of both");
    eprintln!("B MASTER (both) {took:?} after kill -9 of A");
    // The client's new connections, now through B, go to the server A's template named.
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || get(
            &lab.client
        )
        .is_some()),
        "service through B"
    );
    for _ in 0..3 {
        assert_eq!(
            get(&lab.client).as_deref(),
            Some(mine.as_str()),
            "the synced template holds through B"
        );
    }
    assert_eq!(dropped, 0.0, "no synced entry dropped");
    // Not B's own choice: a client it has no template for gets rr's first pick, the other
    // server.
    assert_eq!(
        get(&lab.clients[1]).as_deref(),
        Some(other.as_str()),
        "B's scheduler picks the other server for a new client"
    );

    let frames = capture.finish(&pcap);
    // tshark's IPVS dissector decodes the v1 entries' addresses, ports, state and timeout
    // (its flags field stays empty for v1): the templates are the entries with client port 0,
    // state NONE and the persistence timeout.
    let rows = tshark_fields(
        &pcap,
        &[
            "ipvs.caddr",
            "ipvs.cport",
            "ipvs.vport",
            "ipvs.daddr",
            "ipvs.dport",
            "ipvs.state",
            "ipvs.timeout",
        ],
    );
    let mut decoded = Vec::new();
    for r in &rows {
        let col = |i: usize| -> Vec<String> {
            r.get(i)
                .map(|c| c.split(',').map(str::to_string).collect())
                .unwrap_or_default()
        };
        for k in 0..col(0).len() {
            decoded.push((0..7).map(|i| col(i)[k].clone()).collect::<Vec<_>>());
        }
    }
    let mine_addr = lab::real_addr(if mine == "rs1" { 0 } else { 1 });
    let want: Vec<String> = [
        lab::CLIENT.to_string(),
        "0".into(),
        "80".into(),
        mine_addr.to_string(),
        "80".into(),
        "0x0000".into(),
        "300".into(),
    ]
    .to_vec();
    eprintln!(
        "{frames} sync frames, {} entries decoded by tshark",
        decoded.len()
    );
    assert!(
        decoded.contains(&want),
        "tshark shows the client's template {want:?}: {decoded:?}"
    );
    // The same datagrams through the IPVS decoder of `modes`: the flags say TEMPLATE.
    let entries: Vec<SyncConn> = pcap_frames(&pcap)
        .iter()
        .filter_map(|f| sync_payload(f))
        .flat_map(|p| {
            SyncMessage::new_checked(p)
                .map(|m| m.conns().filter_map(Result::ok).collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect();
    let _ = std::fs::remove_file(&pcap);
    let tpl: Vec<&SyncConn> = entries
        .iter()
        .filter(|e| e.flags & flags::TEMPLATE != 0)
        .collect();
    eprintln!("templates (modes decoder): {tpl:?}");
    assert!(
        tpl.iter().any(|e| e.caddr == lab::CLIENT
            && e.cport == 0
            && e.vport == 80
            && e.daddr == mine_addr
            && e.state == 0
            && e.timeout == 300
            && e.flags == flags::TEMPLATE | flags::MASQ),
        "the client's template with flag 0x1000: {tpl:?}"
    );
    assert!(
        entries
            .iter()
            .filter(|e| e.flags & flags::TEMPLATE == 0)
            .all(|e| e.cport != 0),
        "connections are not templates"
    );
    eprintln!("template sync test took {:?}", started.elapsed());
}

/// The frames of a pcap file (as `common::tshark::Capture` writes them: little-endian,
/// Ethernet).
fn pcap_frames(path: &std::path::Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).expect("read pcap");
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= b.len() {
        let len = u32::from_le_bytes(b[off + 8..off + 12].try_into().unwrap()) as usize;
        off += 16;
        let Some(f) = b.get(off..off + len) else {
            break;
        };
        out.push(f.to_vec());
        off += len;
    }
    out
}

/// The UDP payload of an Ethernet/IPv4/UDP frame.
fn sync_payload(f: &[u8]) -> Option<&[u8]> {
    let l4 = 14 + usize::from(f.get(14)? & 0x0f) * 4;
    f.get(l4 + 8..)
}
