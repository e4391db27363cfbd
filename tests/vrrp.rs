//! VRRP interop with Debian's keepalived, in network namespaces: tapvs (its own process, so it
//! can be stopped and restarted) and keepalived share one segment; each in turn has the higher
//! priority. The master is seen from both sides: tapvs's `tapvs_vrrp_state` metric, the VIP on
//! keepalived's interface, and which MAC a client's ARP for the VIP resolves to (a tapvs backup
//! does not answer ARP for it; a new master's gratuitous ARP moves it at once). tshark decodes
//! both sides' adverts as valid VRRP. Bad peers (keepalived with a wrong password, or a wrong
//! VRID) never change tapvs's state and are counted. The same segment runs VRRP version 3 over
//! IPv6 (adverts to ff02::12 from link-local addresses; unsolicited Neighbour Advertisements
//! move the client's neighbour entry for the VIP).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tapvs_lab::netns::{bridge, precheck, veth, wait_until, Netns, NsChild};

const BIN: &str = env!("CARGO_BIN_EXE_tapvs");
const TAPVS_MAC: &str = "02:00:00:99:00:02";
/// tapvs's port's EUI-64 link-local address (from [`TAPVS_MAC`], universal/local bit flipped).
const TAPVS_LL: &str = "fe80::ff:fe99:2";
const VIP: &str = "10.99.0.100";
const VIP6: &str = "2001:db8:99::100";
/// Master_Down_Interval of a priority-100 instance with advert_int 1 (v2, and v3 once the
/// master's 1 s interval is learnt): 3 s + 156/256 s.
const MASTER_DOWN_100: Duration = Duration::from_millis(3609);
/// Skew_Time of a priority-100 instance with a 1 s interval: a backup takes over this long
/// after a priority-0 advert.
const SKEW_100: Duration = Duration::from_millis(609);
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

/// What the IPv4 and the IPv6 runs of a segment differ in.
struct Family {
    /// The virtual address the instances share.
    vip: &'static str,
    /// Its prefix length on keepalived's interface.
    prefix: u8,
    /// The instances' VRID.
    vrid: u8,
    /// IPv6: VRRP version 3 to ff02::12, addresses on every host of the segment as well.
    ipv6: bool,
}

const V4: Family = Family {
    vip: VIP,
    prefix: 24,
    vrid: 51,
    ipv6: false,
};

const V6: Family = Family {
    vip: VIP6,
    prefix: 64,
    vrid: 61,
    ipv6: true,
};

/// Namespaces: `hub` (bridge br0, tapvs and its TAP, tshark), `ka` (keepalived on eth0,
/// 10.99.0.3), `bad` (a misconfigured keepalived, 10.99.0.4), `cl` (a client, 10.99.0.10);
/// with [`V6`] also 2001:db8:99::2 (tapvs), ::3 (keepalived) and ::10 (client), with DAD off.
/// Field order: children before namespaces.
struct Seg {
    fam: &'static Family,
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
    fn build(fam: &'static Family) -> Seg {
        let hub = Netns::new("vrrp-hub").expect("netns");
        let ka = Netns::new("vrrp-ka").expect("netns");
        let bad = Netns::new("vrrp-bad").expect("netns");
        let cl = Netns::new("vrrp-cl").expect("netns");
        if fam.ipv6 {
            // Before the links exist, so their link-local addresses are usable at once (no
            // duplicate address detection; keepalived sends its adverts from it).
            for ns in [&hub, &ka, &bad, &cl] {
                for c in ["all", "default"] {
                    ns.sysctl(&format!("net.ipv6.conf.{c}.disable_ipv6"), "0")
                        .expect("sysctl");
                    ns.sysctl(&format!("net.ipv6.conf.{c}.accept_dad"), "0")
                        .expect("sysctl");
                }
            }
        }
        veth((&hub, "vk0"), (&ka, "eth0")).expect("veth");
        veth((&hub, "vb0"), (&bad, "eth0")).expect("veth");
        veth((&hub, "vc0"), (&cl, "eth0")).expect("veth");
        bridge(&hub, "br0", &["vk0", "vb0", "vc0"]).expect("bridge");
        // tapvs sends no MLD reports: a snooping bridge that learnt keepalived's listener for
        // ff02::12 would stop flooding the adverts to tapvs's TAP.
        tapvs_lab::netns::no_snooping(&hub, "br0").expect("bridge mcast_snooping");
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
        if fam.ipv6 {
            ka.add_addr("eth0", "2001:db8:99::3/64").expect("addr");
            cl.add_addr("eth0", "2001:db8:99::10/64").expect("addr");
            for ns in [&ka, &cl] {
                assert!(
                    wait_until(Duration::from_secs(5), Duration::from_millis(20), || ns
                        .ip(&["-6", "addr", "show", "dev", "eth0", "scope", "link"])
                        .is_ok_and(
                            |s| s.contains("inet6 fe80::") && !s.contains("tentative")
                        )),
                    "no usable link-local address on eth0 of {}",
                    ns.name()
                );
            }
        }
        Seg {
            fam,
            tapvs: None,
            keepalived: None,
            capture: None,
            scratch: Scratch::new(if fam.ipv6 { "vrrp6" } else { "vrrp" }),
            cl,
            bad,
            ka,
            hub,
        }
    }

    /// Starts tapvs with `priority` (state BACKUP, the family's VRID and VIP; over IPv4 PASS
    /// "tapvs1") and waits for its metrics endpoint.
    fn start_tapvs(&mut self, priority: u8) {
        let Family { vip, vrid, .. } = *self.fam;
        let (addresses, service, real, auth) = if self.fam.ipv6 {
            (
                r#""10.99.0.2/24", "2001:db8:99::2/64""#,
                format!("[{vip}]:80"),
                "[2001:db8:99::50]:80",
                "",
            )
        } else {
            (
                r#""10.99.0.2/24""#,
                format!("{vip}:80"),
                "10.99.0.50:80",
                "auth_pass = \"tapvs1\"\n",
            )
        };
        // Its own control socket: the two tests of this file run at once.
        let socket = self.scratch.file("tapvs.sock");
        let socket = socket.display();
        let cfg = format!(
            r#"workers = 1
max_connections = 1000

[metrics]
listen = "127.0.0.1:9273"

[control]
socket = "{socket}"

[[port]]
name = "lan"
tap = "tvh0"
mac = "{TAPVS_MAC}"
addresses = [{addresses}]
bridge = "br0"

[[service]]
protocol = "tcp"
address = "{service}"
scheduler = "rr"

[[service.real]]
address = "{real}"
forward = "nat"

[[vrrp]]
name = "VI_1"
port = "lan"
virtual_router_id = {vrid}
priority = {priority}
advert_int = 1
state = "BACKUP"
{auth}virtual_addresses = ["{vip}"]
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

    /// keepalived in `ns` (VRRP only, foreground) with `priority`, `vrid` and (version 2)
    /// PASS authentication `pass`, for the segment's VIP: over IPv6 version 3, no
    /// authentication.
    fn keepalived(
        &self,
        ns: &Netns,
        tag: &str,
        state: &str,
        priority: u8,
        vrid: u8,
        pass: Option<&str>,
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
        pass: Option<&str>,
        advert_int: u8,
    ) -> NsChild {
        let Family { vip, prefix, .. } = *self.fam;
        let version = if self.fam.ipv6 { 3 } else { 2 };
        let auth = pass.map_or(String::new(), |p| {
            format!("  authentication {{\n    auth_type PASS\n    auth_pass {p}\n  }}\n")
        });
        let conf = format!(
            "global_defs {{\n  router_id {tag}\n  enable_script_security\n}}\n\
             vrrp_instance VI_1 {{\n  state {state}\n  interface eth0\n  version {version}\n  virtual_router_id {vrid}\n  priority {priority}\n  advert_int {advert_int}\n\
             {auth}\
             virtual_ipaddress {{\n    {vip}/{prefix} dev eth0\n  }}\n}}\n"
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
        let pass = (!self.fam.ipv6).then_some("tapvs1");
        let k = self.keepalived(&self.ka, "ka", "BACKUP", priority, self.fam.vrid, pass);
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

    /// tapvs's non-zero VRRP metric lines, for failure messages.
    fn vrrp_metrics(&self) -> String {
        self.metrics()
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("tapvs_vrrp") && !l.ends_with(" 0"))
            .collect::<Vec<_>>()
            .join("\n")
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
        let family = if self.fam.ipv6 { "-6" } else { "-4" };
        self.ka
            .ip(&[family, "addr", "show", "dev", "eth0"])
            .is_ok_and(|s| s.contains(&format!(" {}/", self.fam.vip)))
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

    /// The MAC the client resolves the VIP to, after a fresh ARP (or Neighbour Solicitation)
    /// exchange (ping, bounded).
    fn vip_mac_from_client(&self) -> Option<String> {
        let _ = self.cl.ip(&["neigh", "flush", "dev", "eth0"]);
        let _ = self.ping_vip();
        self.vip_mac_cached()
    }

    /// Whether the client's ping of the VIP (one echo, 1 s) is answered.
    fn ping_vip(&self) -> bool {
        self.cl
            .exec(&["ping", "-c", "1", "-W", "1", self.fam.vip])
            .is_ok()
    }

    /// The MAC the client's neighbour table holds for the VIP now (no new ARP exchange).
    fn vip_mac_cached(&self) -> Option<String> {
        let s = self
            .cl
            .ip(&["neigh", "show", self.fam.vip, "dev", "eth0"])
            .ok()?;
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

    /// Starts capturing VRRP (IP protocol 112) and Neighbour Advertisements on `ifname` of
    /// the hub (`br0` sees what is flooded; the client's port `vc0` also what is sent to it);
    /// the pcap it will go to.
    fn start_capture(&mut self, ifname: &str) -> PathBuf {
        self.capture = Some(common::tshark::Capture::start(
            &self.hub,
            ifname,
            is_vrrp_or_na,
        ));
        self.scratch.file("vrrp.pcap")
    }
}

/// Whether an Ethernet frame is VRRP (IPv4 protocol 112, IPv6 next header 112) or an ICMPv6
/// Neighbour Advertisement (next header 58, type 136).
fn is_vrrp_or_na(f: &[u8]) -> bool {
    match f.get(12..14) {
        Some([0x08, 0x00]) => f.len() >= 34 && f[23] == 112,
        Some([0x86, 0xdd]) => f.len() > 54 && (f[20] == 112 || (f[20] == 58 && f[54] == 136)),
        _ => false,
    }
}

/// `tshark -r pcap -Y FILTER -T fields -e ...` lines.
fn tshark_fields(pcap: &Path, filter: &str, fields: &[&str]) -> Vec<String> {
    common::tshark::fields(pcap, &["-Y", filter], fields)
}

/// Root and namespaces (`precheck`), keepalived and tshark: false (after skipping, or failing
/// under CI) when something is missing.
fn ready() -> bool {
    if !precheck() {
        return false;
    }
    if !have("keepalived") || !have("tshark") {
        tapvs_lab::netns::skip_or_fail("keepalived and tshark are needed (scripts/deps)");
        return false;
    }
    true
}

#[test]
fn keepalived_interop_failover_preemption_bad_peers_and_tshark() {
    if !ready() {
        return;
    }
    let started = Instant::now();
    let mut seg = Seg::build(&V4);
    let pcap = seg.start_capture("br0");
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
    let bad = seg.keepalived(&seg.bad, "bad-pass", "MASTER", 200, V4.vrid, Some("wrong"));
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(50), || seg
            .counter(
                "tapvs_vrrp_adverts_rejected_total",
                &["instance=\"VI_1\"", "reason=\"auth_failure\""]
            )
            >= 2),
        "wrong-password adverts are counted: {}",
        seg.vrrp_metrics()
    );
    assert_eq!(seg.tapvs_state().as_deref(), Some("MASTER"));
    Seg::signal(&bad, "-TERM");
    drop(bad);
    let bad = seg.keepalived(&seg.bad, "bad-vrid", "MASTER", 200, 52, Some("tapvs1"));
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

/// The VRRP adverts tshark decodes from `pcap` whose Ethernet source is `mac`, each as
/// [`V6_FIELDS`].
fn adverts6_from(pcap: &Path, mac: &str) -> Vec<Vec<String>> {
    tshark_fields(pcap, &format!("vrrp && eth.src == {mac}"), &V6_FIELDS)
        .iter()
        .map(|r| r.split('\t').map(str::to_string).collect())
        .collect()
}

/// The fields [`adverts6_from`] decodes, in order.
const V6_FIELDS: [&str; 10] = [
    "ipv6.src",
    "ipv6.dst",
    "ipv6.hlim",
    "vrrp.version",
    "vrrp.type",
    "vrrp.virt_rtr_id",
    "vrrp.prio",
    "vrrp.checksum.status",
    "vrrp.ipv6_addr",
    "vrrp.short_adver_int",
];

/// VRRP version 3 over IPv6 against keepalived (VRID 61, VIP 2001:db8:99::100): keepalived
/// (150) is master and tapvs (100) a backup that accepts its adverts and answers no solicitation
/// for the VIP; keepalived's stop (priority 0) makes tapvs master within 1 s + skew, its
/// unsolicited NA moves the client's neighbour entry and it answers ping; a restarted
/// keepalived preempts and its NA moves the entry back. tshark checks both sides' adverts and
/// tapvs's NAs on the wire.
#[test]
fn keepalived_interop_over_ipv6_failover_preemption_and_tshark() {
    if !ready() {
        return;
    }
    let started = Instant::now();
    let mut seg = Seg::build(&V6);
    // On the client's port: the adverts and unsolicited NAs are flooded there, and the answers
    // to the client's solicitations (unicast) pass it.
    let pcap = seg.start_capture("vc0");
    let ka_mac = seg.ka_mac();
    let rejected = |seg: &Seg| seg.counter("tapvs_vrrp_adverts_rejected_total", &[]);

    // 1. keepalived 150, tapvs 100: keepalived is master; tapvs hears it and stays backup.
    seg.start_keepalived(150);
    seg.start_tapvs(100);
    let tapvs_up = Instant::now();
    seg.wait_ka_master(true, MASTER_DOWN_100 + SLACK * 2)
        .expect("keepalived (150) becomes master");
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || seg
            .counter(
                "tapvs_vrrp_adverts_received_total",
                &["instance=\"VI_1\"", "priority=\"nonzero\""]
            )
            >= 2),
        "tapvs accepts keepalived's v3 adverts over IPv6: {}",
        seg.vrrp_metrics()
    );
    // A full master-down interval of tapvs's: it must not take over meanwhile.
    let window = MASTER_DOWN_100 + SLACK;
    std::thread::sleep(window.saturating_sub(tapvs_up.elapsed()));
    assert_eq!(seg.tapvs_state().as_deref(), Some("BACKUP"));
    assert_eq!(
        seg.counter(
            "tapvs_vrrp_transitions_total",
            &["instance=\"VI_1\"", "state=\"MASTER\""]
        ),
        0,
        "tapvs (100) was never master"
    );
    assert_eq!(rejected(&seg), 0, "no advert of keepalived's rejected");
    // The client reaches the VIP on keepalived (tapvs, backup, answers no solicitation).
    assert_eq!(seg.vip_mac_from_client().as_deref(), Some(ka_mac.as_str()));
    assert!(seg.ping_vip(), "ping -6 of the VIP answered by keepalived");
    assert_eq!(seg.vip_mac_cached().as_deref(), Some(ka_mac.as_str()));

    // 2. keepalived stops (SIGTERM: priority 0): tapvs is master after its skew time, and its
    // unsolicited Neighbour Advertisement moves the client's entry without a new solicitation.
    let t0 = Instant::now();
    let ka_stopped = std::time::SystemTime::now();
    Seg::signal(seg.keepalived.as_ref().unwrap(), "-TERM");
    seg.keepalived = None;
    let within = Duration::from_secs(1) + SKEW_100 + SLACK;
    seg.wait_tapvs("MASTER", within)
        .expect("tapvs becomes master after keepalived stops");
    let t = t0.elapsed();
    eprintln!("tapvs master {t:?} after SIGTERM of keepalived");
    assert!(t <= within, "{t:?}");
    assert!(!seg.ka_has_vip(), "keepalived removed the VIP on stop");
    assert!(
        seg.counter(
            "tapvs_vrrp_adverts_received_total",
            &["instance=\"VI_1\"", "priority=\"zero\""]
        ) >= 1,
        "keepalived's priority-0 advert was received"
    );
    assert!(
        wait_until(Duration::from_secs(2), Duration::from_millis(20), || seg
            .vip_mac_cached()
            .as_deref()
            == Some(TAPVS_MAC)),
        "tapvs's unsolicited NA moved the VIP to it: {:?}",
        seg.vip_mac_cached()
    );
    assert!(seg.ping_vip(), "ping -6 of the VIP answered by tapvs");
    assert_eq!(seg.vip_mac_from_client().as_deref(), Some(TAPVS_MAC));

    // 3. keepalived back with 150: it preempts (after its own master-down interval); tapvs
    // returns to backup and keepalived's NA moves the client's entry back.
    seg.start_keepalived(150);
    let t = seg
        .wait_ka_master(true, MASTER_DOWN_100 + SLACK * 2)
        .expect("restarted keepalived (150) preempts");
    eprintln!("keepalived preempted {t:?} after its restart");
    seg.wait_tapvs("BACKUP", Duration::from_secs(3))
        .expect("tapvs yields to the preempting keepalived");
    assert!(
        wait_until(Duration::from_secs(3), Duration::from_millis(20), || seg
            .vip_mac_cached()
            .as_deref()
            == Some(ka_mac.as_str())),
        "keepalived's NA moved the VIP back: {:?}",
        seg.vip_mac_cached()
    );
    assert!(
        seg.ping_vip(),
        "ping -6 of the VIP answered by keepalived again"
    );
    assert_eq!(rejected(&seg), 0, "no advert of keepalived's rejected");

    // 4. tshark decodes tapvs's adverts as valid VRRP v3 from its link-local address.
    let frames = seg.capture.take().unwrap().finish(&pcap);
    eprintln!("{frames} VRRP and NA frames captured on the client's port");
    let malformed = tshark_fields(
        &pcap,
        "(vrrp || icmpv6) && _ws.malformed",
        &["frame.number"],
    );
    assert!(malformed.is_empty(), "malformed frames: {malformed:?}");
    let ours = adverts6_from(&pcap, TAPVS_MAC);
    assert!(ours.len() >= 2, "tapvs's adverts: {ours:?}");
    let vrid = V6.vrid.to_string();
    for x in &ours {
        // From its link-local address to ff02::12, hop limit 255, a v3 advertisement (type 1)
        // for VRID 61 at priority 100 (it was only master at 100), good checksum, the VIP, 1 s.
        assert_eq!(
            x,
            &[TAPVS_LL, "ff02::12", "255", "3", "1", &vrid, "100", "1", VIP6, "100"],
            "tapvs's advert, as {V6_FIELDS:?}"
        );
    }
    // keepalived's adverts decode the same way (from its link-local address).
    let theirs = tshark_fields(
        &pcap,
        &format!("vrrp && eth.src == {ka_mac}"),
        &[
            "ipv6.src",
            "vrrp.version",
            "vrrp.prio",
            "vrrp.checksum.status",
        ],
    );
    assert!(
        theirs.iter().any(|r| r.ends_with("\t3\t150\t1"))
            && theirs.iter().any(|r| r.ends_with("\t3\t0\t1"))
            && theirs.iter().all(|r| r.starts_with("fe80::")),
        "keepalived's adverts: {theirs:?}"
    );
    // tapvs's unsolicited NAs for the VIP: to all-nodes, from its MAC, override set.
    let nas = tshark_fields(
        &pcap,
        &format!(
            "icmpv6.type == 136 && eth.src == {TAPVS_MAC} && icmpv6.nd.na.target_address == {VIP6}"
        ),
        &[
            "ipv6.dst",
            "ipv6.hlim",
            "icmpv6.nd.na.target_address",
            "icmpv6.nd.na.flag.s",
            "icmpv6.nd.na.flag.o",
            "frame.time_epoch",
        ],
    );
    let nas: Vec<Vec<&str>> = nas.iter().map(|r| r.split('\t').collect()).collect();
    let unsolicited: Vec<_> = nas.iter().filter(|f| f[0] == "ff02::1").collect();
    assert!(unsolicited.len() >= 5, "tapvs's unsolicited NAs: {nas:?}");
    for f in &unsolicited {
        assert_eq!(f[1..5], ["255", VIP6, "0", "1"], "{f:?}");
    }
    // While backup it answered none of the client's solicitations for the VIP; as master it
    // did (solicited, to the client).
    let stopped = ka_stopped
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let at = |f: &Vec<&str>| f[5].parse::<f64>().expect("frame.time_epoch");
    assert!(
        nas.iter().all(|f| at(f) > stopped),
        "tapvs sent an NA for the VIP while backup: {nas:?}"
    );
    assert!(
        nas.iter()
            .any(|f| f[0] == "2001:db8:99::10" && f[1..5] == ["255", VIP6, "1", "1"]),
        "tapvs answered the client's solicitation as master: {nas:?}"
    );
    eprintln!(
        "tshark: {} adverts of tapvs, {} of keepalived, {} unsolicited NAs of tapvs; test took {:?}",
        ours.len(),
        theirs.len(),
        unsolicited.len(),
        started.elapsed()
    );
}
