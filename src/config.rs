//! The TOML configuration: its schema, defaults and validation.
//!
//! Loading is all-or-nothing: the file is parsed into raw serde structures that reject unknown
//! fields, then checked field by field into a [`Config`] whose values are typed and consistent.
//! Every error names the file, the field (as a path such as `service[0].real[1].weight`) and the
//! problem; nothing is started from a config that has one.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use modes::{Forward, Protocol};
use serde::Deserialize;

use crate::sys::tap::validate_ifname;

/// A configuration error: which file, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the configuration came from.
    pub file: PathBuf,
    /// Dotted path of the offending field (`-` when the error is about the whole file).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: field `{}`: {}",
            self.file.display(),
            self.field,
            self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// How frames are spread over the workers' queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SteeringMode {
    /// The eBPF program of this module (falls back to `Flow`, with a warning, if the kernel
    /// refuses it).
    #[default]
    Ebpf,
    /// The kernel's automatic flow steering.
    Flow,
}

/// An IPv4 or IPv6 prefix such as `10.0.0.1/24` or `2001:db8:c::1/64` (the address keeps its
/// host bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length, 0..=32 (IPv4) or 0..=128 (IPv6).
    pub prefix: u8,
}

/// An address as an integer of its own width (an IPv4 address in the low 32 bits).
pub fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of `ip`'s family whose integer form (as [`ip_bits`]) is `bits`.
pub fn ip_from_bits(like: IpAddr, bits: u128) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(bits as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
    }
}

/// The width in bits of `ip`'s family (32 or 128).
pub fn ip_width(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// The mask of a `prefix`-bit prefix in a `width`-bit family, as an integer of that width.
pub fn prefix_mask(width: u8, prefix: u8) -> u128 {
    let ones = if width >= 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    if prefix == 0 {
        0
    } else {
        ones & !(ones >> prefix.min(width))
    }
}

impl Cidr {
    /// The network mask as an integer of the address's width (see [`ip_bits`]).
    pub fn mask(&self) -> u128 {
        prefix_mask(ip_width(self.addr), self.prefix)
    }

    /// Whether `ip` is inside this prefix (never for the other family).
    pub fn contains(&self, ip: impl Into<IpAddr>) -> bool {
        let ip = ip.into();
        ip.is_ipv4() == self.addr.is_ipv4() && (ip_bits(ip) ^ ip_bits(self.addr)) & self.mask() == 0
    }

    /// The prefix's network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        ip_from_bits(self.addr, ip_bits(self.addr) & self.mask())
    }

    /// Parses `a.b.c.d/len` or `v6addr/len`; a bare address is a /32 (/128). `default` is
    /// 0.0.0.0/0, `default6` is ::/0.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        if s == "default" || s == "default6" {
            let addr = if s == "default" {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            };
            return Ok(Cidr { addr, prefix: 0 });
        }
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an IPv4 or IPv6 address or prefix"))?;
        let width = ip_width(addr);
        let prefix = match p {
            None => width,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= width => n,
                _ => return Err(format!("{s:?}: prefix length must be 0..={width}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A forwarding method as the config file spells it (`forward = "nat"`, the default).
fn parse_forward(s: &str) -> Option<Forward> {
    match s {
        "nat" => Some(Forward::Nat),
        "dr" => Some(Forward::Dr),
        "tun" => Some(Forward::Tun),
        "fullnat" => Some(Forward::FullNat),
        _ => None,
    }
}

/// Connection timeouts in seconds (`ipvsadm --set tcp tcpfin udp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// TCP ESTABLISHED, default 900.
    pub tcp: u32,
    /// TCP FIN_WAIT, default 120.
    pub tcp_fin: u32,
    /// UDP, default 300.
    pub udp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300,
        }
    }
}

/// Neighbour (ARP) cache settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NeighbourConfig {
    /// Most entries kept; the oldest is evicted beyond it. Default 4096.
    pub max_entries: usize,
    /// Seconds an entry stays valid without being confirmed. Default 300.
    pub timeout: u32,
}

impl Default for NeighbourConfig {
    fn default() -> Self {
        NeighbourConfig {
            max_entries: 4096,
            timeout: 300,
        }
    }
}

/// `[defence]`: protections of the appliance itself. The ICMP error limits follow the
/// kernel's sysctls of the same names (`net.ipv4.icmp_ratelimit`, `icmp_msgs_per_sec`,
/// `icmp_msgs_burst`), with its defaults; the `pressure_*` settings are the connection table's
/// defences against floods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefenceConfig {
    /// Per destination host, at most one ICMP error per this many milliseconds after a burst
    /// of 6 (the kernel's `XRLIM_BURST_FACTOR`); 0 turns the per-host limit off. Default 1000.
    pub icmp_ratelimit_ms: u32,
    /// ICMP errors per second in all, split across workers; 0 turns it off. Default 1000.
    pub icmp_msgs_per_sec: u32,
    /// Burst of the global limit. Default 50.
    pub icmp_msgs_burst: u32,
    /// Percent of a worker's share of `max_connections` at which its table comes under
    /// pressure (embryonic and unreplied entries evicted for new ones, short timeouts, the
    /// per-prefix rate limit); 0 turns these defences off. Default 90.
    pub pressure_high: u32,
    /// Percent below which the pressure ends; below `pressure_high`. Default 80.
    pub pressure_low: u32,
    /// Seconds an embryonic TCP or unreplied UDP entry lives under pressure. Default 5.
    pub pressure_timeout: u32,
    /// Prefix length by which new connections are rate-limited under pressure. Default 24.
    pub pressure_prefix: u32,
    /// New connections per second per client prefix, per worker, under pressure; 0 = no limit.
    /// Default 1000.
    pub pressure_prefix_rate: u32,
}

impl Default for DefenceConfig {
    fn default() -> Self {
        DefenceConfig {
            icmp_ratelimit_ms: 1000,
            icmp_msgs_per_sec: 1000,
            icmp_msgs_burst: 50,
            pressure_high: 90,
            pressure_low: 80,
            pressure_timeout: 5,
            pressure_prefix: 24,
            pressure_prefix_rate: 1000,
        }
    }
}

/// `[io]`: how the workers read and write their TAP queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IoConfig {
    /// `auto` (the default: io_uring where the kernel offers what it needs, else `poll`),
    /// `uring` (io_uring or refuse to start) or `poll` (`poll(2)` with one `read` or `write`
    /// per frame).
    pub backend: IoBackend,
}

impl Default for IoConfig {
    fn default() -> Self {
        IoConfig {
            backend: IoBackend::Auto,
        }
    }
}

/// The workers' I/O method (`[io] backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoBackend {
    /// io_uring where available, else poll.
    Auto,
    /// io_uring: multishot reads into provided buffers, batched writes, one
    /// `io_uring_enter` per round.
    Uring,
    /// `poll(2)` and one `read`/`write` per frame.
    Poll,
}

/// A service's access control (`allow`, `deny`, `conn_limit`, `conn_rate`,
/// `conn_rate_prefix`), checked for new connections only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessConfig {
    /// When not empty, only clients in these prefixes may connect.
    pub allow: Vec<Cidr>,
    /// Clients in these prefixes are refused (checked before `allow`).
    pub deny: Vec<Cidr>,
    /// Most open connections of the service at once (0: no limit).
    pub conn_limit: u32,
    /// New connections per second per client prefix (0: no limit).
    pub conn_rate: u32,
    /// Prefix length grouping clients for `conn_rate` (default 32: per address).
    pub conn_rate_prefix: u8,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            allow: Vec::new(),
            deny: Vec::new(),
            conn_limit: 0,
            conn_rate: 0,
            conn_rate_prefix: 32,
        }
    }
}

/// Most prefixes in a service's `allow` or `deny` list.
pub const MAX_ACL_PREFIXES: usize = 65_536;

/// Parses a client prefix of an access list: `a.b.c.d/len` or `v6addr/len` (or a bare
/// address, a /32 or /128) with no host bits set.
pub fn parse_client_prefix(s: &str) -> Result<Cidr, String> {
    if s == "default" {
        return Err(format!("{s:?} is not a prefix (use \"0.0.0.0/0\")"));
    }
    let c = Cidr::parse(s)?;
    if c.network() != c.addr {
        let net = c.network();
        return Err(format!(
            "{s:?} has host bits set (the prefix is {net}/{})",
            c.prefix
        ));
    }
    Ok(c)
}

/// The control socket (`tapvsadm`) and IPVS control-plane switches.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Unix socket path for `tapvsadm`; empty disables it.
    pub socket: String,
    /// IPVS `expire_nodest_conn`: end a deleted real server's connections at their next packet
    /// (default false: they continue until they end or expire).
    pub expire_nodest_conn: bool,
    /// IPVS `sloppy_tcp`: a TCP packet of an unknown flow that is not a SYN (nor a RST) is
    /// scheduled and its connection created mid-stream; the default of every service
    /// (`service.sloppy_tcp` overrides it).
    pub sloppy_tcp: bool,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            socket: tapvs_adm::DEFAULT_SOCKET.into(),
            expire_nodest_conn: false,
            sloppy_tcp: false,
        }
    }
}

/// How log lines are written to stderr (`[log] format`, or `TAPVS_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (the default); coloured only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `fields` (with `message`).
    Json,
}

impl LogFormat {
    /// Parses `text` or `json`.
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// The environment variable that overrides `[log] format` (read before the config file).
pub const LOG_FORMAT_ENV: &str = "TAPVS_LOG_FORMAT";

/// The log format asked for by the environment: `value` is `TAPVS_LOG_FORMAT`'s value, if set.
/// Unset or empty is no override; anything but `text` or `json` is an error whose file is
/// `environment` and whose field is the variable's name.
pub fn log_format_override(value: Option<&str>) -> Result<Option<LogFormat>, ConfigError> {
    match value {
        None | Some("") => Ok(None),
        Some(v) => LogFormat::parse(v).map(Some).ok_or_else(|| ConfigError {
            file: PathBuf::from("environment"),
            field: LOG_FORMAT_ENV.into(),
            message: format!("{v:?} is not one of \"text\", \"json\""),
        }),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: Option<String>,
}

/// The Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` at all.
    pub enabled: bool,
    /// Address to listen on.
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            listen: "127.0.0.1:9273".into(),
        }
    }
}

/// One TAP port: a host interface of the appliance on one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConfig {
    /// Port name used in logs and routes.
    pub name: String,
    /// TAP device name.
    pub tap: String,
    /// The port's MAC address.
    pub mac: [u8; 6],
    /// The appliance's addresses on this segment (also its connected routes).
    pub addresses: Vec<Cidr>,
    /// Bridge to enslave the TAP to, if any.
    pub bridge: Option<String>,
    /// MTU of the TAP's kernel side, if set.
    pub mtu: Option<u32>,
    /// Depth of each TAP queue (the device's txqueuelen), default 4096.
    pub queue_len: u32,
    /// Reverse-path filter on frames received here (the kernel's `rp_filter`), default off.
    pub rp_filter: RpFilter,
}

/// Reverse-path filtering of a port (the kernel's `rp_filter` sysctl): whether the route back
/// to a frame's source must exist, or must leave through the port the frame came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RpFilter {
    /// No check (`rp_filter = 0`).
    #[default]
    Off,
    /// The route back to the source leaves through the receiving port (`rp_filter = 1`).
    Strict,
    /// Some route leads back to the source (`rp_filter = 2`).
    Loose,
}

impl RpFilter {
    /// Parses `off`, `strict` or `loose`.
    pub fn parse(s: &str) -> Option<RpFilter> {
        match s {
            "off" => Some(RpFilter::Off),
            "strict" => Some(RpFilter::Strict),
            "loose" => Some(RpFilter::Loose),
            _ => None,
        }
    }
}

/// A static route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteConfig {
    /// Destination prefix.
    pub to: Cidr,
    /// Next-hop gateway (must be on a connected network, of the prefix's family).
    pub via: IpAddr,
}

/// A real server of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct RealConfig {
    /// Address and port (port 0 for an all-ports service: the packet's destination port).
    pub addr: SocketAddr,
    /// Weight 0..=65535; 0 quiesces.
    pub weight: u32,
    /// Forwarding method.
    pub forward: Forward,
    /// Upper connection threshold (`-x`), 0 = none.
    pub u_threshold: u32,
    /// Lower connection threshold (`-y`), 0 = none.
    pub l_threshold: u32,
    /// Health-check settings of this real server.
    pub health: crate::health::config::RealHealthConfig,
    /// Its health checks (none: always up).
    pub checks: Vec<crate::health::config::CheckConfig>,
    /// Script run (`/bin/sh -c`) when its checks turn it up (keepalived's `notify_up`).
    pub notify_up: Option<String>,
    /// Script run when its checks turn it down (keepalived's `notify_down`).
    pub notify_down: Option<String>,
}

/// A virtual service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// Protocol.
    pub proto: Protocol,
    /// Virtual address and port.
    pub vip: SocketAddr,
    /// Scheduler name and flags.
    pub scheduler: sched::SchedSpec,
    /// Persistence timeout in seconds (`-p`), if persistent.
    pub persistent: Option<u32>,
    /// Netmask applied to the client address for persistence (`-M`), default /32; for an
    /// IPv6 service the mask of its prefix length (`netmask = 64`), default /128.
    pub netmask: IpAddr,
    /// One-packet scheduling (`-o`, UDP only): every datagram is scheduled on its own.
    pub ops: bool,
    /// FullNAT local addresses (DPVS `--add-laddr`), required when a real server is `fullnat`.
    pub local_addresses: Vec<IpAddr>,
    /// FullNAT: insert the TOA option (client address) into the handshake-completing ACK.
    pub toa: bool,
    /// FullNAT: also insert TOA into the client's SYN.
    pub toa_on_syn: bool,
    /// Health-check settings of the service (delay_loop, quorum, sorry server, ...).
    pub health: crate::health::config::ServiceHealthConfig,
    /// The sorry server (used while quorum is lost), with the service port when none given.
    pub sorry_server: Option<SocketAddr>,
    /// `sloppy_tcp` for this service (absent: `control.sloppy_tcp`).
    pub sloppy_tcp: Option<bool>,
    /// Real servers.
    pub reals: Vec<RealConfig>,
    /// Access control: allow/deny lists and connection limits.
    pub access: AccessConfig,
    /// SYNPROXY (DPVS `-j enable`): the director answers SYNs with syncookies and opens the
    /// connection to the real server only after the client's ACK (TCP, NAT and FullNAT only).
    pub synproxy: bool,
}

fn sock4(a: SocketAddr) -> Option<std::net::SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

impl ServiceConfig {
    /// The virtual address and port when IPv4 (the parts of the daemon that speak IPv4 only:
    /// the control table, health checks, VRRP tracking).
    pub fn vip4(&self) -> Option<std::net::SocketAddrV4> {
        sock4(self.vip)
    }
}

impl RealConfig {
    /// The address and port when IPv4.
    pub fn addr4(&self) -> Option<std::net::SocketAddrV4> {
        sock4(self.addr)
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from.
    pub file: PathBuf,
    /// Worker threads (each owns one queue of every port).
    pub workers: usize,
    /// How the kernel spreads received frames over the workers' queues.
    pub steering: SteeringMode,
    /// Bound of each worker's connection table is `max_connections / workers`.
    pub max_connections: usize,
    /// Connection timeouts.
    pub timeouts: Timeouts,
    /// Neighbour cache.
    pub neighbour: NeighbourConfig,
    /// Flood defences (`[defence]`).
    pub defence: DefenceConfig,
    /// Control socket.
    pub control: ControlConfig,
    /// Metrics endpoint (validated address).
    pub metrics: Option<SocketAddr>,
    /// Log line format (`[log] format`).
    pub log_format: LogFormat,
    /// Ports.
    pub ports: Vec<PortConfig>,
    /// Static routes.
    pub routes: Vec<RouteConfig>,
    /// Virtual services.
    pub services: Vec<ServiceConfig>,
    /// `[scale_out]`: active-active instances behind ECMP, VIPs announced through BIRD.
    pub scale_out: Option<crate::scaleout::ScaleOutConfig>,
    /// VRRP instances (hot standby), see [`crate::vrrp::config`].
    pub vrrp: Vec<crate::vrrp::config::VrrpConfig>,
    /// VRRP sync groups (`[[vrrp_sync_group]]`): instances that move together.
    pub vrrp_sync_groups: Vec<crate::vrrp::config::SyncGroupConfig>,
    /// The IPVS connection-sync daemon (`[sync]`), see [`crate::syncd`].
    pub sync: crate::syncd::SyncConfig,
    /// The workers' I/O (`[io]`).
    pub io: IoConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    workers: Option<usize>,
    steering: Option<String>,
    max_connections: Option<usize>,
    #[serde(default)]
    timeouts: Timeouts,
    #[serde(default)]
    neighbour: NeighbourConfig,
    #[serde(default)]
    defence: DefenceConfig,
    #[serde(default)]
    control: ControlConfig,
    #[serde(default)]
    metrics: MetricsConfig,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    port: Vec<RawPort>,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    service: Vec<RawService>,
    scale_out: Option<crate::scaleout::ScaleOutConfig>,
    #[serde(default)]
    vrrp: Vec<crate::vrrp::config::RawVrrp>,
    #[serde(default)]
    vrrp_sync_group: Vec<crate::vrrp::config::RawSyncGroup>,
    #[serde(default)]
    sync: crate::syncd::RawSync,
    #[serde(default)]
    io: IoConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: String,
    tap: String,
    mac: Option<String>,
    #[serde(default)]
    addresses: Vec<String>,
    bridge: Option<String>,
    mtu: Option<u32>,
    queue_len: Option<u32>,
    rp_filter: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    to: String,
    via: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    protocol: String,
    address: String,
    scheduler: Option<String>,
    #[serde(default)]
    flags: Vec<String>,
    mh_table_size: Option<u32>,
    persistent: Option<Persistent>,
    netmask: Option<Netmask>,
    #[serde(default)]
    ops: bool,
    #[serde(default)]
    local_addresses: Vec<String>,
    toa: Option<bool>,
    #[serde(default)]
    toa_on_syn: bool,
    sloppy_tcp: Option<bool>,
    #[serde(default)]
    health: crate::health::config::ServiceHealthConfig,
    #[serde(default)]
    real: Vec<RawReal>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    conn_limit: Option<u32>,
    conn_rate: Option<u32>,
    conn_rate_prefix: Option<u32>,
    #[serde(default)]
    synproxy: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReal {
    address: String,
    #[serde(default = "one")]
    weight: u32,
    forward: Option<String>,
    #[serde(default)]
    u_threshold: u32,
    #[serde(default)]
    l_threshold: u32,
    #[serde(default)]
    health: crate::health::config::RealHealthConfig,
    #[serde(default)]
    check: Vec<crate::health::config::CheckConfig>,
    notify_up: Option<String>,
    notify_down: Option<String>,
}

fn one() -> u32 {
    1
}

/// `persistent = 600`, or `persistent = true` for ipvsadm's default of 300 seconds.
#[derive(Deserialize, Clone, Copy)]
#[serde(untagged)]
enum Persistent {
    Flag(bool),
    Secs(u32),
}

/// `netmask = "255.255.255.0"` (IPv4 service), or a prefix length for an IPv6 service
/// (`netmask = 64` or `"64"`).
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum Netmask {
    Text(String),
    Len(u32),
}

/// ipvsadm's persistence timeout when `-p` is given without a value.
pub const DEFAULT_PERSISTENCE: u32 = 300;

/// Default number of workers: the number of cores.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A locally administered unicast MAC derived from the TAP name and this machine's identity,
/// stable across restarts.
pub fn generated_mac(tap: &str) -> [u8; 6] {
    let machine = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    // FNV-1a over machine id and TAP name.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in machine.trim().bytes().chain([0]).chain(tap.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    [0x02, b[3], b[4], b[5], b[6], b[7]]
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for o in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *o = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Most connections `max_connections` may ask for: 100 million. At about 88 bytes per entry
/// that is some 8.2 GiB of connection table when full; one worker's index cannot address more
/// than 2^27 - 2 entries anyway (`datapath::conn`), and a bound far beyond the memory of the
/// machine only turns a refused connection into an out-of-memory kill.
pub const MAX_CONNECTIONS: usize = 100_000_000;

/// Most `[[port]]`s: each is a TAP with one queue per worker (so `ports x workers` descriptors)
/// and a poll slot in every worker round; 64 is far beyond any appliance's segments.
pub const MAX_PORTS: usize = 64;

/// Longest port name in bytes: an interface name's limit (IFNAMSIZ - 1).
pub const MAX_PORT_NAME: usize = 15;

/// Why `ip` cannot be a unicast host (a VIP, a real server, a port address), if it cannot:
/// the ranges the data path treats as martian (IPv4: 0.0.0.0/8, 127.0.0.0/8, multicast, class
/// E and the limited broadcast; IPv6: ::, ::1, multicast ff00::/8, link-local fe80::/10 and
/// IPv4-mapped ::ffff:0:0/96).
pub fn not_unicast(ip: IpAddr) -> Option<&'static str> {
    let ip = match ip {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(ip) => return not_unicast6(ip),
    };
    let top = u32::from(ip) >> 24;
    if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_broadcast() {
        Some("the limited broadcast address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if top == 0 {
        Some("in 0.0.0.0/8 (this network)")
    } else if top == 127 {
        Some("a loopback address")
    } else if top >= 240 {
        Some("a reserved (class E) address")
    } else {
        None
    }
}

/// [`not_unicast`] for IPv6.
pub fn not_unicast6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_loopback() {
        Some("the loopback address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if seg[0] & 0xffc0 == 0xfe80 {
        Some("a link-local address")
    } else if ip.to_ipv4_mapped().is_some() {
        Some("an IPv4-mapped address")
    } else {
        None
    }
}

/// Whether `ip` is the network or the broadcast address of the IPv4 prefix `c` (a /31 or /32
/// has neither; IPv6 has no broadcast and its subnet-router anycast is not refused): which
/// one, if so.
pub fn subnet_special(c: &Cidr, ip: IpAddr) -> Option<&'static str> {
    if !c.addr.is_ipv4() || c.prefix > 30 || !c.contains(ip) {
        return None;
    }
    let host = ip_bits(ip) & !c.mask() & u128::from(u32::MAX);
    if host == 0 {
        Some("network")
    } else if host == !c.mask() & u128::from(u32::MAX) {
        Some("broadcast")
    } else {
        None
    }
}

/// A value as an error message quotes it: cut to 40 characters (with its length), so a huge
/// value does not become a huge message.
fn shown(s: &str) -> String {
    if s.len() <= 40 {
        format!("{s:?}")
    } else {
        let cut: String = s.chars().take(40).collect();
        format!("{cut:?}... ({} bytes)", s.len())
    }
}

/// Loads and validates a configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        field: "-".into(),
        message: format!("cannot read the file: {e}"),
    })?;
    parse(&text, path)
}

/// Parses and validates configuration text that came from `file`.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let err = |field: String, message: String| ConfigError {
        file: file.to_path_buf(),
        field,
        message,
    };
    let de = toml::Deserializer::parse(text).map_err(|e| syntax_error(file, text, &e))?;
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        let at = inner
            .span()
            .map(|s| format!(" (line {})", line_of(text, s.start)))
            .unwrap_or_default();
        err(
            if field == "." { "-".into() } else { field },
            format!("{}{at}", inner.message().trim()),
        )
    })?;
    validate(raw, file)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn syntax_error(file: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e.span().map(|s| line_of(text, s.start));
    ConfigError {
        file: file.to_path_buf(),
        field: "-".into(),
        message: match line {
            Some(l) => format!("TOML syntax error at line {l}: {}", e.message().trim()),
            None => format!("TOML syntax error: {}", e.message().trim()),
        },
    }
}

fn validate(raw: RawConfig, file: &Path) -> Result<Config, ConfigError> {
    let err = |field: String, message: String| ConfigError {
        file: file.to_path_buf(),
        field,
        message,
    };
    let workers = raw.workers.unwrap_or_else(default_workers);
    if workers == 0 || workers > 64 {
        return Err(err("workers".into(), "must be 1..=64".into()));
    }
    let steering = match raw.steering.as_deref() {
        None | Some("ebpf") => SteeringMode::Ebpf,
        Some("flow") => SteeringMode::Flow,
        Some(other) => {
            return Err(err(
                "steering".into(),
                format!("unknown steering {other:?} (ebpf or flow)"),
            ))
        }
    };
    let max_connections = raw.max_connections.unwrap_or(1 << 20);
    if max_connections < workers {
        return Err(err(
            "max_connections".into(),
            format!("must be at least the number of workers ({workers})"),
        ));
    }
    if max_connections > MAX_CONNECTIONS {
        return Err(err(
            "max_connections".into(),
            format!(
                "{max_connections} is too large: at most {MAX_CONNECTIONS} (about 88 bytes of memory per connection)"
            ),
        ));
    }
    for (name, v) in [
        ("timeouts.tcp", raw.timeouts.tcp),
        ("timeouts.tcp_fin", raw.timeouts.tcp_fin),
        ("timeouts.udp", raw.timeouts.udp),
    ] {
        if v == 0 || v > 86_400 * 30 {
            return Err(err(name.into(), "must be 1..=2592000 seconds".into()));
        }
    }
    if raw.neighbour.max_entries == 0 {
        return Err(err(
            "neighbour.max_entries".into(),
            "must be positive".into(),
        ));
    }
    if raw.neighbour.timeout < 5 {
        return Err(err(
            "neighbour.timeout".into(),
            "must be at least 5 seconds".into(),
        ));
    }
    let d = &raw.defence;
    if d.pressure_high > 100 {
        return Err(err(
            "defence.pressure_high".into(),
            format!("{} is not a percentage (0..=100; 0 = off)", d.pressure_high),
        ));
    }
    if d.pressure_high > 0 && d.pressure_low >= d.pressure_high {
        return Err(err(
            "defence.pressure_low".into(),
            format!(
                "{} must be below pressure_high ({})",
                d.pressure_low, d.pressure_high
            ),
        ));
    }
    if d.pressure_timeout == 0 || d.pressure_timeout > 3600 {
        return Err(err(
            "defence.pressure_timeout".into(),
            "must be 1..=3600 seconds".into(),
        ));
    }
    if d.pressure_prefix > 32 {
        return Err(err(
            "defence.pressure_prefix".into(),
            format!("{} is not a prefix length (0..=32)", d.pressure_prefix),
        ));
    }

    let metrics = if raw.metrics.enabled {
        Some(raw.metrics.listen.parse::<SocketAddr>().map_err(|_| {
            err(
                "metrics.listen".into(),
                format!("{:?} is not an address:port", raw.metrics.listen),
            )
        })?)
    } else {
        None
    };
    let log_format = match raw.log.format.as_deref() {
        None => LogFormat::Text,
        Some(s) => LogFormat::parse(s).ok_or_else(|| {
            err(
                "log.format".into(),
                format!("{s:?} is not one of \"text\", \"json\""),
            )
        })?,
    };
    if !raw.control.socket.is_empty() && !raw.control.socket.starts_with('/') {
        return Err(err(
            "control.socket".into(),
            "must be an absolute path (or empty to disable)".into(),
        ));
    }
    if raw.port.is_empty() {
        return Err(err(
            "port".into(),
            "at least one [[port]] is required".into(),
        ));
    }
    if raw.port.len() > MAX_PORTS {
        return Err(err(
            "port".into(),
            format!(
                "{} ports: at most {MAX_PORTS} are supported",
                raw.port.len()
            ),
        ));
    }
    let mut ports: Vec<PortConfig> = Vec::new();
    let mut names = HashSet::new();
    let mut taps = HashSet::new();
    let mut own = HashSet::new();
    for (i, p) in raw.port.iter().enumerate() {
        let f = |k: &str| format!("port[{i}].{k}");
        let good_name = (1..=MAX_PORT_NAME).contains(&p.name.len())
            && p.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !good_name {
            return Err(err(
                f("name"),
                format!(
                    "{} is not a port name: 1..={MAX_PORT_NAME} bytes of letters, digits, '-', '_' or '.'",
                    shown(&p.name)
                ),
            ));
        }
        if !names.insert(p.name.clone()) {
            return Err(err(f("name"), format!("{:?} is used twice", p.name)));
        }
        validate_ifname(&p.tap).map_err(|e| err(f("tap"), e.to_string()))?;
        if !taps.insert(p.tap.clone()) {
            return Err(err(
                f("tap"),
                format!("TAP {:?} is used by two ports", p.tap),
            ));
        }
        let mac = match &p.mac {
            None => generated_mac(&p.tap),
            Some(s) => {
                let m = parse_mac(s).ok_or_else(|| {
                    err(
                        f("mac"),
                        format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"),
                    )
                })?;
                if m[0] & 1 == 1 || m == [0; 6] {
                    return Err(err(f("mac"), format!("{s:?} is not a unicast address")));
                }
                m
            }
        };
        let mut addresses = Vec::new();
        for (j, a) in p.addresses.iter().enumerate() {
            let c = Cidr::parse(a).map_err(|m| err(format!("port[{i}].addresses[{j}]"), m))?;
            if c.prefix == 0 || not_unicast(c.addr).is_some() {
                return Err(err(
                    format!("port[{i}].addresses[{j}]"),
                    format!("{a:?} is not a usable host address"),
                ));
            }
            if let Some(which) = subnet_special(&c, c.addr) {
                return Err(err(
                    format!("port[{i}].addresses[{j}]"),
                    format!("{a:?} is the {which} address of its own prefix, not a host address"),
                ));
            }
            // Two ports on one network: which port would reach it is a guess.
            for (k, q) in ports.iter().enumerate() {
                for o in &q.addresses {
                    let mask = c.mask() & o.mask();
                    if c.addr.is_ipv4() == o.addr.is_ipv4()
                        && (ip_bits(c.addr) ^ ip_bits(o.addr)) & mask == 0
                    {
                        return Err(err(
                            format!("port[{i}].addresses[{j}]"),
                            format!(
                                "{a:?} overlaps the network of port[{k}] ({:?}, {o}): each network belongs to one port",
                                q.name
                            ),
                        ));
                    }
                }
            }
            if !own.insert(c.addr) {
                return Err(err(
                    format!("port[{i}].addresses[{j}]"),
                    format!("{} is configured twice", c.addr),
                ));
            }
            addresses.push(c);
        }
        if let Some(b) = &p.bridge {
            validate_ifname(b).map_err(|e| err(f("bridge"), e.to_string()))?;
        }
        if let Some(m) = p.mtu {
            if !(576..=65_535).contains(&m) {
                return Err(err(f("mtu"), "must be 576..=65535".into()));
            }
        }
        let queue_len = p.queue_len.unwrap_or(4096);
        if !(64..=1_000_000).contains(&queue_len) {
            return Err(err(f("queue_len"), "must be 64..=1000000".into()));
        }
        let rp_filter = match &p.rp_filter {
            None => RpFilter::Off,
            Some(s) => RpFilter::parse(s).ok_or_else(|| {
                err(
                    f("rp_filter"),
                    format!("{s:?} is not one of \"off\", \"strict\", \"loose\""),
                )
            })?,
        };
        ports.push(PortConfig {
            name: p.name.clone(),
            tap: p.tap.clone(),
            mac,
            addresses,
            bridge: p.bridge.clone(),
            mtu: p.mtu,
            queue_len,
            rp_filter,
        });
    }

    let mut routes = Vec::new();
    for (i, r) in raw.route.iter().enumerate() {
        let to = Cidr::parse(&r.to).map_err(|m| err(format!("route[{i}].to"), m))?;
        let via: IpAddr = r.via.parse().map_err(|_| {
            err(
                format!("route[{i}].via"),
                format!("{:?} is not an IPv4 or IPv6 address", r.via),
            )
        })?;
        if via.is_ipv4() != to.addr.is_ipv4() {
            return Err(err(
                format!("route[{i}].via"),
                format!("gateway {via} is not of the family of {}", to),
            ));
        }
        let connected = ports
            .iter()
            .any(|p| p.addresses.iter().any(|a| a.contains(via)));
        if !connected {
            return Err(err(
                format!("route[{i}].via"),
                format!("gateway {via} is not on a connected network of any port"),
            ));
        }
        routes.push(RouteConfig { to, via });
    }

    let mut services = Vec::new();
    let mut seen = HashSet::new();
    for (i, s) in raw.service.iter().enumerate() {
        let f = |k: &str| format!("service[{i}].{k}");
        let proto = match s.protocol.as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            other => {
                return Err(err(
                    f("protocol"),
                    format!("{other:?} is not supported (tcp or udp)"),
                ))
            }
        };
        let vip = parse_sockaddr(&s.address).map_err(|m| err(f("address"), m))?;
        let persistent = match s.persistent {
            None | Some(Persistent::Flag(false)) => None,
            Some(Persistent::Flag(true)) => Some(DEFAULT_PERSISTENCE),
            Some(Persistent::Secs(n)) => Some(n),
        };
        if let Some(p) = persistent {
            if !(1..=2_592_000).contains(&p) {
                return Err(err(f("persistent"), "must be 1..=2592000 seconds".into()));
            }
        }
        if vip.port() == 0 && persistent.is_none() {
            return Err(err(
                f("address"),
                "port 0 (all ports) is only valid for a persistent service".into(),
            ));
        }
        if s.netmask.is_some() && s.persistent.is_none() {
            return Err(err(
                f("netmask"),
                "only applies to a persistent service".into(),
            ));
        }
        let netmask = match (&s.netmask, vip) {
            (None, SocketAddr::V4(_)) => IpAddr::V4(Ipv4Addr::BROADCAST),
            (None, SocketAddr::V6(_)) => IpAddr::V6(Ipv6Addr::from(u128::MAX)),
            (Some(Netmask::Text(m)), SocketAddr::V4(_)) => {
                let ip: Ipv4Addr = m
                    .parse()
                    .map_err(|_| err(f("netmask"), format!("{m:?} is not a netmask")))?;
                let bits = u32::from(ip);
                if bits.leading_ones() + bits.trailing_zeros() != 32 {
                    return Err(err(
                        f("netmask"),
                        format!("{m:?} is not a contiguous netmask"),
                    ));
                }
                IpAddr::V4(ip)
            }
            (Some(Netmask::Len(_)), SocketAddr::V4(_)) => {
                return Err(err(
                    f("netmask"),
                    "an IPv4 service takes a dotted netmask (\"255.255.255.0\")".into(),
                ))
            }
            (Some(m), SocketAddr::V6(_)) => {
                let len = match m {
                    Netmask::Len(n) => Some(*n),
                    Netmask::Text(t) => t.trim_start_matches('/').parse::<u32>().ok(),
                };
                match len {
                    Some(n) if n <= 128 => IpAddr::V6(Ipv6Addr::from(prefix_mask(128, n as u8))),
                    _ => {
                        return Err(err(
                            f("netmask"),
                            "an IPv6 service takes a prefix length 0..=128".into(),
                        ))
                    }
                }
            }
        };
        if s.ops && proto != Protocol::Udp {
            return Err(err(
                f("ops"),
                "one-packet scheduling applies to UDP services only".into(),
            ));
        }
        if s.synproxy && proto != Protocol::Tcp {
            return Err(err(f("synproxy"), "applies to TCP services only".into()));
        }
        if s.ops && persistent.is_some() {
            return Err(err(f("ops"), "cannot be combined with persistence".into()));
        }
        if let Some(why) = not_unicast(vip.ip()) {
            return Err(err(
                f("address"),
                format!("{} is {why}, not a virtual address", vip.ip()),
            ));
        }
        if own.contains(&vip.ip()) {
            return Err(err(
                f("address"),
                format!("{} is a port address of the appliance, not a VIP", vip.ip()),
            ));
        }
        if let Some((k, which)) = port_special(&ports, vip.ip()) {
            return Err(err(
                f("address"),
                format!(
                    "{} is the {which} address of port[{k}]'s network, not a virtual address",
                    vip.ip()
                ),
            ));
        }
        if !seen.insert((proto, vip)) {
            return Err(err(
                f("address"),
                format!("{} service {vip} is defined twice", proto.name()),
            ));
        }
        let mut spec =
            sched::SchedSpec::new(s.scheduler.clone().unwrap_or_else(|| sched::DEFAULT.into()));
        spec.flags = s.flags.clone();
        spec.mh_table_size = s.mh_table_size;
        if let Err(e) = sched::build(&spec, &[]) {
            let field = match e {
                sched::SchedError::UnknownScheduler(_) => f("scheduler"),
                sched::SchedError::BadTableSize { .. } => f("mh_table_size"),
                _ => f("flags"),
            };
            return Err(err(field, e.to_string()));
        }
        let mut reals = Vec::new();
        let mut rseen = HashSet::new();
        for (j, r) in s.real.iter().enumerate() {
            let g = |k: &str| format!("service[{i}].real[{j}].{k}");
            let mut addr = parse_sockaddr(&r.address).map_err(|m| err(g("address"), m))?;
            if addr.port() == 0 {
                addr.set_port(vip.port());
            } else if vip.port() == 0 {
                return Err(err(
                    g("address"),
                    "a real server of an all-ports service takes no port".into(),
                ));
            }
            if !rseen.insert(addr) {
                return Err(err(
                    g("address"),
                    format!("real server {addr} is listed twice"),
                ));
            }
            if addr.is_ipv6() && vip.is_ipv4() {
                return Err(err(
                    g("address"),
                    format!(
                        "real server {addr} is IPv6 behind the IPv4 service {vip}: not supported"
                    ),
                ));
            }
            for (name, v) in [
                ("weight", r.weight),
                ("u_threshold", r.u_threshold),
                ("l_threshold", r.l_threshold),
            ] {
                if v > 65_535 {
                    return Err(err(g(name), "must be 0..=65535".into()));
                }
            }
            if r.u_threshold != 0 && r.l_threshold > r.u_threshold {
                return Err(err(g("l_threshold"), "must not exceed u_threshold".into()));
            }
            let forward = match &r.forward {
                None => Forward::Nat,
                Some(m) => parse_forward(m).ok_or_else(|| {
                    err(
                        g("forward"),
                        format!("{m:?} is not a forwarding method (nat, dr, tun, fullnat)"),
                    )
                })?,
            };
            match forward {
                Forward::Nat => {}
                Forward::Dr | Forward::Tun if addr.port() != vip.port() => {
                    return Err(err(
                        g("address"),
                        "direct routing and tunnelling cannot map ports: the real port must equal the service port".into(),
                    ))
                }
                Forward::Dr | Forward::Tun if s.synproxy => {
                    return Err(err(
                        g("forward"),
                        "synproxy needs the replies through the director: its real servers must be nat or fullnat, not dr or tun".into(),
                    ))
                }
                Forward::Dr | Forward::Tun => {}
                Forward::FullNat if s.local_addresses.is_empty() => {
                    return Err(err(
                        f("local_addresses"),
                        "a fullnat real server needs at least one local address".into(),
                    ))
                }
                Forward::FullNat => {}
            }
            if addr.is_ipv4() != vip.is_ipv4() {
                // NAT64: an IPv4 real behind an IPv6 VIP, FullNAT only, with IPv4 local
                // addresses to speak from.
                if forward != Forward::FullNat {
                    return Err(err(
                        g("address"),
                        format!(
                            "real server {addr} is IPv4 behind the IPv6 service {vip}: only a fullnat real server can be (NAT64)"
                        ),
                    ));
                }
                if !s
                    .local_addresses
                    .iter()
                    .any(|a| a.parse::<Ipv4Addr>().is_ok())
                {
                    return Err(err(
                        f("local_addresses"),
                        format!(
                            "the IPv4 real server {addr} of an IPv6 service needs an IPv4 local address"
                        ),
                    ));
                }
            }
            // Build the checks once to validate them (errors name the field).
            let mut rng = crate::health::engine::SplitMix64::new(0);
            {
                crate::health::config::real_server_health(
                    &s.health,
                    &r.health,
                    &r.check,
                    addr,
                    r.weight,
                    std::time::Instant::now(),
                    &mut rng,
                )
                .map_err(|(f, m)| err(g(&f), m))?;
            }
            reals.push(RealConfig {
                addr,
                weight: r.weight,
                forward,
                u_threshold: r.u_threshold,
                l_threshold: r.l_threshold,
                health: r.health.clone(),
                checks: r.check.clone(),
                notify_up: script(&r.notify_up).map_err(|m| err(g("notify_up"), m))?,
                notify_down: script(&r.notify_down).map_err(|m| err(g("notify_down"), m))?,
            });
        }
        let mut local_addresses = Vec::new();
        for (j, a) in s.local_addresses.iter().enumerate() {
            let ip: IpAddr = a.parse().map_err(|_| {
                err(
                    format!("service[{i}].local_addresses[{j}]"),
                    format!("{a:?} is not an IPv4 or IPv6 address"),
                )
            })?;
            if let Some(why) = not_unicast(ip) {
                return Err(err(
                    format!("service[{i}].local_addresses[{j}]"),
                    format!("{ip} is {why}, not a local address"),
                ));
            }
            if own.contains(&ip) || local_addresses.contains(&ip) {
                return Err(err(
                    format!("service[{i}].local_addresses[{j}]"),
                    format!("{ip} is already a port address or listed twice"),
                ));
            }
            local_addresses.push(ip);
        }
        s.health
            .validate()
            .map_err(|(fld, m)| err(f(&format!("health.{fld}")), m))?;
        let sorry_server = s
            .health
            .sorry_server()
            .map_err(|(fld, m)| err(f(&format!("health.{fld}")), m))?
            .map(|(ip, port)| SocketAddr::new(ip, port.unwrap_or(vip.port())));
        if let Some(sorry) = sorry_server.filter(|a| a.is_ipv4() != vip.is_ipv4()) {
            // Forwarded as the first real server is: an IPv4 sorry server of an IPv6 service
            // is NAT64, as an IPv4 real server there.
            let nat64 = sorry.is_ipv4()
                && reals.first().is_some_and(|r| r.forward == Forward::FullNat)
                && local_addresses.iter().any(IpAddr::is_ipv4);
            if !nat64 {
                return Err(err(
                    f("health.sorry_server"),
                    format!(
                        "sorry server {sorry} is not of the service's family ({vip}); an IPv4 one \
                         behind an IPv6 service needs fullnat real servers and an IPv4 local address (NAT64)"
                    ),
                ));
            }
        }
        services.push(ServiceConfig {
            proto,
            vip,
            scheduler: spec,
            persistent,
            netmask,
            ops: s.ops,
            local_addresses,
            toa: s.toa.unwrap_or(true),
            toa_on_syn: s.toa_on_syn,
            health: s.health.clone(),
            sorry_server,
            sloppy_tcp: s.sloppy_tcp,
            reals,
            access: access_config(s, vip).map_err(|(k, m)| err(f(&k), m))?,
            synproxy: s.synproxy,
        });
    }
    check_real_addresses(&ports, &routes, &services).map_err(|(f, m)| err(f, m))?;
    if let Some(so) = &raw.scale_out {
        let fwd: Vec<_> = services
            .iter()
            .map(|s| (s.vip, s.reals.iter().map(|r| r.forward).collect()))
            .collect();
        crate::scaleout::validate(so, &fwd).map_err(|(f, m)| err(f, m))?;
    }

    let port_refs: Vec<_> = ports
        .iter()
        .map(|p| crate::vrrp::config::PortRef {
            name: p.name.clone(),
            addresses: p.addresses.iter().map(|c| c.addr).collect(),
            link_local: modes::reply::link_local(p.mac),
        })
        .collect();
    let tracked: Vec<crate::vrrp::config::ServiceRef> = services
        .iter()
        .map(|s| (s.proto, s.vip, s.reals.iter().any(|r| !r.checks.is_empty())))
        .collect();
    let vrrp = crate::vrrp::config::validate(&raw.vrrp, &port_refs, &tracked)
        .map_err(|(f, m)| err(f, m))?;
    let vrrp_sync_groups = crate::vrrp::config::validate_groups(&raw.vrrp_sync_group, &vrrp)
        .map_err(|(f, m)| err(f, m))?;
    let port_mtus: Vec<_> = ports
        .iter()
        .map(|p| (p.name.clone(), p.mtu.unwrap_or(1500)))
        .collect();
    let sync = crate::syncd::validate(&raw.sync, &port_mtus).map_err(|(f, m)| err(f, m))?;
    Ok(Config {
        file: file.to_path_buf(),
        workers,
        steering,
        max_connections,
        timeouts: raw.timeouts,
        neighbour: raw.neighbour,
        control: raw.control,
        metrics,
        log_format,
        ports,
        routes,
        services,
        scale_out: raw.scale_out,
        vrrp,
        vrrp_sync_groups,
        sync,
        defence: validate_defence(raw.defence).map_err(|(k, m)| err(k, m))?,
        io: raw.io,
    })
}

/// A service's access settings, validated; errors name the field (under the service) and
/// the problem.
fn access_config(s: &RawService, vip: SocketAddr) -> Result<AccessConfig, (String, String)> {
    let width = ip_width(vip.ip());
    let list = |name: &str, v: &[String]| -> Result<Vec<Cidr>, (String, String)> {
        if v.len() > MAX_ACL_PREFIXES {
            return Err((
                name.to_string(),
                format!(
                    "{} prefixes: at most {MAX_ACL_PREFIXES} are supported",
                    v.len()
                ),
            ));
        }
        v.iter()
            .enumerate()
            .map(|(j, p)| {
                let c = parse_client_prefix(p).map_err(|m| (format!("{name}[{j}]"), m))?;
                if ip_width(c.addr) != width {
                    return Err((
                        format!("{name}[{j}]"),
                        format!("{p:?} is not of the service's address family"),
                    ));
                }
                Ok(c)
            })
            .collect()
    };
    let allow = list("allow", &s.allow)?;
    let deny = list("deny", &s.deny)?;
    let conn_rate_prefix = match s.conn_rate_prefix {
        None => width,
        Some(_) if s.conn_rate.unwrap_or(0) == 0 => {
            return Err((
                "conn_rate_prefix".into(),
                "only applies with a conn_rate".into(),
            ))
        }
        Some(p) if p <= u32::from(width) => p as u8,
        Some(p) => {
            return Err((
                "conn_rate_prefix".into(),
                format!("{p} is not a prefix length (0..={width})"),
            ))
        }
    };
    Ok(AccessConfig {
        allow,
        deny,
        conn_limit: s.conn_limit.unwrap_or(0),
        conn_rate: s.conn_rate.unwrap_or(0),
        conn_rate_prefix,
    })
}

/// `[defence]`, validated; errors name the field and the problem.
fn validate_defence(d: DefenceConfig) -> Result<DefenceConfig, (String, String)> {
    if d.icmp_ratelimit_ms > 3_600_000 {
        return Err((
            "defence.icmp_ratelimit_ms".into(),
            "must be 0..=3600000 milliseconds".into(),
        ));
    }
    if d.icmp_msgs_per_sec > 0 && d.icmp_msgs_burst == 0 {
        return Err((
            "defence.icmp_msgs_burst".into(),
            "must be at least 1 while icmp_msgs_per_sec is set (0 would send no ICMP error)".into(),
        ));
    }
    Ok(d)
}

/// The port whose network has `ip` as its network or broadcast address, and which.
fn port_special(ports: &[PortConfig], ip: IpAddr) -> Option<(usize, &'static str)> {
    ports.iter().enumerate().find_map(|(k, p)| {
        p.addresses
            .iter()
            .find_map(|c| subnet_special(c, ip))
            .map(|w| (k, w))
    })
}

/// Why `ip` cannot be a real server of this appliance, if it cannot: not unicast, one of the
/// appliance's own addresses (a port address, a port network's network or broadcast address,
/// a VIP, a FullNAT local address), or on no network a port or a static route reaches.
/// `is_vip` and `is_lip` say whether an address is a VIP or a FullNAT local address.
pub fn real_server_problem(
    ports: &[PortConfig],
    routes: &[RouteConfig],
    is_vip: impl Fn(IpAddr) -> bool,
    is_lip: impl Fn(IpAddr) -> bool,
    ip: IpAddr,
) -> Option<String> {
    if let Some(why) = not_unicast(ip) {
        return Some(format!("{ip} is {why}, not a real server address"));
    }
    for (k, p) in ports.iter().enumerate() {
        if p.addresses.iter().any(|c| c.addr == ip) {
            return Some(format!(
                "{ip} is an address of the appliance itself (port[{k}] {:?})",
                p.name
            ));
        }
    }
    if let Some((k, which)) = port_special(ports, ip) {
        return Some(format!(
            "{ip} is the {which} address of port[{k}]'s network, not a host"
        ));
    }
    if is_vip(ip) {
        return Some(format!(
            "{ip} is a virtual address of the appliance, not a real server"
        ));
    }
    if is_lip(ip) {
        return Some(format!(
            "{ip} is a FullNAT local address of the appliance, not a real server"
        ));
    }
    let connected = ports
        .iter()
        .any(|p| p.addresses.iter().any(|c| c.contains(ip)));
    if !connected && !routes.iter().any(|r| r.to.contains(ip)) {
        return Some(format!(
            "{ip} is unreachable: on no port's network and behind no [[route]]"
        ));
    }
    None
}

/// Every real server (and sorry server) against [`real_server_problem`], once every VIP and
/// local address is known.
fn check_real_addresses(
    ports: &[PortConfig],
    routes: &[RouteConfig],
    services: &[ServiceConfig],
) -> Result<(), (String, String)> {
    let vips: HashSet<IpAddr> = services.iter().map(|s| s.vip.ip()).collect();
    let lips: HashSet<IpAddr> = services
        .iter()
        .flat_map(|s| s.local_addresses.iter().copied())
        .collect();
    let problem = |ip| {
        real_server_problem(
            ports,
            routes,
            |a| vips.contains(&a),
            |a| lips.contains(&a),
            ip,
        )
    };
    for (i, s) in services.iter().enumerate() {
        for (j, r) in s.reals.iter().enumerate() {
            if let Some(m) = problem(r.addr.ip()) {
                return Err((format!("service[{i}].real[{j}].address"), m));
            }
        }
        if let Some(m) = s.sorry_server.and_then(|a| problem(a.ip())) {
            return Err((format!("service[{i}].health.sorry_server"), m));
        }
    }
    Ok(())
}

/// A hook script: absent, or a non-empty command line.
fn script(s: &Option<String>) -> Result<Option<String>, String> {
    match s {
        Some(t) if t.trim().is_empty() => Err("must be a command (or be left out)".into()),
        other => Ok(other.clone()),
    }
}

fn parse_sockaddr(s: &str) -> Result<SocketAddr, String> {
    match s.parse::<SocketAddr>() {
        Ok(a) => Ok(a),
        Err(_) => match s.parse::<IpAddr>() {
            Ok(ip) => Ok(SocketAddr::new(ip, 0)),
            // `[v6addr]` without a port.
            Err(_) => match s
                .strip_prefix('[')
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<std::net::Ipv6Addr>().ok())
            {
                Some(ip) => Ok(SocketAddr::new(IpAddr::V6(ip), 0)),
                None => Err(format!(
                    "{s:?} is not an IPv4 address with a port (a.b.c.d:port) nor an IPv6 one ([v6addr]:port)"
                )),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
workers = 2
max_connections = 1000

[[port]]
name = "ext"
tap = "tvs-ext"
mac = "02:00:00:00:00:01"
addresses = ["10.0.0.1/24"]

[[port]]
name = "int"
tap = "tvs-int"
addresses = ["172.16.0.1/24"]

[[route]]
to = "default"
via = "10.0.0.254"

[[service]]
protocol = "tcp"
address = "207.175.44.110:8080"
scheduler = "rr"

[[service.real]]
address = "172.16.0.2:8080"
forward = "nat"

[[service.real]]
address = "172.16.0.3"
weight = 3
"#;

    fn parse_str(t: &str) -> Result<Config, ConfigError> {
        parse(t, Path::new("test.toml"))
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = parse_str(GOOD).unwrap();
        assert_eq!(c.workers, 2);
        assert_eq!(c.steering, SteeringMode::Ebpf);
        assert_eq!(c.timeouts, Timeouts::default());
        assert_eq!(c.ports[0].mac, [2, 0, 0, 0, 0, 1]);
        assert_eq!(
            c.ports[1].mac[0], 0x02,
            "generated MAC is locally administered"
        );
        assert_eq!(c.routes[0].to.prefix, 0);
        let s = &c.services[0];
        assert_eq!(s.proto, Protocol::Tcp);
        assert_eq!(
            s.reals[1].addr.port(),
            8080,
            "port 0 means the service port"
        );
        assert_eq!(s.reals[1].weight, 3);
        assert_eq!(s.reals[0].forward, Forward::Nat);
    }

    fn expect_err(text: &str, field: &str, needle: &str) {
        let e = parse_str(text).unwrap_err();
        assert_eq!(e.field, field, "{e}");
        assert!(e.message.contains(needle), "{e}");
        assert!(e.to_string().starts_with("test.toml: field `"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        expect_err(
            &GOOD.replace("weight = 3", "weight = 3\ncolour = 1"),
            "service[0].real[1].colour",
            "unknown field `colour`",
        );
        expect_err(
            &GOOD.replace("weight = 3", "weight = \"x\""),
            "service[0].real[1].weight",
            "invalid type",
        );
        expect_err(
            &GOOD.replace("weight = 3", "weight = 70000"),
            "service[0].real[1].weight",
            "0..=65535",
        );
        expect_err(
            &GOOD.replace("scheduler = \"rr\"", "scheduler = \"nope\""),
            "service[0].scheduler",
            "nope",
        );
        expect_err(
            &GOOD.replace("172.16.0.3", "172.16.0.300"),
            "service[0].real[1].address",
            "not an IPv4",
        );
        expect_err(
            &GOOD.replace("10.0.0.254", "192.168.9.9"),
            "route[0].via",
            "not on a connected network",
        );
        expect_err(
            &GOOD.replace("tvs-int", "tvs-ext"),
            "port[1].tap",
            "used by two ports",
        );
        expect_err(
            &GOOD.replace("02:00:00:00:00:01", "01:00:00:00:00:01"),
            "port[0].mac",
            "unicast",
        );
        expect_err(
            &GOOD.replace("forward = \"nat\"", "forward = \"magic\""),
            "service[0].real[0].forward",
            "not a forwarding method",
        );
        expect_err(
            &GOOD.replace("protocol = \"tcp\"", "protocol = \"sctp\""),
            "service[0].protocol",
            "not supported",
        );
        expect_err(
            &GOOD.replace("workers = 2", "workers = 0"),
            "workers",
            "1..=64",
        );
        expect_err(
            &GOOD.replace("workers = 2", "workers = 2\nsteering = \"rss\""),
            "steering",
            "ebpf or flow",
        );
        expect_err("port = [", "-", "syntax error at line 1");
    }

    /// `[[vrrp]]` tracking and `[[vrrp_sync_group]]` errors name the file and the field.
    #[test]
    fn vrrp_tracking_and_sync_group_errors() {
        let vrrp = |name: &str, vrid: u8, addr: &str, extra: &str| {
            format!(
                "\n[[vrrp]]\nname = \"{name}\"\nport = \"ext\"\nvirtual_router_id = {vrid}\nvirtual_addresses = [\"{addr}\"]\n{extra}\n"
            )
        };
        let two = format!(
            "{GOOD}{}{}",
            vrrp("VI_1", 51, "10.0.0.100", ""),
            vrrp("VI_2", 52, "10.0.0.101", "")
        );
        let group = |members: &str| {
            format!("{two}\n[[vrrp_sync_group]]\nname = \"G\"\ngroup = [{members}]\n")
        };
        let c = parse_str(&group("\"VI_2\", \"VI_1\"")).unwrap();
        assert_eq!(c.vrrp_sync_groups[0].members, vec![1, 0]);
        expect_err(
            &group("\"VI_1\", \"VI_3\""),
            "vrrp_sync_group[0].group[1]",
            "no VRRP instance named \"VI_3\"",
        );
        expect_err(
            &group("\"VI_1\""),
            "vrrp_sync_group[0].group",
            "two instances or more",
        );
        let twice = format!(
            "{}\n[[vrrp_sync_group]]\nname = \"H\"\ngroup = [\"VI_2\", \"VI_1\"]\n",
            group("\"VI_1\", \"VI_2\"")
        );
        expect_err(
            &twice,
            "vrrp_sync_group[1].group[0]",
            "already in sync group \"G\"",
        );
        // Tracking a service: it must exist and be health-checked.
        let track = |t: &str| format!("{GOOD}{}", vrrp("VI_1", 51, "10.0.0.100", t));
        expect_err(
            &track("track_services = [{ service = \"tcp:207.175.44.110:8080\", weight = -50 }]"),
            "vrrp[0].track_services[0].service",
            "no health-checked real server",
        );
        expect_err(
            &track("track_services = [{ service = \"tcp:207.175.44.110:81\" }]"),
            "vrrp[0].track_services[0].service",
            "no service",
        );
        expect_err(
            &track("track_ports = [{ port = \"int\", weight = 300 }]"),
            "vrrp[0].track_ports[0].weight",
            "-254..=254",
        );
        let checked = GOOD.replace(
            "address = \"172.16.0.3\"\nweight = 3\n",
            "address = \"172.16.0.3\"\nweight = 3\n[[service.real.check]]\ntype = \"tcp\"\n",
        );
        let c = parse_str(&format!(
            "{checked}{}",
            vrrp(
                "VI_1",
                51,
                "10.0.0.100",
                "track_services = [{ service = \"tcp:207.175.44.110:8080\", weight = -50 }]\ntrack_ports = [\"int\", { port = \"ext\", weight = -10 }]"
            )
        ))
        .unwrap();
        assert_eq!(c.vrrp[0].track_services[0].weight, -50);
        assert_eq!(c.vrrp[0].track_ports.len(), 2);
    }

    #[test]
    fn log_format_parses_and_defaults_to_text() {
        assert_eq!(parse_str(GOOD).unwrap().log_format, LogFormat::Text);
        for (v, want) in [("text", LogFormat::Text), ("json", LogFormat::Json)] {
            let t = format!("{GOOD}\n[log]\nformat = \"{v}\"\n");
            assert_eq!(parse_str(&t).unwrap().log_format, want, "{v}");
        }
        expect_err(
            &format!("{GOOD}\n[log]\nformat = \"xml\"\n"),
            "log.format",
            "\"xml\" is not one of \"text\", \"json\"",
        );
        expect_err(
            &format!("{GOOD}\n[log]\nformat = \"json\"\nlevel = \"debug\"\n"),
            "log.level",
            "unknown field `level`",
        );
    }

    #[test]
    fn log_format_environment_override() {
        assert_eq!(log_format_override(None), Ok(None));
        assert_eq!(log_format_override(Some("")), Ok(None));
        assert_eq!(log_format_override(Some("json")), Ok(Some(LogFormat::Json)));
        assert_eq!(log_format_override(Some("text")), Ok(Some(LogFormat::Text)));
        let e = log_format_override(Some("JSON")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "environment: field `TAPVS_LOG_FORMAT`: \"JSON\" is not one of \"text\", \"json\""
        );
    }

    #[test]
    fn rp_filter_parses_and_defaults_to_off() {
        let c = parse_str(GOOD).unwrap();
        assert_eq!(c.ports[0].rp_filter, RpFilter::Off);
        let mac = "mac = \"02:00:00:00:00:01\"";
        for (v, want) in [
            ("off", RpFilter::Off),
            ("strict", RpFilter::Strict),
            ("loose", RpFilter::Loose),
        ] {
            let t = GOOD.replace(mac, &format!("{mac}\nrp_filter = \"{v}\""));
            assert_eq!(parse_str(&t).unwrap().ports[0].rp_filter, want);
        }
        expect_err(
            &GOOD.replace(mac, &format!("{mac}\nrp_filter = \"1\"")),
            "port[0].rp_filter",
            "not one of \"off\", \"strict\", \"loose\"",
        );
        expect_err(
            &GOOD.replace(mac, &format!("{mac}\nrp_filter = 1")),
            "port[0].rp_filter",
            "invalid type",
        );
    }

    #[test]
    fn persistence_and_thresholds_parse() {
        let text = GOOD
            .replace(
                "scheduler = \"rr\"",
                "scheduler = \"wlc\"\npersistent = 600\nnetmask = \"255.255.255.0\"",
            )
            .replace(
                "weight = 3",
                "weight = 3\nu_threshold = 100\nl_threshold = 50",
            );
        let c = parse_str(&text).unwrap();
        let s = &c.services[0];
        assert_eq!(s.persistent, Some(600));
        assert_eq!(s.netmask, Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!((s.reals[1].u_threshold, s.reals[1].l_threshold), (100, 50));
        let all = GOOD
            .replace("207.175.44.110:8080", "207.175.44.110:0")
            .replace("scheduler = \"rr\"", "scheduler = \"rr\"\npersistent = 60")
            .replace("172.16.0.2:8080", "172.16.0.2");
        let c = parse_str(&all).unwrap();
        assert_eq!(c.services[0].vip.port(), 0);
        assert_eq!(c.services[0].reals[0].addr.port(), 0);
        let flag = GOOD.replace(
            "scheduler = \"rr\"",
            "scheduler = \"rr\"\npersistent = true",
        );
        assert_eq!(parse_str(&flag).unwrap().services[0].persistent, Some(300));
    }

    #[test]
    fn io_backend_parses_and_a_bad_one_names_the_field() {
        assert_eq!(parse_str(GOOD).unwrap().io.backend, IoBackend::Auto);
        for (word, want) in [
            ("auto", IoBackend::Auto),
            ("uring", IoBackend::Uring),
            ("poll", IoBackend::Poll),
        ] {
            let text = format!("{GOOD}\n[io]\nbackend = \"{word}\"\n");
            assert_eq!(parse_str(&text).unwrap().io.backend, want);
        }
        expect_err(
            &format!("{GOOD}\n[io]\nbackend = \"epoll\"\n"),
            "io.backend",
            "epoll",
        );
        expect_err(
            &format!("{GOOD}\n[io]\nqueue = 3\n"),
            "io.queue",
            "unknown field",
        );
    }

    #[test]
    fn defence_parses_defaults_and_bad_values_name_the_field() {
        let c = parse_str(GOOD).unwrap();
        assert_eq!(c.defence, DefenceConfig::default());
        let text = format!(
            "{GOOD}\n[defence]\npressure_high = 95\npressure_low = 70\npressure_timeout = 3\npressure_prefix = 16\npressure_prefix_rate = 0\n"
        );
        let d = parse_str(&text).unwrap().defence;
        assert_eq!(
            (d.pressure_high, d.pressure_low, d.pressure_timeout),
            (95, 70, 3)
        );
        assert_eq!((d.pressure_prefix, d.pressure_prefix_rate), (16, 0));
        let off = format!("{GOOD}\n[defence]\npressure_high = 0\npressure_low = 0\n");
        assert_eq!(parse_str(&off).unwrap().defence.pressure_high, 0);
        for (line, field, needle) in [
            ("pressure_high = 101", "defence.pressure_high", "101"),
            (
                "pressure_low = 90",
                "defence.pressure_low",
                "below pressure_high",
            ),
            (
                "pressure_timeout = 0",
                "defence.pressure_timeout",
                "1..=3600",
            ),
            ("pressure_prefix = 33", "defence.pressure_prefix", "33"),
        ] {
            expect_err(&format!("{GOOD}\n[defence]\n{line}\n"), field, needle);
        }
    }

    #[test]
    fn health_checks_parse_and_errors_name_the_field() {
        let text = GOOD
            .replace(
                "scheduler = \"rr\"",
                "scheduler = \"rr\"\nhealth = { delay_loop = 2, quorum = 2, sorry_server = \"172.16.0.9\" }",
            )
            .replace(
                "weight = 3",
                "weight = 3\n\n[[service.real.check]]\ntype = \"http_get\"\nurl = [{ path = \"/\", status_code = \"200-299\" }]",
            );
        let c = parse_str(&text).unwrap();
        let s = &c.services[0];
        assert_eq!(s.sorry_server, Some("172.16.0.9:8080".parse().unwrap()));
        assert_eq!(s.reals[1].checks.len(), 1);
        expect_err(
            &text.replace("\"200-299\"", "\"600-700\""),
            "service[0].real[1].check[0].url[0].status_code",
            "",
        );
        expect_err(
            &text.replace("type = \"http_get\"", "type = \"bogus\""),
            "service[0].real[1].check[0].type",
            "bogus",
        );
    }

    #[test]
    fn unworkable_configs_are_refused_naming_the_field() {
        expect_err(
            &GOOD.replace(
                "max_connections = 1000",
                "max_connections = 9223372036854775807",
            ),
            "max_connections",
            "too large: at most 100000000",
        );
        assert!(parse_str(&GOOD.replace("= 1000\n", "= 100000000\n")).is_ok());
        // Two ports on overlapping networks.
        expect_err(
            &GOOD.replace("172.16.0.1/24", "10.0.0.129/25"),
            "port[1].addresses[0]",
            "overlaps the network of port[0] (\"ext\", 10.0.0.1/24)",
        );
        expect_err(
            &GOOD.replace("172.16.0.1/24", "10.0.0.77/32"),
            "port[1].addresses[0]",
            "overlaps",
        );
        // A real server no port network and no route reaches (the default route removed).
        let no_default = GOOD.replace("[[route]]\nto = \"default\"\nvia = \"10.0.0.254\"\n", "");
        assert!(parse_str(&no_default).is_ok());
        expect_err(
            &no_default.replace("172.16.0.3", "192.168.7.3"),
            "service[0].real[1].address",
            "192.168.7.3 is unreachable",
        );
        // A static route makes it reachable.
        assert!(
            parse_str(&no_default.replace("172.16.0.3", "192.168.7.3").replace(
                "[[service]]",
                "[[route]]\nto = \"192.168.7.0/24\"\nvia = \"172.16.0.254\"\n\n[[service]]"
            ))
            .is_ok()
        );
        // 65 ports.
        let mut many = String::from("workers = 1\n");
        for i in 0..65 {
            many += &format!("[[port]]\nname = \"p{i}\"\ntap = \"tp{i}\"\n");
        }
        expect_err(&many, "port", "65 ports: at most 64");
        let sixty_four = many.rsplit_once("[[port]]").unwrap().0.to_string();
        assert!(parse_str(&sixty_four).is_ok());
        // A 10 MB port name: refused, and the message stays short.
        let huge = "n".repeat(10 << 20);
        let e =
            parse_str(&GOOD.replace("name = \"ext\"", &format!("name = \"{huge}\""))).unwrap_err();
        assert_eq!(e.field, "port[0].name", "{e}");
        assert!(
            e.message.contains("(10485760 bytes) is not a port name"),
            "{}",
            e.message
        );
        assert!(e.to_string().len() < 300);
        expect_err(
            &GOOD.replace("name = \"ext\"", "name = \"sixteen-bytes-xx\""),
            "port[0].name",
            "1..=15 bytes",
        );
        expect_err(
            &GOOD.replace("name = \"ext\"", "name = \"e x\""),
            "port[0].name",
            "not a port name",
        );
        // A multicast, broadcast, unspecified or loopback VIP.
        for (vip, why) in [
            ("224.0.0.18", "a multicast address"),
            ("239.1.2.3", "a multicast address"),
            ("255.255.255.255", "the limited broadcast address"),
            ("0.0.0.0", "the unspecified address"),
            ("127.0.0.1", "a loopback address"),
            ("240.0.0.1", "a reserved (class E) address"),
        ] {
            expect_err(
                &GOOD.replace("207.175.44.110", vip),
                "service[0].address",
                &format!("{vip} is {why}"),
            );
        }
        // A port network's broadcast address as a VIP.
        expect_err(
            &GOOD.replace("207.175.44.110", "10.0.0.255"),
            "service[0].address",
            "broadcast address of port[0]'s network",
        );
        // A subnet broadcast (or network) address as a port address; /31 and /32 have none.
        expect_err(
            &GOOD.replace("172.16.0.1/24", "172.16.0.255/24"),
            "port[1].addresses[0]",
            "is the broadcast address of its own prefix",
        );
        expect_err(
            &GOOD.replace("172.16.0.1/24", "172.16.0.0/24"),
            "port[1].addresses[0]",
            "is the network address of its own prefix",
        );
        assert!(parse_str(
            &GOOD.replace("\"172.16.0.1/24\"", "\"172.16.0.1/24\", \"172.17.0.0/31\"")
        )
        .is_ok());
        // A real server equal to the VIP, to the appliance's own address, or unusable.
        for (real, needle) in [
            ("207.175.44.110", "is a virtual address of the appliance"),
            (
                "172.16.0.1",
                "is an address of the appliance itself (port[1] \"int\")",
            ),
            (
                "10.0.0.1",
                "is an address of the appliance itself (port[0] \"ext\")",
            ),
            ("172.16.0.255", "broadcast address of port[1]'s network"),
            ("0.0.0.0", "the unspecified address"),
            ("255.255.255.255", "the limited broadcast address"),
            ("224.1.1.1", "a multicast address"),
        ] {
            expect_err(
                &GOOD.replace("172.16.0.3", real),
                "service[0].real[1].address",
                needle,
            );
        }
        // The VIP of another (later) service, and a FullNAT local address.
        let two = format!(
            "{GOOD}\n[[service]]\nprotocol = \"udp\"\naddress = \"198.51.100.1:53\"\nlocal_addresses = [\"172.16.0.100\"]\n"
        );
        assert!(parse_str(&two).is_ok());
        expect_err(
            &two.replace("172.16.0.3", "198.51.100.1"),
            "service[0].real[1].address",
            "virtual address",
        );
        expect_err(
            &two.replace("172.16.0.3", "172.16.0.100"),
            "service[0].real[1].address",
            "FullNAT local address",
        );
        // The sorry server follows the same rules.
        expect_err(
            &GOOD.replace(
                "scheduler = \"rr\"",
                "scheduler = \"rr\"\nhealth = { sorry_server = \"10.0.0.1\" }",
            ),
            "service[0].health.sorry_server",
            "address of the appliance itself",
        );
    }

    #[test]
    fn notify_and_quorum_scripts_parse_and_must_not_be_blank() {
        let text = GOOD
            .replace(
                "scheduler = \"rr\"",
                "scheduler = \"rr\"\nhealth = { quorum_up = \"/bin/q up\", quorum_down = \"/bin/q down\" }",
            )
            .replace(
                "weight = 3",
                "weight = 3\nnotify_up = \"/bin/n up\"\nnotify_down = \"/bin/n down\"",
            );
        let c = parse_str(&text).unwrap();
        let s = &c.services[0];
        assert_eq!(s.reals[1].notify_up.as_deref(), Some("/bin/n up"));
        assert_eq!(s.reals[1].notify_down.as_deref(), Some("/bin/n down"));
        assert_eq!(s.reals[0].notify_up, None);
        assert_eq!(s.health.quorum_down.as_deref(), Some("/bin/q down"));
        expect_err(
            &text.replace("\"/bin/n up\"", "\" \""),
            "service[0].real[1].notify_up",
            "must be a command",
        );
        expect_err(
            &text.replace("\"/bin/q up\"", "\"\""),
            "service[0].health.quorum_up",
            "must be a command",
        );
    }

    /// GOOD with IPv6 addresses on both ports, an IPv6 default route and an IPv6 service.
    fn dual() -> String {
        GOOD.replace(
            "addresses = [\"10.0.0.1/24\"]",
            "addresses = [\"10.0.0.1/24\", \"2001:db8:c::1/64\"]",
        )
        .replace(
            "addresses = [\"172.16.0.1/24\"]",
            "addresses = [\"172.16.0.1/24\", \"2001:db8:5::1/64\"]",
        ) + r#"
[[route]]
to = "default6"
via = "2001:db8:c::fe"

[[service]]
protocol = "tcp"
address = "[2001:db8:f::80]:80"
scheduler = "sh"
persistent = 300
netmask = 64
allow = ["2001:db8:c::/48"]
local_addresses = ["2001:db8:5::100", "172.16.0.100"]

[[service.real]]
address = "[2001:db8:5::2]:8080"

[[service.real]]
address = "[2001:db8:5::3]"
forward = "dr"

[[service.real]]
address = "172.16.0.4:80"
forward = "fullnat"
"#
    }

    #[test]
    fn ipv6_addresses_services_and_routes_parse() {
        let c = parse_str(&dual()).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(c.ports[0].addresses[1].addr, ip("2001:db8:c::1"));
        assert_eq!(c.ports[0].addresses[1].prefix, 64);
        assert_eq!(c.routes[1].via, ip("2001:db8:c::fe"));
        assert_eq!(c.routes[1].to.prefix, 0);
        let s = &c.services[1];
        assert_eq!(s.vip, "[2001:db8:f::80]:80".parse().unwrap());
        assert_eq!(s.netmask, ip("ffff:ffff:ffff:ffff::"));
        assert_eq!(s.access.conn_rate_prefix, 128);
        assert_eq!(s.reals[0].addr, "[2001:db8:5::2]:8080".parse().unwrap());
        // A bare IPv6 real server takes the service port.
        assert_eq!(s.reals[1].addr, "[2001:db8:5::3]:80".parse().unwrap());
        assert_eq!(
            s.local_addresses,
            vec![ip("2001:db8:5::100"), ip("172.16.0.100")]
        );
        assert!(s.vip4().is_none() && c.services[0].vip4().is_some());
        // The default IPv6 persistence mask is /128.
        let c = parse_str(&dual().replace("netmask = 64\n", "")).unwrap();
        assert_eq!(c.services[1].netmask, IpAddr::V6(Ipv6Addr::from(u128::MAX)));
        let p = Cidr::parse("2001:db8:c::1/64").unwrap();
        assert!(p.contains(ip("2001:db8:c::ffff")));
        assert!(!p.contains(ip("2001:db8:d::1")));
        assert!(!p.contains(ip("10.0.0.1")));
        assert_eq!(p.network(), ip("2001:db8:c::"));
        // IPv6 sorry servers, bare (the service port) or with a port; an IPv4 one is NAT64
        // when the first real server is fullnat and an IPv4 local address exists.
        let sorry = |v: &str, first_fwd: &str| {
            dual()
                .replace(
                    "scheduler = \"sh\"",
                    &format!("scheduler = \"sh\"\nhealth = {{ sorry_server = \"{v}\" }}"),
                )
                .replace(
                    "address = \"[2001:db8:5::2]:8080\"",
                    &format!("address = \"[2001:db8:5::2]:8080\"\nforward = \"{first_fwd}\""),
                )
        };
        for (v, want) in [
            ("2001:db8:5::9", "[2001:db8:5::9]:80"),
            ("[2001:db8:5::9]:8080", "[2001:db8:5::9]:8080"),
        ] {
            let c = parse_str(&sorry(v, "nat")).unwrap();
            assert_eq!(c.services[1].sorry_server, Some(want.parse().unwrap()));
        }
        let c = parse_str(&sorry("172.16.0.9", "fullnat")).unwrap();
        assert_eq!(
            c.services[1].sorry_server,
            Some("172.16.0.9:80".parse().unwrap())
        );
        expect_err(
            &sorry("172.16.0.9", "nat"),
            "service[1].health.sorry_server",
            "sorry server 172.16.0.9:80 is not of the service's family",
        );
        expect_err(
            &sorry("[2001:db8:5::9", "nat"),
            "service[1].health.sorry_server",
            "is not an address or address:port",
        );
    }

    #[test]
    fn ipv6_mistakes_name_the_field() {
        let d = dual();
        // An IPv6 real server behind an IPv4 VIP.
        expect_err(
            &d.replace("\"172.16.0.3\"", "\"[2001:db8:5::9]\""),
            "service[0].real[1].address",
            "is IPv6 behind the IPv4 service",
        );
        // An IPv4 real behind an IPv6 VIP is NAT64: fullnat only ...
        expect_err(
            &d.replace(
                "address = \"172.16.0.4:80\"\nforward = \"fullnat\"",
                "address = \"172.16.0.4:80\"\nforward = \"nat\"",
            ),
            "service[1].real[2].address",
            "only a fullnat real server can be (NAT64)",
        );
        // ... with an IPv4 local address.
        expect_err(
            &d.replace(", \"172.16.0.100\"]", "]"),
            "service[1].local_addresses",
            "needs an IPv4 local address",
        );
        // Martians as VIP, real server, port address.
        for (bad, what) in [
            ("[::1]:80", "the loopback address"),
            ("[ff02::1]:80", "a multicast address"),
            ("[fe80::1]:80", "a link-local address"),
            ("[::]:80", "the unspecified address"),
        ] {
            expect_err(
                &d.replace("[2001:db8:f::80]:80", bad),
                "service[1].address",
                what,
            );
        }
        expect_err(
            &d.replace("[2001:db8:5::2]:8080", "[fe80::2]:8080"),
            "service[1].real[0].address",
            "a link-local address",
        );
        expect_err(
            &d.replace("2001:db8:c::1/64", "ff02::1/64"),
            "port[0].addresses[1]",
            "not a usable host address",
        );
        // Unreachable: no port on that network and no route of its family.
        expect_err(
            &d.replace("to = \"default6\"", "to = \"2001:db8:99::/48\"")
                .replace("[2001:db8:5::3]", "[2001:db8:77::3]"),
            "service[1].real[1].address",
            "is unreachable",
        );
        // A gateway of the other family.
        expect_err(
            &d.replace("via = \"2001:db8:c::fe\"", "via = \"10.0.0.254\""),
            "route[1].via",
            "is not of the family of ::/0",
        );
        // Netmask: a prefix length for IPv6, a dotted mask for IPv4.
        expect_err(
            &d.replace("netmask = 64", "netmask = 129"),
            "service[1].netmask",
            "prefix length 0..=128",
        );
        expect_err(
            &d.replace("netmask = 64", "netmask = \"255.255.255.0\""),
            "service[1].netmask",
            "prefix length 0..=128",
        );
        // An access prefix of the other family, and host bits set.
        expect_err(
            &d.replace("allow = [\"2001:db8:c::/48\"]", "allow = [\"10.0.0.0/8\"]"),
            "service[1].allow[0]",
            "not of the service's address family",
        );
        expect_err(
            &d.replace("2001:db8:c::/48", "2001:db8:c::1/48"),
            "service[1].allow[0]",
            "host bits set",
        );
        // Health checks of an IPv6 real server are built (and validated) as IPv4 ones.
        let checked = d.replace(
            "address = \"[2001:db8:5::2]:8080\"",
            "address = \"[2001:db8:5::2]:8080\"\ncheck = [{ type = \"tcp\" }]",
        );
        let cfg = parse(&checked, Path::new("t.toml")).unwrap();
        assert_eq!(cfg.services[1].reals[0].checks.len(), 1);
        expect_err(
            &d.replace(
                "address = \"[2001:db8:5::2]:8080\"",
                "address = \"[2001:db8:5::2]:8080\"\ncheck = [{ type = \"tcp\", connect_timeout = 0 }]",
            ),
            "service[1].real[0].check[0].connect_timeout",
            "must be a number of seconds > 0",
        );
    }

    #[test]
    fn cidr_contains() {
        let c = Cidr::parse("10.1.2.3/16").unwrap();
        assert!(c.contains("10.1.200.1".parse::<IpAddr>().unwrap()));
        assert!(!c.contains("10.2.0.1".parse::<IpAddr>().unwrap()));
        assert!(Cidr::parse("default")
            .unwrap()
            .contains(Ipv4Addr::BROADCAST));
        assert!(Cidr::parse("1.2.3.4/33").is_err());
        assert_eq!(Cidr::parse("1.2.3.4").unwrap().prefix, 32);
    }
}
