//! VRRP interop with Debian's keepalived, in network namespaces: tapvs (its own process, so it
//! can be stopped and restarted) and keepalived share one segment; each in turn has the higher
//! priority. The master is seen from both sides: tapvs's `tapvs_vrrp_state` metric, the VIP on
//! keepalived's interface, and which MAC a client's ARP for the VIP resolves to (a tapvs backup
//! does not answer ARP for it; a new master's gratuitous ARP moves it at once). tshark decodes
//! both sides' adverts as valid VRRP. Bad peers (keepalived with a wrong password, or a wrong
//! VRID) never change tapvs's state and are counted.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tapvs_lab::netns::{bridge, precheck, veth, wait_until, Netns, NsChild};

const BIN: &str = env!("CARGO_BIN_EXE_tapvs");
const TAPVS_MAC: &str = "02:00:00:99:00:02";
const VIP: &str = "10.99.0.100";
/// Master_Down_Interval of a priority-100 v2 instance with advert_int 1: 3 s + 156/256 s.
const MASTER_DOWN_100: Duration = Duration::from_millis(3609);
/// Slack for scheduling and polling under load.
const SLACK: Duration = Duration::from_millis(1500);

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("tapvs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        Scratch(d)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn have(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Namespaces: `hub` (bridge br0, tapvs and its TAP, tshark), `ka` (keepalived on eth0,
/// 10.99.0.3), `bad` (a misconfigured keepalived, 10.99.0.4), `cl` (a client, 10.99.0.10).
/// Field order: children before namespaces.
struct Seg {
    tapvs: Option<NsChild>,
    keepalived: Option<NsChild>,
    capture: Option<common::tshark::Capture>,
    scratch: Scratch,
    cl: Netns,
    bad: Netns,
    ka: Netns,
    hub: Netns,
}

impl Seg {
    fn build() -> Seg {
        let hub = Netns::new("vrrp-hub").expect("netns");
        let ka = Netns::new("vrrp-ka").expect("netns");
        let bad = Netns::new("vrrp-bad").expect("netns");
        let cl = Netns::new("vrrp-cl").expect("netns");
        veth((&hub, "vk0"), (&ka, "eth0")).expect("veth");
        veth((&hub, "vb0"), (&bad, "eth0")).expect("veth");
        veth((&hub, "vc0"), (&cl, "eth0")).expect("veth");
        bridge(&hub, "br0", &["vk0", "vb0", "vc0"]).expect("bridge");
        for bn in [
            "bridge/bridge-nf-call-iptables",
            "bridge/bridge-nf-call-arptables",
        ] {
            // Only present with br_netfilter; tapvs must see the frames as they are.
            let _ = hub.sysctl(&format!("net/{bn}"), "0");
        }
        ka.add_addr("eth0", "10.99.0.3/24").expect("addr");
        bad.add_addr("eth0", "10.99.0.4/24").expect("addr");
        cl.add_addr("eth0", "10.99.0.10/24").expect("addr");
        Seg {
            tapvs: None,
            keepalived: None,
            capture: None,
            scratch: Scratch::new("vrrp"),
            cl,
            bad,
            ka,
            hub,
        }
    }

    /// Starts tapvs with `priority` (state BACKUP, VRID 51, PASS "tapvs1") and waits for its
    /// metrics endpoint.
    fn start_tapvs(&mut self, priority: u8) {
        let cfg = format!(
            r#"workers = 1
max_connections = 1000

[metrics]
listen = "127.0.0.1:9273"

[[port]]
name = "lan"
tap = "tvh0"
mac = "{TAPVS_MAC}"
addresses = ["10.99.0.2/24"]
bridge = "br0"

[[service]]
protocol = "tcp"
address = "{VIP}:80"
scheduler = "rr"

[[service.real]]
address = "10.99.0.50:80"
forward = "nat"

[[vrrp]]
name = "VI_1"
port = "lan"
virtual_router_id = 51
priority = {priority}
advert_int = 1
state = "BACKUP"
auth_pass = "tapvs1"
virtual_addresses = ["{VIP}"]
track_ports = ["lan"]
"#
        );
        let path = self.scratch.file("tapvs.toml");
        std::fs::write(&path, cfg).expect("write config");
        let p = path.to_str().unwrap();
        let child = self
            .hub
            .spawn(
                &[BIN, "run", "--config", p],
                Stdio::null(),
                Stdio::inherit(),
            )
            .expect("spawn tapvs");
        self.tapvs = Some(child);
        assert!(
            wait_until(Duration::from_secs(10), Duration::from_millis(50), || self
                .tapvs_state()
                .is_some()),
            "tapvs did not come up"
        );
    }

    /// keepalived in `ns` (VRRP only, foreground) with `priority`, `vrid` and `pass`.
    fn keepalived(
        &self,
        ns: &Netns,
        tag: &str,
        state: &str,
        priority: u8,
        vrid: u8,
        pass: &str,
    ) -> NsChild {
        self.keepalived_int(ns, tag, state, priority, vrid, pass, 1)
    }

    /// [`Seg::keepalived`] with its `advert_int`.
    #[allow(clippy::too_many_arguments)]
    fn keepalived_int(
        &self,
        ns: &Netns,
        tag: &str,
        state: &str,
        priority: u8,
        vrid: u8,
        pass: &str,
        advert_int: u8,
    ) -> NsChild {
        let conf = format!(
            "global_defs {{\n  router_id {tag}\n  enable_script_security\n}}\n\
             vrrp_instance VI_1 {{\n  state {state}\n  interface eth0\n  virtual_router_id {vrid}\n  priority {priority}\n  advert_int {advert_int}\n\
             authentication {{\n    auth_type PASS\n    auth_pass {pass}\n  }}\n\
             virtual_ipaddress {{\n    {VIP}/24 dev eth0\n  }}\n}}\n"
        );
        let f = |n: &str| self.scratch.file(&format!("{tag}.{n}"));
        std::fs::write(f("conf"), conf).expect("write keepalived.conf");
        let s = |p: PathBuf| p.to_str().unwrap().to_string();
        let argv = [
            "keepalived".to_string(),
            "-f".into(),
            s(f("conf")),
            "-p".into(),
            s(f("pid")),
            "-r".into(),
            s(f("vrrp.pid")),
            "-c".into(),
            s(f("chk.pid")),
            "-P".into(),
            "-n".into(),
            "-l".into(),
            "-D".into(),
            "-G".into(),
        ];
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        ns.spawn(&argv, Stdio::null(), Stdio::null())
            .expect("spawn keepalived")
    }

    fn start_keepalived(&mut self, priority: u8) {
        let k = self.keepalived(&self.ka, "ka", "BACKUP", priority, 51, "tapvs1");
        self.keepalived = Some(k);
    }

    /// Sends `sig` to `child` and waits (bounded) for it to exit.
    fn signal(child: &NsChild, sig: &str) {
        let pid = child.id().to_string();
        let _ = std::process::Command::new("kill")
            .args([sig, &pid])
            .status();
        let st = child.wait_timeout(Duration::from_secs(10)).expect("wait");
        assert!(st.is_some(), "process {pid} did not exit after {sig}");
    }

    fn metrics(&self) -> Option<String> {
        self.hub
            .run(|| {
                tapvs_lab::traffic::http_get(
                    "127.0.0.1:9273".parse().unwrap(),
                    "/metrics",
                    Duration::from_secs(2),
                )
            })
            .ok()
            .map(|(_, body)| body)
    }

    /// tapvs's VRRP state (from `/metrics`), `None` while unreachable.
    fn tapvs_state(&self) -> Option<String> {
        let text = self.metrics()?;
        text.lines()
            .filter(|l| l.starts_with("tapvs_vrrp_state{") && l.ends_with(" 1"))
            .find_map(|l| {
                let s = l.split("state=\"").nth(1)?;
                Some(s.split('"').next()?.to_string())
            })
    }

    /// A counter of tapvs's `/metrics` whose line contains every one of `labels`.
    fn counter(&self, name: &str, labels: &[&str]) -> u64 {
        let text = self.metrics().unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    fn ka_has_vip(&self) -> bool {
        self.ka
            .ip(&["-4", "addr", "show", "dev", "eth0"])
            .is_ok_and(|s| s.contains(&format!("{VIP}/")))
    }

    fn ka_mac(&self) -> String {
        let s = self
            .ka
            .ip(&["link", "show", "dev", "eth0"])
            .expect("ip link");
        s.split("link/ether ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .expect("mac")
            .to_string()
    }

    /// The MAC the client resolves the VIP to, after a fresh ARP exchange (ping, bounded).
    fn vip_mac_from_client(&self) -> Option<String> {
        let _ = self.cl.ip(&["neigh", "flush", "dev", "eth0"]);
        let _ = self.cl.exec(&["ping", "-c", "1", "-W", "1", VIP]);
        let s = self.cl.ip(&["neigh", "show", VIP, "dev", "eth0"]).ok()?;
        s.split("lladdr ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string)
    }

    /// The MAC the client's neighbour table holds for the VIP now (no new ARP exchange).
    fn vip_mac_cached(&self) -> Option<String> {
        let s = self.cl.ip(&["neigh", "show", VIP, "dev", "eth0"]).ok()?;
        s.split("lladdr ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string)
    }

    fn wait_tapvs(&self, state: &str, within: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        wait_until(within, Duration::from_millis(20), || {
            self.tapvs_state().as_deref() == Some(state)
        })
        .then(|| t0.elapsed())
    }

    fn wait_ka_master(&self, want: bool, within: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        wait_until(within, Duration::from_millis(20), || {
            self.ka_has_vip() == want
        })
        .then(|| t0.elapsed())
    }

    /// Starts capturing VRRP (IP protocol 112) on the hub's bridge; the pcap it will go to.
    fn start_capture(&mut self) -> PathBuf {
        self.capture = Some(common::tshark::Capture::start(&self.hub, "br0", is_vrrp));
        self.scratch.file("vrrp.pcap")
    }
}

/// Whether an Ethernet frame is IPv4 protocol 112 (VRRP).
fn is_vrrp(f: &[u8]) -> bool {
    f.len() >= 34 && f[12..14] == [0x08, 0x00] && f[23] == 112
}

/// `tshark -r pcap -Y FILTER -T fields -e ...` lines.
fn tshark_fields(pcap: &Path, filter: &str, fields: &[&str]) -> Vec<String> {
    common::tshark::fields(pcap, &["-Y", filter], fields)
}

#[test]
fn keepalived_interop_failover_preemption_bad_peers_and_tshark() {
    if !precheck() {
        return;
    }
    if !have("keepalived") || !have("tshark") {
        tapvs_lab::netns::skip_or_fail("keepalived and tshark are needed (scripts/deps)");
        return;
    }
    let started = Instant::now();
    let mut seg = Seg::build();
    let pcap = seg.start_capture();
    let ka_mac = seg.ka_mac();

    // 1. tapvs 150, keepalived 100: tapvs is master, keepalived backup.
    seg.start_keepalived(100);
    seg.start_tapvs(150);
    let t = seg
        .wait_tapvs("MASTER", MASTER_DOWN_100 + SLACK * 2)
        .expect("tapvs (150) becomes master");
    eprintln!("tapvs master after {t:?}");
    assert!(
        seg.wait_ka_master(false, Duration::from_secs(5)).is_some(),
        "keepalived (100) stays backup"
    );
    assert_eq!(seg.vip_mac_from_client().as_deref(), Some(TAPVS_MAC));

    // Bad peers: a higher-priority keepalived with a wrong password, then one with a wrong VRID.
    let vrid_before = seg.counter("tapvs_vrrp_adverts_rejected_total", &["reason=\"vrid\""]);
    let bad = seg.keepalived(&seg.bad, "bad-pass", "MASTER", 200, 51, "wrong");
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(50), || seg
            .counter(
                "tapvs_vrrp_adverts_rejected_total",
                &["instance=\"VI_1\"", "reason=\"auth_failure\""]
            )
            >= 2),
        "wrong-password adverts are counted: {}",
        seg.metrics()
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("tapvs_vrrp") && !l.ends_with(" 0"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(seg.tapvs_state().as_deref(), Some("MASTER"));
    Seg::signal(&bad, "-TERM");
    drop(bad);
    let bad = seg.keepalived(&seg.bad, "bad-vrid", "MASTER", 200, 52, "tapvs1");
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(50), || seg
            .counter("tapvs_vrrp_adverts_rejected_total", &["reason=\"vrid\""])
            >= vrid_before + 2),
        "wrong-VRID adverts are counted"
    );
    assert_eq!(seg.tapvs_state().as_deref(), Some("MASTER"));
    Seg::signal(&bad, "-TERM");
    drop(bad);
    let transitions_to_backup = seg.counter(
        "tapvs_vrrp_transitions_total",
        &["instance=\"VI_1\"", "state=\"BACKUP\""],
    );
    assert_eq!(
        transitions_to_backup, 1,
        "only the start-up BACKUP: bad peers changed nothing"
    );

    // Stop tapvs (SIGTERM: priority 0): keepalived is master within its master-down interval
    // (with priority 0 it only waits its skew), and the client's ARP entry moves at once.
    let t0 = Instant::now();
    Seg::signal(seg.tapvs.as_ref().unwrap(), "-TERM");
    seg.tapvs = None;
    let t = seg
        .wait_ka_master(true, MASTER_DOWN_100 + SLACK)
        .expect("keepalived becomes master after tapvs stops");
    eprintln!(
        "keepalived master {t:?} after SIGTERM of tapvs ({:?} incl. exit)",
        t0.elapsed()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "clean stop: takeover in under 1 s"
    );
    assert_eq!(seg.vip_mac_from_client().as_deref(), Some(ka_mac.as_str()));

    // Restart tapvs: it preempts (after its own master-down interval in BACKUP).
    seg.start_tapvs(150);
    let t = seg
        .wait_tapvs("MASTER", MASTER_DOWN_100 + SLACK * 2)
        .expect("restarted tapvs preempts");
    eprintln!("tapvs preempted {t:?} after its metrics came up");
    assert!(
        seg.wait_ka_master(false, Duration::from_secs(3)).is_some(),
        "keepalived yields to the preempting tapvs"
    );
    // Its gratuitous ARP moved the client's entry without a new request.
    assert!(
        wait_until(Duration::from_secs(2), Duration::from_millis(20), || seg
            .vip_mac_cached()
            .as_deref()
            == Some(TAPVS_MAC)),
        "gratuitous ARP moved the VIP to tapvs: {:?}",
        seg.vip_mac_cached()
    );

    // Tracking: the port's link down puts tapvs in FAULT (keepalived takes over); back up, it
    // returns as BACKUP and preempts.
    seg.hub
        .ip(&["link", "set", "dev", "tvh0", "down"])
        .expect("link down");
    seg.wait_tapvs("FAULT", Duration::from_secs(3))
        .expect("tapvs in FAULT with its tracked port down");
    seg.wait_ka_master(true, MASTER_DOWN_100 + SLACK)
        .expect("keepalived master while tapvs is in FAULT");
    seg.hub
        .ip(&["link", "set", "dev", "tvh0", "up"])
        .expect("link up");
    seg.wait_tapvs("BACKUP", Duration::from_secs(3))
        .expect("tapvs BACKUP once its port is up");
    seg.wait_tapvs("MASTER", MASTER_DOWN_100 + SLACK * 2)
        .expect("tapvs preempts after FAULT");
    seg.wait_ka_master(false, Duration::from_secs(3))
        .expect("keepalived yields again");

    // Kill -9 tapvs: keepalived is master within its master-down interval.
    let t0 = Instant::now();
    Seg::signal(seg.tapvs.as_ref().unwrap(), "-KILL");
    seg.tapvs = None;
    seg.wait_ka_master(true, MASTER_DOWN_100 + SLACK)
        .expect("keepalived becomes master after tapvs is killed");
    let t = t0.elapsed();
    eprintln!("keepalived master {t:?} after kill -9 of tapvs");
    assert!(t <= MASTER_DOWN_100 + SLACK, "{t:?}");

    // 2. keepalived 150, tapvs 100.
    Seg::signal(seg.keepalived.as_ref().unwrap(), "-TERM");
    seg.keepalived = None;
    seg.start_keepalived(150);
    seg.start_tapvs(100);
    seg.wait_ka_master(true, MASTER_DOWN_100 + SLACK * 2)
        .expect("keepalived (150) becomes master");
    // tapvs stays BACKUP (it hears the higher priority) and does not answer ARP for the VIP.
    std::thread::sleep(MASTER_DOWN_100); // a full master-down interval: tapvs must not take over
    assert_eq!(seg.tapvs_state().as_deref(), Some("BACKUP"));
    assert_eq!(seg.vip_mac_from_client().as_deref(), Some(ka_mac.as_str()));

    // Stop keepalived: tapvs is master within its master-down interval.
    let t0 = Instant::now();
    Seg::signal(seg.keepalived.as_ref().unwrap(), "-TERM");
    seg.keepalived = None;
    seg.wait_tapvs("MASTER", MASTER_DOWN_100 + SLACK)
        .expect("tapvs becomes master after keepalived stops");
    let t = t0.elapsed();
    eprintln!("tapvs master {t:?} after SIGTERM of keepalived");
    assert!(t <= MASTER_DOWN_100 + SLACK, "{t:?}");
    assert_eq!(seg.vip_mac_from_client().as_deref(), Some(TAPVS_MAC));

    // Restart keepalived: it preempts; tapvs goes back to BACKUP.
    seg.start_keepalived(150);
    seg.wait_tapvs("BACKUP", MASTER_DOWN_100 + SLACK * 2)
        .expect("tapvs yields to the preempting keepalived");
    seg.wait_ka_master(true, Duration::from_secs(3))
        .expect("keepalived master again");

    // tshark decodes both sides' adverts as valid VRRP v2.
    let frames = seg.capture.take().unwrap().finish(&pcap);
    eprintln!("{frames} VRRP frames captured on br0");
    let rows = tshark_fields(
        &pcap,
        "vrrp",
        &[
            "ip.src",
            "vrrp.version",
            "vrrp.virt_rtr_id",
            "vrrp.prio",
            "vrrp.checksum.status",
            "vrrp.ip_addr",
        ],
    );
    let malformed = tshark_fields(&pcap, "vrrp && _ws.malformed", &["frame.number"]);
    assert!(malformed.is_empty(), "malformed VRRP: {malformed:?}");
    let from = |src: &str| -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| r.split('\t').map(str::to_string).collect::<Vec<_>>())
            .filter(|r| r[0] == src && r[2] == "51")
            .collect()
    };
    for (src, prios) in [("10.99.0.2", ["150", "100"]), ("10.99.0.3", ["150", "100"])] {
        let r = from(src);
        assert!(r.len() >= 3, "adverts from {src}: {rows:?}");
        for x in &r {
            assert_eq!(x[1], "2", "{x:?}");
            assert_eq!(x[4], "1", "checksum status good: {x:?}");
            assert_eq!(x[5], VIP, "{x:?}");
        }
        for p in prios {
            assert!(r.iter().any(|x| x[3] == p), "{src} priority {p}: {r:?}");
        }
        assert!(
            r.iter().any(|x| x[3] == "0"),
            "{src} sent priority 0 on stop: {r:?}"
        );
    }
    eprintln!(
        "tshark: {} VRRP adverts decoded; test took {:?}",
        rows.len(),
        started.elapsed()
    );
}
