//! Hot standby in network namespaces: two appliances share the client and server segments of
//! the lab (A: 10.0.0.11 / 172.16.0.11, B: 10.0.0.12 / 172.16.0.12), with VRRP deciding who owns
//! the VIP and the floating gateways 10.0.0.1 (the client's route to the VIP) and 172.16.0.1 (the
//! real servers' default route), and the IPVS sync daemon copying A's connections to B.
//! tshark decodes A's sync datagrams as IPVS sync v1 (`-d udp.port==8848,ipvs`) with the right
//! count, addresses, ports and state numbers; B's table holds the same connections, made without
//! scheduling. IPv6: connections to an IPv6 service through A (dual-stack lab, no VRRP) reach
//! B's table as IPv6 sync entries.

mod common;

use common::appliance::{have, is_sync, tshark_fields, Appliance};
use common::stream::{expected_digest, fill, get_on, keep_alive};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::lab::{self, Lab};
use tapvs::control::runtime::Daemon;
use tapvs_lab::netns::{precheck, wait_until};

const A_EXT: &str = "10.0.0.11";
const A_INT: &str = "172.16.0.11";
const B_EXT: &str = "10.0.0.12";
const B_INT: &str = "172.16.0.12";

/// One appliance's config: its ports on the lab's bridges, the NAT service, VRRP for the VIP
/// and the floating gateways, and the sync daemon (`sync` lines).
fn config(
    tag: &str,
    ext: &str,
    int: &str,
    prio: u8,
    state: &str,
    sync: &str,
    metrics: Option<u16>,
) -> String {
    config_fwd(tag, ext, int, prio, state, sync, metrics, "nat")
}

/// [`config`] with the services' forwarding method (`fullnat`: local address 172.16.0.100,
/// which floats with VI_INT).
#[allow(clippy::too_many_arguments)]
fn config_fwd(
    tag: &str,
    ext: &str,
    int: &str,
    prio: u8,
    state: &str,
    sync: &str,
    metrics: Option<u16>,
    fwd: &str,
) -> String {
    let head = head(
        tag,
        metrics,
        &format!("\"{ext}/24\""),
        &format!("\"{int}/24\""),
    );
    let vip = lab::VIP;
    let rs = lab::real_addr(0);
    let (lips, lip_float) = if fwd == "fullnat" {
        ("local_addresses = [\"172.16.0.100\"]", ", \"172.16.0.100\"")
    } else {
        ("", "")
    };
    format!(
        r#"{head}
[[service]]
protocol = "tcp"
address = "{vip}:80"
scheduler = "rr"
{lips}

[[service.real]]
address = "{rs}:80"
forward = "{fwd}"

[[service]]
protocol = "tcp"
address = "{vip}:5001"
scheduler = "rr"
{lips}

[[service.real]]
address = "{rs}:5001"
forward = "{fwd}"

[[vrrp]]
name = "VI_EXT"
port = "ext"
virtual_router_id = 51
priority = {prio}
state = "{state}"
virtual_addresses = ["{vip}", "10.0.0.1"]

[[vrrp]]
name = "VI_INT"
port = "int"
virtual_router_id = 52
priority = {prio}
state = "{state}"
virtual_addresses = ["172.16.0.1"{lip_float}]

[sync]
mcast_interface = "int"
syncid = 9
refresh_period = 1
{sync}
"#,
    )
}

/// The top of an appliance's config: workers, its control socket, metrics on 127.0.0.1:`metrics`
/// (or none), and its two ports on the lab's bridges with addresses `ext` and `int` (TOML list
/// items).
fn head(tag: &str, metrics: Option<u16>, ext: &str, int: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let k = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let socket =
        std::env::temp_dir().join(format!("tapvs-ha-{tag}-{}-{k}.sock", std::process::id()));
    let n = if tag == "a" { 1 } else { 2 };
    let metrics = match metrics {
        Some(p) => format!("listen = \"127.0.0.1:{p}\""),
        None => "enabled = false".to_string(),
    };
    format!(
        r#"workers = 2
max_connections = 10000

[control]
socket = "{socket}"

[metrics]
{metrics}

[[port]]
name = "ext"
tap = "tx{tag}"
mac = "02:74:76:00:0{n}:01"
addresses = [{ext}]
bridge = "{eb}"

[[port]]
name = "int"
tap = "ti{tag}"
mac = "02:74:76:00:0{n}:02"
addresses = [{int}]
bridge = "{ib}"
"#,
        socket = socket.display(),
        eb = lab::EXT_BRIDGE,
        ib = lab::INT_BRIDGE,
    )
}

/// One test of this file at a time: each runs two appliances and their traffic, and the
/// failover bounds are timing bounds.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// B's connection listing (`-L -n -c`).
fn conns(b: &Daemon) -> String {
    b.execute(&["-L".into(), "-n".into(), "-c".into()], "")
        .stdout
}

#[test]
fn sync_on_the_wire_and_the_backup_reproduces_connections() {
    if !precheck() {
        return;
    }
    if !have("tshark") {
        tapvs_lab::netns::skip_or_fail("tshark is needed (scripts/deps)");
        return;
    }
    let _one = serial();
    let started = Instant::now();
    let mut lab = Lab::build(1).expect("lab");
    let _servers = common::http_servers(&lab, 80);
    let pcap = std::env::temp_dir().join(format!("tapvs-ha-sync-{}.pcap", std::process::id()));
    let _ = std::fs::remove_file(&pcap);
    let capture = common::tshark::Capture::start(&lab.director, lab::INT_BRIDGE, is_sync);
    // A's master sync daemon is started by tapvsadm (as ipvsadm), not by its config.
    lab.start(&config("a", A_EXT, A_INT, 150, "MASTER", "", Some(9273)))
        .expect("start A");
    let adm = |d: &Daemon, line: &str| {
        let args: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        d.execute(&args, "")
    };
    let a = lab.daemon();
    assert_eq!(adm(a, "-L --daemon").stdout, "", "no daemon yet");
    let r = adm(
        a,
        "--start-daemon master --mcast-interface int --syncid 9 --sync-maxlen 1400",
    );
    assert_eq!((r.code, r.stderr.as_str()), (0, ""));
    assert_eq!(
        adm(a, "-L --daemon").stdout,
        "master sync daemon (mcast=int, syncid=9, maxlen=1400, group=224.0.0.81, port=8848, ttl=1)\n"
    );
    let again = adm(a, "--start-daemon master");
    assert_eq!(
        again.code, 1,
        "a running role cannot start twice: {again:?}"
    );
    let bad = adm(a, "--start-daemon backup --mcast-interface nope");
    assert_eq!(bad.code, 1, "{bad:?}");
    assert!(bad.stderr.contains("mcast-interface"), "{bad:?}");
    let bad = adm(a, "--start-daemon backup --syncid 300");
    assert_eq!(
        (bad.code, bad.stderr.trim()),
        (2, "illegal syncid specified")
    );
    assert_eq!(
        adm(a, "-L --daemon").stdout.lines().count(),
        1,
        "errors changed nothing"
    );
    let cfg_b = tapvs::config::parse(
        &config("b", B_EXT, B_INT, 100, "BACKUP", "backup = true", None),
        std::path::Path::new("b.toml"),
    )
    .expect("config B");
    let b = lab
        .director
        .try_run(move || Daemon::start(&cfg_b))
        .expect("netns")
        .expect("start B");

    // Through the VIP once A is master (the client's gateway 10.0.0.1 resolves to A).
    let vip = SocketAddr::from((lab::VIP, 80));
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || lab
            .client
            .run(|| tapvs_lab::traffic::http_get(vip, "/", Duration::from_secs(1)))
            .is_ok_and(|(s, _)| s == 200)),
        "no service through the VIP"
    );

    // Five keep-alive connections: each answers once, then stays open.
    let mut streams: Vec<TcpStream> = lab
        .client
        .run(|| keep_alive(vip, 5, Duration::from_secs(5)))
        .expect("keep-alive connections");
    let ports: Vec<u16> = streams
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect();

    // B's table gets them from A's sync messages: same real server, ESTABLISHED.
    let rs = lab::real_addr(0);
    let want = |port: u16| format!("{}:{port}", lab::CLIENT);
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            let l = conns(&b);
            ports.iter().all(|p| {
                l.lines().any(|x| {
                    x.contains(&format!("{} ", want(*p)))
                        && x.contains("ESTABLISHED")
                        && x.contains(&format!("{rs}:80"))
                })
            })
        }),
        "B has A's connections:\n{}",
        conns(&b)
    );
    // Each connection still works (through A).
    for s in &mut streams {
        assert_eq!(get_on(s).expect("second request"), 200);
    }
    // Closing them: B follows the state (FIN_WAIT / TIME_WAIT / CLOSE ...), never scheduling.
    drop(streams);
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            let l = conns(&b);
            // Each connection is still in B's table (so the check is not vacuous), closing.
            ports.iter().all(|p| {
                let mine: Vec<&str> = l
                    .lines()
                    .filter(|x| x.contains(&format!("{} ", want(*p))))
                    .collect();
                !mine.is_empty() && mine.iter().all(|x| !x.contains("ESTABLISHED"))
            })
        }),
        "B follows the closes:\n{}",
        conns(&b)
    );
    let (_, m) = common::scrape(&lab);
    let sent = m
        .lines()
        .find(|l| l.starts_with("tapvs_sync_messages_total{direction=\"out\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(sent >= 1.0, "A counted its sync messages:\n{m}");
    assert_eq!(adm(&b, "--stop-daemon backup").code, 0);
    assert_eq!(adm(&b, "-L --daemon").stdout, "");
    assert_eq!(adm(&b, "--stop-daemon backup").code, 1, "not running");
    drop(b);

    let frames = capture.finish(&pcap);
    eprintln!("{frames} sync frames captured on {}", lab::INT_BRIDGE);
    let rows = tshark_fields(
        &pcap,
        &[
            "ip.src",
            "ipvs.syncid",
            "ipvs.conncount",
            "ipvs.caddr",
            "ipvs.cport",
            "ipvs.vaddr",
            "ipvs.vport",
            "ipvs.daddr",
            "ipvs.dport",
            "ipvs.state",
            "ipvs.proto",
            "ipvs.timeout",
        ],
    );
    let _ = std::fs::remove_file(&pcap);
    assert!(!rows.is_empty(), "no sync datagrams captured");
    eprintln!("first datagram: {:?}", rows[0]);
    let col = |r: &Vec<String>, i: usize| -> Vec<String> {
        r.get(i)
            .map(|c| c.split(',').map(str::to_string).collect())
            .unwrap_or_default()
    };
    let mut seen_established = std::collections::HashSet::new();
    let mut seen_later = std::collections::HashSet::new();
    for r in &rows {
        assert_eq!(r[0], A_INT, "from A's own address: {r:?}");
        assert_eq!(r[1], "9", "syncid: {r:?}");
        let count: usize = r[2].parse().unwrap();
        let caddrs = col(r, 3);
        assert_eq!(
            caddrs.len(),
            count,
            "connection count matches the entries: {r:?}"
        );
        for (i, caddr) in caddrs.iter().enumerate() {
            assert_eq!(caddr, &lab::CLIENT.to_string());
            assert_eq!(col(r, 5)[i], lab::VIP.to_string());
            assert_eq!(col(r, 6)[i], "80");
            assert_eq!(col(r, 7)[i], rs.to_string());
            assert_eq!(col(r, 8)[i], "80");
            let proto = col(r, 10)[i].clone();
            assert!(proto == "6" || proto == "0x06", "protocol TCP: {r:?}");
            let cport: u16 = col(r, 4)[i].parse().unwrap();
            let state = col(r, 9)[i].clone();
            let state = u16::from_str_radix(state.trim_start_matches("0x"), 16).unwrap();
            let timeout: u32 = col(r, 11)[i].parse().unwrap();
            if state == 1 {
                assert_eq!(timeout, 900, "ESTABLISHED timeout: {r:?}");
                seen_established.insert(cport);
            } else {
                assert!(
                    [4, 5, 6, 7, 8].contains(&state),
                    "state number {state}: {r:?}"
                );
                seen_later.insert(cport);
            }
        }
    }
    for p in &ports {
        assert!(
            seen_established.contains(p),
            "port {p} synced as ESTABLISHED: {rows:?}"
        );
        assert!(seen_later.contains(p), "port {p} synced closing: {rows:?}");
    }
    eprintln!(
        "{} sync datagrams decoded by tshark; test took {:?}",
        rows.len(),
        started.elapsed()
    );
}

/// IPv6 connections made through the master reach the backup's table by the sync daemon (IPv6
/// entries): same client, VIP and real server, ESTABLISHED, then their closing states.
#[test]
fn ipv6_connections_are_synced_to_the_backup() {
    if !precheck() {
        return;
    }
    let _one = serial();
    let started = Instant::now();
    let mut lab = Lab::build_dual(1).expect("dual-stack lab");
    let _server = lab.reals[0]
        .run(|| tapvs_lab::traffic::HttpServer::start("[::]:80".parse().unwrap(), "rs6"))
        .expect("http server");
    let (ext6, int6) = (lab::EXT6.to_string(), lab::INT6.to_string());
    lab.start(&config6(
        "a",
        [A_EXT, A_INT, &ext6, &int6],
        "master = true",
        None,
    ))
    .expect("start A");
    let cfg_b = tapvs::config::parse(
        &config6(
            "b",
            [B_EXT, B_INT, "2001:db8:c::12", "2001:db8:5::12"],
            "backup = true",
            None,
        ),
        std::path::Path::new("b.toml"),
    )
    .expect("config B");
    let b = lab
        .director
        .try_run(move || Daemon::start(&cfg_b))
        .expect("netns")
        .expect("start B");

    let vip = SocketAddr::new(lab::VIP6.into(), 80);
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || lab
            .client
            .run(|| tapvs_lab::traffic::http_get(vip, "/", Duration::from_secs(1)))
            .is_ok_and(|(s, _)| s == 200)),
        "no service through the IPv6 VIP"
    );
    let streams: Vec<TcpStream> = lab
        .client
        .run(|| keep_alive(vip, 3, Duration::from_secs(5)))
        .expect("keep-alive connections");
    let ports: Vec<u16> = streams
        .iter()
        .map(|s| s.local_addr().unwrap().port())
        .collect();
    let client = |p: u16| format!("[{}]:{p} ", lab::CLIENT6);
    let vip6 = format!("[{}]:80", lab::VIP6);
    let rs6 = format!("[{}]:80", lab::real_addr6(0));
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            let l = conns(&b);
            ports.iter().all(|p| {
                l.lines().any(|x| {
                    x.contains(&client(*p))
                        && x.contains(&vip6)
                        && x.contains(&rs6)
                        && x.contains("ESTABLISHED")
                })
            })
        }),
        "B has A's IPv6 connections:\n{}",
        conns(&b)
    );
    drop(streams);
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            let l = conns(&b);
            ports.iter().all(|p| {
                let mine: Vec<&str> = l.lines().filter(|x| x.contains(&client(*p))).collect();
                !mine.is_empty() && mine.iter().all(|x| !x.contains("ESTABLISHED"))
            })
        }),
        "B follows the closes:\n{}",
        conns(&b)
    );
    drop(b);
    eprintln!(
        "{} IPv6 connections synced; test took {:?}",
        ports.len(),
        started.elapsed()
    );
}

const MB200: u64 = 200 * 1024 * 1024;
/// A real server that sends `bytes` of the stream for `seed` to its first client, then closes.
#[allow(clippy::type_complexity)]
fn download_server(
    rs: &tapvs_lab::netns::Netns,
    bytes: u64,
    seed: u64,
) -> (
    std::thread::JoinHandle<std::io::Result<()>>,
    std::sync::mpsc::Receiver<SocketAddr>,
) {
    let listener = rs
        .run(|| std::net::TcpListener::bind("0.0.0.0:5001"))
        .expect("bind 5001");
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept()?;
        let _ = tx.send(peer);
        s.set_write_timeout(Some(Duration::from_secs(60)))?;
        let mut st = seed;
        let mut buf = vec![0u8; 65536];
        let mut left = bytes;
        while left > 0 {
            fill(&mut st, &mut buf);
            let n = left.min(buf.len() as u64) as usize;
            s.write_all(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    });
    (h, rx)
}

/// Failover, NAT: A (150, master) and B (100, backup) both run the sync daemon as master and
/// backup. A client holds 50 idle keep-alive HTTP connections and downloads 200 MB through the
/// VIP; `kill -9` of A mid-transfer. B is master within 3 × advert_int + skew + 0.5 s, the
/// download completes with the same SHA-256, and every keep-alive connection answers its next
/// request (through B, from the entries A synced).
#[test]
fn failover_nat_kill_9_keeps_the_download_and_the_keep_alive_connections() {
    failover("nat");
}

/// The same with FullNAT: the real server keeps seeing the same local address and port (the
/// download's and every keep-alive connection's TCP connection on the server survives; the
/// server records the peers it saw).
#[test]
fn failover_fullnat_kill_9_keeps_local_address_and_port() {
    failover("fullnat");
}

/// `kill -9` of master `a`: backup `b` is master of both instances within 3 × advert_int +
/// skew + 0.5 s (3 × 1 s + (256 − 100)/256 s + 0.5 s).
fn kill9_and_take_over(lab: &Lab, a: &mut Appliance, b: &Appliance) {
    let t0 = Instant::now();
    a.kill9();
    let took = b
        .wait_both(
            lab,
            "MASTER",
            t0,
            Duration::from_secs(10),
            Duration::from_millis(10),
        )
        .expect("B becomes master");
    let bound = Duration::from_millis(3000 + 609 + 500);
    eprintln!("B master {took:?} after kill -9 of A (bound {bound:?})");
    assert!(took <= bound, "B master after {took:?}");
}

fn failover(fwd: &str) {
    if !precheck() {
        return;
    }
    let _one = serial();
    let started = Instant::now();
    let lab = Lab::build(1).expect("lab");
    let _servers = common::http_servers(&lab, 80);
    let both = "master = true\nbackup = true";
    let mut a = Appliance::start(
        &lab,
        &format!("{fwd}-a"),
        &config_fwd("a", A_EXT, A_INT, 150, "MASTER", both, Some(9273), fwd),
        9273,
    );
    let b = Appliance::start(
        &lab,
        &format!("{fwd}-b"),
        &config_fwd("b", B_EXT, B_INT, 100, "BACKUP", both, Some(9274), fwd),
        9274,
    );
    for inst in ["VI_EXT", "VI_INT"] {
        assert!(
            wait_until(Duration::from_secs(10), Duration::from_millis(50), || a
                .state(&lab, inst)
                .as_deref()
                == Some("MASTER")),
            "A master of {inst}"
        );
        assert_eq!(b.state(&lab, inst).as_deref(), Some("BACKUP"));
    }
    let vip = SocketAddr::from((lab::VIP, 80));
    let mut keep: Vec<TcpStream> = lab
        .client
        .run(|| keep_alive(vip, 50, Duration::from_secs(20)))
        .expect("50 keep-alive connections");

    let seed = 0x5eed;
    let (server, peer) = download_server(&lab.reals[0], MB200, seed);
    let dl = lab
        .client
        .spawn_thread(move || -> std::io::Result<(u64, Vec<u8>)> {
            use sha2::Digest;
            let mut s = TcpStream::connect_timeout(
                &SocketAddr::from((lab::VIP, 5001)),
                Duration::from_secs(5),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            let mut h = sha2::Sha256::new();
            let mut buf = vec![0u8; 65536];
            let mut total = 0u64;
            loop {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                total += n as u64;
            }
            Ok((total, h.finalize().to_vec()))
        });
    // B has every connection (the 50 and the download) from A's sync messages.
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || b
            .value(&lab, "tapvs_sync_connections_applied_total")
            >= 51.0),
        "B applied A's sync entries: {}",
        b.value(&lab, "tapvs_sync_connections_applied_total")
    );
    // Mid-transfer: at least 40 MB through A.
    assert!(
        wait_until(Duration::from_secs(30), Duration::from_millis(20), || a
            .value(&lab, "tapvs_frame_bytes_total{direction=\"in\"}")
            >= 40e6),
        "the download runs through A"
    );
    kill9_and_take_over(&lab, &mut a, &b);

    let (bytes, digest) = dl.join().expect("download thread").expect("download");
    // The server's one TCP connection carried all of it (written without error to the end).
    server.join().expect("server thread").expect("server");
    let peer = peer.recv().expect("server peer");
    if fwd == "fullnat" {
        assert_eq!(
            peer.ip(),
            std::net::IpAddr::from([172, 16, 0, 100]),
            "the server sees the local address"
        );
    } else {
        assert_eq!(peer.ip(), std::net::IpAddr::from(lab::CLIENT));
    }
    eprintln!("{fwd}: the server's peer {peer} for the whole download");
    assert_eq!(bytes, MB200);
    assert_eq!(
        digest,
        expected_digest(MB200, seed),
        "SHA-256 of the download"
    );
    let answered = |keep: &mut Vec<TcpStream>| {
        keep.iter_mut()
            .map(|s| get_on(s).is_ok_and(|st| st == 200))
            .filter(|ok| *ok)
            .count()
    };
    assert_eq!(
        answered(&mut keep),
        50,
        "keep-alive connections answered after the failover"
    );

    // Restart A (state BACKUP now, as after a reboot): B syncs the connections back (refresh
    // on their next packets), A preempts, and the connections survive again.
    std::fs::write(
        &a.config,
        config_fwd("a", A_EXT, A_INT, 150, "BACKUP", both, Some(9273), fwd),
    )
    .unwrap();
    let restarted = Instant::now();
    a.restart(&lab);
    assert!(
        wait_until(Duration::from_secs(3), Duration::from_millis(200), || {
            assert_eq!(
                answered(&mut keep),
                50,
                "connections keep working through B"
            );
            a.value(&lab, "tapvs_sync_connections_applied_total") >= 50.0
        }),
        "B synced the connections back to A: {}",
        a.value(&lab, "tapvs_sync_connections_applied_total")
    );
    assert!(
        wait_until(Duration::from_secs(8), Duration::from_millis(20), || a
            .both_in(&lab, "MASTER")),
        "restarted A preempts"
    );
    eprintln!("A preempted {:?} after its restart", restarted.elapsed());
    assert!(
        wait_until(Duration::from_secs(3), Duration::from_millis(20), || b
            .both_in(&lab, "BACKUP")),
        "B yields"
    );
    assert_eq!(
        answered(&mut keep),
        50,
        "keep-alive connections answered through A again"
    );

    // Clean stop: SIGTERM of the master A sends priority 0; B takes over in under 1 s.
    let t0 = Instant::now();
    a.sigterm();
    let took = b
        .wait_both(
            &lab,
            "MASTER",
            t0,
            Duration::from_secs(3),
            Duration::from_millis(5),
        )
        .expect("B master after SIGTERM of A");
    eprintln!("B master {took:?} after SIGTERM of A (incl. A's exit)");
    assert!(
        took < Duration::from_secs(1),
        "clean stop takeover {took:?}"
    );
    assert_eq!(
        answered(&mut keep),
        50,
        "keep-alive connections answered after the clean stop"
    );
    eprintln!("failover {fwd} test took {:?}", started.elapsed());
}

/// IPv6 VRRP settings of an appliance for [`config6`].
#[derive(Clone, Copy)]
struct Vrrp6 {
    prio: u8,
    state: &'static str,
    /// Its metrics port on 127.0.0.1.
    metrics: u16,
    /// Unicast peers on ext and int (the other appliance's addresses); `None`: multicast to
    /// ff02::12.
    peers: Option<[&'static str; 2]>,
}

/// An appliance on the dual-stack lab: dual-stack ports (own addresses `own` = ext, int,
/// ext6, int6), one IPv6 NAT service and the sync daemon (`sync` lines). With `vrrp`: IPv6
/// VRRP (version 3) for the VIP and the floating gateways `EXT6` (the client's route to the
/// VIP) and `INT6` (the real server's default route), and metrics. Without: no VRRP (the lab's
/// routes then point at A's own `EXT6`/`INT6`, so A carries the traffic and B only listens)
/// and no metrics.
fn config6(tag: &str, own: [&str; 4], sync: &str, vrrp: Option<Vrrp6>) -> String {
    let [ext, int, ext6, int6] = own;
    let head = head(
        tag,
        vrrp.map(|v| v.metrics),
        &format!("\"{ext}/24\", \"{ext6}/64\""),
        &format!("\"{int}/24\", \"{int6}/64\""),
    );
    let vrrp = match vrrp {
        None => String::new(),
        Some(Vrrp6 {
            prio, state, peers, ..
        }) => {
            let peer = |i: usize| {
                peers.map_or(String::new(), |p| {
                    format!("unicast_peers = [\"{}\"]\n", p[i])
                })
            };
            format!(
                r#"
[[vrrp]]
name = "VI_EXT"
port = "ext"
virtual_router_id = 61
priority = {prio}
state = "{state}"
{peer_ext}virtual_addresses = ["{vip6}", "{gw_ext}"]

[[vrrp]]
name = "VI_INT"
port = "int"
virtual_router_id = 62
priority = {prio}
state = "{state}"
{peer_int}virtual_addresses = ["{gw_int}"]
"#,
                vip6 = lab::VIP6,
                gw_ext = lab::EXT6,
                gw_int = lab::INT6,
                peer_ext = peer(0),
                peer_int = peer(1),
            )
        }
    };
    format!(
        r#"{head}
[[service]]
protocol = "tcp"
address = "[{vip6}]:80"
scheduler = "rr"

[[service.real]]
address = "[{rs6}]:80"
forward = "nat"
{vrrp}
[sync]
mcast_interface = "int"
syncid = 9
{sync}
"#,
        vip6 = lab::VIP6,
        rs6 = lab::real_addr6(0),
    )
}

/// The sync settings of both IPv6 VRRP appliances: both roles, refreshed every second.
const BOTH6: &str = "refresh_period = 1\nmaster = true\nbackup = true";

/// The MAC `ns`'s neighbour table holds for `ip` on eth0, if any.
fn neigh_mac(ns: &tapvs_lab::netns::Netns, ip: std::net::Ipv6Addr) -> Option<String> {
    let out = ns
        .ip(&["-6", "neigh", "show", &ip.to_string(), "dev", "eth0"])
        .ok()?;
    out.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_string)
}

/// Hot standby over IPv6 (VRRP version 3, adverts to ff02::12): A (150) is master of the IPv6
/// VIP and both floating IPv6 gateways, so the client's and the real server's neighbour entries
/// for the gateways are A's MACs; B receives A's adverts. `kill -9` of A: B is master within
/// 3 × advert_int + skew + 0.5 s, its unsolicited Neighbour Advertisements move both neighbour
/// entries to B's MACs, and every keep-alive IPv6 connection answers its next request through
/// B (from the IPv6 entries A synced). A restarted as BACKUP preempts, the entries move back,
/// and the connections still answer.
#[test]
fn ipv6_vrrp_failover_moves_the_vip_and_gateways_and_keeps_connections() {
    ipv6_vrrp_failover(false);
}

/// The same with unicast IPv6 peers (each appliance's adverts to the other's own addresses,
/// resolved by Neighbour Discovery).
#[test]
fn ipv6_vrrp_failover_with_unicast_peers() {
    ipv6_vrrp_failover(true);
}

fn ipv6_vrrp_failover(unicast: bool) {
    if !precheck() {
        return;
    }
    let _one = serial();
    let started = Instant::now();
    let lab = Lab::build_dual(1).expect("dual-stack lab");
    let _server = lab.reals[0]
        .run(|| tapvs_lab::traffic::HttpServer::start("[::]:80".parse().unwrap(), "rs6"))
        .expect("http server");
    let own_a = [A_EXT, A_INT, "2001:db8:c::11", "2001:db8:5::11"];
    let own_b = [B_EXT, B_INT, "2001:db8:c::12", "2001:db8:5::12"];
    let vrrp_a = |state| Vrrp6 {
        prio: 150,
        state,
        metrics: 9275,
        peers: unicast.then_some(["2001:db8:c::12", "2001:db8:5::12"]),
    };
    let vrrp_b = Vrrp6 {
        prio: 100,
        state: "BACKUP",
        metrics: 9276,
        peers: unicast.then_some(["2001:db8:c::11", "2001:db8:5::11"]),
    };
    let mut a = Appliance::start(
        &lab,
        "v6-a",
        &config6("a", own_a, BOTH6, Some(vrrp_a("MASTER"))),
        9275,
    );
    let b = Appliance::start(
        &lab,
        "v6-b",
        &config6("b", own_b, BOTH6, Some(vrrp_b)),
        9276,
    );
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || a
            .both_in(&lab, "MASTER")),
        "A master of both IPv6 instances"
    );
    assert!(b.both_in(&lab, "BACKUP"), "B backup of both");
    // B hears A on both instances (multicast, or unicast once each resolved the other).
    let heard = "tapvs_vrrp_adverts_received_total{instance=";
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            let m = b.metrics_text(&lab).unwrap_or_default();
            ["VI_EXT", "VI_INT"].iter().all(|i| {
                m.lines()
                    .filter(|l| l.starts_with(&format!("{heard}\"{i}\"")))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>()
                    >= 2.0
            })
        }),
        "B receives A's adverts on both instances"
    );
    let (a_ext, a_int) = ("02:74:76:00:01:01", "02:74:76:00:01:02");
    let (b_ext, b_int) = ("02:74:76:00:02:01", "02:74:76:00:02:02");

    let vip = SocketAddr::new(lab::VIP6.into(), 80);
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || lab
            .client
            .run(|| tapvs_lab::traffic::http_get(vip, "/", Duration::from_secs(1)))
            .is_ok_and(|(s, _)| s == 200)),
        "no service through the IPv6 VIP on A"
    );
    let mut keep: Vec<TcpStream> = lab
        .client
        .run(|| keep_alive(vip, 20, Duration::from_secs(10)))
        .expect("20 keep-alive IPv6 connections");
    assert_eq!(neigh_mac(&lab.client, lab::EXT6).as_deref(), Some(a_ext));
    assert_eq!(neigh_mac(&lab.reals[0], lab::INT6).as_deref(), Some(a_int));
    // Every connection (not only 20 updates) is in B's table, from A's sync messages.
    let established = "tapvs_connections{state=\"ESTABLISHED\"}";
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(50), || b
            .value(&lab, established)
            >= 20.0),
        "B holds A's 20 IPv6 connections: {}",
        b.value(&lab, established)
    );
    let answered = |keep: &mut Vec<TcpStream>| {
        keep.iter_mut()
            .map(|s| get_on(s).is_ok_and(|st| st == 200))
            .filter(|ok| *ok)
            .count()
    };

    kill9_and_take_over(&lab, &mut a, &b);
    // The unsolicited advertisements, not a new resolution: the entries change at once.
    assert!(
        wait_until(Duration::from_secs(2), Duration::from_millis(20), || {
            neigh_mac(&lab.client, lab::EXT6).as_deref() == Some(b_ext)
                && neigh_mac(&lab.reals[0], lab::INT6).as_deref() == Some(b_int)
        }),
        "the gateways' neighbour entries move to B: client {:?}, real server {:?}",
        neigh_mac(&lab.client, lab::EXT6),
        neigh_mac(&lab.reals[0], lab::INT6)
    );
    assert_eq!(
        answered(&mut keep),
        20,
        "keep-alive IPv6 connections answered through B"
    );

    // A restarted as BACKUP (as after a reboot) preempts; the entries move back.
    std::fs::write(
        &a.config,
        config6("a", own_a, BOTH6, Some(vrrp_a("BACKUP"))),
    )
    .unwrap();
    a.restart(&lab);
    assert!(
        wait_until(Duration::from_secs(3), Duration::from_millis(200), || {
            assert_eq!(
                answered(&mut keep),
                20,
                "connections keep working through B"
            );
            a.value(&lab, established) >= 20.0
        }),
        "B synced the IPv6 connections back to A: {}",
        a.value(&lab, established)
    );
    assert!(
        wait_until(Duration::from_secs(8), Duration::from_millis(20), || a
            .both_in(&lab, "MASTER")),
        "restarted A preempts"
    );
    assert!(
        wait_until(Duration::from_secs(3), Duration::from_millis(20), || b
            .both_in(&lab, "BACKUP")),
        "B yields"
    );
    assert!(
        wait_until(Duration::from_secs(2), Duration::from_millis(20), || {
            neigh_mac(&lab.client, lab::EXT6).as_deref() == Some(a_ext)
                && neigh_mac(&lab.reals[0], lab::INT6).as_deref() == Some(a_int)
        }),
        "the gateways' neighbour entries move back to A"
    );
    assert_eq!(
        answered(&mut keep),
        20,
        "keep-alive IPv6 connections answered through A again"
    );
    drop(b);
    eprintln!(
        "IPv6 VRRP failover (unicast {unicast}) test took {:?}",
        started.elapsed()
    );
}
