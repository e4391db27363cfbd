//! The scale-out lab: several appliance instances behind a router that spreads flows over them
//! by ECMP, the VIP announced to it over BGP by a BIRD 2 beside each instance. This module owns
//! the namespaces, links, addresses, BIRD configs and BIRD processes of that topology, and the
//! paced, SHA-256-checked transfers its tests send through it; it starts no appliance (the
//! caller runs one per instance, see [`Instance`]).
//!
//! ```text
//!  client 10.77.0.2 ── veth ── router (BIRD, ECMP, fib_multipath_hash_policy=1)
//!                                 │ 10.88.0.1 on bridge "bs" (the segment)
//!        ┌────────────────────────┼──────────────────────────┐
//!  instance i: veth ── [br "b0": BIRD 10.88.0.(21+i) + TAP "t0" (appliance 10.88.0.(11+i),
//!              FullNAT local address 10.88.0.(31+i))]
//!  real server j: 10.88.0.(101+j), default route via the router
//! ```
//! Each instance's BIRD announces what the appliance writes into its include file
//! ([`Instance::vips_file`]: `protocol static tapvs_vips` and `tapvs_vips6`), with the
//! appliance's address as BGP next hop; the router merges the paths into one multipath kernel
//! route. BGP timers are short (hold 3 s, keepalive 1 s, retry 1 s). Dropping the
//! [`ScaleOut`] stops every BIRD and removes the namespaces and the scratch directory.
//!
//! [`ScaleOut::build_dual`] adds IPv6 beside it: client [`CLIENT6`], router [`ROUTER6`] on the
//! segment 2001:db8:88::/64 (instance `i`'s appliance at [`instance_addr6`], its BIRD at
//! [`bird_addr6`], FullNAT local address [`local_addr6`]; real server `j` at [`real_addr6`]),
//! a second BGP session per instance over IPv6 (`uplink6`, an `ipv6` channel exporting
//! `tapvs_vips6`, the [`VIP6`] routes) and the router's IPv6 kernel table merging those paths
//! (`net.ipv6.fib_multipath_hash_policy=1`). Every address is `nodad`; DAD, router
//! solicitations, RAs and MLD reports are off, and the bridges do not snoop multicast.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::netns::{bridge, no_snooping, veth, wait_until, Netns, NsChild};

/// The VIP the instances announce.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The client.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The router on the client's link.
pub const ROUTER_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
/// The router on the segment.
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 88, 0, 1);
/// Most instances the router has BGP neighbours for.
pub const MAX_INSTANCES: usize = 4;
/// The router's AS.
const ROUTER_AS: u32 = 65000;
/// The instances' AS.
const INSTANCE_AS: u32 = 65100;
/// The router's multipath route must appear within this (BGP set-up is about 3 s).
pub const CONVERGE: Duration = Duration::from_secs(30);

/// The appliance's address in instance `i`.
pub fn instance_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 88, 0, 11 + i as u8)
}

/// The address of instance `i`'s BIRD (the instance namespace's kernel).
pub fn bird_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 88, 0, 21 + i as u8)
}

/// The FullNAT local address of instance `i`.
pub fn local_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 88, 0, 31 + i as u8)
}

/// The MAC of the appliance's port in instance `i`.
pub fn instance_mac(i: usize) -> String {
    format!("02:74:76:00:01:{:02x}", i + 1)
}

/// Real server `j`.
pub fn real_addr(j: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 88, 0, 101 + j as u8)
}

/// The IPv6 VIP the instances announce in a dual-stack lab.
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, 0x10);
/// The client's IPv6 address.
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 2);
/// The router's IPv6 address on the client's link.
pub const ROUTER_CLIENT_SIDE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x77, 0, 0, 0, 0, 1);
/// The router's IPv6 address on the segment.
pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x88, 0, 0, 0, 0, 1);

/// The segment's IPv6 address with interface id `id` (hex).
fn seg6(id: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x88, 0, 0, 0, 0, id)
}

/// The appliance's IPv6 address in instance `i`: 2001:db8:88::(11+i) (hex).
pub fn instance_addr6(i: usize) -> Ipv6Addr {
    seg6(0x11 + i as u16)
}

/// The IPv6 address of instance `i`'s BIRD: 2001:db8:88::(21+i) (hex).
pub fn bird_addr6(i: usize) -> Ipv6Addr {
    seg6(0x21 + i as u16)
}

/// The IPv6 FullNAT local address of instance `i`: 2001:db8:88::(31+i) (hex).
pub fn local_addr6(i: usize) -> Ipv6Addr {
    seg6(0x31 + i as u16)
}

/// Real server `j`'s IPv6 address: 2001:db8:88::(101+j) (hex).
pub fn real_addr6(j: usize) -> Ipv6Addr {
    seg6(0x101 + j as u16)
}

/// The bridge in an instance namespace the appliance's TAP joins.
pub const INSTANCE_BRIDGE: &str = "b0";
/// The appliance's TAP in an instance namespace.
pub const INSTANCE_TAP: &str = "t0";

/// A scratch directory, removed on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> io::Result<ScratchDir> {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "tapvs-so-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p)?;
        Ok(ScratchDir(p))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // A process that is just ending (an appliance's watchdog) may still write here: retry
        // a few times.
        for _ in 0..20 {
            if std::fs::remove_dir_all(&self.0).is_ok() || !self.0.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// One instance namespace and its BIRD. The appliance is the caller's: write its config
/// with [`Instance::vips_file`] and [`Instance::birdc`], start it in [`Instance::ns`].
#[derive(Debug)]
pub struct Instance {
    /// Index (0-based): addresses and names derive from it.
    pub index: usize,
    /// BIRD, killed on drop.
    bird: Option<NsChild>,
    /// Has the IPv6 session `uplink6` too (dual-stack lab).
    dual: bool,
    /// The namespace.
    pub ns: Netns,
    dir: PathBuf,
}

impl Instance {
    /// The file the appliance writes and BIRD includes.
    pub fn vips_file(&self) -> PathBuf {
        self.dir.join(format!("vips{}.conf", self.index))
    }

    /// BIRD's control socket.
    pub fn bird_socket(&self) -> PathBuf {
        self.dir.join(format!("bird{}.ctl", self.index))
    }

    /// The command that reaches this instance's BIRD (`birdc -s SOCKET`).
    pub fn birdc(&self) -> Vec<String> {
        vec![
            "birdc".into(),
            "-s".into(),
            self.bird_socket().display().to_string(),
        ]
    }

    /// Whether BIRD's BGP sessions to the router are established (`uplink`, and `uplink6` in
    /// a dual-stack lab).
    pub fn bgp_up(&self) -> bool {
        let sessions: &[&str] = if self.dual {
            &["uplink", "uplink6"]
        } else {
            &["uplink"]
        };
        sessions.iter().all(|p| {
            let out = std::process::Command::new("birdc")
                .args([
                    "-s",
                    &self.bird_socket().display().to_string(),
                    "show",
                    "protocols",
                    p,
                ])
                .output();
            out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Established"))
        })
    }
}

/// The whole lab. Fields drop in order: BIRDs and instances, real servers, router, client, then
/// the scratch directory.
#[derive(Debug)]
pub struct ScaleOut {
    /// The appliance instances (their namespaces and BIRDs).
    pub instances: Vec<Instance>,
    /// The real servers.
    pub reals: Vec<Netns>,
    router_bird: Option<NsChild>,
    /// The router.
    pub router: Netns,
    /// The client.
    pub client: Netns,
    /// Built with [`ScaleOut::build_dual`].
    dual: bool,
    dir: ScratchDir,
}

/// The empty include file (what the appliance writes with nothing to announce).
const NO_ROUTES: &str =
    "protocol static tapvs_vips {\n  ipv4;\n}\nprotocol static tapvs_vips6 {\n  ipv6;\n}\n";

/// Prepares a new namespace's IPv6 before its links exist: quiet dual stack
/// (`topology::quiet_ipv6`: no DAD, RS, RA or MLD) or IPv6 off.
fn ipv6_plan(ns: &Netns, dual: bool) -> io::Result<()> {
    if dual {
        crate::topology::quiet_ipv6(ns)
    } else {
        ns.sysctl("net.ipv6.conf.all.disable_ipv6", "1")
    }
}

/// The addresses after each `via` in `route` (an `ip route show` output), sorted, once each.
fn via_addrs<T: std::str::FromStr + Ord>(route: &str) -> Vec<T> {
    let mut hops: Vec<T> = route
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "via")
        .filter_map(|w| w[1].parse().ok())
        .collect();
    hops.sort_unstable();
    hops.dedup();
    hops
}

impl ScaleOut {
    /// Builds router, client, `n_reals` real servers (plain hosts on the segment, default
    /// route via the router) and `n_instances` instance namespaces with their BIRDs, and waits
    /// until every instance's BGP session is established.
    pub fn build(n_instances: usize, n_reals: usize) -> io::Result<ScaleOut> {
        ScaleOut::build_with(n_instances, n_reals, false)
    }

    /// [`ScaleOut::build`] with the IPv6 plan of the module documentation as well: every
    /// host dual stack, a second BGP session per instance over IPv6 for [`VIP6`]. Needs `nft`.
    pub fn build_dual(n_instances: usize, n_reals: usize) -> io::Result<ScaleOut> {
        ScaleOut::build_with(n_instances, n_reals, true)
    }

    fn build_with(n_instances: usize, n_reals: usize, dual: bool) -> io::Result<ScaleOut> {
        let dir = ScratchDir::new()?;
        let client = Netns::new("so-client")?;
        let router = Netns::new("so-router")?;
        let mut so = ScaleOut {
            instances: Vec::new(),
            reals: Vec::new(),
            router_bird: None,
            router,
            client,
            dual,
            dir,
        };
        for ns in [&so.client, &so.router] {
            ipv6_plan(ns, dual)?;
        }
        let r = &so.router;
        r.sysctl("net.ipv4.ip_forward", "1")?;
        r.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
        if dual {
            r.sysctl("net.ipv6.conf.all.forwarding", "1")?;
            r.sysctl("net.ipv6.fib_multipath_hash_policy", "1")?;
        }
        for k in ["all", "default"] {
            r.sysctl(&format!("net.ipv4.conf.{k}.rp_filter"), "0")?;
        }
        veth((&so.client, "eth0"), (r, "c0"))?;
        so.client.add_addr("eth0", &format!("{CLIENT}/24"))?;
        so.client
            .add_default_route(&ROUTER_CLIENT_SIDE.to_string())?;
        r.add_addr("c0", &format!("{ROUTER_CLIENT_SIDE}/24"))?;
        bridge(r, "bs", &[])?;
        r.add_addr("bs", &format!("{ROUTER}/24"))?;
        if dual {
            no_snooping(r, "bs")?;
            so.client.add_addr("eth0", &format!("{CLIENT6}/64"))?;
            so.client
                .add_default_route(&ROUTER_CLIENT_SIDE6.to_string())?;
            r.add_addr("c0", &format!("{ROUTER_CLIENT_SIDE6}/64"))?;
            r.add_addr("bs", &format!("{ROUTER6}/64"))?;
        }
        if Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
            for key in ["iptables", "ip6tables", "arptables"] {
                r.sysctl(&format!("net.bridge.bridge-nf-call-{key}"), "0")?;
            }
        }
        for j in 0..n_reals {
            let rs = Netns::new(&format!("so-rs{j}"))?;
            ipv6_plan(&rs, dual)?;
            for k in ["all", "default"] {
                rs.sysctl(&format!("net.ipv4.conf.{k}.rp_filter"), "0")?;
            }
            let port = format!("r{j}");
            veth((&rs, "eth0"), (&so.router, &port))?;
            so.router
                .ip(&["link", "set", "dev", &port, "master", "bs"])?;
            rs.add_addr("eth0", &format!("{}/24", real_addr(j)))?;
            rs.add_default_route(&ROUTER.to_string())?;
            if dual {
                rs.add_addr("eth0", &format!("{}/64", real_addr6(j)))?;
                rs.add_default_route(&ROUTER6.to_string())?;
            }
            so.reals.push(rs);
        }
        so.start_router_bird()?;
        for _ in 0..n_instances {
            so.add_instance()?;
        }
        let up = wait_until(CONVERGE, Duration::from_millis(100), || {
            so.instances.iter().all(Instance::bgp_up)
        });
        if !up {
            return Err(io::Error::other(format!(
                "BGP sessions not established in {CONVERGE:?}: {}",
                so.bird_logs()
            )));
        }
        Ok(so)
    }

    /// Whether the lab was built with [`ScaleOut::build_dual`].
    pub fn is_dual(&self) -> bool {
        self.dual
    }

    /// The scratch directory (configs, sockets, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn start_router_bird(&mut self) -> io::Result<()> {
        let mut conf = format!(
            "router id {ROUTER};\nlog \"{}\" all;\nprotocol device {{ scan time 1; }}\n\
             protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}\n",
            self.dir().join("bird-router.log").display()
        );
        if self.dual {
            conf.push_str(
                "protocol kernel {\n  ipv6 { import none; export all; };\n  merge paths on;\n}\n",
            );
        }
        for i in 0..MAX_INSTANCES {
            conf.push_str(&format!(
                "protocol bgp i{i} {{\n  local {ROUTER} as {ROUTER_AS};\n  neighbor {} as {INSTANCE_AS};\n  \
                 hold time 3; keepalive time 1; connect retry time 1; error wait time 1,2;\n  \
                 ipv4 {{ import all; export none; }};\n}}\n",
                bird_addr(i)
            ));
            if self.dual {
                conf.push_str(&format!(
                    "protocol bgp i{i}v6 {{\n  local {ROUTER6} as {ROUTER_AS};\n  neighbor {} as {INSTANCE_AS};\n  \
                     hold time 3; keepalive time 1; connect retry time 1; error wait time 1,2;\n  \
                     ipv6 {{ import all; export none; }};\n}}\n",
                    bird_addr6(i)
                ));
            }
        }
        let path = self.dir().join("bird-router.conf");
        std::fs::write(&path, conf)?;
        let sock = self.dir().join("bird-router.ctl");
        self.router_bird = Some(spawn_bird(&self.router, &path, &sock)?);
        Ok(())
    }

    /// Adds the next instance namespace (up to [`MAX_INSTANCES`]) with its BIRD, attached to
    /// the segment; returns its index. Its BGP session comes up in a few seconds
    /// ([`Instance::bgp_up`]).
    pub fn add_instance(&mut self) -> io::Result<usize> {
        let i = self.instances.len();
        if i >= MAX_INSTANCES {
            return Err(io::Error::other(
                "the router has neighbours for 4 instances",
            ));
        }
        let ns = Netns::new(&format!("so-lb{i}"))?;
        ipv6_plan(&ns, self.dual)?;
        if Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
            for key in ["iptables", "ip6tables", "arptables"] {
                ns.sysctl(&format!("net.bridge.bridge-nf-call-{key}"), "0")?;
            }
        }
        let port = format!("l{i}");
        veth((&ns, "eth0"), (&self.router, &port))?;
        self.router
            .ip(&["link", "set", "dev", &port, "master", "bs"])?;
        bridge(&ns, INSTANCE_BRIDGE, &["eth0"])?;
        ns.add_addr(INSTANCE_BRIDGE, &format!("{}/24", bird_addr(i)))?;
        if self.dual {
            no_snooping(&ns, INSTANCE_BRIDGE)?;
            ns.add_addr(INSTANCE_BRIDGE, &format!("{}/64", bird_addr6(i)))?;
        }
        let mut inst = Instance {
            index: i,
            bird: None,
            dual: self.dual,
            ns,
            dir: self.dir().to_path_buf(),
        };
        std::fs::write(inst.vips_file(), NO_ROUTES)?;
        let mut conf = format!(
            "router id {id};\nlog \"{log}\" all;\nprotocol device {{ scan time 1; }}\ninclude \"{vips}\";\n\
             protocol bgp uplink {{\n  local {id} as {INSTANCE_AS};\n  neighbor {ROUTER} as {ROUTER_AS};\n  \
             hold time 3; keepalive time 1; connect retry time 1; error wait time 1,2;\n  \
             ipv4 {{ import none; export filter {{ if proto = \"tapvs_vips\" then {{ bgp_next_hop = {nh}; accept; }} reject; }}; }};\n}}\n",
            id = bird_addr(i),
            log = self.dir().join(format!("bird{i}.log")).display(),
            vips = inst.vips_file().display(),
            nh = instance_addr(i),
        );
        if self.dual {
            conf.push_str(&format!(
                "protocol bgp uplink6 {{\n  local {id} as {INSTANCE_AS};\n  neighbor {ROUTER6} as {ROUTER_AS};\n  \
                 hold time 3; keepalive time 1; connect retry time 1; error wait time 1,2;\n  \
                 ipv6 {{ import none; export filter {{ if proto = \"tapvs_vips6\" then {{ bgp_next_hop = {nh}; accept; }} reject; }}; }};\n}}\n",
                id = bird_addr6(i),
                nh = instance_addr6(i),
            ));
        }
        let path = self.dir().join(format!("bird{i}.conf"));
        std::fs::write(&path, conf)?;
        inst.bird = Some(spawn_bird(&inst.ns, &path, &inst.bird_socket())?);
        self.instances.push(inst);
        Ok(i)
    }

    /// The router's kernel route to the VIP as `ip route show` prints it ("" when none).
    pub fn vip_route(&self) -> String {
        self.router
            .ip(&["route", "show", &format!("{VIP}/32")])
            .unwrap_or_default()
    }

    /// The next hops of the router's route to the VIP, sorted.
    pub fn vip_next_hops(&self) -> Vec<Ipv4Addr> {
        via_addrs(&self.vip_route())
    }

    /// The router's kernel route to [`VIP6`] as `ip -6 route show` prints it ("" when none).
    pub fn vip6_route(&self) -> String {
        self.router
            .ip(&["-6", "route", "show", &format!("{VIP6}/128")])
            .unwrap_or_default()
    }

    /// The next hops of the router's route to [`VIP6`], sorted.
    pub fn vip6_next_hops(&self) -> Vec<Ipv6Addr> {
        via_addrs(&self.vip6_route())
    }

    /// [`ScaleOut::wait_next_hops`] for the route to [`VIP6`]: waits until its next hops are
    /// exactly the IPv6 appliance addresses of `instances`.
    pub fn wait_next_hops6(&self, instances: &[usize], timeout: Duration) -> Option<Duration> {
        let mut want: Vec<Ipv6Addr> = instances.iter().map(|&i| instance_addr6(i)).collect();
        want.sort_unstable();
        let t0 = Instant::now();
        wait_until(timeout, Duration::from_millis(5), || {
            self.vip6_next_hops() == want
        })
        .then(|| t0.elapsed())
    }

    /// Waits until the router's next hops for the VIP are exactly the appliance addresses of
    /// `instances`; returns how long that took, or `None` after `timeout`.
    pub fn wait_next_hops(&self, instances: &[usize], timeout: Duration) -> Option<Duration> {
        let mut want: Vec<Ipv4Addr> = instances.iter().map(|&i| instance_addr(i)).collect();
        want.sort_unstable();
        let t0 = Instant::now();
        wait_until(timeout, Duration::from_millis(5), || {
            self.vip_next_hops() == want
        })
        .then(|| t0.elapsed())
    }

    /// The tail of every BIRD log (for failure messages).
    pub fn bird_logs(&self) -> String {
        let mut s = String::new();
        let mut names = vec!["bird-router.log".to_string()];
        names.extend((0..self.instances.len()).map(|i| format!("bird{i}.log")));
        for n in names {
            let text = std::fs::read_to_string(self.dir().join(&n)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            s.push_str(&format!("\n--- {n}\n{tail}"));
        }
        s
    }
}

/// Starts `bird -f` in `ns` and waits until its control socket answers.
fn spawn_bird(ns: &Netns, conf: &Path, sock: &Path) -> io::Result<NsChild> {
    let pid = sock.with_extension("pid");
    let (c, s, p) = (
        conf.display().to_string(),
        sock.display().to_string(),
        pid.display().to_string(),
    );
    let err = sock.with_extension("err");
    let child = ns.spawn(
        &["bird", "-f", "-c", &c, "-s", &s, "-P", &p],
        Stdio::null(),
        Stdio::from(std::fs::File::create(&err)?),
    )?;
    let ready = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        std::process::Command::new("birdc")
            .args(["-s", &s, "show", "status"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Daemon is up"))
    });
    if !ready {
        let why = std::fs::read_to_string(&err).unwrap_or_default();
        return Err(io::Error::other(format!(
            "bird with {c} did not come up: {why}"
        )));
    }
    Ok(child)
}

// ---------------------------------------------------------------------------------------------
// Paced transfers.

/// The xorshift64 byte stream of transfer `seed`.
struct Stream(u64);

impl Stream {
    fn new(seed: u64) -> Stream {
        Stream(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for w in buf.chunks_exact_mut(8) {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            w.copy_from_slice(&x.to_le_bytes());
        }
    }
}

/// A server that takes any number of connections, reads each to EOF while hashing it, then
/// answers `NAME HEX-SHA256\n` and closes. Stops (and joins its threads) on drop.
#[derive(Debug)]
pub struct DigestServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Connections fully served.
    pub served: Arc<AtomicU64>,
}

impl DigestServer {
    /// Binds `bind` in the calling thread's namespace (ready when this returns).
    pub fn start(bind: SocketAddr, name: &str) -> io::Result<DigestServer> {
        let listener = TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let (st, sv, name) = (stop.clone(), served.clone(), name.to_string());
        let thread = std::thread::Builder::new()
            .name("digest-server".into())
            .spawn(move || {
                let mut conns: Vec<JoinHandle<()>> = Vec::new();
                while !st.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let (st, sv, name) = (st.clone(), sv.clone(), name.clone());
                            conns.retain(|c| !c.is_finished());
                            conns.push(std::thread::spawn(move || {
                                if serve_digest(s, &name, &st).is_ok() {
                                    sv.fetch_add(1, Ordering::Relaxed);
                                }
                            }));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            let _ = crate::sys::wait_readable(&listener, Duration::from_millis(50));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
                for c in conns {
                    let _ = c.join();
                }
            })?;
        Ok(DigestServer {
            stop,
            thread: Some(thread),
            served,
        })
    }
}

impl Drop for DigestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads `s` to EOF (giving up after 60 s idle or on `stop`), answers name and digest.
fn serve_digest(mut s: TcpStream, name: &str, stop: &AtomicBool) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut last = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                h.update(&buf[..n]);
                last = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::Relaxed) || last.elapsed() > Duration::from_secs(60) {
                    return Err(io::Error::other("digest server: gave up"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    s.write_all(format!("{name} {hex}\n").as_bytes())?;
    let _ = s.shutdown(Shutdown::Write);
    Ok(())
}

/// What a [`paced_transfer`] saw.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// The client's source port.
    pub port: u16,
    /// The server's name from its answer.
    pub server: String,
    /// Whether the server's SHA-256 equals that of what was sent.
    pub digest_ok: bool,
    /// How long it took.
    pub elapsed: Duration,
}

/// Connects to `addr` from the calling thread's namespace and sends `chunks` chunks of
/// `chunk` bytes of stream `seed`, one every `pace` (so the transfer lasts about `chunks ×
/// pace`), half-closes and reads the server's answer. `timeout` bounds the whole transfer.
pub fn paced_transfer(
    addr: SocketAddr,
    seed: u64,
    chunk: usize,
    chunks: usize,
    pace: Duration,
    timeout: Duration,
) -> io::Result<Transfer> {
    let t0 = Instant::now();
    let deadline = t0 + timeout;
    let left = |what: &str| {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{addr}: {what}: timed out"),
                )
            })
    };
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    let port = s.local_addr()?.port();
    let mut g = Stream::new(seed);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; chunk.next_multiple_of(8)];
    for k in 0..chunks {
        g.fill(&mut buf);
        let b = &buf[..chunk];
        s.set_write_timeout(Some(left("write")?))?;
        s.write_all(b)
            .map_err(|e| io::Error::new(e.kind(), format!("port {port}: write: {e}")))?;
        h.update(b);
        if k + 1 < chunks {
            std::thread::sleep(pace.min(left("pace")?));
        }
    }
    s.shutdown(Shutdown::Write)?;
    let mut answer = String::new();
    s.set_read_timeout(Some(left("answer")?))?;
    s.read_to_string(&mut answer)
        .map_err(|e| io::Error::new(e.kind(), format!("port {port}: answer: {e}")))?;
    let want: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let (server, got) = answer.trim().split_once(' ').unwrap_or(("", ""));
    Ok(Transfer {
        port,
        server: server.to_string(),
        digest_ok: got == want,
        elapsed: t0.elapsed(),
    })
}
