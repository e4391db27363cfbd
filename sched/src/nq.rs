//! Never-queue scheduling (`nq`, kernel `ip_vs_nq.c`): the first usable
//! destination in list order with no active connection wins at once;
//! otherwise the SED rule `(active + 1) / weight` applies (division free,
//! ties to the earliest destination).

use std::sync::Arc;

use crate::sed::sed_cost;
use crate::{Dest, Input, Scheduler};

/// The `nq` scheduler (stateless).
#[derive(Debug, Clone, Copy, Default)]
pub struct Nq;

impl Scheduler for Nq {
    fn name(&self) -> &'static str {
        "nq"
    }

    fn schedule(&self, dests: &[Arc<Dest>], _input: &Input) -> Option<usize> {
        let mut least: Option<(usize, u64, u64)> = None;
        for (i, d) in dests.iter().enumerate() {
            if !d.is_usable() {
                continue;
            }
            if d.active_conns() == 0 {
                return Some(i);
            }
            let (doh, dw) = (sed_cost(d), d.weight() as u64);
            match least {
                Some((_, loh, lw)) if loh * dw <= doh * lw => {}
                _ => least = Some((i, doh, dw)),
            }
        }
        least.map(|(i, _, _)| i)
    }

    fn rebuild(&self, _dests: &[Arc<Dest>]) -> Box<dyn Scheduler> {
        Box::new(Nq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn first_idle_server_wins() {
        let ds = dests(&[10, 1, 1]);
        load(&ds[0], 1, 0);
        load(&ds[1], 0, 50); // inactive conns do not count
        assert_eq!(Nq.schedule(&ds, &any()), Some(1));
    }

    #[test]
    fn otherwise_sed() {
        let ds = dests(&[1, 4, 2]);
        load(&ds[0], 1, 0); // 2/1
        load(&ds[1], 5, 0); // 6/4
        load(&ds[2], 2, 0); // 3/2 = 6/4: tie -> 1
        assert_eq!(Nq.schedule(&ds, &any()), Some(1));
        ds[1].bind(true); // 7/4 > 3/2
        assert_eq!(Nq.schedule(&ds, &any()), Some(2));
    }

    #[test]
    fn skips_weight_zero_overloaded_and_unavailable() {
        let ds = dests(&[0, 1, 1, 1]);
        ds[1].set_thresholds(1, 0);
        ds[1].bind(false);
        ds[2].set_available(false);
        load(&ds[3], 3, 0);
        assert_eq!(Nq.schedule(&ds, &any()), Some(3));
        ds[3].set_available(false);
        assert_eq!(Nq.schedule(&ds, &any()), None);
    }
}
