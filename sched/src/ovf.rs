//! Weighted overflow scheduling (`ovf`, kernel `ip_vs_ovf.c`): the usable
//! destination with the highest weight among those whose active connections
//! do not exceed their weight (`active <= weight`). Once the best server has
//! more active connections than its weight, new connections overflow to the
//! next. Only active connections count, so it suits TCP better than UDP.
//! Ties go to the earliest destination in the list.

use std::sync::Arc;

use crate::{Dest, Input, Scheduler};

/// The `ovf` scheduler (stateless).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ovf;

impl Scheduler for Ovf {
    fn name(&self) -> &'static str {
        "ovf"
    }

    fn schedule(&self, dests: &[Arc<Dest>], _input: &Input) -> Option<usize> {
        let mut best: Option<(usize, u32)> = None;
        for (i, d) in dests.iter().enumerate() {
            let w = d.weight();
            if !d.is_usable() || d.active_conns() > w {
                continue;
            }
            if best.is_none_or(|(_, hw)| w > hw) {
                best = Some((i, w));
            }
        }
        best.map(|(i, _)| i)
    }

    fn rebuild(&self, _dests: &[Arc<Dest>]) -> Box<dyn Scheduler> {
        Box::new(Ovf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    #[test]
    fn overflows_when_active_exceeds_weight() {
        let ds = dests(&[2, 3, 1]);
        load(&ds[1], 3, 100); // active == weight: still chosen
        assert_eq!(Ovf.schedule(&ds, &any()), Some(1));
        ds[1].bind(true); // 4 > 3
        assert_eq!(Ovf.schedule(&ds, &any()), Some(0));
        load(&ds[0], 3, 0);
        assert_eq!(Ovf.schedule(&ds, &any()), Some(2));
        load(&ds[2], 2, 0);
        assert_eq!(Ovf.schedule(&ds, &any()), None);
    }

    #[test]
    fn ties_go_to_list_order() {
        let ds = dests(&[1, 4, 4]);
        assert_eq!(Ovf.schedule(&ds, &any()), Some(1));
    }

    #[test]
    fn skips_weight_zero_overloaded_and_unavailable() {
        let ds = dests(&[0, 9, 8, 1]);
        ds[1].set_thresholds(1, 0);
        ds[1].bind(false);
        ds[2].set_available(false);
        assert_eq!(Ovf.schedule(&ds, &any()), Some(3));
        ds[3].set_weight(0);
        assert_eq!(Ovf.schedule(&ds, &any()), None);
    }
}
