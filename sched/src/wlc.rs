//! Weighted least-connection scheduling (`wlc`, the ipvsadm default; kernel
//! `ip_vs_wlc.c`): the usable destination with the smallest
//! `overhead / weight`, compared without division
//! (`overhead(least) * w(d) > overhead(d) * w(least)` replaces the
//! candidate). Ties go to the earliest destination in the list.

use std::sync::Arc;

use crate::{common, Dest, Input, Scheduler};

/// The `wlc` scheduler (stateless).
#[derive(Debug, Clone, Copy, Default)]
pub struct Wlc;

impl Scheduler for Wlc {
    fn name(&self) -> &'static str {
        "wlc"
    }

    fn schedule(&self, dests: &[Arc<Dest>], _input: &Input) -> Option<usize> {
        common::wlc(dests)
    }

    fn rebuild(&self, _dests: &[Arc<Dest>]) -> Box<dyn Scheduler> {
        Box::new(Wlc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn picks_min_overhead_per_weight() {
        let ds = dests(&[1, 4, 2]);
        load(&ds[0], 1, 0); // 256/1
        load(&ds[1], 3, 0); // 768/4 = 192
        load(&ds[2], 2, 0); // 512/2 = 256
        assert_eq!(Wlc.schedule(&ds, &any()), Some(1));
        ds[1].bind(false); // 769/4 = 192.25
        assert_eq!(Wlc.schedule(&ds, &any()), Some(1));
        ds[1].bind(true); // 1025/4 > 256
        assert_eq!(Wlc.schedule(&ds, &any()), Some(0));
    }

    #[test]
    fn all_idle_picks_first_and_ties_keep_list_order() {
        let ds = dests(&[1, 3, 2]);
        assert_eq!(Wlc.schedule(&ds, &any()), Some(0));
        load(&ds[0], 1, 0); // 256
        load(&ds[1], 3, 0); // 256
        load(&ds[2], 2, 0); // 256
        assert_eq!(Wlc.schedule(&ds, &any()), Some(0));
    }

    #[test]
    fn skips_weight_zero_overloaded_and_unavailable() {
        let ds = dests(&[0, 5, 5, 1]);
        ds[1].set_thresholds(1, 0);
        ds[1].bind(false);
        ds[2].set_available(false);
        load(&ds[3], 10, 0);
        assert_eq!(Wlc.schedule(&ds, &any()), Some(3));
        ds[3].set_available(false);
        assert_eq!(Wlc.schedule(&ds, &any()), None);
    }
}
