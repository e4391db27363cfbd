//! Locality-based least-connection with replication (`lblcr`, kernel
//! `ip_vs_lblcr.c`): like lblc, but each destination address maps to a
//! *set* of servers, so a hot address can be served by several. The
//! least-loaded usable member of the set (weighted least-connection, ties to
//! the earliest member, newest members first) is used unless the set has
//! none or it is overloaded in the lblc sense (`active > weight` while some
//! server is under half load); then the service-wide weighted
//! least-connection server is used and added to the set. When a set has more
//! than one member and has not changed for `lblcr_expiration` seconds, its
//! most loaded member is removed (checked when the entry is used).
//!
//! Entries (whole sets) unused for `lblcr_expiration` seconds expire
//! (default 24 h); garbage collection is amortised as in
//! [`lblc`](crate::lblc). The table is behind a mutex taken only for new
//! connections of the service.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::common::{self, index_by_key, lblc_overloaded};
use crate::lblc::collect;
use crate::{Dest, Input, Scheduler};

/// Identity of a destination.
type Key = (IpAddr, u16);

#[derive(Debug, Clone)]
struct Entry {
    /// Members as (index in the destination list, identity), newest first.
    set: Vec<(u32, Key)>,
    /// Last time a member was added or removed.
    lastmod: u64,
    lastuse: u64,
}

impl Entry {
    /// Indices of the members that belong to `dests` (the snapshot).
    fn members<'a>(&'a self, dests: &'a [Arc<Dest>]) -> impl Iterator<Item = usize> + 'a {
        self.set.iter().filter_map(move |&(i, key)| {
            let i = i as usize;
            (dests.get(i)?.key() == key).then_some(i)
        })
    }

    /// The most loaded member by `overhead / weight` among those with a
    /// weight (ties to the earliest member).
    fn most_loaded(&self, dests: &[Arc<Dest>]) -> Option<usize> {
        let mut most: Option<(usize, u64, u64)> = None;
        for i in self.members(dests) {
            let d = &dests[i];
            let (doh, dw) = (d.overhead(), d.weight() as u64);
            if dw == 0 {
                continue;
            }
            match most {
                Some((_, moh, mw)) if moh * dw >= doh * mw => {}
                _ => most = Some((i, doh, dw)),
            }
        }
        most.map(|(i, _, _)| i)
    }
}

#[derive(Debug, Default)]
struct Table {
    map: HashMap<IpAddr, Entry>,
    last_gc: u64,
}

/// The `lblcr` scheduler: its destination-address → server-set cache.
pub struct Lblcr {
    expiration: u64,
    table: Mutex<Table>,
}

impl Lblcr {
    /// An lblcr scheduler with an empty cache; sets expire and shrink after
    /// `expiration` seconds.
    pub fn new(expiration: u64) -> Self {
        Lblcr {
            expiration,
            table: Mutex::new(Table::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Lblcr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries = self.table.try_lock().map(|t| t.map.len()).ok();
        f.debug_struct("Lblcr")
            .field("expiration_secs", &self.expiration)
            .field("entries", &entries)
            .finish()
    }
}

impl Scheduler for Lblcr {
    fn name(&self) -> &'static str {
        "lblcr"
    }

    fn schedule(&self, dests: &[Arc<Dest>], input: &Input) -> Option<usize> {
        let now = input.now_secs;
        let expiration = self.expiration;
        let mut guard = self.lock();
        let t = &mut *guard;
        collect(&mut t.map, &mut t.last_gc, now, expiration, |e| e.lastuse);
        if let Some(e) = t.map.get_mut(&input.dst) {
            if now.saturating_sub(e.lastuse) < expiration {
                e.lastuse = now;
                let least = common::weighted_least(dests, e.members(dests), Dest::overhead);
                if e.set.len() > 1 && now > e.lastmod.saturating_add(expiration) {
                    if let Some(m) = e.most_loaded(dests) {
                        e.set.retain(|&(i, _)| i as usize != m);
                        e.lastmod = now;
                    }
                }
                if let Some(i) = least {
                    if !lblc_overloaded(&dests[i], dests) {
                        return Some(i);
                    }
                }
                let i = common::wlc(dests)?;
                if !e.members(dests).any(|m| m == i) {
                    e.set.insert(0, (i as u32, dests[i].key()));
                    e.lastmod = now;
                }
                return Some(i);
            }
        }
        let i = common::wlc(dests)?;
        t.map.insert(
            input.dst,
            Entry {
                set: vec![(i as u32, dests[i].key())],
                lastmod: now,
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
                let set: Vec<_> = e
                    .set
                    .iter()
                    .filter_map(|&(_, key)| Some((*index.get(&key)? as u32, key)))
                    .collect();
                (!set.is_empty()).then(|| (*addr, Entry { set, ..e.clone() }))
            })
            .collect();
        Box::new(Lblcr {
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

    fn set_of(s: &Lblcr, dst: [u8; 4]) -> Vec<u32> {
        let t = s.lock();
        let e = &t.map[&IpAddr::from(dst)];
        e.set.iter().map(|&(i, _)| i).collect()
    }

    #[test]
    fn sticks_to_the_set() {
        let ds = dests(&[1, 1, 1]);
        let s = Lblcr::new(DAY);
        let a = to_dst([203, 0, 113, 1], 0);
        assert_eq!(s.schedule(&ds, &a), Some(0));
        ds[0].bind(true);
        assert_eq!(s.schedule(&ds, &a), Some(0), "1 active <= weight 1");
        assert_eq!(set_of(&s, [203, 0, 113, 1]), [0]);
    }

    #[test]
    fn replicates_when_overloaded() {
        let ds = dests(&[1, 1, 4]);
        let s = Lblcr::new(DAY);
        let a = to_dst([203, 0, 113, 1], 0);
        assert_eq!(s.schedule(&ds, &a), Some(0));
        load(&ds[0], 2, 0); // overloaded: 2 > 1 and dest 2 is idle
        load(&ds[1], 1, 0);
        assert_eq!(s.schedule(&ds, &a), Some(2), "wlc choice added");
        assert_eq!(set_of(&s, [203, 0, 113, 1]), [2, 0], "newest first");
        // Now the set's least loaded member (2: 0/4) serves a.
        assert_eq!(s.schedule(&ds, &a), Some(2));
        load(&ds[2], 2, 0); // 512/4 = 128 < 512/1: still 2
        assert_eq!(s.schedule(&ds, &a), Some(2));
        assert_eq!(set_of(&s, [203, 0, 113, 1]), [2, 0]);
    }

    #[test]
    fn set_shrinks_after_expiration_without_change() {
        let ds = dests(&[1, 1, 4]);
        let s = Lblcr::new(100);
        let at = |t| to_dst([203, 0, 113, 1], t);
        assert_eq!(s.schedule(&ds, &at(0)), Some(0));
        load(&ds[0], 2, 0);
        load(&ds[1], 1, 0);
        assert_eq!(s.schedule(&ds, &at(10)), Some(2)); // set [2, 0], lastmod 10
        assert_eq!(s.schedule(&ds, &at(60)), Some(2), "use keeps the entry");
        assert_eq!(
            s.schedule(&ds, &at(110)),
            Some(2),
            "not yet: 110 > 110 false"
        );
        assert_eq!(set_of(&s, [203, 0, 113, 1]), [2, 0]);
        assert_eq!(s.schedule(&ds, &at(111)), Some(2));
        assert_eq!(set_of(&s, [203, 0, 113, 1]), [2], "most loaded (0) removed");
    }

    #[test]
    fn unused_entries_expire() {
        let ds = dests(&[1, 1]);
        let s = Lblcr::new(100);
        let at = |t| to_dst([203, 0, 113, 1], t);
        assert_eq!(s.schedule(&ds, &at(0)), Some(0));
        ds[0].bind(true);
        assert_eq!(s.schedule(&ds, &at(99)), Some(0), "cached");
        assert_eq!(
            s.schedule(&ds, &at(199)),
            Some(1),
            "idle 100 s: expired, wlc"
        );
        assert_eq!(set_of(&s, [203, 0, 113, 1]), [1], "fresh set");
    }

    #[test]
    fn unusable_members_are_skipped() {
        let ds = dests(&[1, 1]);
        let s = Lblcr::new(DAY);
        let a = to_dst([203, 0, 113, 1], 0);
        assert_eq!(s.schedule(&ds, &a), Some(0));
        ds[0].set_available(false);
        assert_eq!(s.schedule(&ds, &a), Some(1));
        assert_eq!(set_of(&s, [203, 0, 113, 1]), [1, 0]);
        ds[0].set_available(true);
        ds[0].set_weight(0);
        assert_eq!(s.schedule(&ds, &a), Some(1));
        ds[1].set_thresholds(1, 0);
        ds[1].bind(false);
        assert_eq!(s.schedule(&ds, &a), None, "all unusable");
    }

    #[test]
    fn ties_in_set_go_to_newest_member() {
        let ds = dests(&[1, 1, 2]);
        let s = Lblcr::new(DAY);
        let a = to_dst([203, 0, 113, 1], 0);
        assert_eq!(s.schedule(&ds, &a), Some(0));
        load(&ds[0], 2, 0);
        load(&ds[1], 1, 0);
        assert_eq!(s.schedule(&ds, &a), Some(2)); // set [2, 0]
        load(&ds[2], 4, 0); // 1024/2 = 512/1: tie between 2 and 0
                            // least = 2 (first in set); 4 > 2 and dest 1? 1*2 < 1 no -> not
                            // overloaded in the lblc sense, so 2 serves.
        assert_eq!(s.schedule(&ds, &a), Some(2));
    }

    #[test]
    fn rebuild_remaps_sets() {
        let ds = dests(&[1, 1, 4]);
        let s = Lblcr::new(DAY);
        let a = to_dst([203, 0, 113, 1], 0);
        s.schedule(&ds, &a);
        load(&ds[0], 2, 0);
        load(&ds[1], 1, 0);
        assert_eq!(s.schedule(&ds, &a), Some(2)); // set [2, 0]
        let new = vec![ds[2].clone(), ds[1].clone()]; // drop dest 0
        let s2 = s.rebuild(&new);
        assert_eq!(s2.schedule(&new, &a), Some(0), "dest 2 is now index 0");
        let empty: Vec<Arc<Dest>> = vec![ds[1].clone()];
        let s3 = s2.rebuild(&empty);
        assert_eq!(s3.schedule(&empty, &a), Some(0), "entry dropped, wlc");
    }
}
