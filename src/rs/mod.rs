//! Real-server helpers: what a host (or network namespace) behind a tapvs director needs to
//! accept DR (`-g`) and TUN (`-i`) traffic, and a user-space IPIP decapsulator for kernels
//! without the `ipip` module.
//!
//! * [`setup`] (`tapvs rs-setup`) configures the host it runs in as an LVS real server: the VIP
//!   on `lo` as a /32, the ARP sysctls that keep the real server from answering ARP for the VIP
//!   (`arp_ignore=1`, `arp_announce=2`), reverse-path filtering off, and for TUN mode the
//!   kernel tunnel `tunl0`, or, when the kernel has no IPIP support, a pointer to [`decap`].
//! * [`decap`] (`tapvs rs-decap`, through [`run_decap`]) reads IPIP packets from a raw
//!   `IPPROTO_IPIP` socket, strips the outer header with `modes::tun::decapsulate` and writes the
//!   inner packet into a TUN device, where the kernel receives it as if it had arrived on a
//!   tunnel interface: the inner destination is the VIP on `lo`, so it is delivered locally and
//!   the reply goes straight to the client (not back through the director).
//! * [`send_raw_ip`] sends one hand-built IPv4 packet (header included), for tests and probes.
//!
//! Addresses and links are changed with iproute2 (`ip`), sysctls by writing `/proc/sys/net/...`.
//! Both follow the network namespace of the calling thread, so these functions act on the
//! namespace they are called in (e.g. inside `ip netns exec`). The system calls underneath
//! (the raw sockets, the TUN device) are safe wrappers of [`crate::sys`].

use std::fmt;
use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::sys::tun::{TunFile, IFF_NO_PI, IFF_TUN};
use crate::sys::RawIpSocket;

/// Name of the TUN device [`run_decap`] creates unless told otherwise.
pub const DEFAULT_DECAP_TUN: &str = "tvdecap0";
/// Name of the kernel's fallback IPIP tunnel device.
pub const KERNEL_TUNNEL: &str = "tunl0";
/// Largest IPv4 packet; the decapsulator's receive buffer holds one.
pub const MAX_IP_PACKET: usize = 65535;
/// How long [`decap`] waits for a packet before looking at its stop flag again.
pub const DECAP_POLL_MS: i32 = 100;
/// Packets [`decap`] handles per wake-up before it looks at the stop flag again.
const DECAP_BATCH: usize = 64;
/// Receive buffer asked for on the IPIP socket (the kernel caps it at `net.core.rmem_max`).
const RAW_RCVBUF: libc::c_int = 4 << 20;

/// The forwarding method the real server takes part in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RsMode {
    /// Direct routing (`ipvsadm -g`): frames arrive with the VIP as destination.
    Dr,
    /// IP tunnelling (`ipvsadm -i`): packets arrive IPIP-encapsulated.
    Tun,
}

impl FromStr for RsMode {
    type Err = String;

    /// Accepts `dr` (also `route`, `g`) and `tun` (also `tunnel`, `ipip`, `i`), in any case.
    fn from_str(s: &str) -> Result<RsMode, String> {
        match s.to_ascii_lowercase().as_str() {
            "dr" | "route" | "g" => Ok(RsMode::Dr),
            "tun" | "tunnel" | "ipip" | "i" => Ok(RsMode::Tun),
            _ => Err(format!(
                "unknown real-server mode {s:?}: expected `dr` or `tun`"
            )),
        }
    }
}

impl fmt::Display for RsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RsMode::Dr => "dr",
            RsMode::Tun => "tun",
        })
    }
}

/// Errors of the real-server helpers; each names what failed.
#[derive(Debug, thiserror::Error)]
pub enum RsError {
    /// An `ip` command could not run or exited non-zero.
    #[error("`{cmd}` failed: {detail}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its stderr, or why it could not start.
        detail: String,
    },
    /// A sysctl could not be read or written.
    #[error("sysctl {key}: cannot {op} {path}: {source}")]
    Sysctl {
        /// The dotted key, e.g. `net.ipv4.conf.all.arp_ignore`.
        key: String,
        /// `read` or `write`.
        op: &'static str,
        /// The `/proc/sys` file.
        path: String,
        /// The OS error.
        source: io::Error,
    },
    /// The interface name is empty, longer than 15 bytes or contains `/`, `:`, NUL or spaces.
    #[error("invalid interface name {0:?}: 1 to 15 bytes, no '/', ':' or spaces")]
    InvalidName(String),
    /// Creating or configuring the decapsulation TUN device failed.
    #[error("TUN {name:?}: {op} failed: {source}{hint}")]
    Tun {
        /// The device.
        name: String,
        /// The operation that failed.
        op: &'static str,
        /// The OS error.
        source: io::Error,
        /// A hint for the usual causes (empty when there is none).
        hint: &'static str,
    },
    /// Setting the TUN device up failed.
    #[error(transparent)]
    Link(#[from] crate::sys::tap::TapError),
    /// The raw `IPPROTO_IPIP` socket could not be opened or read.
    #[error("raw IPIP socket: {op} failed: {source}{hint}")]
    RawSocket {
        /// The operation that failed.
        op: &'static str,
        /// The OS error.
        source: io::Error,
        /// A hint for the usual causes (empty when there is none).
        hint: &'static str,
    },
    /// A helper thread could not be started.
    #[error("cannot start the {what} thread: {source}")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

fn permission_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            " (run as root or with CAP_NET_ADMIN/CAP_NET_RAW)"
        }
        _ => "",
    }
}

// ---------------------------------------------------------------------------------------------
// setup

/// Runs `ip args...` in the calling thread's network namespace and returns its stdout.
fn ip(args: &[&str]) -> Result<String, RsError> {
    let cmd = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| RsError::Command {
            cmd: cmd.clone(),
            detail: format!("cannot run it: {e} (install iproute2)"),
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(RsError::Command {
            cmd,
            detail: if stderr.is_empty() {
                out.status.to_string()
            } else {
                stderr
            },
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether interface `name` exists in the calling thread's network namespace.
fn link_exists(name: &str) -> bool {
    crate::sys::tap::ifindex(name).is_ok()
}

/// The prefix length `vip` has on `lo`, if it is there.
fn vip_prefix_on_lo(vip: Ipv4Addr) -> Result<Option<String>, RsError> {
    let text = ip(&["-4", "-o", "addr", "show", "dev", "lo"])?;
    let want = format!("{vip}/");
    Ok(text.split_whitespace().find_map(|w| {
        w.strip_prefix(want.as_str())
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_string)
    }))
}

/// `/proc/sys/net/ipv4/conf/<iface>/<knob>` and its dotted key.
fn conf_path(iface: &str, knob: &str) -> (PathBuf, String) {
    (
        PathBuf::from(format!("/proc/sys/net/ipv4/conf/{iface}/{knob}")),
        format!("net.ipv4.conf.{iface}.{knob}"),
    )
}

/// Sets `net.ipv4.conf.<iface>.<knob>` to `value` (in the calling thread's namespace) and
/// records what it did in `actions`.
fn set_conf(
    iface: &str,
    knob: &str,
    value: &str,
    actions: &mut Vec<String>,
) -> Result<(), RsError> {
    let (path, key) = conf_path(iface, knob);
    let err = |op, source| RsError::Sysctl {
        key: key.clone(),
        op,
        path: path.display().to_string(),
        source,
    };
    let old = fs::read_to_string(&path).map_err(|e| err("read", e))?;
    let old = old.trim();
    if old == value {
        actions.push(format!("{key} = {value} (already)"));
        return Ok(());
    }
    fs::write(&path, value).map_err(|e| err("write", e))?;
    actions.push(format!("{key} = {value} (was {old})"));
    Ok(())
}

/// The interfaces with an IPv4 configuration, plus `all` and `default`, sorted.
fn conf_interfaces() -> Result<Vec<String>, RsError> {
    let dir = "/proc/sys/net/ipv4/conf";
    let entries = fs::read_dir(dir).map_err(|e| RsError::Sysctl {
        key: "net.ipv4.conf".into(),
        op: "read",
        path: dir.into(),
        source: e,
    })?;
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Sets `rp_filter = 0` on `all`, `default` and every interface that exists now. The kernel
/// filters with the maximum of `all` and the interface's value, so both must be 0; `default`
/// is what interfaces created later (a decapsulation TUN) start with.
fn rp_filter_off(actions: &mut Vec<String>) -> Result<(), RsError> {
    for iface in conf_interfaces()? {
        match set_conf(&iface, "rp_filter", "0", actions) {
            Ok(()) => {}
            // The interface went away between listing and writing.
            Err(RsError::Sysctl { source, .. })
                if iface != "all"
                    && iface != "default"
                    && source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Brings up the kernel tunnel `tunl0`, creating it if needed. Returns whether the kernel can
/// decapsulate IPIP itself; when it cannot, says in `actions` that `tapvs rs-decap` must run.
fn kernel_tunnel(actions: &mut Vec<String>) -> Result<bool, RsError> {
    if !link_exists(KERNEL_TUNNEL) {
        // With the ipip module available this loads it, which creates tunl0 by itself (the add
        // then fails with "File exists"); without it the add fails and tunl0 stays absent.
        match ip(&["link", "add", "name", KERNEL_TUNNEL, "type", "ipip"]) {
            Ok(_) => actions.push(format!("created {KERNEL_TUNNEL} (kernel IPIP tunnel)")),
            Err(e) if !link_exists(KERNEL_TUNNEL) => {
                actions.push(format!(
                    "the kernel has no IPIP tunnel support ({e}): run `tapvs rs-decap` for \
                     user-space decapsulation into TUN {DEFAULT_DECAP_TUN} (rs-decap turns \
                     rp_filter off on its device; `default` is set to 0 below for it)"
                ));
                return Ok(false);
            }
            Err(_) => {}
        }
    }
    ip(&["link", "set", "dev", KERNEL_TUNNEL, "up"])?;
    actions.push(format!(
        "{KERNEL_TUNNEL} up: the kernel decapsulates IPIP (do not also run `tapvs rs-decap`)"
    ));
    Ok(true)
}

/// Configures the host or network namespace this is called in (the calling thread's) as an
/// LVS real server for `mode` and virtual address `vip`, and returns one line per action for
/// printing. Idempotent: running it twice changes nothing the second time.
///
/// Setup (`undo = false`):
/// * TUN only: brings up `tunl0`, creating it with `ip link add name tunl0 type ipip` when it
///   is missing. When the kernel has no IPIP support this is not an error: the returned actions
///   say that `tapvs rs-decap` (user-space decapsulation, see [`decap`]) must run.
/// * adds `vip/32` to `lo` (present already, with any prefix length, is fine) and sets `lo` up;
/// * `net.ipv4.conf.all.arp_ignore = 1` (answer ARP only for addresses of the receiving
///   interface, so not for the VIP on `lo`) and `net.ipv4.conf.all.arp_announce = 2` (never use
///   the VIP as ARP source); the kernel uses the maximum of `all` and the interface;
/// * `rp_filter = 0` on `all`, `default` and every existing interface (replies and tunnelled
///   packets are asymmetric; the kernel filters with the maximum of `all` and the interface).
///
/// Undo (`undo = true`): removes the VIP from `lo`, sets `tunl0` down if it exists (TUN mode)
/// and restores `arp_ignore` and `arp_announce` on `all` to the kernel defaults (0). It does not
/// restore the previous values (setup reports them, `(was N)`, in its actions), and leaves
/// `rp_filter` at 0, which is the kernel default for `all` and `default` (distributions often
/// set 1 or 2 at boot; restore that by hand if needed).
pub fn setup(mode: RsMode, vip: Ipv4Addr, undo: bool) -> Result<Vec<String>, RsError> {
    let mut actions = Vec::new();
    if undo {
        match vip_prefix_on_lo(vip)? {
            Some(prefix) => {
                ip(&["addr", "del", &format!("{vip}/{prefix}"), "dev", "lo"])?;
                actions.push(format!("removed {vip}/{prefix} from lo"));
            }
            None => actions.push(format!("{vip} is not on lo")),
        }
        if mode == RsMode::Tun && link_exists(KERNEL_TUNNEL) {
            ip(&["link", "set", "dev", KERNEL_TUNNEL, "down"])?;
            actions.push(format!("{KERNEL_TUNNEL} down"));
        }
        set_conf("all", "arp_ignore", "0", &mut actions)?;
        set_conf("all", "arp_announce", "0", &mut actions)?;
        actions.push("rp_filter left at 0".to_string());
        return Ok(actions);
    }
    if mode == RsMode::Tun {
        kernel_tunnel(&mut actions)?;
    }
    ip(&["link", "set", "dev", "lo", "up"])?;
    match vip_prefix_on_lo(vip)? {
        Some(prefix) => actions.push(format!("{vip}/{prefix} already on lo")),
        None => {
            ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"])?;
            actions.push(format!("added {vip}/32 to lo"));
        }
    }
    set_conf("all", "arp_ignore", "1", &mut actions)?;
    set_conf("all", "arp_announce", "2", &mut actions)?;
    rp_filter_off(&mut actions)?;
    Ok(actions)
}

// ---------------------------------------------------------------------------------------------
// decap

/// Counters of [`decap`], readable while it runs.
#[derive(Debug, Default)]
pub struct DecapCounters {
    /// Packets read from the raw IPIP socket.
    pub received: AtomicU64,
    /// Inner packets written to the TUN device.
    pub decapsulated: AtomicU64,
    /// Packets dropped because the outer or inner IPv4 header is invalid (bad version, length or
    /// checksum, outer fragment, not protocol 4).
    pub malformed: AtomicU64,
    /// Inner packets the TUN device refused.
    pub write_errors: AtomicU64,
}

impl DecapCounters {
    /// All-zero counters.
    pub fn new() -> DecapCounters {
        DecapCounters::default()
    }
}

impl fmt::Display for DecapCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "received {}, decapsulated {}, malformed {}, write errors {}",
            self.received.load(Ordering::Relaxed),
            self.decapsulated.load(Ordering::Relaxed),
            self.malformed.load(Ordering::Relaxed),
            self.write_errors.load(Ordering::Relaxed)
        )
    }
}

/// Creates (or attaches to) TUN device `name` with `IFF_TUN | IFF_NO_PI`: each write is one
/// bare IP packet. The device disappears when the returned descriptor closes (unless it was
/// made persistent by someone else).
fn open_tun(name: &str) -> Result<TunFile, RsError> {
    let err = |op, source: io::Error| {
        let hint = match source.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
                " (/dev/net/tun is missing: no TUN/TAP support here)"
            }
            Some(libc::EBUSY) => " (the name is taken by another device or process)",
            Some(libc::EINVAL) => " (an interface of that name exists and is not a TUN)",
            _ => permission_hint(&source),
        };
        RsError::Tun {
            name: name.to_string(),
            op,
            source,
            hint,
        }
    };
    let tun = TunFile::open().map_err(|e| err("open /dev/net/tun", e))?;
    tun.set_iff(name, IFF_TUN | IFF_NO_PI)
        .map_err(|e| err("TUNSETIFF", e))?;
    Ok(tun)
}

/// Opens the raw `IPPROTO_IPIP` socket that receives every IPIP packet delivered to this host
/// (outer IPv4 header included), with a larger receive buffer when the kernel allows it.
fn open_ipip_socket() -> Result<RawIpSocket, RsError> {
    let sock = RawIpSocket::open(libc::IPPROTO_IPIP).map_err(|source| RsError::RawSocket {
        op: "socket(AF_INET, SOCK_RAW, IPPROTO_IPIP)",
        hint: permission_hint(&source),
        source,
    })?;
    // Best effort: the kernel silently caps the size, and a failure only leaves the default.
    let _ = sock.set_recv_buffer(RAW_RCVBUF);
    Ok(sock)
}

/// Receives one packet without blocking; `Ok(None)` when nothing is queued (or on a transient
/// error).
fn recv_packet(sock: &RawIpSocket, buf: &mut [u8]) -> io::Result<Option<usize>> {
    match sock.recv_nonblocking(buf) {
        Ok(n) => Ok(Some(n)),
        Err(e) => match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) | Some(libc::ENOMEM) | Some(libc::ENOBUFS) => {
                Ok(None)
            }
            _ => Err(e),
        },
    }
}

/// The inner packet of the IPIP packet `outer`, validated by `modes::tun::decapsulate`.
fn inner_packet(outer: &[u8]) -> Option<&[u8]> {
    let (offset, len) = modes::tun::decapsulate(outer)?;
    outer.get(offset..offset.checked_add(len)?)
}

/// Decapsulates IPIP in user space until `stop` is set: creates TUN device `tun_name`
/// (`IFF_TUN | IFF_NO_PI`, removed again when this returns), turns `rp_filter` off on it and on
/// `all` (the inner source is the client, which the real server does not route via the TUN),
/// sets it up, then reads every IPIP packet delivered to this host from a raw `IPPROTO_IPIP`
/// socket, validates it with `modes::tun::decapsulate` and writes the inner IPv4 packet to the
/// TUN device, where the kernel receives it (the inner destination is the VIP on `lo`, see
/// [`setup`]). Counts into `counters`; looks at `stop` at least every [`DECAP_POLL_MS`] ms.
///
/// Acts in the calling thread's network namespace. The device is up (and the socket open) when
/// `ip link show <tun_name>` shows `UP`. Do not run it where the kernel's own `tunl0` is up:
/// both would deliver every packet. Errors: an invalid name, TUN or socket creation, sysctls,
/// and a failing `recv` (transient errors are retried).
pub fn decap(tun_name: &str, stop: &AtomicBool, counters: &DecapCounters) -> Result<(), RsError> {
    decap_with(tun_name, stop, counters, || {})
}

/// [`decap`] calling `ready` once the device is up and packets are being read.
fn decap_with(
    tun_name: &str,
    stop: &AtomicBool,
    counters: &DecapCounters,
    ready: impl FnOnce(),
) -> Result<(), RsError> {
    crate::sys::tap::validate_ifname(tun_name)
        .map_err(|_| RsError::InvalidName(tun_name.to_string()))?;
    // The socket first: once the device is up, everything is ready.
    let raw = open_ipip_socket()?;
    let tun = open_tun(tun_name)?;
    let mut actions = Vec::new();
    set_conf("all", "rp_filter", "0", &mut actions)?;
    set_conf(tun_name, "rp_filter", "0", &mut actions)?;
    crate::sys::tap::set_link_up(tun_name)?;
    ready();
    let mut buf = vec![0u8; MAX_IP_PACKET];
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [crate::sys::poll_in(raw.as_raw_fd())];
        let ready =
            crate::sys::poll(&mut fds, DECAP_POLL_MS).map_err(|source| RsError::RawSocket {
                op: "poll",
                source,
                hint: "",
            })?;
        if ready == 0 {
            continue;
        }
        for _ in 0..DECAP_BATCH {
            let n = match recv_packet(&raw, &mut buf) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(source) => {
                    return Err(RsError::RawSocket {
                        op: "recv",
                        source,
                        hint: "",
                    })
                }
            };
            counters.received.fetch_add(1, Ordering::Relaxed);
            let Some(inner) = buf.get(..n).and_then(inner_packet) else {
                counters.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            match tun.write(inner) {
                Ok(_) => counters.decapsulated.fetch_add(1, Ordering::Relaxed),
                Err(_) => counters.write_errors.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
    Ok(())
}

/// The `tapvs rs-decap` command: runs [`decap`] on `tun_name` until SIGINT or SIGTERM, printing
/// `rs-decap: decapsulating IPIP into TUN <name>` once ready and the counters when it stops
/// (stdout; not when it failed before being ready).
///
/// Blocks SIGINT and SIGTERM in the calling thread and takes them on a helper thread with
/// `sigwait`, so call it from the main thread before any other thread is started (threads
/// started earlier would still get the default, process-killing disposition).
pub fn run_decap(tun_name: &str) -> Result<(), RsError> {
    crate::sys::block_termination_signals();
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("rs-decap-signals".into())
            .spawn(move || {
                let sig = crate::sys::wait_for_termination();
                eprintln!("rs-decap: {sig}, stopping");
                stop.store(true, Ordering::Relaxed);
            })
            .map_err(|source| RsError::Thread {
                what: "signal",
                source,
            })?;
    }
    if link_exists(KERNEL_TUNNEL) {
        eprintln!(
            "rs-decap: warning: {KERNEL_TUNNEL} exists, so the kernel has IPIP support; if it is \
             up, the kernel decapsulates too and every packet arrives twice"
        );
    }
    let counters = DecapCounters::new();
    let mut started = false;
    let result = decap_with(tun_name, &stop, &counters, || {
        started = true;
        println!("rs-decap: decapsulating IPIP into TUN {tun_name}");
    });
    if started {
        println!("rs-decap: {counters}");
    }
    result
}

/// Sends one complete IPv4 packet (header included, as built by the caller) from a raw
/// `IPPROTO_RAW` socket in the calling thread's network namespace, routed by its destination
/// address. The kernel fills in the total length and header checksum, and the source address
/// and identification when they are zero (see `raw(7)`, `IP_HDRINCL`). For tests and probes.
pub fn send_raw_ip(packet: &[u8]) -> io::Result<()> {
    let dst = match (packet.first(), packet.get(16..20)) {
        (Some(v), Some(d)) if v >> 4 == 4 && packet.len() >= 20 => [d[0], d[1], d[2], d[3]],
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "send_raw_ip: not an IPv4 packet (need version 4 and a 20-byte header)",
            ))
        }
    };
    let sock = RawIpSocket::open(libc::IPPROTO_RAW)?;
    sock.send_to(packet, Ipv4Addr::from(dst))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        assert_eq!("dr".parse::<RsMode>(), Ok(RsMode::Dr));
        assert_eq!("TUN".parse::<RsMode>(), Ok(RsMode::Tun));
        assert_eq!("ipip".parse::<RsMode>(), Ok(RsMode::Tun));
        assert!("nat".parse::<RsMode>().is_err());
        assert_eq!(RsMode::Tun.to_string(), "tun");
    }

    #[test]
    fn bad_names_are_refused_before_any_syscall() {
        let stop = AtomicBool::new(true);
        let c = DecapCounters::new();
        for name in ["", "a123456789abcdef", "a/b", "a b"] {
            assert!(matches!(
                decap(name, &stop, &c),
                Err(RsError::InvalidName(_))
            ));
        }
    }

    #[test]
    fn non_ipv4_is_not_sent() {
        assert_eq!(
            send_raw_ip(&[0x60; 40]).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            send_raw_ip(&[0x45; 10]).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn inner_packet_is_cut_at_its_total_length() {
        // outer 10.0.0.1 -> 10.0.0.2 proto 4, inner 1.1.1.1 -> 2.2.2.2 proto 17, 8 bytes payload.
        let mut inner = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
        ];
        inner.extend_from_slice(&[9; 8]);
        let c = ipv4_checksum(&inner[..20]);
        inner[10..12].copy_from_slice(&c.to_be_bytes());
        let mut pkt = vec![
            0x45, 0, 0, 48, 0, 0, 0, 0, 64, 4, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let c = ipv4_checksum(&pkt[..20]);
        pkt[10..12].copy_from_slice(&c.to_be_bytes());
        pkt.extend_from_slice(&inner);
        assert_eq!(inner_packet(&pkt), Some(&inner[..]));
        // Trailing bytes beyond the outer total length are ignored.
        let mut padded = pkt.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(inner_packet(&padded), Some(&inner[..]));
        // Garbage inside is refused.
        let mut bad = pkt.clone();
        bad[20] = 0xff;
        assert_eq!(inner_packet(&bad), None);
        assert_eq!(inner_packet(&pkt[..30]), None);
    }

    fn ipv4_checksum(h: &[u8]) -> u16 {
        let mut sum: u32 = h
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }
}
