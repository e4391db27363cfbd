//! Least-connection scheduling (`lc`, kernel `ip_vs_lc.c`): the usable
//! destination with the smallest overhead `active * 256 + inactive`. Weights
//! only matter through weight 0 (quiesced, skipped); ties go to the earliest
//! destination in the list.

use std::sync::Arc;

use crate::{Dest, Input, Scheduler};

/// The `lc` scheduler (stateless).
#[derive(Debug, Clone, Copy, Default)]
pub struct Lc;

impl Scheduler for Lc {
    fn name(&self) -> &'static str {
        "lc"
    }

    fn schedule(&self, dests: &[Arc<Dest>], _input: &Input) -> Option<usize> {
        let mut least: Option<(usize, u64)> = None;
        for (i, d) in dests.iter().enumerate() {
            if !d.is_usable() {
                continue;
            }
            let doh = d.overhead();
            if least.is_none_or(|(_, loh)| doh < loh) {
                least = Some((i, doh));
            }
        }
        least.map(|(i, _)| i)
    }

    fn rebuild(&self, _dests: &[Arc<Dest>]) -> Box<dyn Scheduler> {
        Box::new(Lc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn picks_min_overhead_ignoring_weight() {
        let ds = dests(&[100, 1, 5]);
        load(&ds[0], 1, 0); // 256
        load(&ds[1], 0, 200); // 200
        load(&ds[2], 0, 201); // 201
        assert_eq!(Lc.schedule(&ds, &any()), Some(1));
    }

    #[test]
    fn ties_go_to_list_order() {
        let ds = dests(&[1, 1, 1]);
        load(&ds[0], 0, 3);
        load(&ds[1], 0, 2);
        load(&ds[2], 0, 2);
        assert_eq!(Lc.schedule(&ds, &any()), Some(1));
    }

    #[test]
    fn skips_weight_zero_overloaded_and_unavailable() {
        let ds = dests(&[0, 1, 1, 1]);
        load(&ds[1], 0, 5);
        ds[1].set_thresholds(5, 0);
        ds[2].set_available(false);
        load(&ds[3], 3, 0);
        assert_eq!(Lc.schedule(&ds, &any()), Some(3));
        ds[3].set_weight(0);
        assert_eq!(Lc.schedule(&ds, &any()), None);
    }
}
