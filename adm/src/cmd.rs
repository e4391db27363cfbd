//! Parsing an ipvsadm command line into a typed [`Command`].
//!
//! The syntax is ipvsadm 1.31's (popt flavour): the first option is the command (`-A`, `-L`,
//! `--set`, ...), short options may be clustered (`-Ln`, `-Lnc`, `-At 10.0.0.1:80`) with a value
//! either attached (`-w5`) or in the next argument, long options take `--opt value` or
//! `--opt=value`, `-p` has an optional value (default 300 s), `--` ends the options. After the
//! scan the same checks as ipvsadm run in the same order: values, `--set` arguments, stray
//! arguments, scheduler flags, the command/option table (compulsory, illegal and exclusive
//! options), then the per-command rules (zero port, one-packet scheduling only for UDP, real
//! server port forced to the service port for `-g`/`-i`, list conflicts). Defaults are
//! ipvsadm's: scheduler `wlc`, forwarding `-g`, weight 1, netmask /32. On `-a`/`-e`/`-d` the
//! short `-b` means FullNAT forwarding (as in DPVS); elsewhere it is `--sched-flags`.
//! [`parse`] takes IPv4 literals, `localhost`, IPv6 literals as ipvsadm writes them
//! (`[2001:db8::1]:80`, or a bare `2001:db8::1` for port 0) and port numbers; host and service
//! names are turned into numbers before, by [`resolve`] through a [`Resolver`] (tapvsadm's asks
//! the system), so the parser itself does no lookup. A service's family decides what `-M`
//! means (a dotted netmask for IPv4, a prefix length 1..=128 for IPv6, whatever the option
//! order); `-6` (after `-f`) makes a fwmark service IPv6. A real server's family must be the
//! service's, except an IPv4 FullNAT (`-b`) real server of an IPv6 service (NAT64).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use modes::{Forward, Protocol};
use serde::{Deserialize, Serialize};

use super::names::Resolver;
use super::AdmError;

/// Default persistence timeout of `-p` without a value, in seconds.
pub const DEFAULT_PERSISTENT: u32 = 300;
/// Largest timeout `-p` and `--set` accept (31 days), as ipvsadm.
pub const MAX_TIMEOUT: u32 = 86400 * 31;
/// Scheduler used when `-s` is omitted.
pub const DEFAULT_SCHEDULER: &str = "wlc";

/// The switch naming a service of protocol `p`: `-t` (TCP) or `-u` (UDP).
pub fn proto_switch(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "-t",
        Protocol::Udp => "-u",
    }
}

/// The switch selecting forwarding method `f` for a real server: `-m` (NAT, masquerading),
/// `-g` (direct routing, the default), `-i` (IPIP tunnelling), `-b` (FullNAT, as in DPVS).
pub fn forward_switch(f: Forward) -> &'static str {
    match f {
        Forward::Nat => "-m",
        Forward::Dr => "-g",
        Forward::Tun => "-i",
        Forward::FullNat => "-b",
    }
}

/// A virtual service as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServiceSpec {
    /// `-t host[:port]` or `-u host[:port]`; an omitted port is 0.
    Addr {
        /// Protocol of the service.
        proto: Protocol,
        /// Virtual address and port (IPv4 or IPv6).
        addr: SocketAddr,
    },
    /// `-f mark [-6]`: a firewall-mark service (the daemon does not implement them yet).
    Fwmark {
        /// The mark, 1..=4294967295.
        mark: u32,
        /// `-6`: the service is IPv6 (its real servers are IPv6 addresses).
        ipv6: bool,
    },
}

impl ServiceSpec {
    /// The service as a rule fragment: `-t 10.0.0.1:80`, `-u [2001:db8::1]:53`, `-f 5`,
    /// `-f 5 -6`.
    pub fn rule(&self) -> String {
        match self {
            ServiceSpec::Addr { proto, addr } => format!("{} {}", proto_switch(*proto), addr),
            ServiceSpec::Fwmark { mark, ipv6: false } => format!("-f {mark}"),
            ServiceSpec::Fwmark { mark, ipv6: true } => format!("-f {mark} -6"),
        }
    }

    /// The service port (0 for fwmark services).
    pub fn port(&self) -> u16 {
        match self {
            ServiceSpec::Addr { addr, .. } => addr.port(),
            ServiceSpec::Fwmark { .. } => 0,
        }
    }

    /// Whether the service is IPv6 (its address, or `-6` for a fwmark service).
    pub fn is_ipv6(&self) -> bool {
        match self {
            ServiceSpec::Addr { addr, .. } => addr.is_ipv6(),
            ServiceSpec::Fwmark { ipv6, .. } => *ipv6,
        }
    }
}

/// A persistence granularity (`-M`): a dotted netmask for an IPv4 service, a prefix length
/// for an IPv6 one (as ipvsadm takes and prints them). It serialises as the dotted string or
/// the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Netmask {
    /// IPv4 netmask (`255.255.255.0`).
    V4(Ipv4Addr),
    /// IPv6 prefix length, 1..=128.
    V6(u8),
}

impl Netmask {
    /// The default: one client per template (`255.255.255.255`, or 128 for IPv6).
    pub fn full(ipv6: bool) -> Netmask {
        if ipv6 {
            Netmask::V6(128)
        } else {
            Netmask::V4(Ipv4Addr::BROADCAST)
        }
    }

    /// Whether this is the default [`Netmask::full`] of its family (listings leave it out).
    pub fn is_full(self) -> bool {
        matches!(self, Netmask::V6(128)) || self == Netmask::V4(Ipv4Addr::BROADCAST)
    }
}

/// As ipvsadm prints it: `255.255.255.0` or `64`.
impl fmt::Display for Netmask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Netmask::V4(m) => write!(f, "{m}"),
            Netmask::V6(len) => write!(f, "{len}"),
        }
    }
}

/// Settings of `-A` / `-E` with ipvsadm's defaults filled in (`-E` replaces them all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceOpts {
    /// The service.
    pub service: ServiceSpec,
    /// Scheduler name (`-s`, default `wlc`), not validated here.
    pub scheduler: String,
    /// Scheduler flags (`-b`), by their listing names: `sh-fallback`, `sh-port`, `mh-fallback`,
    /// `mh-port` for sh and mh, `flag-1`..`flag-3` otherwise; in bit order, no duplicates.
    pub sched_flags: Vec<String>,
    /// Persistence timeout (`-p [timeout]`).
    pub persistent: Option<u32>,
    /// Persistence granularity (`-M`, default 255.255.255.255, or 128 for IPv6).
    pub netmask: Netmask,
    /// One-packet scheduling (`-o`).
    pub ops: bool,
    /// SYNPROXY (`-j enable|disable`, as DPVS's ipvsadm; default disable).
    #[serde(default)]
    pub synproxy: bool,
}

/// Settings of `-a` / `-e` with ipvsadm's defaults filled in (`-e` replaces them all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerOpts {
    /// The service.
    pub service: ServiceSpec,
    /// Real server; its port is the service port when omitted, and always the service port
    /// with `-g` or `-i` (as ipvsadm; not for fwmark services). Its family is the service's,
    /// or IPv4 for a FullNAT server of an IPv6 service.
    pub server: SocketAddr,
    /// Forwarding method (`-g` default, `-m`, `-i`, `-b`).
    pub forward: Forward,
    /// Weight (`-w`, 0..=65535, default 1).
    pub weight: u32,
    /// Upper connection threshold (`-x`, 0..=65535, default 0 = none).
    pub u_threshold: u32,
    /// Lower connection threshold (`-y`, 0..=65535, default 0 = none).
    pub l_threshold: u32,
}

/// Options of `-L`/`-l` (and the flags [`crate::format::list`] honours).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListOpts {
    /// Only this service (`-L -t ...`): no version line, "No such service" if absent.
    pub service: Option<ServiceSpec>,
    /// `-n`: addresses and ports as numbers (else names, from the request's `Names`).
    pub numeric: bool,
    /// `-c`: the connection table.
    pub connection: bool,
    /// `--timeout`: the three timeouts.
    pub timeout: bool,
    /// `--daemon`: sync daemon state (tapvs has none, so the listing is empty).
    pub daemon: bool,
    /// `--stats`.
    pub stats: bool,
    /// `--rate`.
    pub rate: bool,
    /// `--thresholds`.
    pub thresholds: bool,
    /// `--persistent-conn`.
    pub persistent_conn: bool,
    /// `--exact`: full numbers in `--stats`/`--rate`.
    pub exact: bool,
    /// `--nosort`: table order instead of sorted.
    pub nosort: bool,
    /// `--tun-info`: tunnel column in the plain listing.
    pub tun_info: bool,
}

/// One parsed ipvsadm command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `-A`: add a virtual service.
    AddService(ServiceOpts),
    /// `-E`: edit a virtual service.
    EditService(ServiceOpts),
    /// `-D`: delete a virtual service.
    DeleteService(ServiceSpec),
    /// `-C`: clear the whole table.
    Clear,
    /// `-R`: read commands from stdin (see [`parse_restore_line`]).
    Restore,
    /// `-S [-n]`: print the table as rules.
    Save {
        /// `-n` given.
        numeric: bool,
    },
    /// `-a`: add a real server.
    AddServer(ServerOpts),
    /// `-e`: edit a real server.
    EditServer(ServerOpts),
    /// `-d`: delete a real server.
    DeleteServer {
        /// The service.
        service: ServiceSpec,
        /// The real server (port = service port when omitted).
        server: SocketAddr,
    },
    /// `-L`/`-l` (also a bare `ipvsadm`).
    List(ListOpts),
    /// `-Z [service]`: zero counters of one or all services.
    Zero(Option<ServiceSpec>),
    /// `--set tcp tcpfin udp` (0 keeps the current value).
    SetTimeouts {
        /// ESTABLISHED timeout.
        tcp: u32,
        /// FIN_WAIT timeout.
        tcp_fin: u32,
        /// UDP timeout.
        udp: u32,
    },
    /// `-h`/`--help`: print [`crate::format::usage`], exit 0.
    Help,
    /// `-v`/`--version`: print the version, exit 0.
    Version,
    /// `--start-daemon master|backup [options]`: start a connection sync daemon.
    StartDaemon(DaemonOpts),
    /// `--stop-daemon master|backup`: stop it.
    StopDaemon(DaemonRole),
}

/// The role of a connection sync daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DaemonRole {
    /// Sends this appliance's connections.
    Master,
    /// Receives a master's connections.
    Backup,
}

/// `--start-daemon` and its options (ipvsadm's names; `None`: the default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonOpts {
    /// master or backup.
    pub role: DaemonRole,
    /// `--mcast-interface`: the port (tapvs port name).
    pub mcast_interface: Option<String>,
    /// `--syncid` 0..=255.
    pub syncid: Option<u32>,
    /// `--sync-maxlen`.
    pub sync_maxlen: Option<u32>,
    /// `--mcast-group`.
    pub mcast_group: Option<String>,
    /// `--mcast-port`.
    pub mcast_port: Option<u32>,
    /// `--mcast-ttl` (tapvs sends with TTL 1 only).
    pub mcast_ttl: Option<u32>,
}

/// The rest of a `--start-daemon`/`--stop-daemon` line.
fn parse_daemon(
    which: &str,
    role: Option<String>,
    scan: &mut Scanner,
) -> Result<Command, AdmError> {
    let start = which == "--start-daemon";
    let role = match role.as_deref() {
        Some("master") => DaemonRole::Master,
        Some("backup") => DaemonRole::Backup,
        _ => {
            return Err(AdmError::IllegalDaemonParam(format!(
                "{} parameter",
                which.trim_start_matches('-')
            )))
        }
    };
    let mut o = DaemonOpts {
        role,
        mcast_interface: None,
        syncid: None,
        sync_maxlen: None,
        mcast_group: None,
        mcast_port: None,
        mcast_ttl: None,
    };
    let num = |v: &Option<String>, what: &str| -> Result<u32, AdmError> {
        v.as_deref()
            .and_then(|s| s.parse::<u32>().ok())
            .ok_or_else(|| AdmError::IllegalDaemonParam(what.to_string()))
    };
    while let Some(ev) = scan.next_event(false) {
        let ev = ev?;
        if ev.tag != Tag::SyncOpt || !start {
            return Err(AdmError::InvalidOption(ev.written));
        }
        let name = ev.written.trim_start_matches('-').to_string();
        let dup = |set: bool| {
            if set {
                Err(AdmError::MultipleOption(match name.as_str() {
                    "mcast-interface" => "mcast-interface",
                    "syncid" => "syncid",
                    "sync-maxlen" => "sync-maxlen",
                    "mcast-group" => "mcast-group",
                    "mcast-port" => "mcast-port",
                    _ => "mcast-ttl",
                }))
            } else {
                Ok(())
            }
        };
        match name.as_str() {
            "mcast-interface" => {
                dup(o.mcast_interface.is_some())?;
                o.mcast_interface = ev.value.clone();
            }
            "syncid" => {
                dup(o.syncid.is_some())?;
                let v = num(&ev.value, "syncid")?;
                if v > 255 {
                    return Err(AdmError::IllegalDaemonParam("syncid".into()));
                }
                o.syncid = Some(v);
            }
            "sync-maxlen" => {
                dup(o.sync_maxlen.is_some())?;
                o.sync_maxlen = Some(num(&ev.value, "sync-maxlen")?);
            }
            "mcast-group" => {
                dup(o.mcast_group.is_some())?;
                let g = ev.value.clone().unwrap_or_default();
                if g.parse::<std::net::Ipv4Addr>().is_err() {
                    return Err(AdmError::IllegalDaemonParam("mcast-group".into()));
                }
                o.mcast_group = Some(g);
            }
            "mcast-port" => {
                dup(o.mcast_port.is_some())?;
                let v = num(&ev.value, "mcast-port")?;
                if v == 0 || v > 65535 {
                    return Err(AdmError::IllegalDaemonParam("mcast-port".into()));
                }
                o.mcast_port = Some(v);
            }
            _ => {
                dup(o.mcast_ttl.is_some())?;
                let v = num(&ev.value, "mcast-ttl")?;
                if !(1..=255).contains(&v) {
                    return Err(AdmError::IllegalDaemonParam("mcast-ttl".into()));
                }
                o.mcast_ttl = Some(v);
            }
        }
    }
    if let Some(a) = scan.positional.first() {
        return Err(AdmError::UnexpectedArgument(a.clone()));
    }
    Ok(if start {
        Command::StartDaemon(o)
    } else {
        Command::StopDaemon(role)
    })
}

/// ipvsadm commands, in ipvsadm's order (which names them in messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddDest,
    DelDest,
    EditDest,
    Set,
    Restore,
    Save,
    Zero,
}

impl Cmd {
    fn name(self) -> &'static str {
        match self {
            Cmd::Add => "add-service",
            Cmd::Edit => "edit-service",
            Cmd::Del => "delete-service",
            Cmd::Flush => "flush",
            Cmd::List => "list",
            Cmd::AddDest => "add-server",
            Cmd::DelDest => "delete-server",
            Cmd::EditDest => "edit-server",
            Cmd::Set => "set",
            Cmd::Restore => "restore",
            Cmd::Save => "save",
            Cmd::Zero => "zero",
        }
    }

    /// Legality of each [`Opt`] (same order): `+` compulsory, `x` illegal, `1` exclusive,
    /// ` ` optional; ipvsadm's command/option table restricted to the options tapvs knows.
    fn rules(self) -> &'static [u8; OPT_COUNT] {
        match self {
            Cmd::Add | Cmd::Edit => b"xx+   xxxxxxxxxxxxx  xx ",
            Cmd::Del => b"xx+xxxxxxxxxxxxxxxxxxxxx",
            Cmd::List => b" 11xxxxxxxx11      xx xx",
            Cmd::AddDest | Cmd::EditDest => b"xx+xxx+    xxxxxxxxxxx x",
            Cmd::DelDest => b"xx+xxx+xxxxxxxxxxxxxxxxx",
            Cmd::Save => b" xxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::Zero => b"xx xxxxxxxxxxxxxxxxxxxxx",
            Cmd::Flush | Cmd::Set | Cmd::Restore => b"xxxxxxxxxxxxxxxxxxxxxxxx",
        }
    }
}

/// ipvsadm options tapvs knows, in ipvsadm's order (which decides which error comes first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Numeric,
    Connection,
    Service,
    Scheduler,
    Persistent,
    Netmask,
    Server,
    Forward,
    Weight,
    UThreshold,
    LThreshold,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Exact,
    Ops,
    SchedFlags,
    TunInfo,
    TunType,
    Synproxy,
}

const OPT_COUNT: usize = 24;

const OPTS: [Opt; OPT_COUNT] = [
    Opt::Numeric,
    Opt::Connection,
    Opt::Service,
    Opt::Scheduler,
    Opt::Persistent,
    Opt::Netmask,
    Opt::Server,
    Opt::Forward,
    Opt::Weight,
    Opt::UThreshold,
    Opt::LThreshold,
    Opt::Timeout,
    Opt::Daemon,
    Opt::Stats,
    Opt::Rate,
    Opt::Thresholds,
    Opt::PersistentConn,
    Opt::NoSort,
    Opt::Exact,
    Opt::Ops,
    Opt::SchedFlags,
    Opt::TunInfo,
    Opt::TunType,
    Opt::Synproxy,
];

impl Opt {
    /// The ipvsadm option name used in messages.
    fn name(self) -> &'static str {
        match self {
            Opt::Numeric => "numeric",
            Opt::Connection => "connection",
            Opt::Service => "service-address",
            Opt::Scheduler => "scheduler",
            Opt::Persistent => "persistent",
            Opt::Netmask => "netmask",
            Opt::Server => "real-server",
            Opt::Forward => "forwarding-method",
            Opt::Weight => "weight",
            Opt::UThreshold => "u-threshold",
            Opt::LThreshold => "l-threshold",
            Opt::Timeout => "timeout",
            Opt::Daemon => "daemon",
            Opt::Stats => "stats",
            Opt::Rate => "rate",
            Opt::Thresholds => "thresholds",
            Opt::PersistentConn => "persistent-conn",
            Opt::NoSort => "nosort",
            Opt::Exact => "exact",
            Opt::Ops => "ops",
            Opt::SchedFlags => "sched-flags",
            Opt::TunInfo => "tun-info",
            Opt::TunType => "tun-type",
            Opt::Synproxy => "synproxy",
        }
    }

    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// Whether an option takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arg {
    No,
    Required,
    Optional,
}

/// What an option on the command line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Cmd(Cmd),
    Help,
    Version,
    Daemon(&'static str),
    Tcp,
    Udp,
    Sctp,
    Fwmark,
    Scheduler,
    Persistent,
    Netmask,
    Real,
    Masq,
    Ipip,
    Gate,
    FullNat,
    Weight,
    UThr,
    LThr,
    Numeric,
    Connection,
    Timeout,
    ShowDaemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Sort,
    Exact,
    Ipv6,
    Ops,
    Pe,
    SchedFlags,
    TunInfo,
    TunType,
    TunOpt,
    SyncOpt,
    Synproxy,
}

/// ipvsadm's options: long name, short letter, value, meaning.
const OPTIONS: &[(&str, Option<char>, Arg, Tag)] = &[
    ("add-service", Some('A'), Arg::No, Tag::Cmd(Cmd::Add)),
    ("edit-service", Some('E'), Arg::No, Tag::Cmd(Cmd::Edit)),
    ("delete-service", Some('D'), Arg::No, Tag::Cmd(Cmd::Del)),
    ("clear", Some('C'), Arg::No, Tag::Cmd(Cmd::Flush)),
    ("list", Some('L'), Arg::No, Tag::Cmd(Cmd::List)),
    ("list", Some('l'), Arg::No, Tag::Cmd(Cmd::List)),
    ("zero", Some('Z'), Arg::No, Tag::Cmd(Cmd::Zero)),
    ("add-server", Some('a'), Arg::No, Tag::Cmd(Cmd::AddDest)),
    ("edit-server", Some('e'), Arg::No, Tag::Cmd(Cmd::EditDest)),
    ("delete-server", Some('d'), Arg::No, Tag::Cmd(Cmd::DelDest)),
    ("set", None, Arg::No, Tag::Cmd(Cmd::Set)),
    ("help", Some('h'), Arg::No, Tag::Help),
    ("version", Some('v'), Arg::No, Tag::Version),
    ("restore", Some('R'), Arg::No, Tag::Cmd(Cmd::Restore)),
    ("save", Some('S'), Arg::No, Tag::Cmd(Cmd::Save)),
    (
        "start-daemon",
        None,
        Arg::Required,
        Tag::Daemon("--start-daemon"),
    ),
    (
        "stop-daemon",
        None,
        Arg::Required,
        Tag::Daemon("--stop-daemon"),
    ),
    ("tcp-service", Some('t'), Arg::Required, Tag::Tcp),
    ("udp-service", Some('u'), Arg::Required, Tag::Udp),
    ("sctp-service", None, Arg::Required, Tag::Sctp),
    ("fwmark-service", Some('f'), Arg::Required, Tag::Fwmark),
    ("scheduler", Some('s'), Arg::Required, Tag::Scheduler),
    ("persistent", Some('p'), Arg::Optional, Tag::Persistent),
    ("netmask", Some('M'), Arg::Required, Tag::Netmask),
    ("real-server", Some('r'), Arg::Required, Tag::Real),
    ("masquerading", Some('m'), Arg::No, Tag::Masq),
    ("ipip", Some('i'), Arg::No, Tag::Ipip),
    ("gatewaying", Some('g'), Arg::No, Tag::Gate),
    ("fullnat", None, Arg::No, Tag::FullNat),
    ("weight", Some('w'), Arg::Required, Tag::Weight),
    ("u-threshold", Some('x'), Arg::Required, Tag::UThr),
    ("l-threshold", Some('y'), Arg::Required, Tag::LThr),
    ("numeric", Some('n'), Arg::No, Tag::Numeric),
    ("connection", Some('c'), Arg::No, Tag::Connection),
    ("mcast-interface", None, Arg::Required, Tag::SyncOpt),
    ("syncid", None, Arg::Required, Tag::SyncOpt),
    ("timeout", None, Arg::No, Tag::Timeout),
    ("daemon", None, Arg::No, Tag::ShowDaemon),
    ("stats", None, Arg::No, Tag::Stats),
    ("rate", None, Arg::No, Tag::Rate),
    ("thresholds", None, Arg::No, Tag::Thresholds),
    ("persistent-conn", None, Arg::No, Tag::PersistentConn),
    ("nosort", None, Arg::No, Tag::NoSort),
    ("sort", None, Arg::No, Tag::Sort),
    ("exact", Some('X'), Arg::No, Tag::Exact),
    ("ipv6", Some('6'), Arg::No, Tag::Ipv6),
    ("ops", Some('o'), Arg::No, Tag::Ops),
    ("pe", None, Arg::Required, Tag::Pe),
    ("sched-flags", Some('b'), Arg::Required, Tag::SchedFlags),
    ("mcast-group", None, Arg::Required, Tag::SyncOpt),
    ("mcast-port", None, Arg::Required, Tag::SyncOpt),
    ("mcast-ttl", None, Arg::Required, Tag::SyncOpt),
    ("sync-maxlen", None, Arg::Required, Tag::SyncOpt),
    ("tun-info", None, Arg::No, Tag::TunInfo),
    ("tun-type", None, Arg::Required, Tag::TunType),
    ("tun-port", None, Arg::Required, Tag::TunOpt),
    ("tun-nocsum", None, Arg::No, Tag::TunOpt),
    ("tun-csum", None, Arg::No, Tag::TunOpt),
    ("tun-remcsum", None, Arg::No, Tag::TunOpt),
    ("synproxy", Some('j'), Arg::Required, Tag::Synproxy),
];

/// One option occurrence: what it is, how it was written, its value.
struct Event {
    tag: Tag,
    written: String,
    value: Option<String>,
    /// Where the value is: (argument index, byte offset); it runs to the argument's end.
    at: Option<(usize, usize)>,
}

/// An option's value and where it is (see [`Event::at`]).
type Value = (Option<String>, Option<(usize, usize)>);

/// Walks the arguments popt-style, one option at a time, collecting positional arguments.
struct Scanner<'a> {
    args: &'a [String],
    next: usize,
    /// Inside a short-option cluster: (argument index, byte offset of the next letter).
    cluster: Option<(usize, usize)>,
    options_done: bool,
    positional: Vec<String>,
}

impl<'a> Scanner<'a> {
    fn new(args: &'a [String]) -> Self {
        Scanner {
            args,
            next: 0,
            cluster: None,
            options_done: false,
            positional: Vec::new(),
        }
    }

    /// The value of an option whose value was not attached, and where it is.
    fn take_value(&mut self, arg: Arg, written: &str) -> Result<Value, AdmError> {
        let next = self.args.get(self.next);
        let at = Some((self.next, 0));
        match arg {
            Arg::No => Ok((None, None)),
            Arg::Required => match next {
                Some(v) => {
                    self.next += 1;
                    Ok((Some(v.clone()), at))
                }
                None => Err(AdmError::MissingArgument(written.to_string())),
            },
            Arg::Optional => match next {
                Some(v) if !v.starts_with('-') => {
                    self.next += 1;
                    Ok((Some(v.clone()), at))
                }
                _ => Ok((None, None)),
            },
        }
    }

    /// The next option; `dest_cmd` says whether the command is `-a`/`-e`/`-d` (where `-b` is
    /// FullNAT rather than scheduler flags).
    fn next_event(&mut self, dest_cmd: bool) -> Option<Result<Event, AdmError>> {
        loop {
            if let Some((ai, off)) = self.cluster {
                let word = &self.args[ai];
                let c = word[off..].chars().next()?;
                let after = off + c.len_utf8();
                self.cluster = (after < word.len()).then_some((ai, after));
                let written = format!("-{c}");
                let (arg, tag) = if c == 'b' && dest_cmd {
                    (Arg::No, Tag::FullNat)
                } else {
                    match OPTIONS.iter().find(|o| o.1 == Some(c)) {
                        Some(o) => (o.2, o.3),
                        None => return Some(Err(AdmError::UnknownOption(written))),
                    }
                };
                let value = if arg != Arg::No && after < word.len() {
                    self.cluster = None;
                    Ok((Some(word[after..].to_string()), Some((ai, after))))
                } else {
                    self.take_value(arg, &written)
                };
                return Some(value.map(|(value, at)| Event {
                    tag,
                    written,
                    value,
                    at,
                }));
            }
            let word = self.args.get(self.next)?;
            self.next += 1;
            if self.options_done || word == "-" || !word.starts_with('-') {
                self.positional.push(word.clone());
                continue;
            }
            if word == "--" {
                self.options_done = true;
                continue;
            }
            if let Some(long) = word.strip_prefix("--") {
                let (name, attached) = match long.split_once('=') {
                    Some((n, v)) => (n, Some(v.to_string())),
                    None => (long, None),
                };
                let attached_at = Some((self.next - 1, 2 + name.len() + 1));
                let written = format!("--{name}");
                let Some(&(_, _, arg, tag)) = OPTIONS.iter().find(|o| o.0 == name) else {
                    return Some(Err(AdmError::UnknownOption(word.clone())));
                };
                let value = match attached {
                    Some(_) if arg == Arg::No => Err(AdmError::UnwantedArgument(written.clone())),
                    Some(v) => Ok((Some(v), attached_at)),
                    None => self.take_value(arg, &written),
                };
                return Some(value.map(|(value, at)| Event {
                    tag,
                    written,
                    value,
                    at,
                }));
            }
            self.cluster = Some((self.next - 1, 1));
        }
    }
}

/// An address argument that is not a literal `host[:port]`.
struct AddrError;

/// ipvsadm's `host[:port]`: an IPv4 literal or `localhost` with an optional `:port`, an IPv6
/// literal in brackets with a compulsory `:port` (`[2001:db8::1]:80`), or a bare IPv6 literal
/// (port omitted); port 0..=65535.
fn parse_host_port(s: &str) -> Result<(IpAddr, Option<u16>), AddrError> {
    if s.is_empty() || s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AddrError);
    }
    let port_of = |p: &str| {
        number(p, 0, u16::MAX.into())
            .map(|n| n as u16)
            .ok_or(AddrError)
    };
    if let Some(rest) = s.strip_prefix('[') {
        // As ipvsadm: the brackets need a port after them.
        let (host, after) = rest.split_once(']').ok_or(AddrError)?;
        let port = after.strip_prefix(':').ok_or(AddrError)?;
        let addr: Ipv6Addr = host.parse().map_err(|_| AddrError)?;
        return Ok((IpAddr::V6(addr), Some(port_of(port)?)));
    }
    if let Ok(a) = s.parse::<Ipv6Addr>() {
        return Ok((IpAddr::V6(a), None));
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let addr = if host == "localhost" {
        Ipv4Addr::LOCALHOST
    } else {
        host.parse().map_err(|_| AddrError)?
    };
    let port = match port {
        Some(p) => Some(port_of(p)?),
        None => None,
    };
    Ok((IpAddr::V4(addr), port))
}

/// A decimal number in `min..=max` (strtol-like: optional sign, nothing after the digits).
fn number(s: &str, min: i64, max: i64) -> Option<u32> {
    let n: i64 = s.parse().ok()?;
    ((min..=max).contains(&n)).then_some(n as u32)
}

/// A timeout in `min..=MAX_TIMEOUT`.
fn timeout(s: &str, min: i64) -> Result<u32, AdmError> {
    number(s, min, MAX_TIMEOUT.into()).ok_or_else(|| AdmError::InvalidTimeout(s.to_string()))
}

/// Scheduler flags in their listing names, validated against the scheduler like ipvsadm.
fn sched_flags(sched: &str, raw: &str) -> Result<Vec<String>, AdmError> {
    let mut bits = [false; 3];
    for flag in raw.split(',').filter(|f| !f.is_empty()) {
        let (bit, only) = match flag {
            "flag-1" => (0, None),
            "flag-2" => (1, None),
            "flag-3" => (2, None),
            "sh-fallback" => (0, Some("sh")),
            "sh-port" => (1, Some("sh")),
            "mh-fallback" => (0, Some("mh")),
            "mh-port" => (1, Some("mh")),
            _ => return Err(AdmError::InvalidSchedFlag(flag.to_string())),
        };
        if only.is_some_and(|s| s != sched) {
            return Err(AdmError::IncompatibleSchedFlag(flag.to_string()));
        }
        bits[bit] = true;
    }
    let names: [&str; 3] = match sched {
        "sh" => ["sh-fallback", "sh-port", ""],
        "mh" => ["mh-fallback", "mh-port", ""],
        _ => ["flag-1", "flag-2", "flag-3"],
    };
    Ok(bits
        .iter()
        .zip(names)
        .filter(|(on, name)| **on && !name.is_empty())
        .map(|(_, name)| name.to_string())
        .collect())
}

/// Everything gathered from the options of one command.
struct State {
    cmd: Cmd,
    options: u32,
    service: Option<ServiceSpec>,
    scheduler: Option<String>,
    persistent: Option<u32>,
    /// `-M` as written: its meaning depends on the service's family, known at the end.
    netmask: Option<String>,
    server: Option<(IpAddr, Option<u16>)>,
    forward: Forward,
    weight: u32,
    u_threshold: u32,
    l_threshold: u32,
    sched_flags: Option<String>,
    synproxy: bool,
}

impl State {
    fn new(cmd: Cmd) -> Self {
        State {
            cmd,
            options: 0,
            service: None,
            scheduler: None,
            persistent: None,
            netmask: None,
            server: None,
            forward: Forward::Dr,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
            sched_flags: None,
            synproxy: false,
        }
    }

    fn has(&self, o: Opt) -> bool {
        self.options & o.bit() != 0
    }

    fn set(&mut self, o: Opt) -> Result<(), AdmError> {
        if self.has(o) {
            return Err(AdmError::MultipleOption(o.name()));
        }
        self.options |= o.bit();
        Ok(())
    }

    /// Records one option (after the command).
    fn take(&mut self, ev: Event) -> Result<(), AdmError> {
        let v = ev.value.unwrap_or_default();
        let unsupported = |what: &str| Err(AdmError::Unsupported(what.to_string()));
        match ev.tag {
            Tag::Cmd(_) | Tag::Help | Tag::Version | Tag::Daemon(_) => {
                return Err(AdmError::InvalidOption(ev.written))
            }
            Tag::Tcp | Tag::Udp => {
                self.set(Opt::Service)?;
                let proto = if ev.tag == Tag::Tcp {
                    Protocol::Tcp
                } else {
                    Protocol::Udp
                };
                let (ip, port) =
                    parse_host_port(&v).map_err(|AddrError| AdmError::IllegalVirtualServer)?;
                self.service = Some(ServiceSpec::Addr {
                    proto,
                    addr: SocketAddr::new(ip, port.unwrap_or(0)),
                });
            }
            Tag::Sctp => return unsupported("SCTP (--sctp-service)"),
            Tag::Fwmark => {
                self.set(Opt::Service)?;
                let mark = number(&v, 1, u32::MAX.into())
                    .ok_or_else(|| AdmError::InvalidFwmark(v.clone()))?;
                self.service = Some(ServiceSpec::Fwmark { mark, ipv6: false });
            }
            Tag::Scheduler => {
                self.set(Opt::Scheduler)?;
                self.scheduler = Some(v);
            }
            Tag::Persistent => {
                self.set(Opt::Persistent)?;
                self.persistent = Some(if v.is_empty() {
                    DEFAULT_PERSISTENT
                } else {
                    timeout(&v, 1)?
                });
            }
            Tag::Netmask => {
                self.set(Opt::Netmask)?;
                self.netmask = Some(v);
                // Checked now when the service's family is known (ipvsadm's order of errors),
                // else at the end (a fwmark service may still get -6).
                if let Some(svc @ ServiceSpec::Addr { .. }) = self.service {
                    self.netmask(&svc)?;
                }
            }
            Tag::Real => {
                self.set(Opt::Server)?;
                self.server =
                    Some(parse_host_port(&v).map_err(|AddrError| AdmError::IllegalRealServer)?);
            }
            Tag::Masq | Tag::Ipip | Tag::Gate | Tag::FullNat => {
                self.set(Opt::Forward)?;
                self.forward = match ev.tag {
                    Tag::Masq => Forward::Nat,
                    Tag::Ipip => Forward::Tun,
                    Tag::Gate => Forward::Dr,
                    _ => Forward::FullNat,
                };
            }
            Tag::Weight => {
                self.set(Opt::Weight)?;
                self.weight = number(&v, 0, 65535).ok_or(AdmError::IllegalWeight)?;
            }
            Tag::UThr => {
                self.set(Opt::UThreshold)?;
                self.u_threshold = number(&v, 0, 65535).ok_or(AdmError::IllegalUThreshold)?;
            }
            Tag::LThr => {
                self.set(Opt::LThreshold)?;
                self.l_threshold = number(&v, 0, 65535).ok_or(AdmError::IllegalLThreshold)?;
            }
            Tag::Numeric => self.set(Opt::Numeric)?,
            Tag::Connection => self.set(Opt::Connection)?,
            Tag::Timeout => self.set(Opt::Timeout)?,
            Tag::ShowDaemon => self.set(Opt::Daemon)?,
            Tag::Stats => self.set(Opt::Stats)?,
            Tag::Rate => self.set(Opt::Rate)?,
            Tag::Thresholds => self.set(Opt::Thresholds)?,
            Tag::PersistentConn => self.set(Opt::PersistentConn)?,
            Tag::NoSort => self.set(Opt::NoSort)?,
            Tag::Sort => {}
            Tag::Exact => self.set(Opt::Exact)?,
            Tag::Ops => self.set(Opt::Ops)?,
            Tag::TunInfo => self.set(Opt::TunInfo)?,
            // Not an option of the table (ipvsadm records none): valid after -f only.
            Tag::Ipv6 => match &mut self.service {
                Some(ServiceSpec::Fwmark { ipv6, .. }) => *ipv6 = true,
                _ => return Err(AdmError::Ipv6BeforeFwmark),
            },
            Tag::Pe => return unsupported("persistence engines (--pe)"),
            Tag::SchedFlags => {
                self.set(Opt::SchedFlags)?;
                self.sched_flags = Some(v);
            }
            Tag::TunType => {
                self.set(Opt::TunType)?;
                match v.as_str() {
                    "ipip" => {}
                    "gue" => return unsupported("GUE tunnels (--tun-type gue)"),
                    "gre" => return unsupported("GRE tunnels (--tun-type gre)"),
                    _ => return Err(AdmError::IllegalTunnelType),
                }
            }
            Tag::TunOpt => return unsupported(&format!("GUE tunnel options ({})", ev.written)),
            Tag::SyncOpt => return unsupported(&format!("connection sync ({})", ev.written)),
            Tag::Synproxy => {
                self.set(Opt::Synproxy)?;
                self.synproxy = match v.as_str() {
                    "enable" => true,
                    "disable" => false,
                    _ => return Err(AdmError::IllegalSynproxy(v)),
                };
            }
        }
        Ok(())
    }

    /// ipvsadm's table check: compulsory, illegal and mutually exclusive options.
    fn check_table(&self) -> Result<(), AdmError> {
        let cmd = self.cmd.name();
        let mut first_exclusive: Option<Opt> = None;
        for (o, rule) in OPTS.iter().zip(self.cmd.rules()) {
            let present = self.has(*o);
            match (rule, present) {
                (b'+', false) => {
                    return Err(AdmError::MissingOption { opt: o.name(), cmd });
                }
                (b'x', true) => return Err(AdmError::IllegalOption { opt: o.name(), cmd }),
                (b'1', true) => match first_exclusive {
                    None => first_exclusive = Some(*o),
                    Some(other) => {
                        return Err(AdmError::ConflictingOptions {
                            opt: o.name(),
                            other: other.name(),
                            cmd,
                        })
                    }
                },
                _ => {}
            }
        }
        Ok(())
    }

    /// The real server with ipvsadm's port rules applied.
    fn server(&self, service: &ServiceSpec, forced: bool) -> SocketAddr {
        let (ip, port) = self
            .server
            .unwrap_or((IpAddr::V4(Ipv4Addr::UNSPECIFIED), None));
        let fwmark = matches!(service, ServiceSpec::Fwmark { .. });
        let port = if forced && !fwmark && matches!(self.forward, Forward::Dr | Forward::Tun) {
            service.port()
        } else {
            port.unwrap_or(service.port())
        };
        SocketAddr::new(ip, port)
    }

    /// `-M` for `service`: a dotted netmask (IPv4) or a prefix length 1..=128 (IPv6); the
    /// family's full mask when absent.
    fn netmask(&self, service: &ServiceSpec) -> Result<Netmask, AdmError> {
        let ipv6 = service.is_ipv6();
        let Some(v) = self.netmask.as_deref() else {
            return Ok(Netmask::full(ipv6));
        };
        if ipv6 {
            number(v, 1, 128)
                .map(|n| Netmask::V6(n as u8))
                .ok_or(AdmError::IllegalIpv6Netmask)
        } else {
            v.parse()
                .map(Netmask::V4)
                .map_err(|_| AdmError::IllegalNetmask)
        }
    }

    fn build(mut self, positional: Vec<String>) -> Result<Command, AdmError> {
        let mut rest = positional.into_iter();
        let mut set = None;
        if self.cmd == Cmd::Set {
            let vals: Vec<String> = rest.by_ref().take(3).collect();
            if vals.len() < 3 {
                return Err(AdmError::SetNeedsThree);
            }
            set = Some((
                timeout(&vals[0], 0)?,
                timeout(&vals[1], 0)?,
                timeout(&vals[2], 0)?,
            ));
        }
        if let Some(extra) = rest.next() {
            return Err(AdmError::UnexpectedArgument(extra));
        }
        let scheduler = self
            .scheduler
            .clone()
            .unwrap_or_else(|| DEFAULT_SCHEDULER.to_string());
        let flags = match self.sched_flags.take().filter(|f| !f.is_empty()) {
            Some(raw) => sched_flags(&scheduler, &raw)?,
            None => Vec::new(),
        };
        self.check_table()?;
        let service = self.service;
        let svc = || service.ok_or(AdmError::IllegalVirtualServer);
        Ok(match self.cmd {
            Cmd::Add | Cmd::Edit => {
                let service = svc()?;
                let persistent = self.persistent;
                match service {
                    ServiceSpec::Addr { addr, .. } if addr.port() == 0 && persistent.is_none() => {
                        return Err(AdmError::ZeroPort)
                    }
                    ServiceSpec::Addr { proto, .. }
                        if self.has(Opt::Ops) && proto != Protocol::Udp =>
                    {
                        return Err(AdmError::OpsNotUdp)
                    }
                    ServiceSpec::Addr { proto, .. } if self.synproxy && proto != Protocol::Tcp => {
                        return Err(AdmError::SynproxyNotTcp)
                    }
                    _ => {}
                }
                let o = ServiceOpts {
                    service,
                    scheduler,
                    sched_flags: flags,
                    persistent,
                    netmask: self.netmask(&service)?,
                    ops: self.has(Opt::Ops),
                    synproxy: self.synproxy,
                };
                if self.cmd == Cmd::Add {
                    Command::AddService(o)
                } else {
                    Command::EditService(o)
                }
            }
            Cmd::Del => Command::DeleteService(svc()?),
            Cmd::Flush => Command::Clear,
            Cmd::AddDest | Cmd::EditDest => {
                let service = svc()?;
                let server = self.server(&service, true);
                // ipvsadm allows another family for tunnels; tapvs for NAT64 in FullNAT.
                let nat64 =
                    service.is_ipv6() && server.is_ipv4() && self.forward == Forward::FullNat;
                if server.is_ipv6() != service.is_ipv6() && !nat64 {
                    return Err(AdmError::FamilyMismatch);
                }
                if self.has(Opt::TunType) && self.forward != Forward::Tun {
                    return Err(AdmError::TunnelOptionConflict);
                }
                let o = ServerOpts {
                    service,
                    server,
                    forward: self.forward,
                    weight: self.weight,
                    u_threshold: self.u_threshold,
                    l_threshold: self.l_threshold,
                };
                if self.cmd == Cmd::AddDest {
                    Command::AddServer(o)
                } else {
                    Command::EditServer(o)
                }
            }
            Cmd::DelDest => {
                let service = svc()?;
                Command::DeleteServer {
                    service,
                    server: self.server(&service, false),
                }
            }
            Cmd::List => {
                let any = |os: &[Opt]| os.iter().any(|o| self.has(*o));
                if (any(&[Opt::Connection, Opt::Timeout, Opt::Daemon])
                    && any(&[Opt::Stats, Opt::Rate, Opt::Thresholds]))
                    || (any(&[Opt::Timeout, Opt::Daemon]) && self.has(Opt::PersistentConn))
                {
                    return Err(AdmError::ListConflict);
                }
                Command::List(ListOpts {
                    service,
                    numeric: self.has(Opt::Numeric),
                    connection: self.has(Opt::Connection),
                    timeout: self.has(Opt::Timeout),
                    daemon: self.has(Opt::Daemon),
                    stats: self.has(Opt::Stats),
                    rate: self.has(Opt::Rate),
                    thresholds: self.has(Opt::Thresholds),
                    persistent_conn: self.has(Opt::PersistentConn),
                    exact: self.has(Opt::Exact),
                    nosort: self.has(Opt::NoSort),
                    tun_info: self.has(Opt::TunInfo),
                })
            }
            Cmd::Set => {
                let (tcp, tcp_fin, udp) = set.unwrap_or_default();
                Command::SetTimeouts { tcp, tcp_fin, udp }
            }
            Cmd::Restore => Command::Restore,
            Cmd::Save => Command::Save {
                numeric: self.has(Opt::Numeric),
            },
            Cmd::Zero => Command::Zero(service),
        })
    }
}

/// Parses one ipvsadm command line (without the program name; a leading literal `ipvsadm` is
/// skipped). No arguments at all is `-L`, as ipvsadm.
pub fn parse(args: &[String]) -> Result<Command, AdmError> {
    let args = match args.first() {
        Some(a) if a == "ipvsadm" => &args[1..],
        _ => args,
    };
    if args.is_empty() {
        return Ok(Command::List(ListOpts::default()));
    }
    let mut scan = Scanner::new(args);
    let first = match scan.next_event(false) {
        None => return Err(AdmError::NoCommand),
        Some(ev) => ev?,
    };
    let cmd = match first.tag {
        Tag::Cmd(c) => c,
        Tag::Help => return Ok(Command::Help),
        Tag::Version => return Ok(Command::Version),
        Tag::Daemon(which) => return parse_daemon(which, first.value, &mut scan),
        _ => return Err(AdmError::NoCommand),
    };
    let dest_cmd = matches!(cmd, Cmd::AddDest | Cmd::EditDest | Cmd::DelDest);
    let mut state = State::new(cmd);
    while let Some(ev) = scan.next_event(dest_cmd) {
        state.take(ev?)?;
    }
    state.build(scan.positional)
}

/// The command line with the host and service names of its `-t`, `-u` and `-r` values
/// replaced by numbers, through `names` (ipvsadm resolves them with `gethostbyname` and
/// `getservbyname`; a service name is looked up for the service's protocol, TCP when there is
/// none). Values that already parse are left as written. An unknown name is a usage error:
/// "Illegal virtual server address[:port] specified" (`-t`, `-u`) or "Illegal real server
/// address[:port] specified" (`-r`). A line the scanner refuses is returned unchanged, so
/// [`parse`] reports it. [`parse`] itself stays free of lookups: resolve first, then parse.
pub fn resolve(args: &[String], names: &dyn Resolver) -> Result<Vec<String>, AdmError> {
    let mut out = args.to_vec();
    let skip = usize::from(args.first().is_some_and(|a| a == "ipvsadm"));
    // The values to resolve, and the service's protocol, in one scan.
    let mut scan = Scanner::new(&args[skip..]);
    let mut dest_cmd = false;
    let mut first = true;
    let mut proto = Protocol::Tcp;
    let mut values: Vec<(Tag, String, (usize, usize))> = Vec::new();
    while let Some(ev) = scan.next_event(dest_cmd) {
        let Ok(ev) = ev else { return Ok(out) };
        if first {
            dest_cmd = matches!(
                ev.tag,
                Tag::Cmd(Cmd::AddDest | Cmd::EditDest | Cmd::DelDest)
            );
            first = false;
        }
        match ev.tag {
            Tag::Udp => proto = Protocol::Udp,
            Tag::Tcp => proto = Protocol::Tcp,
            _ => {}
        }
        if let (Tag::Tcp | Tag::Udp | Tag::Real, Some(v), Some(at)) = (ev.tag, ev.value, ev.at) {
            values.push((ev.tag, v, at));
        }
    }
    for (tag, v, (i, off)) in values {
        let err = if tag == Tag::Real {
            AdmError::IllegalRealServer
        } else {
            AdmError::IllegalVirtualServer
        };
        if let Some(numeric) = resolve_host_port(&v, proto, names).map_err(|()| err)? {
            let arg = &mut out[skip + i];
            arg.truncate(off);
            arg.push_str(&numeric);
        }
    }
    Ok(out)
}

/// `host[:service]` as numbers when names had to be looked up; `None` when the value parses
/// as it is (or is refused for another reason, which [`parse`] reports). A name in brackets
/// (`[name]:service`) is looked up for an IPv6 address ([`Resolver::host6`]), a bare one for
/// an IPv4 address, as ipvsadm.
fn resolve_host_port(v: &str, proto: Protocol, names: &dyn Resolver) -> Result<Option<String>, ()> {
    if parse_host_port(v).is_ok() || v.is_empty() || v.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let port = |p: &str| -> Result<u16, ()> {
        match number(p, 0, u16::MAX.into()) {
            Some(n) => Ok(n as u16),
            None if p.is_empty() || p.starts_with(|c: char| c.is_ascii_digit() || c == '-') => {
                Err(())
            }
            None => names.service(p, proto).ok_or(()),
        }
    };
    if let Some(rest) = v.strip_prefix('[') {
        let Some((host, p)) = rest
            .split_once(']')
            .and_then(|(h, after)| Some((h, after.strip_prefix(':')?)))
        else {
            return Ok(None);
        };
        let addr = match host.parse::<Ipv6Addr>() {
            Ok(a) => a,
            // An IPv4 literal or anything with a colon is no name.
            Err(_) if host.contains(':') || host.parse::<Ipv4Addr>().is_ok() => return Err(()),
            Err(_) if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') => return Err(()),
            Err(_) => names.host6(host).ok_or(())?,
        };
        return Ok(Some(format!("[{addr}]:{}", port(p)?)));
    }
    let (host, p) = match v.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (v, None),
    };
    let addr = match host.parse::<Ipv4Addr>() {
        Ok(a) => a,
        Err(_) if host == "localhost" => Ipv4Addr::LOCALHOST,
        // Not a dotted quad but digits and dots (`1.2.3`): malformed, not a name (getaddrinfo
        // would take it as 1.2.0.3, the old inet_aton forms).
        Err(_) if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') => return Err(()),
        // Colons left: a malformed IPv6 literal, not a name.
        Err(_) if host.contains(':') => return Err(()),
        Err(_) => names.host(host).ok_or(())?,
    };
    Ok(Some(match p {
        None => addr.to_string(),
        Some(p) => format!("{addr}:{}", port(p)?),
    }))
}

/// Parses one line of `-R` input: whitespace-separated words, an optional leading `ipvsadm`.
/// Blank lines and comment lines (first non-blank character `#`) give `None`, as ipvsadm's
/// restore skips them; `-R` inside restore input is an error.
pub fn parse_restore_line(line: &str) -> Result<Option<Command>, AdmError> {
    if line.trim_start().starts_with('#') {
        return Ok(None);
    }
    let words: Vec<String> = line.split_whitespace().map(String::from).collect();
    let words = match words.first() {
        Some(w) if w == "ipvsadm" => &words[1..],
        _ => &words[..],
    };
    if words.is_empty() {
        return Ok(None);
    }
    match parse(words)? {
        Command::Restore => Err(AdmError::NestedRestore),
        c => Ok(Some(c)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Command, AdmError> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse(&args)
    }

    fn tcp(a: &str) -> ServiceSpec {
        ServiceSpec::Addr {
            proto: Protocol::Tcp,
            addr: a.parse().unwrap(),
        }
    }

    fn udp(a: &str) -> ServiceSpec {
        ServiceSpec::Addr {
            proto: Protocol::Udp,
            addr: a.parse().unwrap(),
        }
    }

    fn svc(service: ServiceSpec, sched: &str) -> ServiceOpts {
        ServiceOpts {
            service,
            scheduler: sched.into(),
            sched_flags: vec![],
            persistent: None,
            netmask: Netmask::full(service.is_ipv6()),
            ops: false,
            synproxy: false,
        }
    }

    #[test]
    fn synproxy_option() {
        let t = tcp("10.0.0.1:80");
        let mut o = svc(t, "rr");
        o.synproxy = true;
        assert_eq!(
            p("-A -t 10.0.0.1:80 -s rr -j enable"),
            Ok(Command::AddService(o.clone()))
        );
        assert_eq!(
            p("-E -t 10.0.0.1:80 -s rr --synproxy=enable"),
            Ok(Command::EditService(o))
        );
        assert_eq!(
            p("-E -t 10.0.0.1:80 -s rr -j disable"),
            Ok(Command::EditService(svc(t, "rr")))
        );
        let e = p("-A -t 10.0.0.1:80 -j on").unwrap_err();
        assert_eq!(e, AdmError::IllegalSynproxy("on".into()));
        assert!(e.is_usage());
        assert_eq!(
            p("-A -u 10.0.0.1:53 -j enable"),
            Err(AdmError::SynproxyNotTcp)
        );
        assert_eq!(
            p("-a -t 10.0.0.1:80 -r 10.0.1.1 -m -j enable"),
            Err(AdmError::IllegalOption {
                opt: "synproxy",
                cmd: "add-server"
            })
        );
        assert_eq!(
            p("-A -t 10.0.0.1:80 -j enable -j enable"),
            Err(AdmError::MultipleOption("synproxy"))
        );
    }

    fn srv(service: ServiceSpec, server: &str, forward: Forward) -> ServerOpts {
        ServerOpts {
            service,
            server: server.parse().unwrap(),
            forward,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
        }
    }

    fn list() -> ListOpts {
        ListOpts::default()
    }

    #[test]
    fn service_commands_and_defaults() {
        let t = tcp("207.175.44.110:80");
        assert_eq!(
            p("-A -t 207.175.44.110:80"),
            Ok(Command::AddService(svc(t, "wlc")))
        );
        assert_eq!(
            p("--add-service --tcp-service 207.175.44.110:80 --scheduler rr"),
            Ok(Command::AddService(svc(t, "rr")))
        );
        assert_eq!(
            p("-E -t 207.175.44.110:80 -s rr"),
            Ok(Command::EditService(svc(t, "rr")))
        );
        assert_eq!(
            p("--edit-service -t 207.175.44.110:80"),
            Ok(Command::EditService(svc(t, "wlc")))
        );
        assert_eq!(p("-D -t 207.175.44.110:80"), Ok(Command::DeleteService(t)));
        assert_eq!(
            p("--delete-service -u 10.0.0.1:53"),
            Ok(Command::DeleteService(udp("10.0.0.1:53")))
        );
        assert_eq!(
            p("-D -f 7"),
            Ok(Command::DeleteService(ServiceSpec::Fwmark {
                mark: 7,
                ipv6: false
            }))
        );
        assert_eq!(
            p("-D --fwmark-service=4294967295"),
            Ok(Command::DeleteService(ServiceSpec::Fwmark {
                mark: u32::MAX,
                ipv6: false
            }))
        );
        assert_eq!(
            p("-D -t localhost:80"),
            Ok(Command::DeleteService(tcp("127.0.0.1:80")))
        );
    }

    #[test]
    fn service_options() {
        let u = udp("10.0.0.1:53");
        let mut o = svc(u, "sh");
        o.sched_flags = vec!["sh-fallback".into(), "sh-port".into()];
        o.persistent = Some(60);
        o.netmask = Netmask::V4(Ipv4Addr::new(255, 255, 255, 0));
        o.ops = true;
        assert_eq!(
            p("-A -u 10.0.0.1:53 -s sh -b sh-port,sh-fallback -p 60 -M 255.255.255.0 -o"),
            Ok(Command::AddService(o.clone()))
        );
        assert_eq!(
            p("-A --udp-service=10.0.0.1:53 --scheduler=sh --sched-flags=sh-port,sh-fallback,sh-port \
               --persistent=60 --netmask=255.255.255.0 --ops"),
            Ok(Command::AddService(o))
        );
        // flag-N aliases become the scheduler's names, in bit order; flag-3 has none for sh/mh.
        let Ok(Command::AddService(o)) = p("-A -t 1.1.1.1:80 -s mh -b flag-2,flag-1,flag-3") else {
            panic!()
        };
        assert_eq!(o.sched_flags, ["mh-fallback", "mh-port"]);
        let Ok(Command::AddService(o)) = p("-A -t 1.1.1.1:80 -s rr -b flag-3,flag-1") else {
            panic!()
        };
        assert_eq!(o.sched_flags, ["flag-1", "flag-3"]);
    }

    #[test]
    fn optional_persistent_value() {
        let get = |line: &str| match p(line) {
            Ok(Command::AddService(o)) => o.persistent,
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(get("-A -t 1.1.1.1:80 -p"), Some(300));
        assert_eq!(get("-A -t 1.1.1.1:80 -p -s rr"), Some(300));
        assert_eq!(get("-A -t 1.1.1.1:80 -p 60 -s rr"), Some(60));
        assert_eq!(get("-A -t 1.1.1.1:80 -p60"), Some(60));
        assert_eq!(get("-A -t 1.1.1.1:80 --persistent"), Some(300));
        assert_eq!(
            get("-A -t 1.1.1.1:80 --persistent 2678400"),
            Some(2_678_400)
        );
        assert_eq!(get("-A -t 1.1.1.1:80 --persistent=1"), Some(1));
        assert_eq!(get("-A -t 1.1.1.1:0 -p"), Some(300));
        assert_eq!(get("-A -t 1.1.1.1:80"), None);
    }

    #[test]
    fn server_commands_and_port_rules() {
        let t = tcp("207.175.44.110:80");
        // Defaults: -g, weight 1, port from the service.
        assert_eq!(
            p("-a -t 207.175.44.110:80 -r 172.16.0.2"),
            Ok(Command::AddServer(srv(t, "172.16.0.2:80", Forward::Dr)))
        );
        // -g and -i force the service port; -m and -b keep the given one.
        assert_eq!(
            p("-a -t 207.175.44.110:80 -r 172.16.0.2:8080 -g"),
            Ok(Command::AddServer(srv(t, "172.16.0.2:80", Forward::Dr)))
        );
        assert_eq!(
            p("-a -t 207.175.44.110:80 -r 172.16.0.2:8080 --ipip"),
            Ok(Command::AddServer(srv(t, "172.16.0.2:80", Forward::Tun)))
        );
        assert_eq!(
            p("-a -t 207.175.44.110:80 -r 172.16.0.2:8080 -i --tun-type ipip"),
            Ok(Command::AddServer(srv(t, "172.16.0.2:80", Forward::Tun)))
        );
        assert_eq!(
            p("-e -t 207.175.44.110:80 -r 172.16.0.2:8080 --ipip --tun-type=ipip"),
            Ok(Command::EditServer(srv(t, "172.16.0.2:80", Forward::Tun)))
        );
        assert_eq!(
            p("-a -t 207.175.44.110:80 -r 172.16.0.2:8080 -m"),
            Ok(Command::AddServer(srv(t, "172.16.0.2:8080", Forward::Nat)))
        );
        assert_eq!(
            p("-a -r 172.16.0.2 --masquerading -t 207.175.44.110:80"),
            Ok(Command::AddServer(srv(t, "172.16.0.2:80", Forward::Nat)))
        );
        assert_eq!(
            p("-a -t 207.175.44.110:80 -r 172.16.0.2:8080 -b"),
            Ok(Command::AddServer(srv(
                t,
                "172.16.0.2:8080",
                Forward::FullNat
            )))
        );
        assert_eq!(
            p("-e -t 207.175.44.110:80 -r 172.16.0.2:8080 --fullnat"),
            Ok(Command::EditServer(srv(
                t,
                "172.16.0.2:8080",
                Forward::FullNat
            )))
        );
        // fwmark services keep the given port with -g.
        assert_eq!(
            p("-a -f 1 -r 172.16.0.2:8080 -g"),
            Ok(Command::AddServer(srv(
                ServiceSpec::Fwmark {
                    mark: 1,
                    ipv6: false
                },
                "172.16.0.2:8080",
                Forward::Dr
            )))
        );
        let mut o = srv(t, "172.16.0.2:8080", Forward::Nat);
        (o.weight, o.u_threshold, o.l_threshold) = (65535, 100, 0);
        assert_eq!(
            p("-e -t 207.175.44.110:80 -r 172.16.0.2:8080 -m -w 65535 -x 100 -y 0"),
            Ok(Command::EditServer(o.clone()))
        );
        assert_eq!(
            p(
                "--edit-server -t 207.175.44.110:80 --real-server=172.16.0.2:8080 --masquerading \
               --weight=65535 --u-threshold=100 --l-threshold=0"
            ),
            Ok(Command::EditServer(o.clone()))
        );
        // Attached values in clusters: -w5, -mw5.
        o.weight = 0;
        o.u_threshold = 0;
        assert_eq!(
            p("-e -t 207.175.44.110:80 -r 172.16.0.2:8080 -mw0"),
            Ok(Command::EditServer(o))
        );
        assert_eq!(
            p("-d -t 207.175.44.110:80 -r 172.16.0.2"),
            Ok(Command::DeleteServer {
                service: t,
                server: "172.16.0.2:80".parse().unwrap()
            })
        );
        assert_eq!(
            p("--delete-server -t 207.175.44.110:80 -r 172.16.0.2:8080"),
            Ok(Command::DeleteServer {
                service: t,
                server: "172.16.0.2:8080".parse().unwrap()
            })
        );
    }

    #[test]
    fn combined_short_options() {
        let t = tcp("1.2.3.4:80");
        assert_eq!(p("-At 1.2.3.4:80"), Ok(Command::AddService(svc(t, "wlc"))));
        assert_eq!(
            p("-At1.2.3.4:80 -srr"),
            Ok(Command::AddService(svc(t, "rr")))
        );
        assert_eq!(
            p("-at 1.2.3.4:80 -mr 5.6.7.8"),
            Ok(Command::AddServer(srv(t, "5.6.7.8:80", Forward::Nat)))
        );
        let nc = ListOpts {
            numeric: true,
            connection: true,
            ..list()
        };
        assert_eq!(p("-Lnc"), Ok(Command::List(nc.clone())));
        assert_eq!(p("-lnc"), Ok(Command::List(nc.clone())));
        assert_eq!(p("-L -n -c"), Ok(Command::List(nc.clone())));
        assert_eq!(p("--list --numeric --connection"), Ok(Command::List(nc)));
        assert_eq!(
            p("-Ln"),
            Ok(Command::List(ListOpts {
                numeric: true,
                ..list()
            }))
        );
        assert_eq!(p("-Sn"), Ok(Command::Save { numeric: true }));
    }

    #[test]
    fn list_options() {
        assert_eq!(p(""), Ok(Command::List(list())));
        assert_eq!(p("ipvsadm"), Ok(Command::List(list())));
        assert_eq!(p("-L"), Ok(Command::List(list())));
        assert_eq!(p("-L --sort"), Ok(Command::List(list())));
        let all = ListOpts {
            service: Some(tcp("1.2.3.4:80")),
            numeric: true,
            stats: true,
            rate: true,
            thresholds: true,
            persistent_conn: true,
            exact: true,
            nosort: true,
            tun_info: true,
            ..list()
        };
        assert_eq!(
            p("-L -n -t 1.2.3.4:80 --stats --rate --thresholds --persistent-conn --exact --nosort --tun-info"),
            Ok(Command::List(all.clone()))
        );
        assert_eq!(
            p("-lnX -t 1.2.3.4:80 --stats --rate --thresholds --persistent-conn --nosort --tun-info"),
            Ok(Command::List(all))
        );
        assert_eq!(
            p("-L --timeout"),
            Ok(Command::List(ListOpts {
                timeout: true,
                ..list()
            }))
        );
        assert_eq!(
            p("-L --daemon"),
            Ok(Command::List(ListOpts {
                daemon: true,
                ..list()
            }))
        );
        assert_eq!(
            p("-L -c --persistent-conn"),
            Ok(Command::List(ListOpts {
                connection: true,
                persistent_conn: true,
                ..list()
            }))
        );
    }

    #[test]
    fn other_commands() {
        assert_eq!(p("-C"), Ok(Command::Clear));
        assert_eq!(p("--clear"), Ok(Command::Clear));
        assert_eq!(p("-R"), Ok(Command::Restore));
        assert_eq!(p("--restore"), Ok(Command::Restore));
        assert_eq!(p("-S"), Ok(Command::Save { numeric: false }));
        assert_eq!(p("--save -n"), Ok(Command::Save { numeric: true }));
        assert_eq!(p("-Z"), Ok(Command::Zero(None)));
        assert_eq!(
            p("--zero -u 10.0.0.1:53"),
            Ok(Command::Zero(Some(udp("10.0.0.1:53"))))
        );
        assert_eq!(
            p("--set 900 120 300"),
            Ok(Command::SetTimeouts {
                tcp: 900,
                tcp_fin: 120,
                udp: 300
            })
        );
        assert_eq!(
            p("ipvsadm --set 0 0 2678400"),
            Ok(Command::SetTimeouts {
                tcp: 0,
                tcp_fin: 0,
                udp: 2_678_400
            })
        );
        assert_eq!(p("-h"), Ok(Command::Help));
        assert_eq!(p("--help whatever -z"), Ok(Command::Help));
        assert_eq!(p("-v"), Ok(Command::Version));
        assert_eq!(p("--version"), Ok(Command::Version));
        assert_eq!(p("-- -L"), Err(AdmError::NoCommand));
    }

    /// The lines of `text` naming option `opt` (`--stats`, `-X`) as a whole word.
    fn mentions<'a>(text: &'a str, opt: &str) -> Vec<&'a str> {
        let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-');
        text.lines()
            .filter(|line| {
                line.match_indices(opt).any(|(i, _)| {
                    !word(line[..i].chars().next_back())
                        && !word(line[i + opt.len()..].chars().next())
                })
            })
            .collect()
    }

    #[test]
    fn help_lists_every_option_and_marks_the_unsupported() {
        let help = crate::format::usage();
        for &(long, short, _, tag) in OPTIONS {
            let lines = mentions(&help, &format!("--{long}"));
            assert!(!lines.is_empty(), "--{long} missing from -h");
            if let Some(c) = short {
                assert!(
                    !mentions(&help, &format!("-{c}")).is_empty(),
                    "-{c} missing from -h"
                );
            }
            let unsupported = matches!(
                tag,
                Tag::Sctp | Tag::Fwmark | Tag::Ipv6 | Tag::Pe | Tag::TunOpt
            );
            if unsupported {
                assert!(
                    lines.iter().any(|l| l.contains("not supported")),
                    "--{long}: {lines:?}"
                );
            }
        }
        let tun = mentions(&help, "--tun-type");
        assert!(
            tun.iter().any(|l| l.contains("gue and gre: not supported")),
            "{tun:?}"
        );
    }

    #[test]
    fn restore_lines() {
        assert_eq!(parse_restore_line("   "), Ok(None));
        assert_eq!(parse_restore_line("ipvsadm"), Ok(None));
        assert_eq!(parse_restore_line(""), Ok(None));
        assert_eq!(parse_restore_line("\n"), Ok(None));
        assert_eq!(parse_restore_line("# saved by tapvsadm -S"), Ok(None));
        assert_eq!(parse_restore_line("  \t#-A -t 1.2.3.4:80"), Ok(None));
        assert_eq!(parse_restore_line("#"), Ok(None));
        // A `#` that does not start the line is no comment.
        assert_eq!(
            parse_restore_line("-A -t 1.2.3.4:80 # web"),
            Err(AdmError::UnexpectedArgument("#".into()))
        );
        assert_eq!(
            parse_restore_line("ipvsadm -A -t 1.2.3.4:80 -s rr\n"),
            Ok(Some(Command::AddService(svc(tcp("1.2.3.4:80"), "rr"))))
        );
        assert_eq!(
            parse_restore_line("  -a\t-t 1.2.3.4:80 -r 5.6.7.8 -m -w 1"),
            Ok(Some(Command::AddServer(srv(
                tcp("1.2.3.4:80"),
                "5.6.7.8:80",
                Forward::Nat
            ))))
        );
        let e = parse_restore_line("-R").unwrap_err();
        assert_eq!((e, 2), (AdmError::NestedRestore, 2));
    }

    #[test]
    fn sync_daemon_commands() {
        assert_eq!(
            p("--start-daemon backup --mcast-interface int --syncid 9 --sync-maxlen 1400 --mcast-group 239.1.2.3 --mcast-port 9000 --mcast-ttl 1").unwrap(),
            Command::StartDaemon(DaemonOpts {
                role: DaemonRole::Backup,
                mcast_interface: Some("int".into()),
                syncid: Some(9),
                sync_maxlen: Some(1400),
                mcast_group: Some("239.1.2.3".into()),
                mcast_port: Some(9000),
                mcast_ttl: Some(1),
            })
        );
        assert_eq!(
            p("--stop-daemon master").unwrap(),
            Command::StopDaemon(DaemonRole::Master)
        );
        let Command::StartDaemon(o) = p("--start-daemon master").unwrap() else {
            panic!("start-daemon");
        };
        assert_eq!(
            (o.role, o.syncid, o.mcast_interface),
            (DaemonRole::Master, None, None)
        );
    }

    /// Names as a test wants them: web = 10.0.0.5, http/tcp = 80, domain/udp = 53.
    struct Fake;

    impl Resolver for Fake {
        fn host(&self, name: &str) -> Option<Ipv4Addr> {
            (name == "web").then_some(Ipv4Addr::new(10, 0, 0, 5))
        }

        fn host6(&self, name: &str) -> Option<Ipv6Addr> {
            (name == "web6").then(|| "2001:db8::5".parse().unwrap())
        }

        fn service(&self, name: &str, proto: Protocol) -> Option<u16> {
            match (name, proto) {
                ("http", Protocol::Tcp) => Some(80),
                ("domain", _) => Some(53),
                _ => None,
            }
        }
    }

    fn resolved(line: &str) -> Result<String, AdmError> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        resolve(&args, &Fake).map(|a| a.join(" "))
    }

    #[test]
    fn ipv6_names_are_resolved_in_brackets() {
        for (line, want) in [
            ("-A -t [web6]:http -s rr", "-A -t [2001:db8::5]:80 -s rr"),
            ("-A -t[web6]:http", "-A -t[2001:db8::5]:80"),
            (
                "-A --udp-service=[web6]:domain",
                "-A --udp-service=[2001:db8::5]:53",
            ),
            (
                "-a -t [2001:db8::1]:80 -r [web6]:http -m",
                "-a -t [2001:db8::1]:80 -r [2001:db8::5]:80 -m",
            ),
            ("-A -t [2001:db8::1]:http", "-A -t [2001:db8::1]:80"),
            // An IPv4 real server of an IPv6 FullNAT service: a bare name is IPv4.
            (
                "-a -t [2001:db8::1]:80 -r web:http -b",
                "-a -t [2001:db8::1]:80 -r 10.0.0.5:80 -b",
            ),
            // Literals, and what parse reports itself, are left alone.
            ("-A -t [2001:db8::1]:80", "-A -t [2001:db8::1]:80"),
            ("-A -t 2001:db8::1 -p", "-A -t 2001:db8::1 -p"),
            ("-A -t [web6]", "-A -t [web6]"),
            ("-A -t [web6]80", "-A -t [web6]80"),
        ] {
            assert_eq!(resolved(line), Ok(want.to_string()), "{line}");
        }
        for (line, err) in [
            // IPv4 names are not looked up for brackets, nor IPv6 names without them.
            ("-A -t [web]:80", AdmError::IllegalVirtualServer),
            ("-A -t web6:80", AdmError::IllegalVirtualServer),
            ("-A -t [web6]:nosuch", AdmError::IllegalVirtualServer),
            ("-A -t [1.2.3.4]:80", AdmError::IllegalVirtualServer),
            ("-A -t [2001:db8::zz]:80", AdmError::IllegalVirtualServer),
            ("-A -t 2001:db8::zz:80", AdmError::IllegalVirtualServer),
            (
                "-a -t [2001:db8::1]:80 -r [nosuch]:80",
                AdmError::IllegalRealServer,
            ),
        ] {
            assert_eq!(resolved(line), Err(err), "{line}");
        }
    }

    #[test]
    fn ipv6_syntax() {
        let t6 = tcp("[2001:db8:f::80]:80");
        assert_eq!(
            p("-A -t [2001:db8:f::80]:80 -s rr"),
            Ok(Command::AddService(svc(t6, "rr")))
        );
        // The address is compared, not its spelling.
        assert_eq!(
            p("-A -t [2001:DB8:F:0:0:0:0:80]:80 -s rr"),
            Ok(Command::AddService(svc(t6, "rr")))
        );
        // A bare address is port 0 (persistent services only); -M is a prefix length.
        let mut o = svc(tcp("[2001:db8:f::80]:0"), "wlc");
        (o.persistent, o.netmask) = (Some(300), Netmask::V6(128));
        assert_eq!(
            p("-A -t 2001:db8:f::80 -p"),
            Ok(Command::AddService(o.clone()))
        );
        o.netmask = Netmask::V6(64);
        assert_eq!(
            p("-A -t 2001:db8:f::80 -p -M 64"),
            Ok(Command::AddService(o.clone()))
        );
        // Whatever the order of -M and -t.
        assert_eq!(
            p("-A -p -M 64 -t 2001:db8:f::80"),
            Ok(Command::AddService(o.clone()))
        );
        // -6 after -M makes the fwmark service IPv6: -M is a prefix length.
        let mut f = svc(
            ServiceSpec::Fwmark {
                mark: 2,
                ipv6: true,
            },
            "wlc",
        );
        (f.persistent, f.netmask) = (Some(300), Netmask::V6(64));
        assert_eq!(p("-A -f 2 -M 64 -p -6"), Ok(Command::AddService(f)));
        o.netmask = Netmask::V6(1);
        assert_eq!(
            p("-A -t 2001:db8:f::80 -p --netmask=1"),
            Ok(Command::AddService(o))
        );
        let u6 = udp("[2001:db8:f::80]:53");
        let mut o = svc(u6, "sh");
        o.ops = true;
        assert_eq!(
            p("-A -u [2001:db8:f::80]:53 -s sh -o"),
            Ok(Command::AddService(o))
        );
        // Real servers: same family; -g and -i force the service port.
        assert_eq!(
            p("-a -t [2001:db8:f::80]:80 -r [2001:db8:5::2]:8080 -m"),
            Ok(Command::AddServer(srv(
                t6,
                "[2001:db8:5::2]:8080",
                Forward::Nat
            )))
        );
        assert_eq!(
            p("-a -t [2001:db8:f::80]:80 -r 2001:db8:5::2"),
            Ok(Command::AddServer(srv(
                t6,
                "[2001:db8:5::2]:80",
                Forward::Dr
            )))
        );
        assert_eq!(
            p("-a -t [2001:db8:f::80]:80 -r [2001:db8:5::2]:8080 -i"),
            Ok(Command::AddServer(srv(
                t6,
                "[2001:db8:5::2]:80",
                Forward::Tun
            )))
        );
        // NAT64: an IPv4 FullNAT real server of an IPv6 service.
        assert_eq!(
            p("-a -t [2001:db8:f::80]:80 -r 172.16.0.2:8080 -b"),
            Ok(Command::AddServer(srv(
                t6,
                "172.16.0.2:8080",
                Forward::FullNat
            )))
        );
        assert_eq!(
            p("-e -t [2001:db8:f::80]:80 -r 172.16.0.2 --fullnat -w 3"),
            Ok(Command::EditServer(ServerOpts {
                weight: 3,
                ..srv(t6, "172.16.0.2:80", Forward::FullNat)
            }))
        );
        // -d looks the server up whatever its family (runtime: "No such destination").
        assert_eq!(
            p("-d -t [2001:db8:f::80]:80 -r 172.16.0.2"),
            Ok(Command::DeleteServer {
                service: t6,
                server: "172.16.0.2:80".parse().unwrap()
            })
        );
        assert_eq!(
            p("-L -n -t [2001:db8:f::80]:80 --stats"),
            Ok(Command::List(ListOpts {
                service: Some(t6),
                numeric: true,
                stats: true,
                ..list()
            }))
        );
        // -6 after -f: an IPv6 fwmark service; its real servers are IPv6, ports kept.
        let f6 = ServiceSpec::Fwmark {
            mark: 7,
            ipv6: true,
        };
        let mut o = svc(f6, "rr");
        (o.persistent, o.netmask) = (Some(60), Netmask::V6(48));
        assert_eq!(
            p("-A -f 7 -6 -s rr -p 60 -M 48"),
            Ok(Command::AddService(o.clone()))
        );
        assert_eq!(
            p("-A -f7 --ipv6 -s rr -p 60 -M 48 -6"),
            Ok(Command::AddService(o))
        );
        assert_eq!(
            p("-a -f 7 -6 -r [2001:db8:5::2]:8080 -g"),
            Ok(Command::AddServer(srv(
                f6,
                "[2001:db8:5::2]:8080",
                Forward::Dr
            )))
        );
        assert_eq!(p("-D -f 7 -6"), Ok(Command::DeleteService(f6)));
        assert_eq!(p("-Z -f 7 -6"), Ok(Command::Zero(Some(f6))));
        assert_eq!(f6.rule(), "-f 7 -6");
        assert_eq!(t6.rule(), "-t [2001:db8:f::80]:80");
        assert!(t6.is_ipv6() && f6.is_ipv6());
        // Restore lines take the same syntax.
        assert_eq!(
            parse_restore_line("ipvsadm -A -t [2001:db8:f::80]:80 -s rr"),
            Ok(Some(Command::AddService(svc(t6, "rr"))))
        );
        // The netmask serialises as ipvsadm writes it: dotted, or a number.
        assert_eq!(
            serde_json::to_string(&[Netmask::V4(Ipv4Addr::new(255, 255, 0, 0)), Netmask::V6(64)])
                .unwrap(),
            r#"["255.255.0.0",64]"#
        );
        let back: Vec<Netmask> = serde_json::from_str(r#"["255.255.0.0",64]"#).unwrap();
        assert_eq!(
            back,
            [Netmask::V4(Ipv4Addr::new(255, 255, 0, 0)), Netmask::V6(64)]
        );
    }

    #[test]
    fn names_are_resolved_before_parsing() {
        // Every spelling of the value: separate, clustered, attached, long, long with `=`.
        for (line, want) in [
            ("-A -t localhost:http -s rr", "-A -t 127.0.0.1:80 -s rr"),
            ("-A -t web:http", "-A -t 10.0.0.5:80"),
            ("-At web:http", "-At 10.0.0.5:80"),
            ("-A -tweb:http", "-A -t10.0.0.5:80"),
            ("-A --tcp-service web", "-A --tcp-service 10.0.0.5"),
            ("-A --tcp-service=web:http", "-A --tcp-service=10.0.0.5:80"),
            ("-A -u web:domain -s rr", "-A -u 10.0.0.5:53 -s rr"),
            // -r's service name is looked up for the service's protocol.
            (
                "-a -u 10.0.0.1:53 -r web:domain -m",
                "-a -u 10.0.0.1:53 -r 10.0.0.5:53 -m",
            ),
            (
                "-a -t web:http -r web -m",
                "-a -t 10.0.0.5:80 -r 10.0.0.5 -m",
            ),
            ("ipvsadm -A -t web:80", "ipvsadm -A -t 10.0.0.5:80"),
            ("-L -t web:http", "-L -t 10.0.0.5:80"),
            // Literals and what parse reports itself are left alone.
            ("-A -t 1.2.3.4:80 -s rr", "-A -t 1.2.3.4:80 -s rr"),
            ("-A -t localhost:80", "-A -t localhost:80"),
            ("-A -t [::1]:80", "-A -t [::1]:80"),
            ("-A -t 80", "-A -t 80"),
            ("-Lnz -t web:http", "-Lnz -t web:http"),
            ("-A -s rr -t", "-A -s rr -t"),
        ] {
            assert_eq!(resolved(line), Ok(want.to_string()), "{line}");
        }
        assert_eq!(
            parse(&resolve(&["-A".into(), "-t".into(), "web:http".into()], &Fake).unwrap()),
            p("-A -t 10.0.0.5:80")
        );
        // Unknown names are ipvsadm's usage errors (exit 2).
        for (line, err) in [
            ("-A -t nosuch:80", AdmError::IllegalVirtualServer),
            ("-A -t web:nosuch", AdmError::IllegalVirtualServer),
            ("-A -u web:http", AdmError::IllegalVirtualServer),
            ("-A -t web:99999", AdmError::IllegalVirtualServer),
            ("-A -t :http", AdmError::IllegalVirtualServer),
            ("-A -t 1.2.3:80", AdmError::IllegalVirtualServer),
            ("-A -t 10.1:http", AdmError::IllegalVirtualServer),
            ("-A -t web:", AdmError::IllegalVirtualServer),
            ("-a -t web:http -r nosuch:http", AdmError::IllegalRealServer),
            ("-a -t web:http -r web:gopher", AdmError::IllegalRealServer),
        ] {
            assert_eq!(resolved(line), Err(err.clone()), "{line}");
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn errors_messages_and_exit_codes() {
        let hint = "Try `tapvsadm -h' or 'tapvsadm --help' for more information.";
        let cases: Vec<(&str, String)> = vec![
            ("-z", format!("-z: unknown option\n{hint}")),
            ("-L -z", format!("-z: unknown option\n{hint}")),
            ("-Lnz", format!("-z: unknown option\n{hint}")),
            ("-L --frobnicate=1", format!("--frobnicate=1: unknown option\n{hint}")),
            ("-A -t", format!("-t: missing argument\n{hint}")),
            ("-A --scheduler", format!("--scheduler: missing argument\n{hint}")),
            ("-L --stats=1", format!("--stats: option does not take an argument\n{hint}")),
            ("-n -L", hint.to_string()),
            ("foo", hint.to_string()),
            ("-A -t 1.2.3.4:80 -D", "invalid option `-D'".into()),
            ("-L -h", "invalid option `-h'".into()),
            ("-L --set", "invalid option `--set'".into()),
            ("-A -t 1.2.3.4:80 -u 1.2.3.5:80", "multiple 'service-address' options specified".into()),
            ("-a -t 1.2.3.4:80 -r 1.1.1.1 -m -g", "multiple 'forwarding-method' options specified".into()),
            ("-A -t 1.2.3.4:80 -p -p 5", "multiple 'persistent' options specified".into()),
            ("-L -n -n", "multiple 'numeric' options specified".into()),
            ("-A -t foo:80", "illegal virtual server address[:port] specified".into()),
            ("-A -t 1.2.3.4:http", "illegal virtual server address[:port] specified".into()),
            ("-A -t 1.2.3.4:65536", "illegal virtual server address[:port] specified".into()),
            ("-A -t 80", "illegal virtual server address[:port] specified".into()),
            ("-A -t 1.2.3:80", "illegal virtual server address[:port] specified".into()),
            ("-a -t 1.2.3.4:80 -r 1.1.1", "illegal real server address[:port] specified".into()),
            ("-a -t 1.2.3.4:80 -r example.com", "illegal real server address[:port] specified".into()),
            ("-a -t 1.2.3.4:80 -r 1.1.1.1 -w 65536", "illegal weight specified".into()),
            ("-a -t 1.2.3.4:80 -r 1.1.1.1 -w -1", "illegal weight specified".into()),
            ("-a -t 1.2.3.4:80 -r 1.1.1.1 -w 1x", "illegal weight specified".into()),
            ("-a -t 1.2.3.4:80 -r 1.1.1.1 -x 65536", "illegal u_threshold specified".into()),
            ("-a -t 1.2.3.4:80 -r 1.1.1.1 -y abc", "illegal l_threshold specified".into()),
            ("-A -t 1.2.3.4:80 -p 0", "invalid timeout value `0' specified".into()),
            ("-A -t 1.2.3.4:80 -p 2678401", "invalid timeout value `2678401' specified".into()),
            ("-A -t 1.2.3.4:80 -p abc", "invalid timeout value `abc' specified".into()),
            ("-A -t 1.2.3.4:80 -M 255.255.255", "illegal virtual server persistent mask specified".into()),
            ("-A -f 0", "invalid fwmark value `0' specified".into()),
            ("-A -f 4294967296", "invalid fwmark value `4294967296' specified".into()),
            ("-A -t 1.2.3.4:80 -s rr -b foo", "invalid scheduler flag `foo'".into()),
            ("-A -t 1.2.3.4:80 -s rr -b sh-port", "incompatible scheduler flag `sh-port'".into()),
            ("-A -t 1.2.3.4:80 -b mh-fallback", "incompatible scheduler flag `mh-fallback'".into()),
            ("-A", "You need to supply the 'service-address' option for the 'add-service' command".into()),
            ("-a -t 1.2.3.4:80", "You need to supply the 'real-server' option for the 'add-server' command".into()),
            ("-a -r 1.1.1.1 -m", "You need to supply the 'service-address' option for the 'add-server' command".into()),
            ("-d -t 1.2.3.4:80", "You need to supply the 'real-server' option for the 'delete-server' command".into()),
            ("-D -t 1.2.3.4:80 -s rr", "Illegal 'scheduler' option with the 'delete-service' command".into()),
            ("-A -t 1.2.3.4:80 -w 3", "Illegal 'weight' option with the 'add-service' command".into()),
            ("-A -t 1.2.3.4:80 -r 1.1.1.1", "Illegal 'real-server' option with the 'add-service' command".into()),
            ("-a -t 1.2.3.4:80 -r 1.1.1.1 --sched-flags flag-1", "Illegal 'sched-flags' option with the 'add-server' command".into()),
            ("-a -t 1.2.3.4:80 -r 1.1.1.1 -p", "Illegal 'persistent' option with the 'add-server' command".into()),
            ("-d -t 1.2.3.4:80 -r 1.1.1.1 -b", "Illegal 'forwarding-method' option with the 'delete-server' command".into()),
            ("-C -n", "Illegal 'numeric' option with the 'flush' command".into()),
            ("-S -c", "Illegal 'connection' option with the 'save' command".into()),
            ("-Z --stats", "Illegal 'stats' option with the 'zero' command".into()),
            ("--set 1 2 3 -n", "Illegal 'numeric' option with the 'set' command".into()),
            ("-L -s rr", "Illegal 'scheduler' option with the 'list' command".into()),
            ("-L -o", "Illegal 'ops' option with the 'list' command".into()),
            ("-L -b flag-1", "Illegal 'sched-flags' option with the 'list' command".into()),
            ("-L -c --timeout", "The option 'timeout' conflicts with the 'connection' option in the 'list' command".into()),
            ("-L -t 1.2.3.4:80 -c", "The option 'service-address' conflicts with the 'connection' option in the 'list' command".into()),
            ("-L --daemon --timeout", "The option 'daemon' conflicts with the 'timeout' option in the 'list' command".into()),
            ("-L -c --stats", "options conflicts in the list command".into()),
            ("-L --timeout --persistent-conn", "options conflicts in the list command".into()),
            ("-A -t 1.2.3.4", "Zero port specified for non-persistent service".into()),
            ("-E -t 1.2.3.4:0 -s rr", "Zero port specified for non-persistent service".into()),
            ("-A -t 1.2.3.4:80 -o", "One-Packet Scheduling is only for UDP virtual services".into()),
            ("--set 900 120", "--set option requires 3 timeout values".into()),
            ("--set 900 120 x", "invalid timeout value `x' specified".into()),
            ("--set 1 2 2678401", "invalid timeout value `2678401' specified".into()),
            ("--set 1 2 3 4", "unexpected argument 4".into()),
            ("-L foo", "unexpected argument foo".into()),
            ("-A -t 1.2.3.4:80 -- extra", "unexpected argument extra".into()),
            ("-a -t 1.2.3.4:80 -r 1.1.1.1 -m --tun-type ipip", "Tunnel options conflict with forward method".into()),
            ("-a -t 1.2.3.4:80 -r 1.1.1.1 -i --tun-type foo", "illegal tunnel type specified".into()),
            // IPv6, as ipvsadm: brackets need a port, a bare address has none.
            ("-A -t [2001:db8::1]", "illegal virtual server address[:port] specified".into()),
            ("-A -t [2001:db8::1]80", "illegal virtual server address[:port] specified".into()),
            ("-A -t [2001:db8::1]:", "illegal virtual server address[:port] specified".into()),
            ("-A -t [2001:db8::1]:65536", "illegal virtual server address[:port] specified".into()),
            ("-A -t [2001:db8::zz]:80", "illegal virtual server address[:port] specified".into()),
            ("-A -t [1.2.3.4]:80", "illegal virtual server address[:port] specified".into()),
            ("-A -t [2001:db8::1:80", "illegal virtual server address[:port] specified".into()),
            ("-A -t 2001:db8::1", "Zero port specified for non-persistent service".into()),
            ("-a -t [2001:db8::1]:80 -r [2001:db8:5::2", "illegal real server address[:port] specified".into()),
            ("-A -6 -f 1", "-6 used before -f".into()),
            ("-A -t [2001:db8::1]:80 -6", "-6 used before -f".into()),
            ("-L -6", "-6 used before -f".into()),
            ("-A -t [2001:db8::1]:80 -p -M 129", "illegal ipv6 netmask specified".into()),
            ("-A -t [2001:db8::1]:80 -p -M 0", "illegal ipv6 netmask specified".into()),
            ("-A -t [2001:db8::1]:80 -p -M 255.255.255.0", "illegal ipv6 netmask specified".into()),
            ("-A -M 64 -p -t [2001:db8::1]:80 -s rr -w 1", "Illegal 'weight' option with the 'add-service' command".into()),
            ("-A -M 64 -p -t 1.2.3.4:80", "illegal virtual server persistent mask specified".into()),
            ("-A -f 1 -6 -p -M 255.255.0.0", "illegal ipv6 netmask specified".into()),
            ("-A -t 1.2.3.4:80 -p -M 64", "illegal virtual server persistent mask specified".into()),
            ("-a -t [2001:db8::1]:80 -r 10.0.0.2 -m", "Different address family is allowed only for FullNAT servers (-b: an IPv4 real server of an IPv6 service)".into()),
            ("-a -t [2001:db8::1]:80 -r 10.0.0.2 -i", "Different address family is allowed only for FullNAT servers (-b: an IPv4 real server of an IPv6 service)".into()),
            ("-e -t [2001:db8::1]:80 -r 10.0.0.2", "Different address family is allowed only for FullNAT servers (-b: an IPv4 real server of an IPv6 service)".into()),
            ("-a -t 10.0.0.1:80 -r [2001:db8::2]:80 -b", "Different address family is allowed only for FullNAT servers (-b: an IPv4 real server of an IPv6 service)".into()),
            ("-a -f 1 -r [2001:db8::2]:80 -m", "Different address family is allowed only for FullNAT servers (-b: an IPv4 real server of an IPv6 service)".into()),
            ("-a -f 1 -6 -r 10.0.0.2 -m", "Different address family is allowed only for FullNAT servers (-b: an IPv4 real server of an IPv6 service)".into()),
            ("-A --sctp-service 1.2.3.4:80", "SCTP (--sctp-service) is not supported yet by tapvs".into()),
            ("--start-daemon primary", "illegal start-daemon parameter specified".into()),
            ("--stop-daemon x", "illegal stop-daemon parameter specified".into()),
            ("--start-daemon master --syncid 256", "illegal syncid specified".into()),
            ("--start-daemon master --syncid x", "illegal syncid specified".into()),
            ("--start-daemon master --mcast-port 0", "illegal mcast-port specified".into()),
            ("--start-daemon master --mcast-group nope", "illegal mcast-group specified".into()),
            ("--start-daemon master --syncid 1 --syncid 2", "multiple 'syncid' options specified".into()),
            ("--start-daemon master -n", "invalid option `-n'".into()),
            ("--stop-daemon master --syncid 1", "invalid option `--syncid'".into()),
            ("--start-daemon master extra", "unexpected argument extra".into()),
            ("-A -t 1.2.3.4:80 -p --pe sip", "persistence engines (--pe) is not supported yet by tapvs".into()),
            ("-a -t 1.2.3.4:80 -r 1.1.1.1 -i --tun-type gue", "GUE tunnels (--tun-type gue) is not supported yet by tapvs".into()),
            ("-a -t 1.2.3.4:80 -r 1.1.1.1 -i --tun-type gre", "GRE tunnels (--tun-type gre) is not supported yet by tapvs".into()),
            ("-e -t 1.2.3.4:80 -r 1.1.1.1 -i --tun-type=gre", "GRE tunnels (--tun-type gre) is not supported yet by tapvs".into()),
            ("-a -t 1.2.3.4:80 -r 1.1.1.1 -i --tun-type GRE", "illegal tunnel type specified".into()),
        ];
        for (line, msg) in cases {
            let e = p(line).expect_err(line);
            assert_eq!(e.to_string(), msg, "{line}");
            assert_eq!(e.exit_code(), 2, "{line}");
            assert!(e.is_usage(), "{line}");
        }
    }

    #[test]
    fn runtime_error_table() {
        for (e, msg) in [
            (AdmError::NoSuchService, "No such service"),
            (AdmError::ServiceExists, "Service already exists"),
            (AdmError::ServiceNotDefined, "Service not defined"),
            (AdmError::DestExists, "Destination already exists"),
            (AdmError::NoSuchDest, "No such destination"),
            (
                AdmError::SchedulerNotFound,
                "Scheduler or persistence engine not found",
            ),
            (AdmError::ThresholdRange, "Numerical result out of range"),
            (
                AdmError::PermissionDenied,
                "Permission denied (you must be root)",
            ),
            (
                AdmError::InvalidOperation,
                "Invalid operation.  Possibly wrong module version, address not unicast, ...",
            ),
            (AdmError::Other("cannot connect".into()), "cannot connect"),
        ] {
            assert_eq!(e.to_string(), msg);
            assert_eq!(e.exit_code(), 1, "{msg}");
            assert!(!e.is_usage());
        }
    }
}
