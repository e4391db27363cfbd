//! Network-namespace test harness: owns the lifecycle of the throw-away namespaces, veth pairs and
//! bridges that the integration tests and `tapvs demo` build, shelling out to iproute2 (`ip`) for
//! configuration. A [`Netns`] is created with `ip netns add` and removed on `Drop` (also while a
//! panic unwinds), after the processes spawned in it are killed. Rust code runs inside a namespace
//! on a fresh thread that joins it with `setns(2)` ([`Netns::run`], [`Netns::spawn_thread`]); the
//! caller's own thread never changes namespace. Leftovers of crashed runs are swept by name
//! ([`sweep_stale`]), and readiness is awaited by polling ([`wait_until`],
//! [`wait_for_tcp_listen`]), never by fixed sleeps.

use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::sys;

/// Prefix of every namespace this harness creates; [`sweep_stale`] only touches names with it.
pub const NETNS_PREFIX: &str = "tvs-";

/// Directory where iproute2 keeps the bind mounts of named namespaces.
const NETNS_RUN_DIR: &str = "/run/netns";

/// Longest role suffix kept in a namespace name.
const MAX_ROLE_LEN: usize = 16;

/// Linux's limit on interface names (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Per-process counter making namespace and link names unique.
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Guards the one [`sweep_stale`] call made by [`Netns::new`].
static SWEEP_ONCE: Once = Once::new();

/// Serialises `ip netns add`: the first call sets up `/run/netns` as a shared mount and concurrent
/// first calls can race on that.
static ADD_LOCK: Mutex<()> = Mutex::new(());

/// A child process shared between its [`NsChild`] guard and the [`Netns`] that spawned it.
type SharedChild = Arc<Mutex<Option<Child>>>;

/// Locks a mutex, ignoring poisoning (a panicking test must not stop clean-up).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Renders an argument vector as a shell-like command line for error messages.
fn cmdline(program: &str, args: &[&str]) -> String {
    let mut s = String::from(program);
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    s
}

/// Runs `program args...`, returning its output, or an error naming the command line and its
/// stderr when it cannot be started or exits non-zero.
fn run_cmd(program: &str, args: &[&str]) -> io::Result<Output> {
    let line = cmdline(program, args);
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("`{line}`: cannot run: {e}")))?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// Makes `role` safe and short for a namespace name: keeps `[A-Za-z0-9_-]`, maps anything else to
/// `_`, and truncates to 16 characters.
fn sanitize_role(role: &str) -> String {
    let s: String = role
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(MAX_ROLE_LEN)
        .collect();
    if s.is_empty() {
        "ns".to_string()
    } else {
        s
    }
}

/// Formats `n` in base 36 (lower-case).
fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    if n == 0 {
        return "0".to_string();
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Returns a short interface name, unique across processes and calls, of at most 15 characters:
/// `<tag, ≤4 chars>-<pid in base 36>-<counter in base 36, ≤4 chars>`, e.g. `veth-2n9c-1a`.
///
/// Characters of `tag` outside `[A-Za-z0-9_]` are dropped (no `.`, so the name can appear in
/// dotted sysctl keys). The counter wraps after 36⁴ names per process.
pub fn link_name(tag: &str) -> String {
    let tag: String = tag
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(4)
        .collect();
    let tag = if tag.is_empty() { "l".to_string() } else { tag };
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) % 36u64.pow(4);
    let mut name = format!(
        "{tag}-{}-{}",
        base36(u64::from(std::process::id())),
        base36(n)
    );
    name.truncate(MAX_IFNAME_LEN);
    name
}

/// Lists the named network namespaces (`ip netns list`, first column).
pub fn list_netns() -> io::Result<Vec<String>> {
    let out = run_cmd("ip", &["netns", "list"])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Returns whether a named network namespace called `name` exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new(NETNS_RUN_DIR).join(name).exists()
        || list_netns().is_ok_and(|l| l.iter().any(|n| n == name))
}

/// Returns whether a process with this pid exists (pid reuse makes this a best effort).
fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Kills (SIGKILL) every process living in namespace `name` except this process itself.
fn kill_ns_pids(name: &str) {
    let Ok(out) = run_cmd("ip", &["netns", "pids", name]) else {
        return;
    };
    let me = std::process::id().to_string();
    let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|p| *p != me && p.bytes().all(|b| b.is_ascii_digit()))
        .map(str::to_string)
        .collect();
    if pids.is_empty() {
        return;
    }
    let mut args = vec!["-KILL"];
    args.extend(pids.iter().map(String::as_str));
    // Processes may exit between listing and killing; that error is harmless.
    let _ = Command::new("kill")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Deletes leftovers of crashed earlier runs: every namespace named `tvs-<pid>-...` whose `<pid>`
/// is no longer alive (its processes are killed first). Namespaces of live processes, including
/// this one, are left alone; errors are reported on stderr, never returned.
pub fn sweep_stale() {
    let names = match list_netns() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("netns: sweep_stale: {e}");
            return;
        }
    };
    for name in names {
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || pid_alive(pid) {
            continue;
        }
        kill_ns_pids(&name);
        if let Err(e) = run_cmd("ip", &["netns", "del", &name]) {
            eprintln!("netns: sweep_stale: {e}");
        }
    }
}

/// Checks that this process can build namespaces: effective uid 0 with CAP_SYS_ADMIN and
/// CAP_NET_ADMIN, network namespaces supported, `/dev/net/tun` present, `ip` runnable.
/// Returns a human-readable reason when something is missing.
pub fn require_root_netns() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    let euid = field("Uid:")
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    if euid != "0" {
        return Err(format!("needs root (effective uid is {euid:?})"));
    }
    let cap_eff = u64::from_str_radix(&field("CapEff:"), 16).unwrap_or(0);
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    for (cap, name) in [
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ] {
        if cap_eff & (1 << cap) == 0 {
            return Err(format!("needs {name} (CapEff = {cap_eff:#x})"));
        }
    }
    if !Path::new("/proc/self/ns/net").exists() {
        return Err("kernel without network namespaces (/proc/self/ns/net missing)".into());
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err("/dev/net/tun is missing (TUN/TAP driver not available)".into());
    }
    match Command::new("ip")
        .arg("-V")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`ip -V` failed ({s}); install iproute2")),
        Err(e) => Err(format!("cannot run `ip` ({e}); install iproute2")),
    }
}

/// Handles a test that cannot run: when the environment variable `CI` is `true` it panics with
/// `reason` (the test fails); otherwise it prints `skipped: <reason>` to stderr and returns.
pub fn skip_or_fail(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("netns test prerequisites missing under CI=true: {reason}");
    }
    eprintln!("skipped: {reason}");
}

/// Gate for namespace tests: returns `true` when [`require_root_netns`] passes; otherwise applies
/// [`skip_or_fail`] (panics if `CI=true`, else prints `skipped: ...`) and returns `false`.
/// Tests start with `if !tapvs_lab::netns::precheck() { return; }`.
pub fn precheck() -> bool {
    match require_root_netns() {
        Ok(()) => true,
        Err(reason) => {
            skip_or_fail(&reason);
            false
        }
    }
}

/// Polls `predicate` every `poll_interval` until it returns `true` (→ `true`) or `timeout` has
/// passed (→ `false`). The predicate is always evaluated at least once, and once more at the
/// deadline.
pub fn wait_until(
    timeout: Duration,
    poll_interval: Duration,
    mut predicate: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if predicate() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(poll_interval.min(deadline - now));
    }
}

/// Parses one address column of `/proc/net/tcp{,6}` (`HEXADDR:HEXPORT`, address words in host
/// byte order).
fn parse_proc_addr(col: &str) -> Option<SocketAddr> {
    let (addr, port) = col.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(addr, 16).ok()?.to_ne_bytes(),
        )),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(&addr[i * 8..i * 8 + 8], 16).ok()?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Returns the listening TCP sockets of the calling thread's network namespace, read from
/// `/proc/thread-self/net/tcp` and `tcp6`.
pub fn tcp_listeners_here() -> io::Result<Vec<SocketAddr>> {
    const TCP_LISTEN: &str = "0A";
    let mut out = Vec::new();
    for file in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() > 3 && cols[3] == TCP_LISTEN {
                if let Some(a) = parse_proc_addr(cols[1]) {
                    out.push(a);
                }
            }
        }
    }
    Ok(out)
}

/// Returns whether a listener bound to `listener` accepts connections to `want`: same port and
/// the same address or a wildcard (an IPv6 wildcard also covers IPv4, as with dual-stack sockets).
fn listener_covers(listener: SocketAddr, want: SocketAddr) -> bool {
    if listener.port() != want.port() {
        return false;
    }
    let l = listener.ip();
    l == want.ip() || (l.is_unspecified() && (l.is_ipv6() || want.is_ipv4()))
}

/// Waits (polling every 5 ms, up to `timeout`) until a TCP socket in `ns` listens on `addr` (or
/// on a wildcard address with its port). Reads `/proc/net/tcp{,6}` inside the namespace, so no
/// probe connection is made (a one-shot server such as `BulkSink` is not disturbed).
/// Errors with `TimedOut` when nothing listens in time.
pub fn wait_for_tcp_listen(ns: &Netns, addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    let found = ns.try_run(|| {
        wait_until(timeout, Duration::from_millis(5), || {
            tcp_listeners_here()
                .map(|ls| ls.iter().any(|l| listener_covers(*l, addr)))
                .unwrap_or(false)
        })
    })?;
    if found {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "nothing listens on tcp {addr} in netns {} after {timeout:?}",
                ns.name()
            ),
        ))
    }
}

/// A named network namespace owned by this process (`ip netns add`), deleted on `Drop`.
///
/// `Drop` never panics (it also runs during unwinding): it kills and reaps the children started
/// with [`Netns::spawn`], SIGKILLs any other process still in the namespace, then runs
/// `ip netns del`. Links inside (veth ends, bridges) vanish with the namespace; a veth pair
/// disappears as soon as either end's namespace is destroyed. Threads still joined to the
/// namespace (e.g. a server started inside [`Netns::run`]) keep the kernel object alive until
/// they exit, so drop servers before their `Netns` (declare the `Netns` first).
#[derive(Debug)]
pub struct Netns {
    /// The namespace name, `tvs-<pid>-<counter>-<role>`.
    name: String,
    /// Children started by [`Netns::spawn`] that may still be running.
    children: Mutex<Vec<Weak<Mutex<Option<Child>>>>>,
}

impl Netns {
    /// Creates a namespace named `tvs-<pid>-<counter>-<role>` (role sanitised and cut to 16
    /// characters) and brings its loopback up. The first call in a process also runs
    /// [`sweep_stale`]. Typically takes a few milliseconds (two `ip` invocations).
    pub fn new(role: &str) -> io::Result<Netns> {
        SWEEP_ONCE.call_once(sweep_stale);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{NETNS_PREFIX}{}-{n}-{}",
            std::process::id(),
            sanitize_role(role)
        );
        {
            let _guard = lock(&ADD_LOCK);
            run_cmd("ip", &["netns", "add", &name])?;
        }
        // From here on, Drop cleans up if anything below fails.
        let ns = Netns {
            name,
            children: Mutex::new(Vec::new()),
        };
        ns.link_up("lo")?;
        Ok(ns)
    }

    /// The namespace's name as known to `ip netns`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the namespace's bind mount, `/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(&self.name)
    }

    /// Runs `ip -n NAME args...` and returns its stdout; errors name the command line and carry
    /// its stderr when it exits non-zero.
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        let out = run_cmd("ip", &full)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `ip netns exec NAME argv...` to completion and returns its output; errors name the
    /// command line and carry its stderr when it exits non-zero. `argv` must not be empty.
    pub fn exec(&self, argv: &[&str]) -> io::Result<Output> {
        if argv.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "Netns::exec: empty argv",
            ));
        }
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(argv);
        run_cmd("ip", &full)
    }

    /// Writes sysctl `key` (dotted, e.g. `net.ipv4.ip_forward`, or slash-separated) to `value`
    /// inside the namespace, by writing `/proc/sys/...` from a thread joined to it (the per-netns
    /// `net.*` tables follow the writing thread's namespace).
    pub fn sysctl(&self, key: &str, value: &str) -> io::Result<()> {
        let rel = if key.contains('/') {
            key.trim_start_matches('/').to_string()
        } else {
            key.replace('.', "/")
        };
        let path = Path::new("/proc/sys").join(rel);
        let value = value.to_string();
        self.try_run(move || std::fs::write(&path, value.as_bytes()))?
            .map_err(|e| io::Error::new(e.kind(), format!("sysctl {key} in {}: {e}", self.name)))
    }

    /// Starts `argv` inside the namespace (`ip netns exec NAME argv...`, which execs in place, so
    /// [`NsChild::id`] is the program's pid) with stdin from /dev/null and the given stdout and
    /// stderr. The returned guard kills and reaps the process on drop; dropping the `Netns` does
    /// the same for every child still running.
    pub fn spawn(&self, argv: &[&str], stdout: Stdio, stderr: Stdio) -> io::Result<NsChild> {
        if argv.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "Netns::spawn: empty argv",
            ));
        }
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(argv);
        let child = Command::new("ip")
            .args(&full)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("`{}`: {e}", cmdline("ip", &full))))?;
        let pid = child.id();
        let shared: SharedChild = Arc::new(Mutex::new(Some(child)));
        let mut children = lock(&self.children);
        children.retain(|w| w.strong_count() > 0);
        children.push(Arc::downgrade(&shared));
        Ok(NsChild { pid, child: shared })
    }

    /// Adds address `cidr` (e.g. `10.1.0.1/24`, `fd00::1/64`) to `dev`. IPv6 addresses get
    /// `nodad`, so they are usable at once.
    pub fn add_addr(&self, dev: &str, cidr: &str) -> io::Result<()> {
        if cidr.contains(':') {
            self.ip(&["-6", "addr", "add", cidr, "dev", dev, "nodad"])?;
        } else {
            self.ip(&["addr", "add", cidr, "dev", dev])?;
        }
        Ok(())
    }

    /// Sets `dev` administratively up.
    pub fn link_up(&self, dev: &str) -> io::Result<()> {
        self.ip(&["link", "set", "dev", dev, "up"]).map(drop)
    }

    /// Sets the MTU of `dev`.
    pub fn set_mtu(&self, dev: &str, mtu: u32) -> io::Result<()> {
        self.ip(&["link", "set", "dev", dev, "mtu", &mtu.to_string()])
            .map(drop)
    }

    /// Adds the route `dst` (a prefix such as `10.2.0.0/24`) via gateway `via`.
    pub fn add_route(&self, dst: &str, via: &str) -> io::Result<()> {
        let family = if via.contains(':') { "-6" } else { "-4" };
        self.ip(&[family, "route", "add", dst, "via", via])
            .map(drop)
    }

    /// Adds the default route via gateway `via` (IPv4 or IPv6, chosen from `via`).
    pub fn add_default_route(&self, via: &str) -> io::Result<()> {
        self.add_route("default", via)
    }

    /// Opens the namespace handle used by `setns`.
    fn open(&self) -> io::Result<File> {
        File::open(self.path())
            .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", self.path().display())))
    }

    /// Like [`Netns::run`], but reports a failure to open or join the namespace as an error
    /// instead of panicking. Panics of `f` are propagated to the caller.
    pub fn try_run<F, R>(&self, f: F) -> io::Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file = self.open()?;
        let name = self.name.clone();
        std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .name(format!("netns-{}", self.name))
                .spawn_scoped(s, move || {
                    sys::setns_net(&file)
                        .map_err(|e| io::Error::new(e.kind(), format!("setns({name}): {e}")))?;
                    drop(file);
                    Ok(f())
                })?;
            match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Runs `f` on a new thread that first joins this namespace (`setns(CLONE_NEWNET)`) and
    /// returns its result; a panic in `f` is propagated. The calling thread never changes
    /// namespace. Sockets created by `f` belong to this namespace for their whole life, and
    /// threads spawned from inside `f` inherit the namespace too. Panics if the namespace cannot
    /// be joined (use [`Netns::try_run`] to get an error instead).
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        match self.try_run(f) {
            Ok(r) => r,
            Err(e) => panic!("Netns::run: {e}"),
        }
    }

    /// Spawns a detached thread that joins this namespace and then runs `f`; join the handle for
    /// the result. Threads spawned from it inherit the namespace. If the namespace cannot be
    /// joined, the thread panics (the error shows up at `join`). Keep the `Netns` alive at least
    /// until the thread has started doing its work.
    pub fn spawn_thread<F, R>(&self, f: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let file = self.open();
        let name = self.name.clone();
        std::thread::Builder::new()
            .name(format!("netns-{}", self.name))
            .spawn(move || {
                let file = file.unwrap_or_else(|e| panic!("Netns::spawn_thread({name}): {e}"));
                if let Err(e) = sys::setns_net(&file) {
                    panic!("Netns::spawn_thread: setns({name}): {e}");
                }
                drop(file);
                f()
            })
            .unwrap_or_else(|e| panic!("Netns::spawn_thread: cannot spawn thread: {e}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let children = std::mem::take(&mut *lock(&self.children));
        for weak in children {
            if let Some(shared) = weak.upgrade() {
                if let Some(mut child) = lock(&shared).take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        kill_ns_pids(&self.name);
        if let Err(e) = run_cmd("ip", &["netns", "del", &self.name]) {
            eprintln!("netns: cannot delete {}: {e}", self.name);
        }
    }
}

/// A process started by [`Netns::spawn`]; killed (SIGKILL) and reaped on drop, or when its
/// [`Netns`] is dropped first.
#[derive(Debug)]
pub struct NsChild {
    /// Pid of the process (`ip netns exec` execs in place, so this is the program itself).
    pid: u32,
    /// The process, shared with the owning namespace; `None` once reaped.
    child: SharedChild,
}

impl NsChild {
    /// The process id.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Returns the exit status if the process has exited (also after it was killed), without
    /// blocking.
    pub fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        match lock(&self.child).as_mut() {
            Some(c) => c.try_wait(),
            None => Err(io::Error::other("child already reaped by its Netns")),
        }
    }

    /// Waits up to `timeout` (polling every 5 ms) for the process to exit; `Ok(None)` if it is
    /// still running.
    pub fn wait_timeout(&self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let mut status = None;
        let mut error = None;
        wait_until(timeout, Duration::from_millis(5), || {
            match self.try_wait() {
                Ok(Some(s)) => {
                    status = Some(s);
                    true
                }
                Ok(None) => false,
                Err(e) => {
                    error = Some(e);
                    true
                }
            }
        });
        match error {
            Some(e) => Err(e),
            None => Ok(status),
        }
    }

    /// Kills (SIGKILL) and reaps the process now; a no-op if it already exited.
    pub fn kill(&self) -> io::Result<()> {
        if let Some(c) = lock(&self.child).as_mut() {
            if c.try_wait()?.is_none() {
                c.kill()?;
            }
            c.wait()?;
        }
        Ok(())
    }

    /// Takes the process's stdout pipe (when spawned with `Stdio::piped()`); `None` after the
    /// first call.
    pub fn take_stdout(&self) -> Option<ChildStdout> {
        lock(&self.child).as_mut().and_then(|c| c.stdout.take())
    }

    /// Takes the process's stderr pipe (when spawned with `Stdio::piped()`); `None` after the
    /// first call.
    pub fn take_stderr(&self) -> Option<ChildStderr> {
        lock(&self.child).as_mut().and_then(|c| c.stderr.take())
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        if let Some(mut c) = lock(&self.child).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Creates a veth pair directly inside two namespaces (`ip link add A netns X type veth peer name
/// B netns Y`) and brings both ends up, so deleting either namespace removes the pair. Names must
/// be at most 15 characters (see [`link_name`]); `a` and `b` may be the same namespace.
pub fn veth(a: (&Netns, &str), b: (&Netns, &str)) -> io::Result<()> {
    for n in [a.1, b.1] {
        if n.is_empty() || n.len() > MAX_IFNAME_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {n:?} must have 1..=15 characters"),
            ));
        }
    }
    run_cmd(
        "ip",
        &[
            "link",
            "add",
            a.1,
            "netns",
            a.0.name(),
            "type",
            "veth",
            "peer",
            "name",
            b.1,
            "netns",
            b.0.name(),
        ],
    )?;
    a.0.link_up(a.1)?;
    b.0.link_up(b.1)
}

/// Creates bridge `name` in `ns` (STP off, so ports forward at once), enslaves `members` (links
/// already in `ns`), and brings the bridge and members up.
pub fn bridge(ns: &Netns, name: &str, members: &[&str]) -> io::Result<()> {
    ns.ip(&[
        "link",
        "add",
        "name",
        name,
        "type",
        "bridge",
        "stp_state",
        "0",
    ])?;
    for m in members {
        ns.ip(&["link", "set", "dev", m, "master", name])?;
        ns.link_up(m)?;
    }
    ns.link_up(name)
}

/// Turns multicast snooping off on bridge `br` in `ns`: nothing in the lab sends MLD reports
/// (tapvs does not), so a snooping bridge must not learn (or wait for) listeners; it floods.
pub fn no_snooping(ns: &Netns, br: &str) -> io::Result<()> {
    ns.ip(&[
        "link",
        "set",
        "dev",
        br,
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ])
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_names_are_short_and_unique() {
        let a = link_name("vethXYZ.long");
        let b = link_name("vethXYZ.long");
        assert_ne!(a, b);
        assert!(a.len() <= MAX_IFNAME_LEN && !a.contains('.'), "{a}");
        assert!(a.starts_with("veth-"), "{a}");
    }

    #[test]
    fn proc_addresses_parse() {
        let v4 = parse_proc_addr("0100007F:1F90").unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(v4, "127.0.0.1:8080".parse().unwrap());
        }
        let any6 = parse_proc_addr("00000000000000000000000000000000:0050").unwrap();
        assert_eq!(any6, "[::]:80".parse().unwrap());
        assert!(listener_covers(any6, "10.0.0.1:80".parse().unwrap()));
        assert!(listener_covers(
            "0.0.0.0:80".parse().unwrap(),
            "10.0.0.1:80".parse().unwrap()
        ));
        assert!(!listener_covers(
            "10.0.0.2:80".parse().unwrap(),
            "10.0.0.1:80".parse().unwrap()
        ));
    }

    #[test]
    fn roles_are_sanitised() {
        assert_eq!(sanitize_role("a b/c"), "a_b_c");
        assert_eq!(sanitize_role(""), "ns");
        assert_eq!(sanitize_role(&"x".repeat(40)).len(), MAX_ROLE_LEN);
    }
}
