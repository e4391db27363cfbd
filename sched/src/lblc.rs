//! Locality-based least-connection scheduling (`lblc`, kernel
//! `ip_vs_lblc.c`), meant for cache clusters: connections for the same
//! *destination* IP go to the same server while it copes. A table maps each
//! destination address to the server last chosen for it. The cached server
//! is used unless it is unusable or *overloaded* in the lblc sense — more
//! active connections than its weight while some server of the service is
//! under half load (`active * 2 < weight`); then the weighted
//! least-connection server is chosen and cached instead.
//!
//! Entries expire once they have been unused for `lblc_expiration` seconds
//! (default 24 h; 0 turns the cache off); an expired entry counts as absent. Time comes from
//! [`Input::now_secs`]. Garbage collection is amortised into `schedule`:
//! at most once a minute expired entries are dropped, and when the table
//! holds more than 16 × 1024 entries (the kernel's `max_size`) entries idle
//! for over 6 minutes are dropped too. The table sits behind a mutex that is
//! only taken for new connections of this service.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::common::{self, index_by_key, lblc_overloaded};
use crate::{Dest, Input, Scheduler};

/// How often (seconds) the amortised garbage collection runs.
pub(crate) const GC_INTERVAL_SECS: u64 = 60;
/// Table size above which idle entries are collected early
/// (`IP_VS_LBLC_TAB_SIZE * 16`).
pub(crate) const MAX_ENTRIES: usize = 1024 * 16;
/// Idle time after which entries go when the table is over-full.
pub(crate) const ENTRY_TIMEOUT_SECS: u64 = 6 * 60;

/// Identity of a destination.
type Key = (IpAddr, u16);

#[derive(Debug, Clone)]
struct Entry {
    /// Index of the cached dest in the scheduler's destination list.
    dest: u32,
    /// Its identity, to detect a list that does not match the snapshot.
    key: Key,
    lastuse: u64,
}

#[derive(Debug, Default)]
struct Table {
    map: HashMap<IpAddr, Entry>,
    last_gc: u64,
}

/// The `lblc` scheduler: its destination-address cache.
pub struct Lblc {
    expiration: u64,
    table: Mutex<Table>,
}

/// Amortised garbage collection shared by lblc and lblcr: drop entries
/// unused for `expiration` seconds or more, and when over [`MAX_ENTRIES`]
/// also those idle for [`ENTRY_TIMEOUT_SECS`] or more.
pub(crate) fn collect<V>(
    map: &mut HashMap<IpAddr, V>,
    last_gc: &mut u64,
    now: u64,
    expiration: u64,
    lastuse: impl Fn(&V) -> u64,
) {
    if now.saturating_sub(*last_gc) < GC_INTERVAL_SECS {
        return;
    }
    *last_gc = now;
    map.retain(|_, v| now.saturating_sub(lastuse(v)) < expiration);
    if map.len() > MAX_ENTRIES {
        map.retain(|_, v| now.saturating_sub(lastuse(v)) < ENTRY_TIMEOUT_SECS);
    }
}

impl Lblc {
    /// An lblc scheduler with an empty cache whose entries expire after
    /// `expiration` seconds without use.
    pub fn new(expiration: u64) -> Self {
        Lblc {
            expiration,
            table: Mutex::new(Table::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Lblc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = self.table.try_lock().map(|t| t.map.len()).ok();
        f.debug_struct("Lblc")
            .field("expiration_secs", &self.expiration)
            .field("entries", &entries)
            .finish()
    }
}

impl Scheduler for Lblc {
    fn name(&self) -> &'static str {
        "lblc"
    }

    fn schedule(&self, dests: &[Arc<Dest>], input: &Input) -> Option<usize> {
        let now = input.now_secs;
        let mut guard = self.lock();
        let t = &mut *guard;
        collect(&mut t.map, &mut t.last_gc, now, self.expiration, |e| {
            e.lastuse
        });
        if let Some(e) = t.map.get_mut(&input.dst) {
            if now.saturating_sub(e.lastuse) < self.expiration {
                e.lastuse = now;
                let i = e.dest as usize;
                if let Some(d) = dests.get(i) {
                    if d.key() == e.key && d.is_usable() && !lblc_overloaded(d, dests) {
                        return Some(i);
                    }
                }
            }
        }
        let i = common::wlc(dests)?;
        t.map.insert(
            input.dst,
            Entry {
                dest: i as u32,
                key: dests[i].key(),
                lastuse: now,
            },
        );
        Some(i)
    }

    fn rebuild(&self, dests: &[Arc<Dest>]) -> Box<dyn Scheduler> {
        let index = index_by_key(dests);
        let old = self.lock();
        let map = old
            .map
            .iter()
            .filter_map(|(addr, e)| {
                let &i = index.get(&e.key)?;
                Some((
                    *addr,
                    Entry {
                        dest: i as u32,
                        ..e.clone()
                    },
                ))
            })
            .collect();
        Box::new(Lblc {
            expiration: self.expiration,
            table: Mutex::new(Table {
                map,
                last_gc: old.last_gc,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    const DAY: u64 = 24 * 3600;

    #[test]
    fn sticks_to_the_cached_server() {
        let ds = dests(&[1, 1, 1]);
        let s = Lblc::new(DAY);
        let a = to_dst([203, 0, 113, 1], 0);
        let b = to_dst([203, 0, 113, 2], 0);
        assert_eq!(s.schedule(&ds, &a), Some(0), "wlc: all idle -> first");
        ds[0].bind(true);
        assert_eq!(s.schedule(&ds, &b), Some(1), "wlc for a new address");
        ds[1].bind(true);
        ds[0].bind(false);
        // a stays on 0 although 2 is idle: 1 active <= weight 1.
        assert_eq!(s.schedule(&ds, &a), Some(0));
        assert_eq!(s.schedule(&ds, &b), Some(1));
    }

    #[test]
    fn moves_when_overloaded_and_someone_is_under_half_load() {
        let ds = dests(&[1, 1, 4]);
        let s = Lblc::new(DAY);
        let a = to_dst([203, 0, 113, 1], 0);
        assert_eq!(s.schedule(&ds, &a), Some(0));
        load(&ds[0], 2, 0); // 2 > weight 1
        load(&ds[1], 1, 0);
        load(&ds[2], 2, 0); // 2*2 < 4 is false: nobody under half load
        assert_eq!(
            s.schedule(&ds, &a),
            Some(0),
            "overloaded but no better place"
        );
        ds[2].unbind(true); // 1*2 < 4: dest 2 is under half load
        assert_eq!(s.schedule(&ds, &a), Some(2), "moves to the wlc choice");
        ds[0].unbind(true);
        ds[0].unbind(true);
        assert_eq!(s.schedule(&ds, &a), Some(2), "and stays there (re-cached)");
    }

    #[test]
    fn unusable_cached_server_is_replaced() {
        let ds = dests(&[1, 1]);
        let s = Lblc::new(DAY);
        let a = to_dst([203, 0, 113, 1], 0);
        assert_eq!(s.schedule(&ds, &a), Some(0));
        ds[0].set_weight(0);
        assert_eq!(s.schedule(&ds, &a), Some(1));
        ds[0].set_weight(1);
        assert_eq!(s.schedule(&ds, &a), Some(1), "sticks to the new one");
        ds[1].set_available(false);
        assert_eq!(s.schedule(&ds, &a), Some(0));
        ds[0].set_thresholds(1, 0);
        ds[0].bind(false);
        assert_eq!(s.schedule(&ds, &a), None, "all unusable");
    }

    #[test]
    fn entries_expire() {
        let ds = dests(&[1, 1]);
        let s = Lblc::new(100);
        let a = to_dst([203, 0, 113, 1], 0);
        assert_eq!(s.schedule(&ds, &a), Some(0));
        ds[0].bind(true);
        let at = |t| to_dst([203, 0, 113, 1], t);
        assert_eq!(s.schedule(&ds, &at(99)), Some(0), "used at 99: refreshed");
        assert_eq!(s.schedule(&ds, &at(198)), Some(0), "99 s idle: still valid");
        assert_eq!(
            s.schedule(&ds, &at(298)),
            Some(1),
            "100 s idle: expired -> wlc"
        );
    }

    #[test]
    fn gc_drops_expired_entries() {
        let ds = dests(&[1]);
        let s = Lblc::new(100);
        for k in 0..10 {
            s.schedule(&ds, &to_dst([203, 0, 113, k], 0));
        }
        assert_eq!(s.lock().map.len(), 10);
        s.schedule(&ds, &to_dst([198, 51, 100, 1], 150));
        assert_eq!(s.lock().map.len(), 1);
    }

    #[test]
    fn rebuild_keeps_entries_of_surviving_dests() {
        let ds = dests(&[1, 1, 1]);
        let s = Lblc::new(DAY);
        let a = to_dst([203, 0, 113, 1], 0);
        let b = to_dst([203, 0, 113, 2], 0);
        assert_eq!(s.schedule(&ds, &a), Some(0));
        ds[0].bind(true);
        assert_eq!(s.schedule(&ds, &b), Some(1));
        // Drop dest 0, keep 1 and 2 in a new order.
        let new = vec![ds[2].clone(), ds[1].clone()];
        let s = s.rebuild(&new);
        assert_eq!(s.schedule(&new, &b), Some(1), "b follows dest 1 to index 1");
        new[1].bind(true);
        assert_eq!(s.schedule(&new, &a), Some(0), "a's dest is gone: wlc");
    }
}
