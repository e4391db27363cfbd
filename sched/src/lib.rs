//! The IPVS schedulers of tapvs: the logic that picks a real server for each
//! new connection of a virtual service. This crate owns the [`Dest`] type
//! (one real server with its weight, connection counters and overload flag),
//! the [`Scheduler`] trait every scheduler implements, and the fourteen
//! schedulers of Linux IPVS (`rr wrr lc wlc lblc lblcr dh sh sed nq fo ovf mh
//! twos`), one module each, built by name through [`build`]. Everything here
//! is pure logic: no I/O, no clock (time comes in through [`Input::now_secs`]),
//! no threads. Schedulers are shared by the data-path workers and called
//! concurrently, so their mutable state lives in atomics (or, for the
//! lblc/lblcr caches, a mutex touched only on new connections).

#![forbid(unsafe_code)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

mod common;
mod dest;

mod dh;
mod fo;
mod lblc;
mod lblcr;
mod lc;
mod mh;
mod nq;
mod ovf;
mod rr;
mod sed;
mod sh;
mod twos;
mod wlc;
mod wrr;

pub use dest::{Dest, MAX_WEIGHT};

/// What a scheduler may look at for one new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Input {
    /// IP protocol number (6 TCP, 17 UDP, 132 SCTP, ...).
    pub proto: u8,
    /// Client (source) address.
    pub src: IpAddr,
    /// Client (source) port; 0 for port-less protocols.
    pub src_port: u16,
    /// Virtual (destination) address of the packet.
    pub dst: IpAddr,
    /// Virtual (destination) port; 0 for port-less protocols.
    pub dst_port: u16,
    /// coarse monotonic time in seconds (for lblc/lblcr expiry)
    pub now_secs: u64,
}

/// A connection scheduler (one per virtual service and destination list).
pub trait Scheduler: Send + Sync + std::fmt::Debug {
    /// The ipvsadm name ("rr", "wlc", ...).
    fn name(&self) -> &'static str;
    /// Choose a destination for a new connection: an index into `dests`, or None when none is usable.
    fn schedule(&self, dests: &[Arc<Dest>], input: &Input) -> Option<usize>;
    /// A scheduler for a changed destination list (added/removed/re-weighted dests), keeping the state that still makes sense (e.g. rr position, lblc cache entries whose dest still exists).
    fn rebuild(&self, dests: &[Arc<Dest>]) -> Box<dyn Scheduler>;
}

/// Every scheduler name, in the order of the kernel's `net/netfilter/ipvs/`
/// listing.
pub const NAMES: [&str; 14] = [
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

/// The scheduler used when none is given (ipvsadm `DEF_SCHED`).
pub const DEFAULT: &str = "wlc";

/// Maglev table sizes IPVS allows (`CONFIG_IP_VS_MH_TAB_INDEX` 8..=17).
pub const MH_TABLE_SIZES: [u32; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
];

/// Default Maglev table size (IPVS default index 12).
pub const MH_DEFAULT_TABLE_SIZE: u32 = 4093;

/// Default source-hash table size in bits (256 buckets).
pub const SH_DEFAULT_TABLE_BITS: u8 = 8;

/// Default lblc/lblcr cache expiration: 24 hours.
pub const LBLC_DEFAULT_EXPIRATION_SECS: u64 = 24 * 60 * 60;

/// Default seed of the twos pseudo-random generator.
pub const TWOS_DEFAULT_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// Everything needed to build a scheduler: its name, its flags and the
/// tunables of the table-based and cache-based schedulers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedSpec {
    /// The ipvsadm scheduler name (one of [`NAMES`]).
    pub name: String,
    /// Scheduler flags (`sh-fallback`, `sh-port`, `mh-fallback`, `mh-port`,
    /// or the ipvsadm aliases `flag-1` = fallback, `flag-2` = port for sh and
    /// mh). An entry may hold several comma-separated flags, as ipvsadm's
    /// `-b` does.
    pub flags: Vec<String>,
    /// mh table size (prime from the IPVS list); default 4093
    pub mh_table_size: Option<u32>,
    /// sh table bits (4..=20), default 8
    pub sh_table_bits: Option<u8>,
    /// lblc/lblcr expiration seconds, default 24h
    pub lblc_expiration_secs: Option<u64>,
    /// seed for twos' PRNG (tests); default a fixed constant
    pub seed: Option<u64>,
}

impl SchedSpec {
    /// A spec for scheduler `name` with no flags and default tunables.
    pub fn new(name: impl Into<String>) -> Self {
        SchedSpec {
            name: name.into(),
            flags: Vec::new(),
            mh_table_size: None,
            sh_table_bits: None,
            lblc_expiration_secs: None,
            seed: None,
        }
    }
}

impl Default for SchedSpec {
    /// The ipvsadm default: `wlc`, no flags.
    fn default() -> Self {
        SchedSpec::new(DEFAULT)
    }
}

/// Why a [`SchedSpec`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedError {
    /// The scheduler name is not one of [`NAMES`].
    UnknownScheduler(String),
    /// A known flag given to a scheduler it does not apply to.
    FlagNotForScheduler {
        /// The flag as given.
        flag: String,
        /// The scheduler name.
        sched: String,
    },
    /// A flag no scheduler knows.
    UnknownFlag(String),
    /// A table size (mh) or table bits (sh) outside what IPVS allows.
    BadTableSize {
        /// The scheduler the size was for ("mh" or "sh").
        sched: &'static str,
        /// The value given.
        value: u64,
        /// What is allowed, for the message.
        expected: &'static str,
    },
}

impl fmt::Display for SchedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchedError::UnknownScheduler(name) => write!(
                f,
                "unknown scheduler {name:?} (expected one of {})",
                NAMES.join(", ")
            ),
            SchedError::FlagNotForScheduler { flag, sched } => {
                write!(f, "flag {flag:?} does not apply to scheduler {sched:?}")
            }
            SchedError::UnknownFlag(flag) => write!(
                f,
                "unknown scheduler flag {flag:?} (expected sh-fallback, sh-port, \
                 mh-fallback, mh-port, flag-1 or flag-2)"
            ),
            SchedError::BadTableSize {
                sched: "sh",
                value,
                expected,
            } => write!(
                f,
                "sh table bits {value} out of range (expected {expected})"
            ),
            SchedError::BadTableSize {
                sched,
                value,
                expected,
            } => write!(
                f,
                "{sched} table size {value} is not allowed (expected one of {expected})"
            ),
        }
    }
}

impl std::error::Error for SchedError {}

/// The "fallback" and "port" flags shared by sh and mh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HashFlags {
    /// Probe other buckets when the hashed destination is unusable.
    pub fallback: bool,
    /// Hash the client port too.
    pub port: bool,
}

/// Validate the flags of `spec` for scheduler `name`.
fn parse_flags(name: &str, flags: &[String]) -> Result<HashFlags, SchedError> {
    let mut out = HashFlags::default();
    for flag in flags.iter().flat_map(|f| f.split(',')).map(str::trim) {
        let (for_sched, is_fallback) = match flag {
            "" => continue,
            "sh-fallback" => (Some("sh"), true),
            "sh-port" => (Some("sh"), false),
            "mh-fallback" => (Some("mh"), true),
            "mh-port" => (Some("mh"), false),
            "flag-1" => (None, true),
            "flag-2" => (None, false),
            "flag-3" => {
                return Err(SchedError::FlagNotForScheduler {
                    flag: flag.to_string(),
                    sched: name.to_string(),
                })
            }
            _ => return Err(SchedError::UnknownFlag(flag.to_string())),
        };
        let applies = match for_sched {
            Some(s) => s == name,
            None => name == "sh" || name == "mh",
        };
        if !applies {
            return Err(SchedError::FlagNotForScheduler {
                flag: flag.to_string(),
                sched: name.to_string(),
            });
        }
        if is_fallback {
            out.fallback = true;
        } else {
            out.port = true;
        }
    }
    Ok(out)
}

/// Build the scheduler described by `spec` for the destination list `dests`.
///
/// Table-based schedulers (dh, sh, mh) build their tables here; later
/// destination changes go through [`Scheduler::rebuild`].
pub fn build(spec: &SchedSpec, dests: &[Arc<Dest>]) -> Result<Box<dyn Scheduler>, SchedError> {
    let name = spec.name.as_str();
    if !NAMES.contains(&name) {
        return Err(SchedError::UnknownScheduler(spec.name.clone()));
    }
    let flags = parse_flags(name, &spec.flags)?;
    let expiration = spec
        .lblc_expiration_secs
        .unwrap_or(LBLC_DEFAULT_EXPIRATION_SECS);
    Ok(match name {
        "rr" => Box::new(rr::Rr::new(dests)),
        "wrr" => Box::new(wrr::Wrr::new(dests)),
        "lc" => Box::new(lc::Lc),
        "wlc" => Box::new(wlc::Wlc),
        "lblc" => Box::new(lblc::Lblc::new(expiration)),
        "lblcr" => Box::new(lblcr::Lblcr::new(expiration)),
        "dh" => Box::new(dh::Dh::new(dests)),
        "sh" => {
            let bits = spec.sh_table_bits.unwrap_or(SH_DEFAULT_TABLE_BITS);
            if !(sh::MIN_BITS..=sh::MAX_BITS).contains(&bits) {
                return Err(SchedError::BadTableSize {
                    sched: "sh",
                    value: bits.into(),
                    expected: "4..=20",
                });
            }
            Box::new(sh::Sh::new(dests, bits, flags))
        }
        "sed" => Box::new(sed::Sed),
        "nq" => Box::new(nq::Nq),
        "fo" => Box::new(fo::Fo),
        "ovf" => Box::new(ovf::Ovf),
        "mh" => {
            let size = spec.mh_table_size.unwrap_or(MH_DEFAULT_TABLE_SIZE);
            if !MH_TABLE_SIZES.contains(&size) {
                return Err(SchedError::BadTableSize {
                    sched: "mh",
                    value: size.into(),
                    expected: "251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071",
                });
            }
            Box::new(mh::Mh::new(dests, size, flags))
        }
        "twos" => Box::new(twos::Twos::new(spec.seed.unwrap_or(TWOS_DEFAULT_SEED))),
        _ => unreachable!("NAMES and build() disagree about {name:?}"),
    })
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Helpers for the schedulers' unit tests.

    use super::*;
    use std::net::Ipv4Addr;

    /// Dests 10.0.0.1, 10.0.0.2, ... on port 80 with the given weights.
    pub fn dests(weights: &[u32]) -> Vec<Arc<Dest>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let addr = Ipv4Addr::from(0x0a00_0001 + i as u32);
                Arc::new(Dest::new(IpAddr::V4(addr), 80, w))
            })
            .collect()
    }

    /// Give `d` exactly `active` active and `inactive` inactive connections
    /// (starting from zero).
    pub fn load(d: &Dest, active: u32, inactive: u32) {
        for _ in 0..active {
            d.bind(true);
        }
        for _ in 0..inactive {
            d.bind(false);
        }
    }

    /// A TCP input from `src` to 192.0.2.1:80 at time `now`.
    pub fn input(src: [u8; 4], src_port: u16, now: u64) -> Input {
        Input {
            proto: 6,
            src: IpAddr::V4(Ipv4Addr::from(src)),
            src_port,
            dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            dst_port: 80,
            now_secs: now,
        }
    }

    /// A TCP input towards destination address `dst` at time `now`.
    pub fn to_dst(dst: [u8; 4], now: u64) -> Input {
        Input {
            dst: IpAddr::V4(Ipv4Addr::from(dst)),
            ..input([198, 51, 100, 1], 40000, now)
        }
    }

    /// The default input.
    pub fn any() -> Input {
        input([198, 51, 100, 1], 40000, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn every_name_builds_and_reports_its_name() {
        let ds = dests(&[1, 2, 3]);
        for name in NAMES {
            let s = build(&SchedSpec::new(name), &ds).unwrap();
            assert_eq!(s.name(), name);
            assert!(s.schedule(&ds, &any()).is_some(), "{name} found nothing");
            let r = s.rebuild(&ds);
            assert_eq!(r.name(), name);
            assert!(format!("{s:?}").len() < 500, "{name} Debug is too long");
        }
        assert!(NAMES.contains(&DEFAULT));
        assert_eq!(SchedSpec::default().name, "wlc");
    }

    #[test]
    fn every_scheduler_handles_empty_and_all_unusable() {
        let empty: Vec<Arc<Dest>> = Vec::new();
        let ds = dests(&[0, 2, 3]);
        ds[1].set_available(false);
        ds[2].set_thresholds(1, 0);
        ds[2].bind(false);
        for name in NAMES {
            let s = build(&SchedSpec::new(name), &empty).unwrap();
            assert_eq!(s.schedule(&empty, &any()), None, "{name} on empty");
            let s = build(&SchedSpec::new(name), &ds).unwrap();
            for _ in 0..3 {
                assert_eq!(s.schedule(&ds, &any()), None, "{name} on unusable");
            }
            let s = s.rebuild(&ds);
            assert_eq!(s.schedule(&ds, &any()), None, "{name} after rebuild");
        }
    }

    #[test]
    fn unknown_scheduler_message() {
        let err = build(&SchedSpec::new("foo"), &[]).unwrap_err();
        assert_eq!(err, SchedError::UnknownScheduler("foo".into()));
        assert_eq!(
            err.to_string(),
            "unknown scheduler \"foo\" (expected one of rr, wrr, lc, wlc, lblc, lblcr, \
             dh, sh, sed, nq, fo, ovf, mh, twos)"
        );
    }

    fn with_flags(name: &str, flags: &[&str]) -> SchedSpec {
        SchedSpec {
            flags: flags.iter().map(|s| s.to_string()).collect(),
            ..SchedSpec::new(name)
        }
    }

    #[test]
    fn flags_are_checked_against_the_scheduler() {
        let err = build(&with_flags("rr", &["sh-port"]), &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "flag \"sh-port\" does not apply to scheduler \"rr\""
        );
        assert!(matches!(
            build(&with_flags("sh", &["mh-port"]), &[]),
            Err(SchedError::FlagNotForScheduler { .. })
        ));
        assert!(matches!(
            build(&with_flags("wlc", &["flag-1"]), &[]),
            Err(SchedError::FlagNotForScheduler { .. })
        ));
        assert!(matches!(
            build(&with_flags("sh", &["flag-3"]), &[]),
            Err(SchedError::FlagNotForScheduler { .. })
        ));
        let err = build(&with_flags("sh", &["sh-bogus"]), &[]).unwrap_err();
        assert_eq!(err, SchedError::UnknownFlag("sh-bogus".into()));
        assert!(err
            .to_string()
            .starts_with("unknown scheduler flag \"sh-bogus\""));
        for ok in [
            with_flags("sh", &["sh-fallback", "sh-port"]),
            with_flags("sh", &["sh-fallback,sh-port"]),
            with_flags("sh", &["flag-1", "flag-2"]),
            with_flags("mh", &["mh-fallback", "mh-port", ""]),
            with_flags("mh", &["flag-1,flag-2"]),
        ] {
            assert!(build(&ok, &[]).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn flag_parsing_sets_the_right_bits() {
        let f = parse_flags("sh", &["flag-2".into()]).unwrap();
        assert_eq!(
            f,
            HashFlags {
                fallback: false,
                port: true
            }
        );
        let f = parse_flags("mh", &["mh-fallback".into()]).unwrap();
        assert_eq!(
            f,
            HashFlags {
                fallback: true,
                port: false
            }
        );
    }

    #[test]
    fn table_sizes_are_validated() {
        let mut spec = SchedSpec::new("mh");
        spec.mh_table_size = Some(4000);
        let err = build(&spec, &[]).unwrap_err();
        assert!(matches!(err, SchedError::BadTableSize { value: 4000, .. }));
        assert!(err.to_string().contains("mh table size 4000"), "{err}");
        spec.mh_table_size = Some(251);
        assert!(build(&spec, &[]).is_ok());

        let mut spec = SchedSpec::new("sh");
        for bad in [3, 21] {
            spec.sh_table_bits = Some(bad);
            let err = build(&spec, &[]).unwrap_err();
            assert!(err.to_string().contains("expected 4..=20"), "{err}");
        }
        spec.sh_table_bits = Some(4);
        assert!(build(&spec, &[]).is_ok());
        // Table tunables of other schedulers are ignored.
        let mut spec = SchedSpec::new("rr");
        spec.mh_table_size = Some(1);
        spec.sh_table_bits = Some(99);
        assert!(build(&spec, &[]).is_ok());
    }
}
