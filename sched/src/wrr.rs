//! Weighted round-robin scheduling (`wrr`, kernel `ip_vs_wrr.c`), the
//! interleaved variant: with `di = gcd(weights)` and
//! `mw = max_weight - (di - 1)`, a current weight `cw` starts at `mw`; the
//! list is walked circularly and the first usable destination with
//! `weight >= cw` is picked; each time the walk passes the head of the list
//! `cw -= di`, wrapping to `mw` when it reaches 0 or below. Over one cycle
//! (`sum(weights) / di` picks) each destination is picked exactly
//! `weight / di` times, interleaved.
//!
//! `di` and `mw` are computed when the scheduler is built or rebuilt (as the
//! kernel does on destination changes); weights are read live. The walk
//! position and `cw` are packed into one `AtomicU64` and advanced with a
//! compare-and-swap loop, so concurrent workers see one shared rotation.
//! Levels of `cw` that no usable destination can serve are skipped in one
//! step, which gives the kernel's result without walking the list once per
//! empty level.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::{common, Dest, Input, Scheduler};

/// Position value meaning "at the list head" (before the first dest).
const HEAD: u32 = u32::MAX;

fn pack(pos: u32, cw: i64) -> u64 {
    ((pos as u64) << 32) | (cw as i32 as u32 as u64)
}

fn unpack(state: u64) -> (u32, i64) {
    ((state >> 32) as u32, (state as u32 as i32) as i64)
}

/// The `wrr` scheduler.
#[derive(Debug)]
pub struct Wrr {
    /// `(position, cw)` packed by [`pack`].
    state: AtomicU64,
    /// `max_weight - (di - 1)`; 0 when every weight is 0.
    mw: i64,
    /// gcd of the non-zero weights (1 when there are none).
    di: i64,
}

impl Wrr {
    /// A weighted round-robin scheduler for `dests`, starting at the head
    /// with `cw = mw`.
    pub fn new(dests: &[Arc<Dest>]) -> Self {
        let (mw, di) = Self::levels(dests);
        Wrr {
            state: AtomicU64::new(pack(HEAD, mw)),
            mw,
            di,
        }
    }

    /// `(mw, di)` for a destination list.
    fn levels(dests: &[Arc<Dest>]) -> (i64, i64) {
        let max = dests.iter().map(|d| d.weight()).max().unwrap_or(0) as i64;
        let g = dests.iter().fold(0, |g, d| common::gcd(g, d.weight()));
        let di = if g == 0 { 1 } else { g as i64 };
        ((max - (di - 1)).max(0), di)
    }
}

impl Scheduler for Wrr {
    fn name(&self) -> &'static str {
        "wrr"
    }

    fn schedule(&self, dests: &[Arc<Dest>], _input: &Input) -> Option<usize> {
        let n = dests.len();
        if n == 0 || self.mw <= 0 {
            return None;
        }
        let (mw, di) = (self.mw, self.di);
        let mut cur = self.state.load(Ordering::Relaxed);
        loop {
            let (pos, mut cw) = unpack(cur);
            // `None` = at the head of the list.
            let mut p = (pos != HEAD && (pos as usize) < n).then_some(pos as usize);
            // Whether the pass in progress started at the head, so that at
            // the next head crossing we know the whole list was seen.
            let mut full_pass = p.is_none();
            let mut pass_max: u32 = 0;
            let mut steps = 0usize;
            let found = loop {
                let i = match p {
                    None => 0,
                    Some(i) if i + 1 < n => i + 1,
                    Some(_) => {
                        p = None;
                        if full_pass && pass_max == 0 {
                            break None; // nothing usable at all
                        }
                        cw -= di;
                        if cw <= 0 {
                            cw = mw;
                        }
                        if full_pass && cw > pass_max as i64 {
                            // No usable dest can serve levels above
                            // pass_max: go straight to the first level at
                            // or below it, as the kernel's walk would.
                            cw -= (cw - pass_max as i64 + di - 1) / di * di;
                            if cw <= 0 {
                                break None;
                            }
                        }
                        full_pass = true;
                        pass_max = 0;
                        continue;
                    }
                };
                p = Some(i);
                let d = &dests[i];
                if d.is_usable() {
                    let w = d.weight();
                    pass_max = pass_max.max(w);
                    if w as i64 >= cw {
                        break Some(i);
                    }
                }
                steps += 1;
                if steps > 4 * (n + 1) {
                    break None; // weights changing under us; give up
                }
            };
            let i = found?;
            match self.state.compare_exchange_weak(
                cur,
                pack(i as u32, cw),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(i),
                Err(now) => cur = now,
            }
        }
    }

    fn rebuild(&self, dests: &[Arc<Dest>]) -> Box<dyn Scheduler> {
        let (mw, di) = Self::levels(dests);
        let (_, mut cw) = unpack(self.state.load(Ordering::Relaxed));
        // Kernel: restart from the head, keep cw if still meaningful.
        if cw > mw || cw <= 0 {
            cw = mw;
        } else if di > 1 {
            cw = cw / di * di + 1;
        }
        Box::new(Wrr {
            state: AtomicU64::new(pack(HEAD, cw)),
            mw,
            di,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn picks(s: &dyn Scheduler, ds: &[Arc<Dest>], n: usize) -> Vec<usize> {
        (0..n).map(|_| s.schedule(ds, &any()).unwrap()).collect()
    }

    #[test]
    fn interleaved_sequence() {
        let ds = dests(&[4, 3, 2]);
        let s = Wrr::new(&ds);
        // cw 4: a; 3: a b; 2: a b c; 1: a b c
        assert_eq!(picks(&s, &ds, 9), [0, 0, 1, 0, 1, 2, 0, 1, 2]);
        assert_eq!(picks(&s, &ds, 3), [0, 0, 1], "wraps to mw");
    }

    #[test]
    fn gcd_steps() {
        let ds = dests(&[6, 2, 4]);
        let s = Wrr::new(&ds);
        // di 2, mw 5: cw 5: a; 3: a c; 1: a b c
        assert_eq!(picks(&s, &ds, 6), [0, 0, 2, 0, 1, 2]);
        assert_eq!(picks(&s, &ds, 1), [0]);
    }

    #[test]
    fn equal_weights_is_round_robin() {
        let ds = dests(&[3, 3, 3]);
        let s = Wrr::new(&ds);
        assert_eq!(picks(&s, &ds, 6), [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn skips_unusable_and_weight_zero() {
        let ds = dests(&[5, 0, 1, 2]);
        ds[0].set_available(false);
        ds[3].set_thresholds(1, 0);
        ds[3].bind(false);
        let s = Wrr::new(&ds);
        // Only dest 2 (weight 1) is usable: the walk drops to cw 1.
        assert_eq!(picks(&s, &ds, 3), [2, 2, 2]);
        ds[2].set_available(false);
        assert_eq!(s.schedule(&ds, &any()), None);
        ds[0].set_available(true);
        assert_eq!(picks(&s, &ds, 2), [0, 0]);
    }

    #[test]
    fn all_weights_zero() {
        let ds = dests(&[0, 0]);
        let s = Wrr::new(&ds);
        assert_eq!(s.schedule(&ds, &any()), None);
    }

    #[test]
    fn rebuild_keeps_cw_and_restarts_at_head() {
        let ds = dests(&[4, 3, 2]);
        let s = Wrr::new(&ds);
        assert_eq!(picks(&s, &ds, 3), [0, 0, 1]); // now cw 3, at b
        let s = s.rebuild(&ds);
        assert_eq!(picks(s.as_ref(), &ds, 3), [0, 1, 0], "cw 3 again from head");
    }

    #[test]
    fn rebuild_resets_cw_above_new_max() {
        let ds = dests(&[4, 3, 2]);
        let s = Wrr::new(&ds);
        assert_eq!(picks(&s, &ds, 1), [0]); // cw 4
        let fewer = vec![ds[1].clone(), ds[2].clone()];
        let s = s.rebuild(&fewer); // mw 3 < cw 4: cw = 3
        assert_eq!(picks(s.as_ref(), &fewer, 5), [0, 0, 1, 0, 1]);
    }

    #[test]
    fn rebuild_aligns_cw_to_new_gcd() {
        let ds = dests(&[3, 2, 1]);
        let s = Wrr::new(&ds);
        assert_eq!(picks(&s, &ds, 3), [0, 0, 1]); // cw 2
        ds[0].set_weight(6);
        ds[1].set_weight(4);
        ds[2].set_weight(2);
        // di 2, mw 5: cw 2 -> 2/2*2+1 = 3: a b, then cw 1: a b c, then 5: a
        let s = s.rebuild(&ds);
        assert_eq!(picks(s.as_ref(), &ds, 6), [0, 1, 0, 1, 2, 0]);
    }

    #[test]
    fn concurrent_callers_keep_exact_proportions() {
        let ds = dests(&[1, 2, 3]);
        let s = Wrr::new(&ds);
        let mut counts = [0usize; 3];
        std::thread::scope(|scope| {
            let hs: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| picks(&s, &ds, 600)))
                .collect();
            for h in hs {
                for i in h.join().unwrap() {
                    counts[i] += 1;
                }
            }
        });
        assert_eq!(counts, [400, 800, 1200]);
    }
}
