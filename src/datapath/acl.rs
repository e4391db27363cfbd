//! Access control and rate limits on the data path (issue 20): a service's allow and deny
//! lists of client prefixes compiled for lookup ([`PrefixSet`], [`Access`]), the per-worker
//! table of new-connection token buckets keyed by service and client prefix ([`RateTable`]),
//! and the ICMP error limiter ([`IcmpLimiter`], settings [`IcmpLimits`]) that keeps tapvs from
//! being used as a reflector, as the kernel's `icmp_ratelimit` and `icmp_msgs_per_sec` do.
//!
//! Everything here is built by the control plane (lists, settings) or allocated once per
//! worker (bucket tables); a check on the per-packet path is integer work on preallocated
//! memory, with no lock and no allocation. Rates are split evenly across workers: each worker
//! keeps its own buckets, refilled at `rate / workers` (in integer units, so no rate is
//! rounded down to zero), which is exact when traffic spreads over the workers and never
//! lets more than the configured rate through in all.

use std::net::IpAddr;

use crate::config::{ip_bits, prefix_mask};

use crate::config::{AccessConfig, Cidr, DefenceConfig};
use crate::datapath::stats::Drop;

/// A set of IPv4 and IPv6 prefixes, grouped by family and length: per group, the sorted
/// network numbers. A lookup is one binary search per distinct length of the address's family
/// (at most 33, or 129).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixSet {
    /// (IPv6, mask, sorted networks), longest prefixes first.
    groups: Vec<(bool, u128, Vec<u128>)>,
    len: usize,
}

impl PrefixSet {
    /// The set of `prefixes` (host bits are ignored; duplicates count once).
    pub fn new(prefixes: &[Cidr]) -> PrefixSet {
        let mut groups: Vec<(bool, u128, Vec<u128>)> = Vec::new();
        for c in prefixes {
            let (v6, mask) = (c.addr.is_ipv6(), c.mask());
            let net = ip_bits(c.addr) & mask;
            match groups.iter_mut().find(|(f, m, _)| *f == v6 && *m == mask) {
                Some((_, _, nets)) => nets.push(net),
                None => groups.push((v6, mask, vec![net])),
            }
        }
        let mut len = 0;
        for (_, _, nets) in &mut groups {
            nets.sort_unstable();
            nets.dedup();
            len += nets.len();
        }
        groups.sort_unstable_by_key(|g| std::cmp::Reverse((g.0, g.1)));
        PrefixSet { groups, len }
    }

    /// Whether the set has no prefix.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many distinct prefixes the set holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether `ip` is inside one of the prefixes.
    #[inline]
    pub fn contains(&self, ip: impl Into<IpAddr>) -> bool {
        let ip = ip.into();
        let (v6, a) = (ip.is_ipv6(), ip_bits(ip));
        self.groups
            .iter()
            .any(|(f, mask, nets)| *f == v6 && nets.binary_search(&(a & mask)).is_ok())
    }
}

/// A service's access control as the data path checks it, for new connections only: the deny
/// list first, then the allow list (when not empty), then the limit on concurrent
/// connections, then the rate of new connections per client prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Client prefixes refused (`deny`).
    pub deny: PrefixSet,
    /// When not empty, the only client prefixes accepted (`allow`).
    pub allow: PrefixSet,
    /// Most open connections of the service (0: no limit).
    ///
    /// Counted as the sum of its real servers' open connections ([`sched::Dest::open_conns`]):
    /// each `Dest` is the service's own, shared by all workers, and the connection table moves
    /// its counter where it moves the active/inactive ones (created, FIN or RST seen,
    /// freed), so connections synced from a master count too and no per-service state has to
    /// reach the connection. The sum walks the real servers, as a least-connection scheduler
    /// does on the same new connection, and only for services with a limit. Workers check
    /// and insert without a lock, so concurrent SYNs on several workers may pass the limit by
    /// at most one per other worker; a real server removed from the service no longer counts.
    pub conn_limit: u32,
    /// New connections per second per client prefix (0: no limit).
    pub conn_rate: u32,
    /// The mask giving an IPv4 client's prefix for `conn_rate` (from `conn_rate_prefix`).
    pub rate_mask: u128,
    /// The same for an IPv6 client.
    pub rate_mask6: u128,
}

impl Access {
    /// The compiled form of a service's `access` settings.
    pub fn new(c: &AccessConfig) -> Access {
        Access {
            deny: PrefixSet::new(&c.deny),
            allow: PrefixSet::new(&c.allow),
            conn_limit: c.conn_limit,
            conn_rate: c.conn_rate,
            rate_mask: prefix_mask(32, c.conn_rate_prefix.min(32)),
            rate_mask6: prefix_mask(128, c.conn_rate_prefix),
        }
    }

    /// Whether nothing is configured (the data path then skips every check).
    #[inline]
    pub fn is_none(&self) -> bool {
        self.deny.is_empty() && self.allow.is_empty() && self.conn_limit == 0 && self.conn_rate == 0
    }

    /// The lists' verdict on client `ip`: refused by `deny`, or not in a non-empty `allow`.
    #[inline]
    pub fn check_lists(&self, ip: impl Into<IpAddr>) -> Result<(), Drop> {
        let ip = ip.into();
        if self.deny.contains(ip) {
            return Err(Drop::AclDenied);
        }
        if !self.allow.is_empty() && !self.allow.contains(ip) {
            return Err(Drop::AclNotAllowed);
        }
        Ok(())
    }
}

/// Buckets of a worker's [`RateTable`].
pub const RATE_BUCKETS: usize = 4096;

/// One token bucket: its key and its tokens (see [`RateTable::admit`] for the units).
#[derive(Debug, Clone, Copy, Default)]
struct RateBucket {
    /// Service key digest (`service::SvcKey::digest`); 0 marks an unused bucket (no digest
    /// is 0).
    svc: u64,
    prefix: u128,
    tokens: u64,
    last_ms: u64,
}

/// A worker's token buckets for `conn_rate`, keyed by (service, client prefix) through a
/// seeded hash into [`RATE_BUCKETS`] fixed slots. A key that lands on a slot held by another
/// key takes it over with a full bucket: memory stays fixed whatever the number of clients,
/// at the price of an occasional fresh burst for colliding prefixes (the seed, random per
/// table, keeps clients from choosing collisions).
#[derive(Debug)]
pub struct RateTable {
    buckets: Box<[RateBucket]>,
    workers: u64,
    seed: u64,
}

impl RateTable {
    /// The table of one of `workers` workers.
    pub fn new(workers: usize) -> RateTable {
        RateTable {
            buckets: vec![RateBucket::default(); RATE_BUCKETS].into_boxed_slice(),
            workers: workers.max(1) as u64,
            seed: random_seed() | 1,
        }
    }

    /// Takes a new connection of client prefix `prefix` to service `svc` at `now_ms`, at most
    /// `rate` per second in all workers; false when over the rate.
    ///
    /// Units: a connection costs `workers × 1000` tokens and a bucket gains `rate` tokens per
    /// millisecond, so each worker admits `rate / workers` per second without rounding. A
    /// bucket holds one second's worth (`rate × 1000`), at least one connection.
    #[inline]
    pub fn admit(&mut self, svc: u64, prefix: u128, rate: u32, now_ms: u64) -> bool {
        let cost = self.workers * 1000;
        let cap = u64::from(rate).max(self.workers) * 1000;
        let p = (prefix as u64) ^ ((prefix >> 64) as u64).rotate_left(17);
        let h = (svc ^ p.rotate_left(29) ^ self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let b = &mut self.buckets[(h >> 52) as usize % RATE_BUCKETS];
        if b.svc != svc || b.prefix != prefix {
            *b = RateBucket {
                svc,
                prefix,
                tokens: cap,
                last_ms: now_ms,
            };
        } else {
            let gained = now_ms
                .saturating_sub(b.last_ms)
                .saturating_mul(u64::from(rate));
            b.tokens = b.tokens.saturating_add(gained).min(cap);
            b.last_ms = now_ms;
        }
        if b.tokens >= cost {
            b.tokens -= cost;
            true
        } else {
            false
        }
    }
}

/// The kernel's `XRLIM_BURST_FACTOR`: a host may get this many ICMP errors at once.
pub const XRLIM_BURST_FACTOR: u64 = 6;

/// Destination hosts a worker's [`IcmpLimiter`] tracks at once.
pub const ICMP_HOSTS: usize = 1024;

/// The ICMP error limits (`[defence]`), as the kernel's sysctls of the same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpLimits {
    /// `icmp_ratelimit`: per destination host, one error per this many milliseconds after a
    /// burst of [`XRLIM_BURST_FACTOR`] (0: no per-host limit).
    pub ratelimit_ms: u32,
    /// `icmp_msgs_per_sec`: errors per second in all (0: no global limit).
    pub msgs_per_sec: u32,
    /// `icmp_msgs_burst`: the global burst.
    pub msgs_burst: u32,
}

impl Default for IcmpLimits {
    /// The kernel's defaults: 1000 ms, 1000 per second, burst 50.
    fn default() -> Self {
        IcmpLimits {
            ratelimit_ms: 1000,
            msgs_per_sec: 1000,
            msgs_burst: 50,
        }
    }
}

impl IcmpLimits {
    /// The limits a `[defence]` table sets.
    pub fn of(d: &DefenceConfig) -> IcmpLimits {
        IcmpLimits {
            ratelimit_ms: d.icmp_ratelimit_ms,
            msgs_per_sec: d.icmp_msgs_per_sec,
            msgs_burst: d.icmp_msgs_burst,
        }
    }
}

/// A per-host bucket of the ICMP limiter (tokens in milliseconds, as the kernel's
/// `inet_peer.rate_tokens`).
#[derive(Debug, Clone, Copy, Default)]
struct HostBucket {
    ip: u128,
    used: bool,
    tokens: u64,
    last_ms: u64,
}

/// A worker's ICMP error limiter: the kernel's per-host `xrlim_allow` over a fixed table of
/// [`ICMP_HOSTS`] hosts (a host landing on a slot held by another starts with a full burst),
/// and its share of the global `icmp_msgs_per_sec` bucket. An error is sent only when both
/// allow it; only then are tokens taken from both.
///
/// The per-host bucket is per worker: a host whose packets reach several workers (different
/// source ports) can get up to `workers ×` the per-host allowance; the global limit, split
/// across workers, bounds the total.
#[derive(Debug)]
pub struct IcmpLimiter {
    hosts: Box<[HostBucket]>,
    workers: u64,
    seed: u32,
    global_tokens: u64,
    global_last_ms: u64,
    global_started: bool,
}

impl IcmpLimiter {
    /// The limiter of one of `workers` workers.
    pub fn new(workers: usize) -> IcmpLimiter {
        IcmpLimiter {
            hosts: vec![HostBucket::default(); ICMP_HOSTS].into_boxed_slice(),
            workers: workers.max(1) as u64,
            seed: (random_seed() >> 32) as u32 | 1,
            global_tokens: 0,
            global_last_ms: 0,
            global_started: false,
        }
    }

    /// Whether an ICMP error to `dst` may be sent at `now_ms` under `lim`; takes its tokens
    /// when it may.
    pub fn allow(&mut self, lim: &IcmpLimits, dst: IpAddr, now_ms: u64) -> bool {
        // Per host: tokens are milliseconds, capped at XRLIM_BURST_FACTOR × the interval.
        let ip = ip_bits(dst) | u128::from(dst.is_ipv6()) << 127;
        let folded = (ip as u32) ^ ((ip >> 32) as u32) ^ ((ip >> 64) as u32) ^ ((ip >> 96) as u32);
        let timeout = u64::from(lim.ratelimit_ms);
        let slot = ((folded ^ self.seed).wrapping_mul(0x9E37_79B1) >> 22) as usize % ICMP_HOSTS;
        let host_tokens = if timeout == 0 {
            0
        } else {
            let cap = XRLIM_BURST_FACTOR * timeout;
            let b = &self.hosts[slot];
            if b.used && b.ip == ip {
                b.tokens
                    .saturating_add(now_ms.saturating_sub(b.last_ms))
                    .min(cap)
            } else {
                cap
            }
        };
        let host_ok = timeout == 0 || host_tokens >= timeout;
        // Global, this worker's share: an error costs workers × 1000 units, the bucket gains
        // msgs_per_sec units per millisecond and holds the burst (at least one error).
        let rate = u64::from(lim.msgs_per_sec);
        let cost = self.workers * 1000;
        let global_tokens = if rate == 0 {
            0
        } else {
            let cap = (u64::from(lim.msgs_burst) * 1000).max(cost);
            if self.global_started {
                let gained = now_ms
                    .saturating_sub(self.global_last_ms)
                    .saturating_mul(rate);
                self.global_tokens.saturating_add(gained).min(cap)
            } else {
                cap
            }
        };
        let global_ok = rate == 0 || global_tokens >= cost;
        let ok = host_ok && global_ok;
        if timeout != 0 {
            self.hosts[slot] = HostBucket {
                ip,
                used: true,
                tokens: host_tokens - if ok { timeout } else { 0 },
                last_ms: now_ms,
            };
        }
        if rate != 0 {
            self.global_tokens = global_tokens - if ok { cost } else { 0 };
            self.global_last_ms = now_ms;
            self.global_started = true;
        }
        ok
    }
}

/// A seed that differs between tables and runs (hash keys clients cannot predict).
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x7461_7076_7361_636c);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        Cidr::parse(s).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefix_sets_match_by_longest_and_shortest() {
        let s = PrefixSet::new(&[
            cidr("10.1.0.0/16"),
            cidr("192.0.2.7/32"),
            cidr("10.1.0.0/16"),
            cidr("172.16.0.0/12"),
        ]);
        assert_eq!(s.len(), 3);
        assert!(s.contains(ip("10.1.255.3")));
        assert!(!s.contains(ip("10.2.0.1")));
        assert!(s.contains(ip("192.0.2.7")));
        assert!(!s.contains(ip("192.0.2.8")));
        assert!(s.contains(ip("172.31.0.1")));
        assert!(!s.contains(ip("172.32.0.1")));
        let all = PrefixSet::new(&[cidr("0.0.0.0/0")]);
        assert!(all.contains(ip("203.0.113.9")));
        assert!(PrefixSet::new(&[]).is_empty());
    }

    #[test]
    fn deny_is_checked_before_allow() {
        let a = Access::new(&AccessConfig {
            allow: vec![cidr("10.0.0.0/8")],
            deny: vec![cidr("10.9.0.0/16")],
            ..AccessConfig::default()
        });
        assert!(!a.is_none());
        assert_eq!(a.check_lists(ip("10.9.1.1")), Err(Drop::AclDenied));
        assert_eq!(a.check_lists(ip("11.0.0.1")), Err(Drop::AclNotAllowed));
        assert_eq!(a.check_lists(ip("10.1.1.1")), Ok(()));
        assert!(Access::new(&AccessConfig::default()).is_none());
    }

    #[test]
    fn rate_buckets_burst_then_refill_split_across_workers() {
        // 10 per second over 2 workers: this worker admits 5 at once, then one per 200 ms.
        let mut t = RateTable::new(2);
        let now = 1_000_000;
        let n = (0..20).filter(|_| t.admit(7, 1, 10, now)).count();
        assert_eq!(n, 5);
        assert!(!t.admit(7, 1, 10, now + 199));
        assert!(t.admit(7, 1, 10, now + 200));
        assert!(!t.admit(7, 1, 10, now + 201));
        // Another prefix and another service have their own buckets.
        assert!(t.admit(7, 2, 10, now));
        assert!(t.admit(8, 1, 10, now));
        // A rate below the worker count still admits one per worker.
        let mut t = RateTable::new(4);
        assert!(t.admit(7, 1, 1, now));
        assert!(!t.admit(7, 1, 1, now + 3999));
        assert!(t.admit(7, 1, 1, now + 4000));
    }

    #[test]
    fn icmp_per_host_bursts_six_then_one_per_interval() {
        let lim = IcmpLimits {
            ratelimit_ms: 1000,
            msgs_per_sec: 0,
            msgs_burst: 50,
        };
        let mut l = IcmpLimiter::new(1);
        let h = ip("10.0.0.2");
        let n = (0..100).filter(|_| l.allow(&lim, h, 5000)).count();
        assert_eq!(n as u64, XRLIM_BURST_FACTOR);
        assert!(!l.allow(&lim, h, 5999));
        assert!(l.allow(&lim, h, 6000));
        assert!(!l.allow(&lim, h, 6500));
        // Another host is not held back.
        assert!(l.allow(&lim, ip("10.0.0.3"), 6500));
        // 0 turns the per-host limit off.
        let off = IcmpLimits {
            ratelimit_ms: 0,
            ..lim
        };
        assert_eq!((0..100).filter(|_| l.allow(&off, h, 6500)).count(), 100);
    }

    #[test]
    fn icmp_global_burst_then_rate_split_across_workers() {
        let lim = IcmpLimits {
            ratelimit_ms: 0,
            msgs_per_sec: 1000,
            msgs_burst: 50,
        };
        let mut l = IcmpLimiter::new(2);
        // Each host once: only the global bucket applies (25 for this worker).
        let n = (0..200u32)
            .filter(|i| {
                l.allow(
                    &lim,
                    IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
                    1000,
                )
            })
            .count();
        assert_eq!(n, 25);
        // 500 per second for this worker: one per 2 ms, 50 in 100 ms.
        let mut sent = 0;
        for t in 1001..=1100u64 {
            sent += usize::from(l.allow(&lim, ip("10.1.0.1"), t));
            sent += usize::from(l.allow(&lim, ip("10.1.0.2"), t));
        }
        assert_eq!(sent, 50);
    }

    #[test]
    fn icmp_refused_by_one_bucket_takes_nothing_from_the_other() {
        let lim = IcmpLimits {
            ratelimit_ms: 1000,
            msgs_per_sec: 1,
            msgs_burst: 1,
        };
        let mut l = IcmpLimiter::new(1);
        assert!(l.allow(&lim, ip("10.0.0.2"), 0));
        // The global bucket is empty: the host keeps its tokens.
        assert!(!l.allow(&lim, ip("10.0.0.2"), 10));
        assert!(l.allow(&lim, ip("10.0.0.2"), 1010));
    }
}
