//! The rate estimator of `tapvsadm -L --rate`: per real server, connections, packets and
//! bytes per second in each direction, sampled from the workers' published counters every
//! [`ESTIMATOR_INTERVAL`] and smoothed as IPVS's estimator does (an EWMA of weight 1/4).

use std::collections::HashMap;
use std::time::Duration;

use crate::datapath::stats::DestCounters;
use tapvs_adm as adm;

/// Estimated rates of one real server (per second).
#[derive(Debug, Clone, Copy, Default)]
pub struct RateEst {
    last: DestCounters,
    cps: f64,
    inpps: f64,
    outpps: f64,
    inbps: f64,
    outbps: f64,
    primed: bool,
}

/// The rate estimator: fed every 2 seconds with each real server's totals.
#[derive(Debug, Default)]
pub struct Estimator {
    est: HashMap<u32, RateEst>,
}

/// Seconds between estimator samples (as IPVS).
pub const ESTIMATOR_INTERVAL: Duration = Duration::from_secs(2);

impl Estimator {
    /// Folds in one sample of totals taken `secs` after the previous one.
    pub fn sample(&mut self, totals: &[DestCounters], secs: f64) {
        for (id, t) in totals.iter().enumerate() {
            let e = self.est.entry(id as u32).or_default();
            if e.primed {
                let d = t.since(&e.last);
                let ewma = |avg: &mut f64, n: u64| *avg += (n as f64 / secs - *avg) / 4.0;
                ewma(&mut e.cps, d.conns);
                ewma(&mut e.inpps, d.in_pkts);
                ewma(&mut e.outpps, d.out_pkts);
                ewma(&mut e.inbps, d.in_bytes);
                ewma(&mut e.outbps, d.out_bytes);
            }
            e.last = *t;
            e.primed = true;
        }
    }

    /// The rates of real server `id`.
    pub fn rate(&self, id: u32) -> adm::Rate {
        self.est
            .get(&id)
            .map_or_else(adm::Rate::default, |e| adm::Rate {
                cps: e.cps.round() as u64,
                inpps: e.inpps.round() as u64,
                outpps: e.outpps.round() as u64,
                inbps: e.inbps.round() as u64,
                outbps: e.outbps.round() as u64,
            })
    }

    /// Forgets the rates (`-Z`).
    pub fn zero(&mut self) {
        for e in self.est.values_mut() {
            let last = e.last;
            *e = RateEst {
                last,
                primed: true,
                ..RateEst::default()
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimator_converges_like_an_ewma() {
        let mut e = Estimator::default();
        let mut t = DestCounters::default();
        e.sample(&[t], 2.0);
        for _ in 0..40 {
            t.conns += 200; // 100 per second
            t.in_pkts += 2000;
            e.sample(&[t], 2.0);
        }
        let r = e.rate(0);
        assert_eq!(r.cps, 100);
        assert_eq!(r.inpps, 1000);
        // One quiet interval: a quarter of the way down.
        e.sample(&[t], 2.0);
        assert_eq!(e.rate(0).cps, 75);
        e.zero();
        assert_eq!(e.rate(0).cps, 0);
    }
}
