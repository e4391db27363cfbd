//! Shortest-expected-delay scheduling (`sed`, kernel `ip_vs_sed.c`): the
//! usable destination with the smallest `(active + 1) / weight` — only active
//! connections count, plus one for the connection being scheduled. Compared
//! without division; ties go to the earliest destination in the list.

use std::sync::Arc;

use crate::{common, Dest, Input, Scheduler};

/// The SED cost of a destination: active connections plus the new one.
pub(crate) fn sed_cost(d: &Dest) -> u64 {
    d.active_conns() as u64 + 1
}

/// The `sed` scheduler (stateless).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sed;

impl Scheduler for Sed {
    fn name(&self) -> &'static str {
        "sed"
    }

    fn schedule(&self, dests: &[Arc<Dest>], _input: &Input) -> Option<usize> {
        common::weighted_least(dests, 0..dests.len(), sed_cost)
    }

    fn rebuild(&self, _dests: &[Arc<Dest>]) -> Box<dyn Scheduler> {
        Box::new(Sed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn counts_only_active_plus_one() {
        let ds = dests(&[1, 3]);
        // wlc would pick 0 (overhead 0 vs 256/3); sed: 1/1 vs 2/3 -> 1
        load(&ds[0], 0, 100);
        load(&ds[1], 1, 0);
        assert_eq!(Sed.schedule(&ds, &any()), Some(1));
        ds[1].bind(true); // 3/3 = 1/1: tie -> first
        assert_eq!(Sed.schedule(&ds, &any()), Some(0));
    }

    #[test]
    fn idle_servers_prefer_higher_weight() {
        let ds = dests(&[1, 2, 2]);
        assert_eq!(Sed.schedule(&ds, &any()), Some(1), "1/2 < 1/1, tie 1 vs 2");
    }

    #[test]
    fn skips_weight_zero_overloaded_and_unavailable() {
        let ds = dests(&[0, 9, 9, 1]);
        ds[1].set_thresholds(1, 0);
        ds[1].bind(false);
        ds[2].set_available(false);
        load(&ds[3], 4, 0);
        assert_eq!(Sed.schedule(&ds, &any()), Some(3));
        ds[3].set_weight(0);
        assert_eq!(Sed.schedule(&ds, &any()), None);
    }
}
