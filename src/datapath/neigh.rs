//! The neighbour (ARP and IPv6 Neighbour Discovery) cache: a bounded, aging map from next-hop address to MAC and port.
//!
//! The control thread owns the master [`NeighCache`]; workers read an immutable [`NeighTable`]
//! it publishes (copy on write through `arc-swap`) and report what they learn from ARP frames
//! through a bounded queue. Entries expire `timeout` seconds after they were last confirmed by
//! an ARP frame; before that the control thread re-probes entries still wanted (real servers,
//! gateways, next hops workers asked for). When the cache is full the oldest entry goes.

use std::collections::HashMap as StdHashMap;
use std::net::IpAddr;

use hashbrown::HashMap;

/// One resolved neighbour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    /// Its MAC address.
    pub mac: [u8; 6],
    /// Port it was seen on.
    pub port: usize,
    /// Second (daemon-relative) it was last confirmed.
    pub confirmed: u32,
}

/// An immutable view of the cache for the data path.
#[derive(Debug, Clone, Default)]
pub struct NeighTable {
    map: HashMap<IpAddr, Neighbour, foldhash::fast::RandomState>,
    /// Bumped on every publication, so workers can tell the table changed.
    pub generation: u64,
}

impl NeighTable {
    /// The MAC of `ip` on `port`, if resolved.
    #[inline]
    pub fn get(&self, ip: impl Into<IpAddr>, port: usize) -> Option<[u8; 6]> {
        self.map
            .get(&ip.into())
            .filter(|n| n.port == port)
            .map(|n| n.mac)
    }

    /// The whole entry.
    pub fn entry(&self, ip: impl Into<IpAddr>) -> Option<&Neighbour> {
        self.map.get(&ip.into())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Something a worker saw on the wire that the control thread should know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighEvent {
    /// An ARP frame showed `ip` at `mac` on `port`.
    Learned {
        /// Address.
        ip: IpAddr,
        /// Hardware address.
        mac: [u8; 6],
        /// Port.
        port: usize,
    },
    /// A worker needs `ip` on `port` resolved (it holds frames for it).
    Wanted {
        /// Address.
        ip: IpAddr,
        /// Port.
        port: usize,
    },
}

/// The master cache owned by the control thread.
#[derive(Debug)]
pub struct NeighCache {
    table: NeighTable,
    max: usize,
    timeout: u32,
    /// Addresses we keep resolved, with the second of the last probe sent.
    wanted: StdHashMap<(IpAddr, usize), Option<u32>>,
    dirty: bool,
}

/// Seconds between probes for an unresolved address.
const PROBE_INTERVAL: u32 = 1;

impl NeighCache {
    /// An empty cache of at most `max` entries living `timeout` seconds.
    pub fn new(max: usize, timeout: u32) -> NeighCache {
        NeighCache {
            table: NeighTable::default(),
            max: max.max(1),
            timeout,
            wanted: StdHashMap::new(),
            dirty: false,
        }
    }

    /// Records a confirmation of `ip` at `mac` on `port` at second `now`.
    pub fn learn(&mut self, ip: impl Into<IpAddr>, mac: [u8; 6], port: usize, now: u32) {
        let ip = ip.into();
        let new = Neighbour {
            mac,
            port,
            confirmed: now,
        };
        match self.table.map.get_mut(&ip) {
            Some(n) => {
                if n.mac != mac || n.port != port {
                    self.dirty = true;
                }
                *n = new;
            }
            None => {
                if self.table.map.len() >= self.max {
                    if let Some(oldest) = self
                        .table
                        .map
                        .iter()
                        .min_by_key(|(_, n)| n.confirmed)
                        .map(|(ip, _)| *ip)
                    {
                        self.table.map.remove(&oldest);
                    }
                }
                self.table.map.insert(ip, new);
                self.dirty = true;
            }
        }
    }

    /// Asks that `ip` on `port` be kept resolved.
    pub fn want(&mut self, ip: impl Into<IpAddr>, port: usize) {
        self.wanted.entry((ip.into(), port)).or_insert(None);
    }

    /// Stops keeping `ip` resolved (it still ages out normally).
    pub fn unwant(&mut self, ip: impl Into<IpAddr>, port: usize) {
        self.wanted.remove(&(ip.into(), port));
    }

    /// Ages entries out and returns the (address, port) pairs to probe now: wanted addresses
    /// that are unresolved (at most once per second each) or older than half the timeout.
    pub fn tick(&mut self, now: u32, probes: &mut Vec<(IpAddr, usize)>) {
        let timeout = self.timeout;
        let before = self.table.map.len();
        self.table
            .map
            .retain(|_, n| now.saturating_sub(n.confirmed) < timeout);
        if self.table.map.len() != before {
            self.dirty = true;
        }
        for (&(ip, port), last) in self.wanted.iter_mut() {
            let age = self
                .table
                .map
                .get(&ip)
                .filter(|n| n.port == port)
                .map(|n| now.saturating_sub(n.confirmed));
            let since = last.map_or(u32::MAX, |l| now.saturating_sub(l));
            let due = match age {
                None => since >= PROBE_INTERVAL,
                Some(a) => a >= timeout / 2 && since >= PROBE_INTERVAL * 5,
            };
            if due {
                *last = Some(now);
                probes.push((ip, port));
            }
        }
    }

    /// The table to publish if it changed since the last call.
    pub fn take_update(&mut self) -> Option<NeighTable> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        self.table.generation += 1;
        Some(self.table.clone())
    }

    /// The current table.
    pub fn table(&self) -> &NeighTable {
        &self.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn learn_publish_and_age() {
        let mut c = NeighCache::new(10, 300);
        c.learn(ip("10.0.0.2"), [2, 0, 0, 0, 0, 2], 0, 5);
        let t = c.take_update().expect("changed");
        assert_eq!(t.get(ip("10.0.0.2"), 0), Some([2, 0, 0, 0, 0, 2]));
        assert_eq!(t.get(ip("10.0.0.2"), 1), None, "port must match");
        assert!(
            c.take_update().is_none(),
            "refresh with the same MAC is not a change"
        );
        c.learn(ip("10.0.0.2"), [2, 0, 0, 0, 0, 2], 0, 100);
        assert!(c.take_update().is_none());
        let mut probes = Vec::new();
        c.tick(399, &mut probes);
        assert_eq!(c.table().len(), 1);
        c.tick(400, &mut probes);
        assert_eq!(
            c.table().len(),
            0,
            "expired 300 s after the last confirmation"
        );
        assert!(c.take_update().is_some());
    }

    #[test]
    fn bounded_evicts_oldest() {
        let mut c = NeighCache::new(2, 300);
        c.learn(ip("10.0.0.1"), [2; 6], 0, 1);
        c.learn(ip("10.0.0.2"), [2; 6], 0, 2);
        c.learn(ip("10.0.0.3"), [2; 6], 0, 3);
        let t = c.table();
        assert_eq!(t.len(), 2);
        assert!(t.entry(ip("10.0.0.1")).is_none());
    }

    #[test]
    fn wanted_addresses_are_probed_until_resolved() {
        let mut c = NeighCache::new(10, 300);
        c.want(ip("172.16.0.2"), 1);
        let mut p = Vec::new();
        c.tick(0, &mut p);
        assert_eq!(p, [(ip("172.16.0.2"), 1)]);
        p.clear();
        c.tick(0, &mut p);
        assert!(p.is_empty(), "at most one probe per second");
        c.tick(1, &mut p);
        assert_eq!(p.len(), 1);
        p.clear();
        c.learn(ip("172.16.0.2"), [2; 6], 1, 2);
        c.tick(3, &mut p);
        assert!(p.is_empty(), "resolved and fresh");
        c.tick(152, &mut p);
        assert_eq!(p.len(), 1, "re-probed after half the timeout");
    }
}
