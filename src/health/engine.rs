//! The health engine: keepalived's scheduling and state rules, as pure logic over a
//! caller-provided clock.
//!
//! # Per checker
//!
//! * The first attempt starts after a random `warmup` delay, uniform in `0..=warmup` (drawn
//!   from an injectable, seeded [`SplitMix64`]); `warmup = 0` starts at once.
//! * A checker starts up, or down with `alpha`.
//! * A passed attempt makes the checker up; the next attempt starts `delay_loop` after the end
//!   of this one.
//! * A failed attempt of an up checker is retried `delay_before_retry` later; the checker goes
//!   down only when `retry + 1` consecutive attempts have failed (with `retry = 1`: one
//!   failure and one failed retry). The next attempt then comes after `delay_loop`.
//! * A failed attempt of a down checker leaves it down; next attempt after `delay_loop`.
//!
//! # Per real server ([`RealServerHealth`])
//!
//! The server is up when all its checkers are up, down as soon as one is down (a server
//! without checkers is always up). Its weight is the configured one, unless a `misc_dynamic`
//! checker reported one in its last passed attempt (several: the smallest). Changes come out
//! of [`RealServerHealth::tick`] as at most one [`Event`] per call. With
//! `inhibit_on_failure` a down server should be kept with weight 0 rather than removed
//! ([`RealServerHealth::ipvs_weight`]); the engine only reports, the caller applies.
//!
//! # Per virtual service ([`ServiceHealth`])
//!
//! The live weight is the sum of the weights of the up servers. With a quorum `q` and a
//! hysteresis `h`, quorum is lost when the live weight drops below `q - h` (saturating) and
//! regained when it reaches `q + h`; in between the state does not change. At creation the
//! state follows the "lost" rule alone (the service starts with quorum unless the initial
//! live weight is below `q - h`). `q = 0` never loses quorum. While quorum is lost the caller
//! brings all real servers down and installs the `sorry_server`, if any.

use std::time::{Duration, Instant};

use super::transport::Transport;
use super::{Checker, Outcome, Poll};

/// A small seeded pseudo-random generator (SplitMix64) for the warmup delays.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from `seed` (use, for instance, the process id mixed with the time).
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration uniform in `0..=max` (nanosecond resolution).
    pub fn up_to(&mut self, max: Duration) -> Duration {
        let n = max.as_nanos().min(u64::MAX as u128) as u64;
        if n == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.next_u64() % (n + 1))
    }
}

/// When one checker runs (resolved from the checker, real server and service levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Time between the end of an attempt and the next (default 60 s).
    pub delay_loop: Duration,
    /// Retries of an up checker before it goes down (default 1; MISC_CHECK 0).
    pub retry: u32,
    /// Time before a retry (default 1 s; HTTP_GET and SSL_GET 3 s).
    pub delay_before_retry: Duration,
    /// Upper bound of the random delay before the first attempt (default `delay_loop`).
    pub warmup: Duration,
    /// Start down until an attempt passes.
    pub alpha: bool,
}

impl Default for Schedule {
    /// keepalived's generic defaults (TCP_CHECK).
    fn default() -> Self {
        Schedule {
            delay_loop: Duration::from_secs(60),
            retry: 1,
            delay_before_retry: Duration::from_secs(1),
            warmup: Duration::from_secs(60),
            alpha: false,
        }
    }
}

/// A change of a real server's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The server came up, with this weight.
    Up {
        /// The weight to apply.
        weight: u32,
    },
    /// The server went down.
    Down {
        /// Which checker failed and why.
        reason: String,
    },
    /// The server stays up with a new weight (`misc_dynamic`).
    Weight(u32),
}

struct Slot {
    checker: Box<dyn Checker>,
    sched: Schedule,
    up: bool,
    failures: u32,
    next: Instant,
    running: bool,
    weight: Option<u32>,
    last: Option<Outcome>,
}

impl Slot {
    fn record(&mut self, o: Outcome, now: Instant) {
        if o.ok {
            self.failures = 0;
            self.up = true;
            self.weight = o.weight;
            self.next = now + self.sched.delay_loop;
        } else if self.up {
            self.failures += 1;
            if self.failures > self.sched.retry {
                self.up = false;
                self.failures = 0;
                self.next = now + self.sched.delay_loop;
            } else {
                self.next = now + self.sched.delay_before_retry;
            }
        } else {
            self.next = now + self.sched.delay_loop;
        }
        self.last = Some(o);
    }
}

/// The state of one checker of a real server, for status listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckerStatus {
    /// keepalived name of the check type.
    pub name: &'static str,
    /// Whether the checker currently counts the server as up.
    pub up: bool,
    /// Consecutive failures of the current retry sequence.
    pub failures: u32,
    /// The last attempt's outcome, if any.
    pub last: Option<Outcome>,
}

/// The health of one real server: its checkers and their schedule.
pub struct RealServerHealth {
    slots: Vec<Slot>,
    configured: u32,
    inhibit_on_failure: bool,
    up: bool,
    effective: u32,
}

impl std::fmt::Debug for RealServerHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RealServerHealth")
            .field("checkers", &self.status())
            .field("configured", &self.configured)
            .field("up", &self.up)
            .field("effective", &self.effective)
            .finish()
    }
}

impl RealServerHealth {
    /// A real server with configured `weight` and its checkers, created at `now`. Warmup
    /// delays are drawn from `rng`. The initial state (up unless a checker has `alpha`) is
    /// [`is_up`](Self::is_up); no event is produced for it.
    pub fn new(
        checkers: Vec<(Box<dyn Checker>, Schedule)>,
        weight: u32,
        inhibit_on_failure: bool,
        now: Instant,
        rng: &mut SplitMix64,
    ) -> RealServerHealth {
        let slots: Vec<Slot> = checkers
            .into_iter()
            .map(|(checker, sched)| Slot {
                checker,
                sched,
                up: !sched.alpha,
                failures: 0,
                next: now + rng.up_to(sched.warmup),
                running: false,
                weight: None,
                last: None,
            })
            .collect();
        let up = slots.iter().all(|s| s.up);
        RealServerHealth {
            slots,
            configured: weight,
            inhibit_on_failure,
            up,
            effective: weight,
        }
    }

    /// Starts due attempts and polls running ones; returns the server's change, if any.
    /// Call it at [`next_wakeup`](Self::next_wakeup) and whenever the transport delivered
    /// packets.
    pub fn tick(&mut self, t: &mut dyn Transport, now: Instant) -> Option<Event> {
        for slot in &mut self.slots {
            if !slot.running && now >= slot.next {
                slot.checker.start(t, now);
                slot.running = true;
            }
            if slot.running {
                if let Poll::Done(o) = slot.checker.poll(t, now) {
                    slot.running = false;
                    slot.record(o, now);
                }
            }
        }
        let up = self.slots.iter().all(|s| s.up);
        let weight = self.current_weight();
        let event = if up != self.up {
            if up {
                Some(Event::Up { weight })
            } else {
                let reason = self
                    .slots
                    .iter()
                    .find(|s| !s.up)
                    .map(|s| match &s.last {
                        Some(o) => format!("{}: {}", s.checker.name(), o.reason),
                        None => format!("{}: no check passed yet", s.checker.name()),
                    })
                    .unwrap_or_default();
                Some(Event::Down { reason })
            }
        } else if up && weight != self.effective {
            Some(Event::Weight(weight))
        } else {
            None
        };
        self.up = up;
        self.effective = weight;
        event
    }

    fn current_weight(&self) -> u32 {
        self.slots
            .iter()
            .filter_map(|s| s.weight)
            .min()
            .unwrap_or(self.configured)
    }

    /// When [`tick`](Self::tick) must run next without network activity (`None`: never, no
    /// checkers).
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.slots
            .iter()
            .map(|s| {
                if s.running {
                    s.checker.next_poll().unwrap_or(s.next)
                } else {
                    s.next
                }
            })
            .min()
    }

    /// Whether the server is up (all checkers up).
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The weight the server has when up: configured, or the `misc_dynamic` one.
    pub fn weight(&self) -> u32 {
        self.effective
    }

    /// What the server adds to its service's live weight: its weight when up, else 0.
    pub fn live_weight(&self) -> u64 {
        if self.up {
            u64::from(self.effective)
        } else {
            0
        }
    }

    /// The weight to install in the service: `Some(weight)` when up, `Some(0)` when down with
    /// `inhibit_on_failure`, `None` (remove it) when down otherwise.
    pub fn ipvs_weight(&self) -> Option<u32> {
        match (self.up, self.inhibit_on_failure) {
            (true, _) => Some(self.effective),
            (false, true) => Some(0),
            (false, false) => None,
        }
    }

    /// Changes the configured weight (an administrative edit); a dynamic weight still wins.
    pub fn set_weight(&mut self, weight: u32) {
        self.configured = weight;
        self.effective = self.current_weight();
    }

    /// Per-checker state, in configuration order.
    pub fn status(&self) -> Vec<CheckerStatus> {
        self.slots
            .iter()
            .map(|s| CheckerStatus {
                name: s.checker.name(),
                up: s.up,
                failures: s.failures,
                last: s.last.clone(),
            })
            .collect()
    }

    /// Cancels every running attempt (closing sockets, killing programs): call before
    /// dropping the server.
    pub fn shutdown(&mut self, t: &mut dyn Transport) {
        for s in &mut self.slots {
            if s.running {
                s.checker.cancel(t);
                s.running = false;
            }
        }
    }
}

/// A change of a virtual service's quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuorumEvent {
    /// Live weight fell below `quorum - hysteresis`: bring real servers down, install the
    /// sorry server.
    Lost,
    /// Live weight reached `quorum + hysteresis`: back to the real servers.
    Regained,
}

/// A virtual service's quorum state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceHealth {
    /// Minimum live weight (default 1; 0 disables).
    pub quorum: u64,
    /// Flap damper around the quorum (default 0).
    pub hysteresis: u64,
    up: bool,
}

impl ServiceHealth {
    /// The quorum state for the initial live weight (see the module documentation).
    pub fn new(quorum: u64, hysteresis: u64, live_weight: u64) -> ServiceHealth {
        ServiceHealth {
            quorum,
            hysteresis,
            up: live_weight >= quorum.saturating_sub(hysteresis),
        }
    }

    /// Feeds the current sum of live weights; returns the change, if any.
    pub fn update(&mut self, live_weight: u64) -> Option<QuorumEvent> {
        if self.up && live_weight < self.quorum.saturating_sub(self.hysteresis) {
            self.up = false;
            Some(QuorumEvent::Lost)
        } else if !self.up && live_weight >= self.quorum.saturating_add(self.hysteresis) {
            self.up = true;
            Some(QuorumEvent::Regained)
        } else {
            None
        }
    }

    /// Whether the service has quorum.
    pub fn has_quorum(&self) -> bool {
        self.up
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::fake::{FakeTransport, TcpBehaviour};
    use crate::health::tcp::TcpChecker;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};

    /// A checker whose attempts finish at once with scripted outcomes (the last repeats);
    /// records the times attempts started.
    struct Scripted {
        outcomes: VecDeque<Outcome>,
        starts: Arc<Mutex<Vec<Instant>>>,
        running: bool,
    }

    impl Checker for Scripted {
        fn start(&mut self, _t: &mut dyn Transport, now: Instant) {
            self.starts.lock().unwrap().push(now);
            self.running = true;
        }
        fn poll(&mut self, _t: &mut dyn Transport, _now: Instant) -> Poll {
            self.running = false;
            let o = if self.outcomes.len() > 1 {
                self.outcomes.pop_front().unwrap()
            } else {
                self.outcomes[0].clone()
            };
            Poll::Done(o)
        }
        fn name(&self) -> &'static str {
            "SCRIPTED"
        }
        fn cancel(&mut self, _t: &mut dyn Transport) {
            self.running = false;
        }
        fn next_poll(&self) -> Option<Instant> {
            None
        }
    }

    fn scripted(outcomes: &[Outcome]) -> (Box<dyn Checker>, Arc<Mutex<Vec<Instant>>>) {
        let starts = Arc::new(Mutex::new(Vec::new()));
        let c = Scripted {
            outcomes: outcomes.iter().cloned().collect(),
            starts: starts.clone(),
            running: false,
        };
        (Box::new(c), starts)
    }

    fn sched(retry: u32, alpha: bool) -> Schedule {
        Schedule {
            delay_loop: Duration::from_secs(10),
            retry,
            delay_before_retry: Duration::from_secs(3),
            warmup: Duration::ZERO,
            alpha,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Ticks at every wakeup until `until`, collecting (time, event).
    fn run(
        h: &mut RealServerHealth,
        t: &mut FakeTransport,
        start: Instant,
        until: Instant,
    ) -> Vec<(Duration, Event)> {
        let mut out = Vec::new();
        let mut now = start;
        while now <= until {
            if let Some(e) = h.tick(t, now) {
                out.push((now - start, e));
            }
            now = h.next_wakeup().unwrap().max(now + Duration::from_millis(1));
        }
        out
    }

    #[test]
    fn failure_declared_after_retry_plus_one_attempts() {
        let t0 = Instant::now();
        let mut t = FakeTransport::new();
        let (c, starts) = scripted(&[
            Outcome::up("ok"),
            Outcome::down("bad"),
            Outcome::down("bad"),
            Outcome::down("bad"),
        ]);
        let mut rng = SplitMix64::new(1);
        let mut h = RealServerHealth::new(vec![(c, sched(2, false))], 5, false, t0, &mut rng);
        assert!(h.is_up());
        let ev = run(&mut h, &mut t, t0, t0 + secs(30));
        // ok at 0; fail at 10, retries at 13 and 16 (retry = 2): down at 16.
        assert_eq!(
            ev,
            vec![(
                secs(16),
                Event::Down {
                    reason: "SCRIPTED: bad".into()
                }
            )]
        );
        let s = starts.lock().unwrap().clone();
        let rel: Vec<Duration> = s.iter().map(|i| *i - t0).collect();
        // After going down: next attempt delay_loop later (26), not delay_before_retry.
        assert_eq!(rel, vec![secs(0), secs(10), secs(13), secs(16), secs(26)]);
        assert_eq!(h.ipvs_weight(), None);
        assert_eq!(h.live_weight(), 0);
    }

    #[test]
    fn a_passed_retry_resets_the_count() {
        let t0 = Instant::now();
        let mut t = FakeTransport::new();
        let (c, _) = scripted(&[
            Outcome::down("bad"),
            Outcome::up("ok"),
            Outcome::down("bad"),
            Outcome::up("ok"),
        ]);
        let mut rng = SplitMix64::new(1);
        let mut h = RealServerHealth::new(vec![(c, sched(1, false))], 1, true, t0, &mut rng);
        assert_eq!(run(&mut h, &mut t, t0, t0 + secs(60)), vec![]);
        assert!(h.is_up());
    }

    #[test]
    fn alpha_starts_down_and_one_success_brings_up() {
        let t0 = Instant::now();
        let mut t = FakeTransport::new();
        let (c, _) = scripted(&[Outcome::down("no"), Outcome::up("ok")]);
        let mut rng = SplitMix64::new(1);
        let mut h = RealServerHealth::new(vec![(c, sched(1, true))], 3, true, t0, &mut rng);
        assert!(!h.is_up());
        assert_eq!(h.ipvs_weight(), Some(0));
        // Failure while down: no retry, next attempt after delay_loop.
        let ev = run(&mut h, &mut t, t0, t0 + secs(15));
        assert_eq!(ev, vec![(secs(10), Event::Up { weight: 3 })]);
        assert_eq!(h.ipvs_weight(), Some(3));
    }

    #[test]
    fn without_alpha_starts_up() {
        let t0 = Instant::now();
        let (c, _) = scripted(&[Outcome::up("ok")]);
        let mut rng = SplitMix64::new(1);
        let h = RealServerHealth::new(vec![(c, sched(1, false))], 3, false, t0, &mut rng);
        assert!(h.is_up());
        assert_eq!(h.live_weight(), 3);
    }

    #[test]
    fn server_is_up_only_when_all_checkers_are() {
        let t0 = Instant::now();
        let mut t = FakeTransport::new();
        let (a, _) = scripted(&[Outcome::up("a")]);
        let (b, _) = scripted(&[Outcome::up("b"), Outcome::down("b broke")]);
        let mut rng = SplitMix64::new(1);
        let mut h = RealServerHealth::new(
            vec![(a, sched(0, false)), (b, sched(0, false))],
            1,
            false,
            t0,
            &mut rng,
        );
        let ev = run(&mut h, &mut t, t0, t0 + secs(10));
        assert_eq!(
            ev,
            vec![(
                secs(10),
                Event::Down {
                    reason: "SCRIPTED: b broke".into()
                }
            )]
        );
        let st = h.status();
        assert!(st[0].up && !st[1].up);
    }

    #[test]
    fn warmup_delays_the_first_check_within_bounds() {
        let t0 = Instant::now();
        let mut rng = SplitMix64::new(42);
        let mut seen = Vec::new();
        for _ in 0..50 {
            let (c, _) = scripted(&[Outcome::up("ok")]);
            let mut s = sched(1, false);
            s.warmup = secs(20);
            let h = RealServerHealth::new(vec![(c, s)], 1, false, t0, &mut rng);
            let d = h.next_wakeup().unwrap() - t0;
            assert!(d <= secs(20), "{d:?}");
            seen.push(d);
        }
        // Spread out, not constant.
        assert!(seen.iter().any(|d| *d < secs(10)) && seen.iter().any(|d| *d > secs(10)));
        // Same seed, same delays.
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        assert_eq!(a.up_to(secs(9)), b.up_to(secs(9)));
        assert_eq!(SplitMix64::new(3).up_to(Duration::ZERO), Duration::ZERO);

        // No attempt before the warmup delay.
        let (c, starts) = scripted(&[Outcome::up("ok")]);
        let mut s = sched(1, false);
        s.warmup = secs(20);
        let mut h = RealServerHealth::new(vec![(c, s)], 1, false, t0, &mut SplitMix64::new(5));
        let first = h.next_wakeup().unwrap();
        let mut t = FakeTransport::new();
        if first > t0 {
            h.tick(&mut t, first - Duration::from_nanos(1));
            assert!(starts.lock().unwrap().is_empty());
        }
        h.tick(&mut t, first);
        assert_eq!(starts.lock().unwrap().clone(), vec![first]);
    }

    #[test]
    fn dynamic_weight_events() {
        let t0 = Instant::now();
        let mut t = FakeTransport::new();
        let w = |w: Option<u32>| Outcome {
            ok: true,
            weight: w,
            reason: "misc".into(),
        };
        let (c, _) = scripted(&[
            w(Some(5)),
            w(Some(5)),
            w(Some(8)),
            Outcome::down("exit 1"),
            w(Some(2)),
            w(None),
        ]);
        let mut rng = SplitMix64::new(1);
        let mut h = RealServerHealth::new(vec![(c, sched(0, false))], 1, false, t0, &mut rng);
        let ev = run(&mut h, &mut t, t0, t0 + secs(55));
        assert_eq!(
            ev,
            vec![
                (secs(0), Event::Weight(5)),
                (secs(20), Event::Weight(8)),
                (
                    secs(30),
                    Event::Down {
                        reason: "SCRIPTED: exit 1".into()
                    }
                ),
                (secs(40), Event::Up { weight: 2 }),
                (secs(50), Event::Weight(1)),
            ]
        );
    }

    #[test]
    fn with_a_real_tcp_checker() {
        let t0 = Instant::now();
        let addr = "172.16.0.2:80".parse().unwrap();
        let mut t = FakeTransport::new();
        t.tcp(addr, TcpBehaviour::NoAnswer);
        let c = Box::new(TcpChecker::new(addr, secs(5)));
        let mut rng = SplitMix64::new(1);
        let mut h = RealServerHealth::new(vec![(c, sched(1, false))], 1, false, t0, &mut rng);
        assert_eq!(h.tick(&mut t, t0), None);
        // The attempt is in flight: wake at its timeout.
        assert_eq!(h.next_wakeup(), Some(t0 + secs(5)));
        assert_eq!(h.tick(&mut t, t0 + secs(5)), None);
        // Retry 3 s later, times out at 13 s: down.
        assert_eq!(h.next_wakeup(), Some(t0 + secs(8)));
        assert_eq!(h.tick(&mut t, t0 + secs(8)), None);
        assert!(matches!(
            h.tick(&mut t, t0 + secs(13)),
            Some(Event::Down { .. })
        ));
        t.tcp(addr, TcpBehaviour::AcceptSilent);
        assert_eq!(h.next_wakeup(), Some(t0 + secs(23)));
        assert_eq!(h.tick(&mut t, t0 + secs(23)), Some(Event::Up { weight: 1 }));
        assert_eq!(t.open_sockets(), 0);
        h.tick(&mut t, t0 + secs(33));
        h.shutdown(&mut t);
        assert_eq!(t.open_sockets(), 0);
    }

    #[test]
    fn quorum_with_hysteresis() {
        let mut q = ServiceHealth::new(4, 1, 5);
        assert!(q.has_quorum());
        assert_eq!(q.update(4), None);
        assert_eq!(q.update(3), None); // 3 is not below 4 - 1
        assert_eq!(q.update(2), Some(QuorumEvent::Lost));
        assert_eq!(q.update(2), None);
        assert_eq!(q.update(4), None); // 4 is below 4 + 1
        assert_eq!(q.update(5), Some(QuorumEvent::Regained));
        assert!(q.has_quorum());

        // No hysteresis: lost below quorum, regained at quorum.
        let mut q = ServiceHealth::new(1, 0, 0);
        assert!(!q.has_quorum());
        assert_eq!(q.update(1), Some(QuorumEvent::Regained));
        assert_eq!(q.update(0), Some(QuorumEvent::Lost));

        // Quorum 0 is never lost.
        let mut q = ServiceHealth::new(0, 0, 0);
        assert!(q.has_quorum());
        assert_eq!(q.update(0), None);
    }
}
