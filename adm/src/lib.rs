//! The pure core of `tapvsadm`, the ipvsadm-compatible administration command of tapvs, shared
//! by the `tapvsadm` binary and the daemon that executes its commands.
//!
//! Nothing here does I/O: [`cmd`] turns an ipvsadm command line into a typed [`Command`],
//! [`model`] holds what a listing needs (and can apply commands to it in memory),
//! [`mod@format`] renders listings byte for byte as ipvsadm 1.31 does (`-L -n` and its variants,
//! `-c`, `--timeout`, `-S`, with host and service names from [`names`] unless `-n`), and
//! [`message`] holds what travels over the control socket
//! ([`Request`], [`Response`], [`DEFAULT_SOCKET`]). Protocols and forwarding methods are the
//! `modes` crate's [`modes::Protocol`] and [`modes::Forward`]; their ipvsadm spellings live
//! here ([`model::forward_name`], [`cmd::forward_switch`], [`cmd::proto_switch`]). This crate
//! does not depend on the daemon, so `tapvsadm` links none of the data path. Errors of both kinds, usage errors found while parsing and runtime
//! errors reported by the appliance, are one [`AdmError`] whose messages and exit codes are kept
//! in a single table ([`AdmError::exit_code`] and its `Display`). The behaviour follows the
//! published ipvsadm format strings and messages; no ipvsadm code is reused.

#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]
#![forbid(unsafe_code)]

pub mod cmd;
pub mod format;
pub mod message;
pub mod model;
pub mod names;

use std::fmt;

pub use cmd::{
    parse, parse_restore_line, resolve, Command, DaemonOpts, DaemonRole, ListOpts, Netmask,
    ServerOpts, ServiceOpts, ServiceSpec,
};
pub use message::{Request, Response, DEFAULT_SOCKET};
pub use model::{AccessEntry, ConnEntry, DestEntry, Listing, Rate, ServiceEntry, Stats};
pub use names::{Names, Resolver, Services};

/// The program name used in "Try ... -h" hints.
pub const PROGRAM: &str = "tapvsadm";

/// Exit status of a usage (command line) error; ipvsadm exits 2 from its `fail(2, ...)` checks.
pub const EXIT_USAGE: i32 = 2;
/// Exit status of a runtime error (the appliance refused the command), as ipvsadm.
pub const EXIT_RUNTIME: i32 = 1;

/// Everything `tapvsadm` can fail with: usage errors (exit 2) and runtime errors (exit 1).
///
/// `Display` gives the message exactly as ipvsadm prints it on stderr (without a trailing
/// newline; the binary adds one); [`AdmError::exit_code`] gives the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmError {
    /// An option nobody knows, as written (`-z`, `--foo`).
    UnknownOption(String),
    /// An option that needs a value was last on the line.
    MissingArgument(String),
    /// A long option that takes no value was given one (`--stats=1`).
    UnwantedArgument(String),
    /// The first option is not a command (or there is no option at all after arguments).
    NoCommand,
    /// A known option where it cannot appear, e.g. a second command.
    InvalidOption(String),
    /// The same option (by ipvsadm option name) given twice.
    MultipleOption(&'static str),
    /// `-t`/`-u` value not a `host[:port]` (IPv4, `[IPv6]:port` or bare IPv6).
    IllegalVirtualServer,
    /// `-r` value not a `host[:port]` (IPv4, `[IPv6]:port` or bare IPv6).
    IllegalRealServer,
    /// `-w` not in 0..=65535.
    IllegalWeight,
    /// `-x` not in 0..=65535.
    IllegalUThreshold,
    /// `-y` not in 0..=65535.
    IllegalLThreshold,
    /// `-p` or `--set` value not a number in range.
    InvalidTimeout(String),
    /// `-M` of an IPv4 service not an IPv4 address.
    IllegalNetmask,
    /// `-f` not an integer in 1..=4294967295.
    InvalidFwmark(String),
    /// `-b` names an unknown scheduler flag.
    InvalidSchedFlag(String),
    /// `-b` names a flag of another scheduler (`sh-port` with `rr`).
    IncompatibleSchedFlag(String),
    /// `--tun-type` other than ipip, gue or gre (tapvs refuses gue and gre as
    /// [`AdmError::Unsupported`]: it tunnels with ipip only).
    IllegalTunnelType,
    /// Tunnel options on a real server that is not `-i`.
    TunnelOptionConflict,
    /// A compulsory option is missing for the command.
    MissingOption {
        /// ipvsadm option name (`service-address`).
        opt: &'static str,
        /// ipvsadm command name (`add-server`).
        cmd: &'static str,
    },
    /// An option not allowed with the command.
    IllegalOption {
        /// ipvsadm option name.
        opt: &'static str,
        /// ipvsadm command name.
        cmd: &'static str,
    },
    /// Two mutually exclusive options of the command.
    ConflictingOptions {
        /// The later option (by ipvsadm's option order).
        opt: &'static str,
        /// The earlier option.
        other: &'static str,
        /// ipvsadm command name.
        cmd: &'static str,
    },
    /// `-L` with `-c`/`--timeout`/`--daemon` and a statistics format.
    ListConflict,
    /// `-A`/`-E` of a port-0 service without `-p`.
    ZeroPort,
    /// `-o` on a TCP service.
    OpsNotUdp,
    /// `--set` without three values.
    SetNeedsThree,
    /// A positional argument nobody consumes.
    UnexpectedArgument(String),
    /// `-R` inside restore input.
    NestedRestore,
    /// Valid ipvsadm syntax tapvs does not implement yet (SCTP, GUE, ...).
    Unsupported(String),
    /// A bad `--start-daemon`/`--stop-daemon` value: what (`syncid`, `start-daemon
    /// parameter`, ...).
    IllegalDaemonParam(String),
    /// Runtime: the service does not exist (`-E`, `-D`, `-Z`, `-L svc`).
    NoSuchService,
    /// Runtime: `-A` of a service that exists.
    ServiceExists,
    /// Runtime: `-a`/`-e`/`-d` on a service that does not exist.
    ServiceNotDefined,
    /// Runtime: `-a` of a real server that exists.
    DestExists,
    /// Runtime: `-e`/`-d` of a real server that does not exist.
    NoSuchDest,
    /// Runtime: unknown scheduler name or flags it does not accept.
    SchedulerNotFound,
    /// Runtime: `-a`/`-e` with a lower threshold above the upper one (`-y` > `-x`, an absent
    /// `-x` counting as 0); IPVS refuses the server with `ERANGE`, which ipvsadm prints with
    /// `strerror`.
    ThresholdRange,
    /// Runtime: the control socket refused the caller.
    PermissionDenied,
    /// Runtime: the appliance rejected the operation as invalid.
    InvalidOperation,
    /// Runtime: anything else (control socket unreachable, ...), message as given.
    Other(String),
    /// `-j` with a value other than `enable` or `disable`.
    IllegalSynproxy(String),
    /// `-j enable` on a service that is not TCP.
    SynproxyNotTcp,
    /// Runtime: SYNPROXY with a direct-routing or tunnelling real server (replies would bypass
    /// the director).
    SynproxyForward,
    /// `-6` without a fwmark service before it.
    Ipv6BeforeFwmark,
    /// `-M` of an IPv6 service not a prefix length 1..=128.
    IllegalIpv6Netmask,
    /// `-a`/`-e` with a real server of another family than the service's (allowed only for
    /// an IPv4 FullNAT real server of an IPv6 service).
    FamilyMismatch,
}

impl AdmError {
    /// The message and exit status of every error: the one table of `tapvsadm` errors.
    fn entry(&self) -> (i32, String) {
        use AdmError::*;
        let hint = format!("Try `{PROGRAM} -h' or '{PROGRAM} --help' for more information.");
        let u = EXIT_USAGE;
        let r = EXIT_RUNTIME;
        match self {
            UnknownOption(o) => (u, format!("{o}: unknown option\n{hint}")),
            MissingArgument(o) => (u, format!("{o}: missing argument\n{hint}")),
            UnwantedArgument(o) => (u, format!("{o}: option does not take an argument\n{hint}")),
            NoCommand => (u, hint),
            InvalidOption(o) => (u, format!("invalid option `{o}'")),
            MultipleOption(o) => (u, format!("multiple '{o}' options specified")),
            IllegalVirtualServer => (u, "illegal virtual server address[:port] specified".into()),
            IllegalRealServer => (u, "illegal real server address[:port] specified".into()),
            IllegalWeight => (u, "illegal weight specified".into()),
            IllegalUThreshold => (u, "illegal u_threshold specified".into()),
            IllegalLThreshold => (u, "illegal l_threshold specified".into()),
            InvalidTimeout(v) => (u, format!("invalid timeout value `{v}' specified")),
            IllegalNetmask => (u, "illegal virtual server persistent mask specified".into()),
            InvalidFwmark(v) => (u, format!("invalid fwmark value `{v}' specified")),
            InvalidSchedFlag(f) => (u, format!("invalid scheduler flag `{f}'")),
            IncompatibleSchedFlag(f) => (u, format!("incompatible scheduler flag `{f}'")),
            IllegalTunnelType => (u, "illegal tunnel type specified".into()),
            TunnelOptionConflict => (u, "Tunnel options conflict with forward method".into()),
            MissingOption { opt, cmd } => (
                u,
                format!("You need to supply the '{opt}' option for the '{cmd}' command"),
            ),
            IllegalOption { opt, cmd } => (
                u,
                format!("Illegal '{opt}' option with the '{cmd}' command"),
            ),
            ConflictingOptions { opt, other, cmd } => (
                u,
                format!(
                    "The option '{opt}' conflicts with the '{other}' option in the '{cmd}' command"
                ),
            ),
            ListConflict => (u, "options conflicts in the list command".into()),
            ZeroPort => (u, "Zero port specified for non-persistent service".into()),
            OpsNotUdp => (
                u,
                "One-Packet Scheduling is only for UDP virtual services".into(),
            ),
            SetNeedsThree => (u, "--set option requires 3 timeout values".into()),
            UnexpectedArgument(a) => (u, format!("unexpected argument {a}")),
            NestedRestore => (u, hint),
            Unsupported(what) => (u, format!("{what} is not supported yet by tapvs")),
            IllegalDaemonParam(what) => (u, format!("illegal {what} specified")),
            NoSuchService => (r, "No such service".into()),
            ServiceExists => (r, "Service already exists".into()),
            ServiceNotDefined => (r, "Service not defined".into()),
            DestExists => (r, "Destination already exists".into()),
            NoSuchDest => (r, "No such destination".into()),
            SchedulerNotFound => (r, "Scheduler or persistence engine not found".into()),
            ThresholdRange => (r, "Numerical result out of range".into()),
            PermissionDenied => (r, "Permission denied (you must be root)".into()),
            InvalidOperation => (
                r,
                "Invalid operation.  Possibly wrong module version, address not unicast, ..."
                    .into(),
            ),
            Other(m) => (r, m.clone()),
            IllegalSynproxy(v) => (u, format!("illegal synproxy value `{v}' specified (enable or disable)")),
            SynproxyNotTcp => (u, "SYNPROXY is only for TCP virtual services".into()),
            SynproxyForward => (
                r,
                "SYNPROXY needs replies through the director: real servers must be -m or -b, not -g or -i".into(),
            ),
            Ipv6BeforeFwmark => (u, "-6 used before -f".into()),
            IllegalIpv6Netmask => (u, "illegal ipv6 netmask specified".into()),
            FamilyMismatch => (
                u,
                "Different address family is allowed only for FullNAT servers (-b: an IPv4 real server of an IPv6 service)".into(),
            ),
        }
    }

    /// The process exit status for this error: 2 for usage errors, 1 for runtime errors.
    pub fn exit_code(&self) -> i32 {
        self.entry().0
    }

    /// Whether this is a usage error (found while parsing, nothing was changed).
    pub fn is_usage(&self) -> bool {
        self.exit_code() == EXIT_USAGE
    }
}

impl fmt::Display for AdmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.entry().1)
    }
}

impl std::error::Error for AdmError {}
