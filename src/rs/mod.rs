//! Real-server helpers: what a host (or network namespace) behind a tapvs director needs to
//! accept DR (`-g`) and TUN (`-i`) traffic, IPv4 and IPv6, and a user-space IPIP and
//! IPv6-in-IPv6 decapsulator for kernels without the `ipip` and `ip6_tunnel` modules.
//!
//! * [`setup`] and [`setup_vips`] (`tapvs rs-setup`) configure the host they run in as an LVS
//!   real server for one or several VIPs of either family: an IPv4 VIP on `lo` as a /32, with
//!   the ARP sysctls that keep the real server from answering ARP for it (`arp_ignore=1`,
//!   `arp_announce=2`) and reverse-path filtering off; an IPv6 VIP on `lo` as a /128 (`nodad`),
//!   for which Linux sends no Neighbour Advertisement anyway (it answers a Neighbour
//!   Solicitation only for addresses of the receiving interface, and `lo` never receives one).
//!   For TUN mode the kernel tunnels `tunl0` (IPv4) and `ip6tnl0` (IPv6), or, when the kernel
//!   has no support for them, a pointer to [`decap`].
//! * [`decap`] (`tapvs rs-decap`, through [`run_decap`]) reads IPIP packets from a raw
//!   `IPPROTO_IPIP` socket, strips the outer header with `modes::tun::decapsulate`, and reads
//!   IPv6-in-IPv6 packets (next header 41) from a raw IPv6 socket, which delivers the inner
//!   packet without the outer header; it writes each inner packet into one TUN device, where
//!   the kernel receives it as if it had arrived on a tunnel interface: the inner destination
//!   is the VIP on `lo`, so it is delivered locally and the reply goes straight to the client
//!   (not back through the director). Malformed input is counted ([`DecapCounters`]; IPv6 by
//!   [`Malformed6`] reason) and dropped.
//! * [`send_raw_ip`] and [`send_raw_ip6`] send one hand-built IPv4 or IPv6 packet (header
//!   included), for tests and probes.
//!
//! Addresses and links are changed with iproute2 (`ip`), sysctls by writing `/proc/sys/net/...`.
//! Both follow the network namespace of the calling thread, so these functions act on the
//! namespace they are called in (e.g. inside `ip netns exec`). The system calls underneath
//! (the raw sockets, the TUN device) are safe wrappers of [`crate::sys`].

use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
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
/// Name of the kernel's fallback IPv6-in-IPv6 tunnel device (module `ip6_tunnel`).
pub const KERNEL_TUNNEL6: &str = "ip6tnl0";
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
    /// The raw IPv6 socket for IPv6-in-IPv6 (next header 41) could not be opened or read.
    #[error("raw IPv6-in-IPv6 socket: {op} failed: {source}{hint}")]
    RawSocket6 {
        /// The operation that failed.
        op: &'static str,
        /// The OS error.
        source: io::Error,
        /// A hint for the usual causes (empty when there is none).
        hint: &'static str,
    },
    /// No VIP was given.
    #[error("no VIP given")]
    NoVip,
    /// A VIP cannot be a real server's virtual address; nothing was changed.
    #[error("VIP {vip}: {reason}")]
    BadVip {
        /// The address.
        vip: IpAddr,
        /// Why it is refused.
        reason: &'static str,
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
fn vip_prefix_on_lo(vip: IpAddr) -> Result<Option<String>, RsError> {
    let family = if vip.is_ipv4() { "-4" } else { "-6" };
    let text = ip(&[family, "-o", "addr", "show", "dev", "lo"])?;
    let want = format!("{vip}/");
    Ok(text.split_whitespace().find_map(|w| {
        w.strip_prefix(want.as_str())
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_string)
    }))
}

/// `/proc/sys/net/<family>/conf/<iface>/<knob>` and its dotted key (`family`: `ipv4` or
/// `ipv6`).
fn conf_path(family: &str, iface: &str, knob: &str) -> (PathBuf, String) {
    (
        PathBuf::from(format!("/proc/sys/net/{family}/conf/{iface}/{knob}")),
        format!("net.{family}.conf.{iface}.{knob}"),
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
    set_family_conf("ipv4", iface, knob, value, actions)
}

/// Sets `net.ipv6.conf.<iface>.<knob>` to `value`, as [`set_conf`].
fn set_conf6(
    iface: &str,
    knob: &str,
    value: &str,
    actions: &mut Vec<String>,
) -> Result<(), RsError> {
    set_family_conf("ipv6", iface, knob, value, actions)
}

/// Sets `net.<family>.conf.<iface>.<knob>` to `value`, as [`set_conf`].
fn set_family_conf(
    family: &str,
    iface: &str,
    knob: &str,
    value: &str,
    actions: &mut Vec<String>,
) -> Result<(), RsError> {
    let (path, key) = conf_path(family, iface, knob);
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

/// The IPv6 counterpart of [`kernel_tunnel`]: brings up `ip6tnl0`, the fallback device of the
/// `ip6_tunnel` module, which takes the IPv6-in-IPv6 packets no configured tunnel claims.
fn kernel_tunnel6(actions: &mut Vec<String>) -> Result<bool, RsError> {
    if !link_exists(KERNEL_TUNNEL6) {
        // As for tunl0: loading ip6_tunnel creates ip6tnl0 itself and the add then fails.
        match ip(&["link", "add", "name", KERNEL_TUNNEL6, "type", "ip6tnl"]) {
            Ok(_) => actions.push(format!(
                "created {KERNEL_TUNNEL6} (kernel IPv6-in-IPv6 tunnel)"
            )),
            Err(e) if !link_exists(KERNEL_TUNNEL6) => {
                actions.push(format!(
                    "the kernel has no IPv6-in-IPv6 tunnel support ({e}): run `tapvs rs-decap` \
                     for user-space decapsulation into TUN {DEFAULT_DECAP_TUN}"
                ));
                return Ok(false);
            }
            Err(_) => {}
        }
    }
    ip(&["link", "set", "dev", KERNEL_TUNNEL6, "up"])?;
    actions.push(format!(
        "{KERNEL_TUNNEL6} up: the kernel decapsulates IPv6-in-IPv6 (do not also run `tapvs \
         rs-decap`)"
    ));
    Ok(true)
}

/// Refuses addresses that cannot be a VIP a real server holds on `lo`: for IPv6 the
/// unspecified and loopback addresses, multicast, link-local unicast (its zone would be `lo`)
/// and IPv4-mapped addresses (give the IPv4 address instead).
fn check_vip(vip: IpAddr) -> Result<(), RsError> {
    let IpAddr::V6(v6) = vip else {
        return Ok(());
    };
    let reason = if v6.is_unspecified() {
        "the unspecified address is not a VIP"
    } else if v6.is_loopback() {
        "the loopback address is not a VIP"
    } else if v6.is_multicast() {
        "a multicast address is not a VIP"
    } else if v6.segments()[0] & 0xffc0 == 0xfe80 {
        "a link-local address is not a VIP"
    } else if v6.to_ipv4_mapped().is_some() {
        "an IPv4-mapped address is not a VIP (give the IPv4 address)"
    } else {
        return Ok(());
    };
    Err(RsError::BadVip { vip, reason })
}

/// Makes sure IPv6 is on for `lo` (needed to hold an IPv6 VIP): errors when the kernel has no
/// IPv6, sets `net.ipv6.conf.lo.disable_ipv6 = 0` when it is 1.
fn ipv6_on_lo(vip: IpAddr, actions: &mut Vec<String>) -> Result<(), RsError> {
    if !std::path::Path::new("/proc/sys/net/ipv6").exists() {
        return Err(RsError::BadVip {
            vip,
            reason: "this kernel (or namespace) has no IPv6",
        });
    }
    let (path, _) = conf_path("ipv6", "lo", "disable_ipv6");
    if fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
        set_conf6("lo", "disable_ipv6", "0", actions)?;
    }
    Ok(())
}

/// Configures the host or network namespace this is called in (the calling thread's) as an
/// LVS real server for `mode` and virtual address `vip` (IPv4 or IPv6), and returns one line
/// per action for printing: [`setup_vips`] with one VIP.
pub fn setup(mode: RsMode, vip: impl Into<IpAddr>, undo: bool) -> Result<Vec<String>, RsError> {
    setup_vips(mode, &[vip.into()], undo)
}

/// Configures the host or network namespace this is called in (the calling thread's) as an
/// LVS real server for `mode` and the virtual addresses `vips` (any mix of IPv4 and IPv6), and
/// returns one line per action for printing. Idempotent: running it twice changes nothing the
/// second time. Every VIP is checked before anything changes (none given, or an IPv6 VIP that
/// is unspecified, loopback, multicast, link-local or IPv4-mapped, is an error).
///
/// For IPv4 VIPs, setup (`undo = false`):
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
/// For IPv6 VIPs: TUN only, `ip6tnl0` as `tunl0` above (module `ip6_tunnel`; without it,
/// `tapvs rs-decap` decapsulates IPv6-in-IPv6 too); IPv6 on for `lo`; `vip/128` on `lo` with
/// `nodad`. Nothing keeps the real server from answering Neighbour Solicitations for the VIP,
/// because Linux answers them only for addresses of the receiving interface (the IPv6
/// behaviour `arp_ignore=1` gives IPv4), and it never picks an address of `lo` as the source of
/// its own solicitations (what `arp_announce=2` gives IPv4); an action line says so.
///
/// Undo (`undo = true`): removes the VIPs from `lo`, sets `tunl0` (IPv4 VIPs) and `ip6tnl0`
/// (IPv6 VIPs) down if they exist (TUN mode) and, with an IPv4 VIP, restores `arp_ignore` and
/// `arp_announce` on `all` to the kernel defaults (0). It does not restore the previous values
/// (setup reports them, `(was N)`, in its actions), and leaves `rp_filter` at 0, which is the
/// kernel default for `all` and `default` (distributions often set 1 or 2 at boot; restore that
/// by hand if needed).
pub fn setup_vips(mode: RsMode, vips: &[IpAddr], undo: bool) -> Result<Vec<String>, RsError> {
    if vips.is_empty() {
        return Err(RsError::NoVip);
    }
    for &vip in vips {
        check_vip(vip)?;
    }
    let has4 = vips.iter().any(IpAddr::is_ipv4);
    let has6 = vips.iter().any(IpAddr::is_ipv6);
    let mut actions = Vec::new();
    if undo {
        for &vip in vips {
            match vip_prefix_on_lo(vip)? {
                Some(prefix) => {
                    ip(&["addr", "del", &format!("{vip}/{prefix}"), "dev", "lo"])?;
                    actions.push(format!("removed {vip}/{prefix} from lo"));
                }
                None => actions.push(format!("{vip} is not on lo")),
            }
        }
        if mode == RsMode::Tun {
            for (wanted, tunnel) in [(has4, KERNEL_TUNNEL), (has6, KERNEL_TUNNEL6)] {
                if wanted && link_exists(tunnel) {
                    ip(&["link", "set", "dev", tunnel, "down"])?;
                    actions.push(format!("{tunnel} down"));
                }
            }
        }
        if has4 {
            set_conf("all", "arp_ignore", "0", &mut actions)?;
            set_conf("all", "arp_announce", "0", &mut actions)?;
            actions.push("rp_filter left at 0".to_string());
        }
        return Ok(actions);
    }
    if mode == RsMode::Tun {
        if has4 {
            kernel_tunnel(&mut actions)?;
        }
        if has6 {
            kernel_tunnel6(&mut actions)?;
        }
    }
    ip(&["link", "set", "dev", "lo", "up"])?;
    for &vip in vips {
        if vip.is_ipv6() {
            ipv6_on_lo(vip, &mut actions)?;
        }
        match vip_prefix_on_lo(vip)? {
            Some(prefix) => actions.push(format!("{vip}/{prefix} already on lo")),
            None if vip.is_ipv4() => {
                ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"])?;
                actions.push(format!("added {vip}/32 to lo"));
            }
            None => {
                ip(&[
                    "-6",
                    "addr",
                    "add",
                    &format!("{vip}/128"),
                    "dev",
                    "lo",
                    "nodad",
                ])?;
                actions.push(format!("added {vip}/128 to lo"));
            }
        }
    }
    if has4 {
        set_conf("all", "arp_ignore", "1", &mut actions)?;
        set_conf("all", "arp_announce", "2", &mut actions)?;
        rp_filter_off(&mut actions)?;
    }
    if has6 {
        actions.push(
            "IPv6 VIPs: nothing to set for Neighbour Discovery (Linux answers Neighbour \
             Solicitations only for addresses of the receiving interface, never for lo's)"
                .to_string(),
        );
    }
    Ok(actions)
}

// ---------------------------------------------------------------------------------------------
// decap

/// Why [`decap`] dropped an IPv6-in-IPv6 packet: its inner IPv6 header (the raw socket has
/// consumed the outer one) is not a packet the kernel could take. Numbered densely from 0, in
/// the order of [`Malformed6::ALL`], to index [`DecapCounters::malformed6`]. Everything past the
/// fixed header (extension headers, fragments, checksums) is the receiving kernel's business.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed6 {
    /// Fewer than the 40 bytes of an IPv6 header.
    Truncated = 0,
    /// The version nibble is not 6.
    BadVersion = 1,
    /// Payload length 0 (a jumbogram, or nothing) or more than the bytes received after the
    /// header.
    BadPayloadLen = 2,
}

impl Malformed6 {
    /// Number of reasons.
    pub const COUNT: usize = 3;

    /// Every reason, in discriminant order.
    pub const ALL: [Malformed6; Malformed6::COUNT] = [
        Malformed6::Truncated,
        Malformed6::BadVersion,
        Malformed6::BadPayloadLen,
    ];

    /// Its name as printed in the counters: `truncated`, `bad_version`, `bad_payload_len`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Malformed6::Truncated => "truncated",
            Malformed6::BadVersion => "bad_version",
            Malformed6::BadPayloadLen => "bad_payload_len",
        }
    }
}

impl fmt::Display for Malformed6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counters of [`decap`], readable while it runs. The first four count IPIP, the `*6` ones
/// IPv6-in-IPv6.
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
    /// IPv6-in-IPv6 packets read from the raw IPv6 socket (next header 41).
    pub received6: AtomicU64,
    /// Inner IPv6 packets written to the TUN device.
    pub decapsulated6: AtomicU64,
    /// IPv6-in-IPv6 packets dropped as malformed, by reason (indexed by [`Malformed6`]).
    pub malformed6: [AtomicU64; Malformed6::COUNT],
    /// Inner IPv6 packets the TUN device refused.
    pub write_errors6: AtomicU64,
}

impl DecapCounters {
    /// All-zero counters.
    pub fn new() -> DecapCounters {
        DecapCounters::default()
    }

    /// IPv6-in-IPv6 packets dropped for `reason`.
    pub fn malformed6(&self, reason: Malformed6) -> u64 {
        self.malformed6[reason as usize].load(Ordering::Relaxed)
    }

    /// IPv6-in-IPv6 packets dropped as malformed, all reasons.
    pub fn malformed6_total(&self) -> u64 {
        Malformed6::ALL.iter().map(|&r| self.malformed6(r)).sum()
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
        )?;
        write!(
            f,
            "; IPv6-in-IPv6: received {}, decapsulated {}, malformed {} (",
            self.received6.load(Ordering::Relaxed),
            self.decapsulated6.load(Ordering::Relaxed),
            self.malformed6_total()
        )?;
        for (i, r) in Malformed6::ALL.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{r} {}", self.malformed6(*r))?;
        }
        write!(
            f,
            "), write errors {}",
            self.write_errors6.load(Ordering::Relaxed)
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

/// Opens the raw IPv6 socket of next header 41 that receives the inner packet of every
/// IPv6-in-IPv6 packet delivered to this host (the kernel strips the outer header and the
/// extension headers it processed). `Ok(None)` when the kernel has no IPv6
/// (`EAFNOSUPPORT`): rs-decap then decapsulates IPIP only.
fn open_ip6ip6_socket() -> Result<Option<RawIpSocket>, RsError> {
    let sock = match RawIpSocket::open6(libc::IPPROTO_IPV6) {
        Ok(s) => s,
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => return Ok(None),
        Err(source) => {
            return Err(RsError::RawSocket6 {
                op: "socket(AF_INET6, SOCK_RAW, IPPROTO_IPV6)",
                hint: permission_hint(&source),
                source,
            })
        }
    };
    let _ = sock.set_recv_buffer(RAW_RCVBUF);
    Ok(Some(sock))
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

/// The inner packet of an IPv6-in-IPv6 packet as the raw IPv6 socket delivers it (`buf`,
/// without the outer header): its fixed header must be whole, of version 6, with a payload
/// length within `buf`; the packet is cut at 40 + payload length.
fn inner_packet6(buf: &[u8]) -> Result<&[u8], Malformed6> {
    const HEADER: usize = modes::wire::ipv6::HEADER_LEN;
    let Some(header) = buf.get(..HEADER) else {
        return Err(Malformed6::Truncated);
    };
    if header[0] >> 4 != 6 {
        return Err(Malformed6::BadVersion);
    }
    let len = HEADER + usize::from(u16::from_be_bytes([header[4], header[5]]));
    if len == HEADER {
        return Err(Malformed6::BadPayloadLen);
    }
    buf.get(..len).ok_or(Malformed6::BadPayloadLen)
}

/// Decapsulates IPIP and IPv6-in-IPv6 in user space until `stop` is set: creates TUN device
/// `tun_name` (`IFF_TUN | IFF_NO_PI`, removed again when this returns; the kernel tells the
/// families apart by the version nibble), turns `rp_filter` off on it and on `all` (the inner
/// source is the client, which the real server does not route via the TUN), turns IPv6 on for
/// it unless `net.ipv6.conf.all.disable_ipv6` is 1, sets it up, then reads every IPIP packet delivered to this host from a raw
/// `IPPROTO_IPIP` socket, validates it with `modes::tun::decapsulate` and writes the inner IPv4
/// packet to the TUN device, and every IPv6-in-IPv6 packet (next header 41) from a raw IPv6
/// socket, which hands over the inner packet, checks its fixed header (reasons:
/// [`Malformed6`]) and writes it to the TUN device too. The kernel receives them there (the
/// inner destination is the VIP on `lo`, see [`setup_vips`]). When the kernel has no IPv6, only
/// IPIP is decapsulated. Counts into `counters`; looks at `stop` at least every
/// [`DECAP_POLL_MS`] ms.
///
/// Acts in the calling thread's network namespace. The device is up (and the sockets open)
/// when `ip link show <tun_name>` shows `UP`. Do not run it where the kernel's own `tunl0` or
/// `ip6tnl0` is up: both would deliver every packet. Errors: an invalid name, TUN or socket
/// creation, sysctls, and a failing `recv` (transient errors are retried).
pub fn decap(tun_name: &str, stop: &AtomicBool, counters: &DecapCounters) -> Result<(), RsError> {
    decap_with(tun_name, stop, counters, |_| {})
}

/// [`decap`] calling `ready` once the device is up and packets are being read, with whether
/// IPv6-in-IPv6 is decapsulated too.
fn decap_with(
    tun_name: &str,
    stop: &AtomicBool,
    counters: &DecapCounters,
    ready: impl FnOnce(bool),
) -> Result<(), RsError> {
    crate::sys::tap::validate_ifname(tun_name)
        .map_err(|_| RsError::InvalidName(tun_name.to_string()))?;
    // The sockets first: once the device is up, everything is ready.
    let raw = open_ipip_socket()?;
    let raw6 = open_ip6ip6_socket()?;
    let tun = open_tun(tun_name)?;
    let mut actions = Vec::new();
    set_conf("all", "rp_filter", "0", &mut actions)?;
    set_conf(tun_name, "rp_filter", "0", &mut actions)?;
    // The device starts with `default`'s disable_ipv6; where IPv6 is on (`all`), it must be on
    // for the device too, or the kernel drops the inner IPv6 packets written to it.
    let (all6, _) = conf_path("ipv6", "all", "disable_ipv6");
    if raw6.is_some() && fs::read_to_string(all6).is_ok_and(|v| v.trim() == "0") {
        set_conf6(tun_name, "disable_ipv6", "0", &mut actions)?;
    }
    crate::sys::tap::set_link_up(tun_name)?;
    ready(raw6.is_some());
    let mut buf = vec![0u8; MAX_IP_PACKET];
    // poll(2) ignores a negative descriptor: without IPv6 the second slot never fires.
    let fd6 = raw6.as_ref().map_or(-1, AsRawFd::as_raw_fd);
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [
            crate::sys::poll_in(raw.as_raw_fd()),
            crate::sys::poll_in(fd6),
        ];
        let ready =
            crate::sys::poll(&mut fds, DECAP_POLL_MS).map_err(|source| RsError::RawSocket {
                op: "poll",
                source,
                hint: "",
            })?;
        if ready == 0 {
            continue;
        }
        if let (Some(raw6), true) = (&raw6, fds[1].revents != 0) {
            decap6_batch(raw6, &tun, &mut buf, counters)?;
        }
        if fds[0].revents == 0 {
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

/// Handles up to [`DECAP_BATCH`] queued IPv6-in-IPv6 packets of `raw6`: each inner packet that
/// passes [`inner_packet6`] goes to `tun`, the others are counted by reason.
fn decap6_batch(
    raw6: &RawIpSocket,
    tun: &TunFile,
    buf: &mut [u8],
    counters: &DecapCounters,
) -> Result<(), RsError> {
    for _ in 0..DECAP_BATCH {
        let n = match recv_packet(raw6, buf) {
            Ok(Some(n)) => n,
            Ok(None) => break,
            Err(source) => {
                return Err(RsError::RawSocket6 {
                    op: "recv",
                    source,
                    hint: "",
                })
            }
        };
        counters.received6.fetch_add(1, Ordering::Relaxed);
        let inner = match buf.get(..n).map(inner_packet6) {
            Some(Ok(inner)) => inner,
            Some(Err(reason)) => {
                counters.malformed6[reason as usize].fetch_add(1, Ordering::Relaxed);
                continue;
            }
            None => {
                counters.malformed6[Malformed6::BadPayloadLen as usize]
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        match tun.write(inner) {
            Ok(_) => counters.decapsulated6.fetch_add(1, Ordering::Relaxed),
            Err(_) => counters.write_errors6.fetch_add(1, Ordering::Relaxed),
        };
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
    if link_exists(KERNEL_TUNNEL6) {
        eprintln!(
            "rs-decap: warning: {KERNEL_TUNNEL6} exists, so the kernel has IPv6-in-IPv6 support; \
             if it is up, the kernel decapsulates too and every packet arrives twice"
        );
    }
    let counters = DecapCounters::new();
    let mut started = false;
    let result = decap_with(tun_name, &stop, &counters, |ipv6| {
        started = true;
        println!("rs-decap: decapsulating IPIP into TUN {tun_name}");
        if ipv6 {
            println!("rs-decap: decapsulating IPv6-in-IPv6 into TUN {tun_name}");
        } else {
            println!("rs-decap: no IPv6 in this kernel: IPIP only");
        }
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

/// Sends one complete IPv6 packet (fixed header included, as built by the caller, with its
/// payload length right) from a raw `AF_INET6` `IPPROTO_RAW` socket in the calling thread's
/// network namespace, routed by its destination address. The kernel sends the bytes as they
/// are (see `IPV6_HDRINCL` in `raw(7)`). For tests and probes.
pub fn send_raw_ip6(packet: &[u8]) -> io::Result<()> {
    let dst = match packet.get(24..40) {
        Some(d) if packet[0] >> 4 == 6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(d);
            Ipv6Addr::from(a)
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "send_raw_ip6: not an IPv6 packet (need version 6 and a 40-byte header)",
            ))
        }
    };
    let sock = RawIpSocket::open6(libc::IPPROTO_RAW)?;
    sock.send_to6(packet, dst)?;
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

    #[test]
    fn inner_ipv6_packets_are_checked_and_cut() {
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&8u16.to_be_bytes());
        p[6] = 17;
        assert_eq!(inner_packet6(&p), Ok(&p[..]));
        // Trailing bytes are cut off.
        let mut padded = p.clone();
        padded.extend_from_slice(&[0; 5]);
        assert_eq!(inner_packet6(&padded), Ok(&p[..]));
        assert_eq!(inner_packet6(&p[..39]), Err(Malformed6::Truncated));
        assert_eq!(inner_packet6(&[]), Err(Malformed6::Truncated));
        assert_eq!(inner_packet6(&p[..47]), Err(Malformed6::BadPayloadLen));
        let mut v4 = p.clone();
        v4[0] = 0x45;
        assert_eq!(inner_packet6(&v4), Err(Malformed6::BadVersion));
        let mut jumbo = p.clone();
        jumbo[4..6].fill(0);
        assert_eq!(inner_packet6(&jumbo), Err(Malformed6::BadPayloadLen));
    }

    #[test]
    fn unusable_ipv6_vips_are_refused() {
        for (vip, what) in [
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("ff02::1", "multicast"),
            ("fe80::1", "link-local"),
            ("::ffff:10.0.0.1", "IPv4-mapped"),
        ] {
            let vip: IpAddr = vip.parse().unwrap();
            let e = check_vip(vip).unwrap_err();
            assert!(e.to_string().contains(what), "{vip}: {e}");
        }
        for ok in ["2001:db8:f::80", "fd00::1", "10.0.0.1"] {
            assert!(check_vip(ok.parse().unwrap()).is_ok(), "{ok}");
        }
        // (That setup_vips checks every VIP before changing anything is a namespace test:
        // tests/rs_tools.rs, rs_setup_command_takes_both_families_and_refuses_bad_vips.)
        assert!(matches!(
            setup_vips(RsMode::Tun, &[], false),
            Err(RsError::NoVip)
        ));
    }

    #[test]
    fn non_ipv6_is_not_sent() {
        assert_eq!(
            send_raw_ip6(&[0x45; 60]).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            send_raw_ip6(&[0x60; 39]).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn counters_print_both_families() {
        let c = DecapCounters::new();
        c.received.fetch_add(2, Ordering::Relaxed);
        c.malformed6[Malformed6::BadVersion as usize].fetch_add(1, Ordering::Relaxed);
        assert_eq!(
            c.to_string(),
            "received 2, decapsulated 0, malformed 0, write errors 0; IPv6-in-IPv6: received 0, \
             decapsulated 0, malformed 1 (truncated 0, bad_version 1, bad_payload_len 0), write \
             errors 0"
        );
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
