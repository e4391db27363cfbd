//! Power-of-two-choices scheduling (`twos`, kernel `ip_vs_twos.c`): draw two
//! destinations at random, each with probability proportional to its weight
//! among the usable ones, and keep the one with the lower
//! `overhead / weight` (division free; on a tie the first draw wins).
//!
//! Randomness comes from a small xorshift64* generator whose state is an
//! `AtomicU64` (seeded from [`crate::SchedSpec::seed`]), advanced once per
//! call with an atomic update so concurrent workers never reuse a draw. Each
//! draw `r` is uniform in `1..=total_weight` (multiply-shift, no modulo
//! bias) and selects the first usable destination whose running weight sum
//! reaches `r`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::{Dest, Input, Scheduler};

/// Replacement for a zero seed (xorshift never leaves 0).
const NONZERO: u64 = 0x2545_F491_4F6C_DD1D;

/// One xorshift64 step.
fn xorshift(mut x: u64) -> u64 {
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    x
}

/// The xorshift64* output of a state.
fn output(x: u64) -> u64 {
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// A uniform value in `0..bound` from 64 random bits (multiply-shift).
fn below(random: u64, bound: u64) -> u64 {
    ((random as u128 * bound as u128) >> 64) as u64
}

/// The `twos` scheduler.
#[derive(Debug)]
pub struct Twos {
    state: AtomicU64,
}

impl Twos {
    /// A power-of-two-choices scheduler whose generator starts at `seed`.
    pub fn new(seed: u64) -> Self {
        Twos {
            state: AtomicU64::new(if seed == 0 { NONZERO } else { seed }),
        }
    }

    /// Two 64-bit random values; the state advances by two steps atomically.
    fn two_randoms(&self) -> (u64, u64) {
        let advance = |x| xorshift(xorshift(x));
        let old = self
            .state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| Some(advance(x)))
            .unwrap_or_else(|x| x);
        let a = xorshift(old);
        (output(a), output(xorshift(a)))
    }
}

impl Scheduler for Twos {
    fn name(&self) -> &'static str {
        "twos"
    }

    fn schedule(&self, dests: &[Arc<Dest>], _input: &Input) -> Option<usize> {
        let total: u64 = dests
            .iter()
            .filter(|d| d.is_usable())
            .map(|d| d.weight() as u64)
            .sum();
        if total == 0 {
            return None;
        }
        let (x, y) = self.two_randoms();
        let (mut r1, mut r2) = (below(x, total) as i64 + 1, below(y, total) as i64 + 1);
        // (index, weight) of the two draws and of the last usable dest.
        let mut c1: Option<(usize, u64)> = None;
        let mut c2: Option<(usize, u64)> = None;
        let mut last = None;
        for (i, d) in dests.iter().enumerate() {
            if !d.is_usable() {
                continue;
            }
            let w = d.weight() as u64;
            last = Some((i, w));
            r1 -= w as i64;
            r2 -= w as i64;
            if r1 <= 0 && c1.is_none() {
                c1 = Some((i, w));
            }
            if r2 <= 0 && c2.is_none() {
                c2 = Some((i, w));
            }
            if c1.is_some() && c2.is_some() {
                break;
            }
        }
        // Weights shrinking between the two passes can leave a draw
        // unmatched: fall back to the last usable dest seen.
        let (i1, w1) = c1.or(last)?;
        let (i2, w2) = c2.or(last)?;
        let (o1, o2) = (dests[i1].overhead(), dests[i2].overhead());
        Some(if o1 * w2 > o2 * w1 { i2 } else { i1 })
    }

    fn rebuild(&self, _dests: &[Arc<Dest>]) -> Box<dyn Scheduler> {
        Box::new(Twos {
            state: AtomicU64::new(self.state.load(Ordering::Relaxed)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn prefers_the_less_loaded_of_two() {
        let ds = dests(&[1, 1]);
        load(&ds[0], 5, 0);
        let s = Twos::new(42);
        // dest 1 wins whenever it is drawn at least once: ~3/4 of the time.
        let ones = (0..4000)
            .filter(|_| s.schedule(&ds, &any()) == Some(1))
            .count();
        assert!((2800..=3200).contains(&ones), "{ones}");
    }

    #[test]
    fn weight_zero_overloaded_and_unavailable_never_picked() {
        let ds = dests(&[0, 1, 1, 1]);
        ds[1].set_available(false);
        ds[2].set_thresholds(1, 0);
        ds[2].bind(false);
        let s = Twos::new(7);
        for _ in 0..200 {
            assert_eq!(s.schedule(&ds, &any()), Some(3));
        }
        ds[3].set_weight(0);
        assert_eq!(s.schedule(&ds, &any()), None);
    }

    #[test]
    fn same_seed_same_sequence_and_rebuild_continues() {
        let ds = dests(&[1, 2, 3, 4]);
        let a = Twos::new(99);
        let b = Twos::new(99);
        let sa: Vec<_> = (0..50).map(|_| a.schedule(&ds, &any())).collect();
        let sb: Vec<_> = (0..50).map(|_| b.schedule(&ds, &any())).collect();
        assert_eq!(sa, sb);
        let ra = a.rebuild(&ds);
        let next_a: Vec<_> = (0..50).map(|_| ra.schedule(&ds, &any())).collect();
        let next_b: Vec<_> = (0..50).map(|_| b.schedule(&ds, &any())).collect();
        assert_eq!(next_a, next_b);
        assert_ne!(sa, next_a);
    }

    #[test]
    fn ties_go_to_the_first_draw() {
        // Equal load: the result is simply the first weighted draw, so with
        // one huge weight the heavy dest dominates.
        let ds = dests(&[1, 1000]);
        let s = Twos::new(1);
        let heavy = (0..1000)
            .filter(|_| s.schedule(&ds, &any()) == Some(1))
            .count();
        assert!(heavy > 990, "{heavy}");
    }

    #[test]
    fn zero_seed_is_usable() {
        let ds = dests(&[1, 1]);
        let s = Twos::new(0);
        let picks: std::collections::HashSet<_> =
            (0..100).map(|_| s.schedule(&ds, &any())).collect();
        assert_eq!(picks.len(), 2);
    }
}
