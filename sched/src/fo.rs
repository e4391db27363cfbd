//! Weighted failover scheduling (`fo`, kernel `ip_vs_fo.c`): always the
//! usable destination with the highest weight; connection counts are ignored.
//! Ties go to the earliest destination in the list.

use std::sync::Arc;

use crate::{Dest, Input, Scheduler};

/// The `fo` scheduler (stateless).
#[derive(Debug, Clone, Copy, Default)]
pub struct Fo;

impl Scheduler for Fo {
    fn name(&self) -> &'static str {
        "fo"
    }

    fn schedule(&self, dests: &[Arc<Dest>], _input: &Input) -> Option<usize> {
        let mut best: Option<(usize, u32)> = None;
        for (i, d) in dests.iter().enumerate() {
            if !d.is_usable() {
                continue;
            }
            let w = d.weight();
            if best.is_none_or(|(_, hw)| w > hw) {
                best = Some((i, w));
            }
        }
        best.map(|(i, _)| i)
    }

    fn rebuild(&self, _dests: &[Arc<Dest>]) -> Box<dyn Scheduler> {
        Box::new(Fo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn picks_highest_weight_regardless_of_load() {
        let ds = dests(&[2, 5, 3]);
        load(&ds[1], 1000, 1000);
        assert_eq!(Fo.schedule(&ds, &any()), Some(1));
    }

    #[test]
    fn ties_go_to_list_order() {
        let ds = dests(&[2, 5, 5]);
        assert_eq!(Fo.schedule(&ds, &any()), Some(1));
    }

    #[test]
    fn fails_over_when_primary_unusable() {
        let ds = dests(&[2, 5, 3, 0]);
        ds[1].set_thresholds(1, 0);
        ds[1].bind(true);
        assert_eq!(Fo.schedule(&ds, &any()), Some(2));
        ds[2].set_available(false);
        assert_eq!(Fo.schedule(&ds, &any()), Some(0));
        ds[0].set_weight(0);
        assert_eq!(Fo.schedule(&ds, &any()), None);
    }
}
