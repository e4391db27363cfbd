//! Round-robin scheduling (`rr`, kernel `ip_vs_rr.c`): walk the destination
//! list circularly from just after the last pick and take the first usable
//! destination. The position survives calls (an atomic, advanced with a
//! compare-and-swap so concurrent workers do not pick the same slot twice)
//! and rebuilds (it follows the last-picked destination, or the nearest
//! surviving one before it, like the kernel's `del_dest` hook).

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::{Dest, Input, Scheduler};

/// The `rr` scheduler.
#[derive(Debug)]
pub struct Rr {
    /// Index at which the next walk starts (last pick + 1).
    next: AtomicUsize,
    /// Identities of the destination list this scheduler was built for, so
    /// that a rebuild can find where the position went.
    keys: Vec<(IpAddr, u16)>,
}

impl Rr {
    /// A round-robin scheduler starting at the head of `dests`.
    pub fn new(dests: &[Arc<Dest>]) -> Self {
        Rr {
            next: AtomicUsize::new(0),
            keys: dests.iter().map(|d| d.key()).collect(),
        }
    }
}

impl Scheduler for Rr {
    fn name(&self) -> &'static str {
        "rr"
    }

    fn schedule(&self, dests: &[Arc<Dest>], _input: &Input) -> Option<usize> {
        let n = dests.len();
        let mut start = self.next.load(Ordering::Relaxed);
        loop {
            let found = (0..n)
                .map(|k| (start + k) % n)
                .find(|&i| dests[i].is_usable())?;
            match self.next.compare_exchange_weak(
                start,
                found + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(found),
                Err(now) => start = now,
            }
        }
    }

    fn rebuild(&self, dests: &[Arc<Dest>]) -> Box<dyn Scheduler> {
        let new = Rr::new(dests);
        let index = crate::common::index_by_key(dests);
        let next = self.next.load(Ordering::Relaxed);
        // The last pick is keys[next - 1]; if it is gone, fall back to the
        // closest surviving destination before it (kernel: move to prev).
        let old = self.keys.len();
        let last = next.min(old);
        let start = (1..=last)
            .rev()
            .find_map(|k| index.get(&self.keys[k - 1]))
            .map_or(0, |&i| i + 1);
        new.next.store(start, Ordering::Relaxed);
        Box::new(new)
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
    fn cycles_in_list_order_ignoring_weights() {
        let ds = dests(&[1, 5, 2]);
        let s = Rr::new(&ds);
        assert_eq!(picks(&s, &ds, 7), [0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn skips_unusable() {
        let ds = dests(&[1, 0, 1, 1]);
        ds[2].set_available(false);
        ds[3].set_thresholds(1, 0);
        let s = Rr::new(&ds);
        assert_eq!(picks(&s, &ds, 3), [0, 3, 0]);
        ds[3].bind(false); // now overloaded
        assert_eq!(picks(&s, &ds, 2), [0, 0]);
        ds[0].set_weight(0);
        assert_eq!(s.schedule(&ds, &any()), None);
    }

    #[test]
    fn rebuild_keeps_position() {
        let ds = dests(&[1, 1, 1, 1]);
        let s = Rr::new(&ds);
        assert_eq!(picks(&s, &ds, 2), [0, 1]);
        // Same list: continue where we were.
        let s = s.rebuild(&ds);
        assert_eq!(picks(s.as_ref(), &ds, 1), [2]);
        // Remove the last-picked dest (index 2): continue after its
        // predecessor, i.e. with the old index 3, now index 2.
        let fewer: Vec<_> = vec![ds[0].clone(), ds[1].clone(), ds[3].clone()];
        let s = s.rebuild(&fewer);
        assert_eq!(picks(s.as_ref(), &fewer, 3), [2, 0, 1]);
        // Add a dest at the front: position follows the last pick (old 1).
        let x = Arc::new(Dest::new("10.9.9.9".parse().unwrap(), 80, 1));
        let more: Vec<_> = std::iter::once(x).chain(fewer.iter().cloned()).collect();
        let s = s.rebuild(&more);
        assert_eq!(picks(s.as_ref(), &more, 2), [3, 0]);
    }

    #[test]
    fn concurrent_callers_share_the_rotation() {
        let ds = dests(&[1; 4]);
        let s = Rr::new(&ds);
        let mut counts = [0usize; 4];
        std::thread::scope(|scope| {
            let hs: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| picks(&s, &ds, 1000)))
                .collect();
            for h in hs {
                for i in h.join().unwrap() {
                    counts[i] += 1;
                }
            }
        });
        assert_eq!(counts, [1000; 4]);
    }
}
