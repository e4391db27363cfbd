//! Scale-out behind ECMP, end to end in namespaces (`tapvs_lab::scaleout`): a router running
//! BIRD with ECMP (`fib_multipath_hash_policy=1`), three (then four) tapvs processes each with
//! its own BIRD announcing the VIP, two real servers (DR: VIP on lo with ARP suppression; TUN:
//! the user-space IPIP decapsulator `rs::decap`), a client. tapvs runs as a separate process
//! (`tapvs run`) so it can be killed with SIGKILL.
//!
//! * spread: the router holds one multipath route via the three instances; 300 connections
//!   spread over them, and each went to the real server `mh` names (printed split);
//! * `kill -9` of an instance during 100 DR and 100 TUN paced transfers: the router drops its
//!   path within the bound (1 s), and every transfer ends with the same SHA-256 at the real
//!   server, including the flows ECMP moved mid-stream (`sloppy_tcp` + `mh`);
//! * the same with FullNAT: the surviving instances' transfers are untouched; the dead
//!   instance's flows are reset (printed);
//! * a fourth instance joins during transfers: the flows ECMP moves to it continue;
//! * health checks taking every real server out withdraw the route, one back restores it; a
//!   port going down, and a clean stop, withdraw the instance's path too;
//! * IPv6 (the dual-stack lab, two instances): the IPv6 VIP goes out over each instance's IPv6
//!   BGP session (`tapvs_vips6`), the router's IPv6 route has both next hops and connections
//!   go through both instances; `kill -9` of one withdraws its IPv6 path and traffic goes on.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tapvs::rs::{self, DecapCounters, RsMode};
use tapvs_lab::netns::{precheck, wait_until, NsChild};
use tapvs_lab::scaleout::{
    instance_addr, instance_addr6, instance_mac, local_addr, paced_transfer, real_addr, real_addr6,
    DigestServer, ScaleOut, Transfer, INSTANCE_BRIDGE, INSTANCE_TAP, ROUTER6, VIP, VIP6,
};

const TAPVS: &str = env!("CARGO_BIN_EXE_tapvs");
const TAPVSADM: &str = env!("CARGO_BIN_EXE_tapvsadm");
const DR: u16 = 80;
const TUN: u16 = 81;
const FNAT: u16 = 82;
/// How long after SIGKILL the router may still route to the dead instance (checked).
const WITHDRAW_BOUND: Duration = Duration::from_secs(1);
/// A long transfer: 40 chunks of 16 KiB, one every 100 ms (640 KiB over about 4 s).
const CHUNK: usize = 16 * 1024;
const CHUNKS: usize = 40;
const PACE: Duration = Duration::from_millis(100);
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);

/// A `[[service]]` on [`VIP`] over both real servers with `mh` (port hashed too, one client
/// here).
fn service(port: u16, forward: &str, extra: &str, checks: bool) -> String {
    service_at(IpAddr::V4(VIP), port, forward, extra, checks)
}

/// [`service`] on `vip`: an IPv6 VIP gets the real servers' IPv6 addresses.
fn service_at(vip: IpAddr, port: u16, forward: &str, extra: &str, checks: bool) -> String {
    let mut s = format!(
        "\n[[service]]\nprotocol = \"tcp\"\naddress = \"{}\"\nscheduler = \"mh\"\nflags = [\"mh-port\"]\n{extra}",
        SocketAddr::new(vip, port)
    );
    if checks {
        s.push_str("health = { delay_loop = 1, connect_timeout = 1, retry = 0, delay_before_retry = 1, warmup = 0 }\n");
    }
    for j in 0..2 {
        let real = match vip {
            IpAddr::V4(_) => SocketAddr::from((real_addr(j), port)),
            IpAddr::V6(_) => SocketAddr::from((real_addr6(j), port)),
        };
        s.push_str(&format!(
            "[[service.real]]\naddress = \"{real}\"\nforward = \"{forward}\"\n"
        ));
        if checks {
            s.push_str("[[service.real.check]]\ntype = \"tcp\"\n");
        }
    }
    s
}

/// One tapvs process in an instance namespace; killed on drop, after which its watchdog
/// empties the include file (awaited, bounded) and exits.
struct Tapvs {
    child: NsChild,
    socket: PathBuf,
    log: PathBuf,
    vips: PathBuf,
}

impl Drop for Tapvs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            std::fs::read_to_string(&self.vips).is_ok_and(|s| !s.contains("route "))
        });
    }
}

impl Tapvs {
    /// Writes instance `i`'s config (its port on the segment, its FullNAT local address, the
    /// `[scale_out]` section for its BIRD, `services`; in a dual-stack lab the port's IPv6
    /// address and default route too) and starts `tapvs run`; returns once the VIP is in its
    /// BIRD include file (tapvs is up and announcing).
    fn start(so: &ScaleOut, i: usize, services: &str) -> Tapvs {
        let inst = &so.instances[i];
        let socket = so.dir().join(format!("tapvs{i}.sock"));
        let birdc: Vec<String> = inst.birdc().iter().map(|a| format!("{a:?}")).collect();
        let (addr6, route6) = if so.is_dual() {
            (
                format!(", \"{}/64\"", instance_addr6(i)),
                format!("\n[[route]]\nto = \"default6\"\nvia = \"{ROUTER6}\"\n"),
            )
        } else {
            (String::new(), String::new())
        };
        let cfg = format!(
            r#"workers = 1
max_connections = 100000

[control]
socket = "{socket}"
sloppy_tcp = true

[metrics]
enabled = false

[[port]]
name = "seg"
tap = "{INSTANCE_TAP}"
mac = "{mac}"
addresses = ["{addr}/24"{addr6}]
bridge = "{INSTANCE_BRIDGE}"

[[route]]
to = "default"
via = "{router}"
{route6}
[scale_out]
bird_include = "{vips}"
birdc = [{birdc}]
interval_ms = 100
{services}"#,
            socket = socket.display(),
            mac = instance_mac(i),
            addr = instance_addr(i),
            router = tapvs_lab::scaleout::ROUTER,
            vips = inst.vips_file().display(),
            birdc = birdc.join(", "),
            services = services.replace("LOCAL_ADDRESS", &local_addr(i).to_string()),
        );
        let path = so.dir().join(format!("tapvs{i}.toml"));
        std::fs::write(&path, cfg).expect("write config");
        let log = so.dir().join(format!("tapvs{i}.log"));
        let child = inst
            .ns
            .spawn(
                &[TAPVS, "run", "--config", &path.display().to_string()],
                Stdio::null(),
                Stdio::from(File::create(&log).expect("log file")),
            )
            .expect("spawn tapvs");
        let t = Tapvs {
            child,
            socket,
            log,
            vips: inst.vips_file(),
        };
        let vip = format!("route {VIP}/32");
        let up = wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
            std::fs::read_to_string(inst.vips_file()).is_ok_and(|s| s.contains(&vip))
        });
        assert!(up, "tapvs {i} did not announce the VIP: {}", t.log_tail());
        t
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The IPv4 connection table: (client port, virtual port) → real server address.
    fn conns(&self) -> HashMap<(u16, u16), Ipv4Addr> {
        let mut m = HashMap::new();
        for (src, vip, dst) in self.conn_rows() {
            if let (SocketAddr::V4(_), SocketAddr::V4(vip), IpAddr::V4(dst)) = (src, vip, dst.ip())
            {
                m.insert((src.port(), vip.port()), dst);
            }
        }
        m
    }

    /// The client ports of the connections to `vip` (either family).
    fn ports_to(&self, vip: SocketAddr) -> HashSet<u16> {
        self.conn_rows()
            .into_iter()
            .filter(|r| r.1 == vip)
            .map(|r| r.0.port())
            .collect()
    }

    /// The TCP rows of `tapvsadm -L -n -c`: (client, virtual, real server) addresses.
    fn conn_rows(&self) -> Vec<(SocketAddr, SocketAddr, SocketAddr)> {
        let out = Command::new(TAPVSADM)
            .args([
                "--socket",
                &self.socket.display().to_string(),
                "-L",
                "-n",
                "-c",
            ])
            .output()
            .expect("tapvsadm");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut rows = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 || f[0] != "TCP" {
                continue;
            }
            if let (Ok(src), Ok(vip), Ok(dst)) = (f[3].parse(), f[4].parse(), f[5].parse()) {
                rows.push((src, vip, dst));
            }
        }
        rows
    }
}

/// The real servers: VIP on lo with ARP suppression (DR and TUN), the user-space IPIP
/// decapsulator, digest servers on the DR, TUN and FullNAT ports; in a dual-stack lab
/// [`VIP6`] on lo too and the servers on `[::]`.
struct Reals {
    servers: Vec<Vec<DigestServer>>,
    stop: Arc<AtomicBool>,
    decaps: Vec<JoinHandle<Result<(), rs::RsError>>>,
}

impl Reals {
    fn start(so: &ScaleOut) -> Reals {
        let stop = Arc::new(AtomicBool::new(false));
        let mut decaps = Vec::new();
        let mut servers = Vec::new();
        for (j, ns) in so.reals.iter().enumerate() {
            let vips: Vec<IpAddr> = if so.is_dual() {
                vec![VIP.into(), VIP6.into()]
            } else {
                vec![VIP.into()]
            };
            ns.run(move || rs::setup_vips(RsMode::Tun, &vips, false))
                .expect("rs-setup");
            let st = stop.clone();
            decaps.push(ns.spawn_thread(move || {
                rs::decap(rs::DEFAULT_DECAP_TUN, &st, &DecapCounters::new())
            }));
            let up = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
                ns.ip(&["link", "show", "dev", rs::DEFAULT_DECAP_TUN])
                    .is_ok_and(|s| s.contains(",UP") || s.contains("<UP"))
            });
            assert!(up, "decap TUN not up in rs{j}");
            servers.push(
                [DR, TUN, FNAT]
                    .iter()
                    .map(|&p| digest_server(so, j, p))
                    .collect(),
            );
        }
        Reals {
            servers,
            stop,
            decaps,
        }
    }
}

/// A digest server on real server `j`: on 0.0.0.0, or `[::]` (both families) in a dual-stack
/// lab.
fn digest_server(so: &ScaleOut, j: usize, port: u16) -> DigestServer {
    let name = format!("rs{j}");
    let any = if so.is_dual() {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    };
    so.reals[j]
        .run(move || DigestServer::start(SocketAddr::new(any, port), &name))
        .expect("digest server")
}

impl Drop for Reals {
    fn drop(&mut self) {
        self.servers.clear();
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for d in self.decaps.drain(..) {
            let _ = d.join();
        }
    }
}

/// Runs `n` paced transfers per port in `ports` from the client, on threads of the client's
/// namespace; returns their handles as ((port, k), handle).
#[allow(clippy::type_complexity)]
fn start_transfers(
    so: &ScaleOut,
    ports: &[u16],
    n: usize,
    chunks: usize,
) -> Vec<((u16, usize), JoinHandle<io::Result<Transfer>>)> {
    let mut v = Vec::new();
    for &port in ports {
        for k in 0..n {
            let addr = SocketAddr::from((VIP, port));
            let seed = u64::from(port) * 1000 + k as u64;
            v.push((
                (port, k),
                so.client.spawn_thread(move || {
                    paced_transfer(addr, seed, CHUNK, chunks, PACE, TRANSFER_TIMEOUT)
                }),
            ));
        }
    }
    v
}

/// Waits until the instances hold `n` connections to `ports` in total (bounded).
fn wait_conns(tapvs: &[&Tapvs], ports: &[u16], n: usize) -> bool {
    wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
        tapvs
            .iter()
            .map(|t| t.conns().keys().filter(|k| ports.contains(&k.1)).count())
            .sum::<usize>()
            >= n
    })
}

/// The real server `mh` (with `mh-port`) picks for a client port: what every instance must
/// agree on.
fn mh_choice(cport: u16, vport: u16) -> Ipv4Addr {
    let dests: Vec<_> = (0..2)
        .map(|j| Arc::new(sched::Dest::new(IpAddr::V4(real_addr(j)), vport, 1)))
        .collect();
    let spec = sched::SchedSpec {
        flags: vec!["mh-port".into()],
        ..sched::SchedSpec::new("mh")
    };
    let s = sched::build(&spec, &dests).unwrap();
    let i = s
        .schedule(
            &dests,
            &sched::Input {
                proto: 6,
                src: IpAddr::V4(tapvs_lab::scaleout::CLIENT),
                src_port: cport,
                dst: IpAddr::V4(VIP),
                dst_port: vport,
                now_secs: 0,
            },
        )
        .unwrap();
    real_addr(i)
}

fn lab(n_instances: usize, services: &str) -> (ScaleOut, Reals, Vec<Tapvs>) {
    lab_with(n_instances, services, false)
}

/// [`lab`], dual stack when `dual` (`ScaleOut::build_dual`); returns once the router routes
/// [`VIP`] through every instance (`services` must serve it).
fn lab_with(n_instances: usize, services: &str, dual: bool) -> (ScaleOut, Reals, Vec<Tapvs>) {
    let built = if dual {
        ScaleOut::build_dual(n_instances, 2)
    } else {
        ScaleOut::build(n_instances, 2)
    };
    let so = match built {
        Ok(so) => so,
        Err(e) => panic!("scale-out lab: {e}"),
    };
    let reals = Reals::start(&so);
    let tapvs: Vec<Tapvs> = (0..n_instances)
        .map(|i| Tapvs::start(&so, i, services))
        .collect();
    let all: Vec<usize> = (0..n_instances).collect();
    let t = so.wait_next_hops(&all, Duration::from_secs(20));
    assert!(
        t.is_some(),
        "router route: {:?}{}",
        so.vip_route(),
        so.bird_logs()
    );
    (so, reals, tapvs)
}

fn bird_ok() -> bool {
    if !precheck() {
        return false;
    }
    let ok = Command::new("bird").arg("--version").output().is_ok()
        && Command::new("birdc").arg("--version").output().is_ok();
    if !ok {
        tapvs_lab::netns::skip_or_fail("bird and birdc (Debian package bird2) are not installed");
    }
    ok
}

#[test]
fn spread_over_three_instances_follows_mh() {
    if !bird_ok() {
        return;
    }
    let services = service(DR, "dr", "", false);
    let (so, _reals, tapvs) = lab(3, &services);
    let route = so.vip_route();
    assert_eq!(
        route.matches("nexthop via").count(),
        3,
        "one multipath route: {route}"
    );
    // 300 connections, 30 at a time.
    let mut done: Vec<Transfer> = Vec::new();
    for _ in 0..10 {
        let batch = start_transfers(&so, &[DR], 30, 1);
        for (_, h) in batch {
            done.push(h.join().unwrap().expect("transfer"));
        }
    }
    assert_eq!(done.len(), 300);
    assert!(done.iter().all(|t| t.digest_ok), "digests");
    let tables: Vec<_> = tapvs.iter().map(Tapvs::conns).collect();
    let mut split = [0usize; 3];
    let mut per_real = [0usize; 2];
    for t in &done {
        let on: Vec<usize> = (0..3)
            .filter(|&i| tables[i].contains_key(&(t.port, DR)))
            .collect();
        assert_eq!(on.len(), 1, "port {} on instances {on:?}", t.port);
        split[on[0]] += 1;
        let want = mh_choice(t.port, DR);
        assert_eq!(tables[on[0]][&(t.port, DR)], want, "port {}: mh", t.port);
        let j = (0..2).find(|&j| real_addr(j) == want).unwrap();
        assert_eq!(t.server, format!("rs{j}"), "port {}: answered by", t.port);
        per_real[j] += 1;
    }
    eprintln!("spread: 300 connections over instances {split:?}, real servers {per_real:?}");
    assert!(split.iter().all(|&n| n >= 30), "ECMP spreads: {split:?}");
    assert!(
        per_real.iter().all(|&n| n >= 60),
        "mh spreads: {per_real:?}"
    );
}

/// Kills instance `victim` during transfers to `ports`; returns (transfers by flow, the
/// tables before the kill, the survivors' tables after, the withdrawal time).
#[allow(clippy::type_complexity)]
fn kill_during_transfers(
    ports: &[u16],
    services: &str,
    victim: usize,
) -> (
    Vec<((u16, usize), io::Result<Transfer>)>,
    Vec<HashMap<(u16, u16), Ipv4Addr>>,
    Vec<HashMap<(u16, u16), Ipv4Addr>>,
    Duration,
) {
    let (so, _reals, tapvs) = lab(3, services);
    let handles = start_transfers(&so, ports, 100, CHUNKS);
    let refs: Vec<&Tapvs> = tapvs.iter().collect();
    assert!(
        wait_conns(&refs, ports, 100 * ports.len()),
        "transfers did not start"
    );
    let before: Vec<_> = tapvs.iter().map(Tapvs::conns).collect();
    let t0 = Instant::now();
    tapvs[victim].child.kill().expect("kill -9");
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let gone = so.wait_next_hops(&survivors, Duration::from_secs(10));
    let withdraw = gone.unwrap_or_else(|| {
        panic!(
            "path not withdrawn after {:?}: {}",
            t0.elapsed(),
            so.vip_route()
        )
    });
    // The watchdog emptied the dead instance's include file.
    let left = std::fs::read_to_string(so.instances[victim].vips_file()).unwrap_or_default();
    assert!(!left.contains("route "), "include after kill -9: {left}");
    let results: Vec<_> = handles
        .into_iter()
        .map(|(k, h)| (k, h.join().expect("transfer thread")))
        .collect();
    let after: Vec<_> = (0..3)
        .map(|i| {
            if i == victim {
                HashMap::new()
            } else {
                tapvs[i].conns()
            }
        })
        .collect();
    (results, before, after, withdraw)
}

#[test]
fn kill9_during_dr_and_tun_transfers_loses_nothing() {
    if !bird_ok() {
        return;
    }
    let services = format!(
        "{}{}",
        service(DR, "dr", "", false),
        service(TUN, "tun", "", false)
    );
    let (results, before, after, withdraw) = kill_during_transfers(&[DR, TUN], &services, 0);
    assert!(withdraw <= WITHDRAW_BOUND, "withdrawn after {withdraw:?}");
    let mut moved = [0usize; 2];
    let mut from_dead = [0usize; 2];
    for ((port, k), r) in &results {
        let t = r
            .as_ref()
            .unwrap_or_else(|e| panic!("transfer {port}/{k} failed: {e}"));
        assert!(t.digest_ok, "transfer {port}/{k}: SHA-256 differs");
        let m = usize::from(*port == TUN);
        let key = (t.port, *port);
        let was: Vec<usize> = (0..3).filter(|&i| before[i].contains_key(&key)).collect();
        let now: Vec<usize> = (0..3).filter(|&i| after[i].contains_key(&key)).collect();
        if was.contains(&0) {
            from_dead[m] += 1;
        }
        if now.iter().any(|i| !was.contains(i)) {
            moved[m] += 1;
        }
    }
    eprintln!(
        "kill -9 of instance 0: path withdrawn after {withdraw:?}; 200 transfers (DR, TUN) all \
         complete with matching SHA-256; on the dead instance: {from_dead:?}; continued \
         mid-stream on another instance: {moved:?}"
    );
    assert!(
        from_dead.iter().all(|&n| n > 0),
        "some flows were on the victim"
    );
    assert!(moved.iter().all(|&n| n > 0), "some flows moved mid-stream");
}

#[test]
fn kill9_with_fullnat_leaves_the_survivors_untouched() {
    if !bird_ok() {
        return;
    }
    let services = service(
        FNAT,
        "fullnat",
        "local_addresses = [\"LOCAL_ADDRESS\"]\n",
        false,
    );
    // The middle next hop: under the kernel's hash-threshold ECMP, removing it moves no flow
    // of the other two paths.
    let (results, before, _after, withdraw) = kill_during_transfers(&[FNAT], &services, 1);
    assert!(withdraw <= WITHDRAW_BOUND, "withdrawn after {withdraw:?}");
    let (mut survivors_ok, mut dead_ok, mut dead_failed) = (0, 0, Vec::new());
    for ((port, k), r) in &results {
        match r {
            Ok(t) => {
                let on: Vec<usize> = (0..3)
                    .filter(|&i| before[i].contains_key(&(t.port, *port)))
                    .collect();
                assert!(t.digest_ok, "transfer {k}: SHA-256 differs");
                if on == [1] {
                    dead_ok += 1;
                } else {
                    survivors_ok += 1;
                }
            }
            Err(e) => dead_failed.push(format!("{k}: {e}")),
        }
    }
    let on_dead = before[1].keys().filter(|k| k.1 == FNAT).count();
    eprintln!(
        "FullNAT kill -9 of instance 1: withdrawn after {withdraw:?}; survivors' transfers \
         complete: {survivors_ok}; the dead instance's {on_dead}: {dead_ok} completed, {} \
         failed (first: {:?})",
        dead_failed.len(),
        dead_failed.first()
    );
    assert_eq!(
        survivors_ok + on_dead,
        100,
        "only the dead instance's flows may break"
    );
    assert_eq!(dead_failed.len() + dead_ok, on_dead);
}

#[test]
fn a_fourth_instance_joins_during_transfers() {
    if !bird_ok() {
        return;
    }
    let services = format!(
        "{}{}",
        service(DR, "dr", "", false),
        service(TUN, "tun", "", false)
    );
    let (mut so, _reals, mut tapvs) = lab(3, &services);
    let fourth = so.add_instance().expect("fourth instance");
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(50), || so
            .instances[fourth]
            .bgp_up()),
        "fourth BGP session: {}",
        so.bird_logs()
    );
    let handles = start_transfers(&so, &[DR, TUN], 100, CHUNKS);
    let refs: Vec<&Tapvs> = tapvs.iter().collect();
    assert!(
        wait_conns(&refs, &[DR, TUN], 200),
        "transfers did not start"
    );
    let before: Vec<_> = tapvs.iter().map(Tapvs::conns).collect();
    tapvs.push(Tapvs::start(&so, fourth, &services));
    let joined = so.wait_next_hops(&[0, 1, 2, 3], Duration::from_secs(10));
    assert!(joined.is_some(), "route: {}", so.vip_route());
    let mut failed = Vec::new();
    let mut ok = 0;
    for ((port, k), h) in handles {
        match h.join().expect("transfer thread") {
            Ok(t) if t.digest_ok => ok += 1,
            Ok(_) => failed.push(format!("{port}/{k}: SHA-256 differs")),
            Err(e) => failed.push(format!("{port}/{k}: {e}")),
        }
    }
    let new: HashSet<(u16, u16)> = tapvs[fourth].conns().keys().copied().collect();
    let moved = new
        .iter()
        .filter(|k| before.iter().any(|b| b.contains_key(k)))
        .count();
    eprintln!(
        "fourth instance: announced after {joined:?}; {moved} running flows moved to it \
         mid-stream; {ok} of 200 transfers complete with matching SHA-256"
    );
    assert!(failed.is_empty(), "broken: {failed:?}");
    assert!(moved > 0, "no flow moved to the new instance");
}

#[test]
fn health_checks_ports_and_stop_withdraw_the_route() {
    if !bird_ok() {
        return;
    }
    let services = service(DR, "dr", "", true);
    let (so, mut reals, tapvs) = lab(3, &services);
    // Every real server out: no instance announces.
    for s in &mut reals.servers {
        s.clear();
    }
    let t0 = Instant::now();
    let gone = wait_until(Duration::from_secs(20), Duration::from_millis(20), || {
        so.vip_route().is_empty()
    });
    assert!(gone, "still routed: {}", so.vip_route());
    let out = t0.elapsed();
    // One back: every instance announces again.
    reals.servers[0].push(digest_server(&so, 0, DR));
    let t0 = Instant::now();
    let back = so.wait_next_hops(&[0, 1, 2], Duration::from_secs(20));
    assert!(back.is_some(), "not restored: {}", so.vip_route());
    let restored = t0.elapsed();
    let t = paced_transfer_from(&so, DR);
    assert_eq!(t.server, "rs0");
    // Instance 2's port down: its path goes; up: back.
    let inst = &so.instances[2].ns;
    inst.ip(&["link", "set", "dev", INSTANCE_TAP, "down"])
        .unwrap();
    let down = so.wait_next_hops(&[0, 1], Duration::from_secs(10));
    assert!(down.is_some(), "port down: {}", so.vip_route());
    inst.ip(&["link", "set", "dev", INSTANCE_TAP, "up"])
        .unwrap();
    assert!(so
        .wait_next_hops(&[0, 1, 2], Duration::from_secs(10))
        .is_some());
    // A clean stop (SIGTERM) of instance 1 withdraws its path.
    let st = Command::new("kill")
        .args(["-TERM", &tapvs[1].child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let stopped = so.wait_next_hops(&[0, 2], Duration::from_secs(10));
    assert!(stopped.is_some(), "stop: {}", so.vip_route());
    eprintln!(
        "withdrawal: all real servers down -> route gone after {out:?}; one back -> three \
         paths after {restored:?}; port down -> path gone after {down:?}; SIGTERM -> path \
         gone after {stopped:?}"
    );
}

fn paced_transfer_from(so: &ScaleOut, port: u16) -> Transfer {
    so.client
        .run(move || {
            paced_transfer(
                SocketAddr::from((VIP, port)),
                7,
                1000,
                1,
                PACE,
                Duration::from_secs(10),
            )
        })
        .expect("transfer")
}

/// `n` short transfers to `vip` from the client, run at once; returns them all (panics on a
/// failed one).
fn short_transfers(so: &ScaleOut, vip: SocketAddr, n: usize, seed: u64) -> Vec<Transfer> {
    let handles: Vec<_> = (0..n as u64)
        .map(|k| {
            so.client.spawn_thread(move || {
                paced_transfer(vip, seed + k, 1000, 1, PACE, Duration::from_secs(10))
            })
        })
        .collect();
    handles
        .into_iter()
        .enumerate()
        .map(|(k, h)| {
            h.join()
                .expect("transfer thread")
                .unwrap_or_else(|e| panic!("transfer {k} to {vip}: {e}"))
        })
        .collect()
}

#[test]
fn ipv6_vip_is_announced_over_ipv6_bgp_and_withdrawn_on_kill9() {
    if !bird_ok() {
        return;
    }
    let services = format!(
        "{}{}",
        service(DR, "dr", "", false),
        service_at(IpAddr::V6(VIP6), DR, "dr", "", false)
    );
    let t0 = Instant::now();
    let (so, _reals, tapvs) = lab_with(2, &services, true);
    // Each instance's include carries the IPv6 VIP in the IPv6 protocol.
    for inst in &so.instances {
        let inc = std::fs::read_to_string(inst.vips_file()).unwrap_or_default();
        assert!(
            inc.contains(&format!(
                "protocol static tapvs_vips6 {{\n  ipv6;\n  route {VIP6}/128 blackhole;\n}}"
            )),
            "include {}: {inc}",
            inst.index
        );
    }
    let announced = so.wait_next_hops6(&[0, 1], Duration::from_secs(20));
    assert!(
        announced.is_some(),
        "router IPv6 route: {:?}{}",
        so.vip6_route(),
        so.bird_logs()
    );
    let route2 = so.vip6_route();
    assert_eq!(
        route2.matches("nexthop via").count(),
        2,
        "one multipath IPv6 route: {route2}"
    );
    // Connections to the IPv6 VIP go through both instances and reach the real servers.
    let vip = SocketAddr::from((VIP6, DR));
    let done = short_transfers(&so, vip, 40, 600);
    assert!(done.iter().all(|t| t.digest_ok), "IPv6 digests");
    let on: Vec<HashSet<u16>> = tapvs.iter().map(|t| t.ports_to(vip)).collect();
    let mut split = [0usize; 2];
    for t in &done {
        let at: Vec<usize> = (0..2).filter(|&i| on[i].contains(&t.port)).collect();
        assert_eq!(at.len(), 1, "port {} on instances {at:?}", t.port);
        split[at[0]] += 1;
    }
    let servers: HashSet<&str> = done.iter().map(|t| t.server.as_str()).collect();
    assert!(split.iter().all(|&n| n > 0), "ECMP over IPv6: {split:?}");
    assert_eq!(servers.len(), 2, "both real servers answer: {servers:?}");
    // kill -9 of instance 0: its IPv6 path goes, traffic goes on through instance 1.
    let k0 = Instant::now();
    tapvs[0].child.kill().expect("kill -9");
    let withdraw = so
        .wait_next_hops6(&[1], Duration::from_secs(10))
        .unwrap_or_else(|| {
            panic!(
                "IPv6 path not withdrawn after {:?}: {}",
                k0.elapsed(),
                so.vip6_route()
            )
        });
    let route1 = so.vip6_route();
    assert!(!route1.contains("nexthop"), "one next hop left: {route1}");
    let left = std::fs::read_to_string(so.instances[0].vips_file()).unwrap_or_default();
    assert!(!left.contains("route "), "include after kill -9: {left}");
    let after = short_transfers(&so, vip, 20, 700);
    assert!(after.iter().all(|t| t.digest_ok), "IPv6 digests after kill");
    let on1 = tapvs[1].ports_to(vip);
    assert!(
        after.iter().all(|t| on1.contains(&t.port)),
        "every new IPv6 connection went through instance 1"
    );
    assert!(withdraw <= WITHDRAW_BOUND, "withdrawn after {withdraw:?}");
    eprintln!(
        "IPv6 scale-out: router's `ip -6 route show {VIP6}`: {route2:?}, after kill -9: \
         {route1:?}\nroute with 2 next hops after {announced:?}; 40 connections over \
         instances {split:?}; kill -9 of instance 0 -> IPv6 path withdrawn after {withdraw:?}; \
         20 more connections all through instance 1; test took {:?}",
        t0.elapsed()
    );
}
