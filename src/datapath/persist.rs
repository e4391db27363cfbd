//! Persistence templates (`ipvsadm -p`): which real server a client (its address masked by the
//! service's netmask) was sent to, so its later connections go to the same one.
//!
//! A client's connections from different source ports belong to different workers, so the
//! templates are shared by all workers: a small table of shards, each behind its own mutex. It
//! is touched only when a connection of a persistent service is created or ends, never per
//! packet. A template expires `timeout` seconds after the last connection that used it was
//! created, but never while connections it controls are alive (IPVS re-arms a template timer
//! while `n_control > 0`); expired templates are dropped when looked up and by a periodic sweep.
//! A template keeps pointing at its real server when that server's weight is set to 0, as in
//! IPVS (`expire_quiescent_template=0`), but not once the server is removed (unavailable).
//!
//! Hot standby: a sync master sends a template when it is created and again, with a connection
//! it controls, once a quarter of its timeout (at most [`TEMPLATE_RESYNC_MAX`] s) has passed
//! ([`Template::sync_due`]); a backup installs or refreshes it with [`Templates::install`], so a
//! client's new connection after a failover goes to the same real server.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use hashbrown::HashMap;
use sched::Dest;

const SHARDS: usize = 16;

/// Template key: protocol, masked client address, virtual address and port (0 for port-0
/// services, whose template covers every port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TemplateKey {
    /// IP protocol.
    pub proto: u8,
    /// Client address after the netmask (`-M`: a dotted mask for IPv4, a prefix length for
    /// IPv6).
    pub client: IpAddr,
    /// Virtual address.
    pub vaddr: IpAddr,
    /// Virtual port, 0 for all-ports services.
    pub vport: u16,
}

/// Longest a sync master waits before sending a used template again, seconds.
pub const TEMPLATE_RESYNC_MAX: u32 = 60;

/// `synced_at` of a template never sent.
const NEVER: u32 = u32::MAX;

/// One template.
#[derive(Debug)]
pub struct Template {
    /// The real server it sends the client to.
    pub dest: Arc<Dest>,
    /// Its key.
    pub key: TemplateKey,
    /// The service's persistence timeout, seconds.
    pub timeout: u32,
    /// Second (daemon-relative) it was last sent to the sync backup, [`NEVER`] if not yet.
    synced_at: AtomicU32,
    /// Connections created through it that are still alive.
    n_control: AtomicU32,
    /// Second (daemon-relative) after which it may expire.
    expires: AtomicU32,
}

impl Template {
    /// Called when a connection created through the template ends.
    pub fn release(&self) {
        let _ = self
            .n_control
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Connections it controls.
    pub fn controlled(&self) -> u32 {
        self.n_control.load(Ordering::Acquire)
    }

    fn expired(&self, now: u32) -> bool {
        self.controlled() == 0 && now >= self.expires.load(Ordering::Acquire)
    }

    /// Sync master: whether the template must be sent now (never sent, or last sent a quarter
    /// of its timeout ago, at most [`TEMPLATE_RESYNC_MAX`] s); claims the send, so of workers
    /// asking at once only one is told yes.
    pub fn sync_due(&self, now: u32) -> bool {
        let period = (self.timeout / 4).clamp(1, TEMPLATE_RESYNC_MAX);
        let last = self.synced_at.load(Ordering::Acquire);
        if last != NEVER && now.saturating_sub(last) < period {
            return false;
        }
        self.synced_at
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn new(key: TemplateKey, dest: Arc<Dest>, timeout: u32, now: u32, n_control: u32) -> Self {
        dest.bind_persist();
        Template {
            dest,
            key,
            timeout,
            synced_at: AtomicU32::new(NEVER),
            n_control: AtomicU32::new(n_control),
            expires: AtomicU32::new(now.saturating_add(timeout)),
        }
    }
}

/// The shared template table.
#[derive(Debug)]
pub struct Templates {
    shards: Vec<Mutex<HashMap<TemplateKey, Arc<Template>, foldhash::fast::RandomState>>>,
}

impl Default for Templates {
    fn default() -> Self {
        Templates {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(foldhash::fast::RandomState::default())))
                .collect(),
        }
    }
}

impl Templates {
    fn shard(
        &self,
        key: &TemplateKey,
    ) -> &Mutex<HashMap<TemplateKey, Arc<Template>, foldhash::fast::RandomState>> {
        let c = crate::config::ip_bits(key.client);
        let folded = (c as u32) ^ ((c >> 32) as u32) ^ ((c >> 64) as u32) ^ ((c >> 96) as u32);
        let h = (folded ^ u32::from(key.vport)).wrapping_mul(0x9E37_79B1);
        &self.shards[(h >> 28) as usize % SHARDS]
    }

    /// The template for `key`, or a new one pointing at the dest `pick` chooses (None: no
    /// usable dest). Counts the new connection as controlled and pushes the expiry to
    /// `now + timeout`.
    pub fn get_or_schedule(
        &self,
        key: TemplateKey,
        now: u32,
        timeout: u32,
        pick: impl FnOnce() -> Option<Arc<Dest>>,
    ) -> Option<Arc<Template>> {
        let mut map = self.shard(&key).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = map.get(&key) {
            if !t.expired(now) && t.dest.is_available() {
                t.n_control.fetch_add(1, Ordering::AcqRel);
                t.expires
                    .store(now.saturating_add(timeout), Ordering::Release);
                return Some(t.clone());
            }
            if let Some(old) = map.remove(&key) {
                old.dest.unbind_persist();
            }
        }
        let dest = pick()?;
        let t = Arc::new(Template::new(key, dest, timeout, now, 1));
        map.insert(key, t.clone());
        Some(t)
    }

    /// Sync backup: installs the template the master sent (`dest` for `key`, alive until
    /// `now + timeout` unless refreshed), or refreshes the one there: same real server → its
    /// expiry is pushed on; another (the master scheduled anew) → replaced. Controls no
    /// connection of its own; the master's refreshes keep it alive.
    pub fn install(&self, key: TemplateKey, dest: Arc<Dest>, timeout: u32, now: u32) {
        let mut map = self.shard(&key).lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = map.get(&key) {
            if Arc::ptr_eq(&t.dest, &dest) && !t.expired(now) {
                let until = now.saturating_add(timeout);
                t.expires.fetch_max(until, Ordering::AcqRel);
                return;
            }
            if let Some(old) = map.remove(&key) {
                old.dest.unbind_persist();
            }
        }
        map.insert(key, Arc::new(Template::new(key, dest, timeout, now, 0)));
    }

    /// The real server of `key`'s live template, if any (listing and tests).
    pub fn dest_of(&self, key: &TemplateKey, now: u32) -> Option<Arc<Dest>> {
        let map = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|t| !t.expired(now))
            .map(|t| t.dest.clone())
    }

    /// Drops expired templates; returns how many remain.
    pub fn sweep(&self, now: u32) -> usize {
        let mut left = 0;
        for s in &self.shards {
            let mut map = s.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, t| {
                let keep = !t.expired(now);
                if !keep {
                    t.dest.unbind_persist();
                }
                keep
            });
            left += map.len();
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: &str) -> TemplateKey {
        TemplateKey {
            proto: 6,
            client: c.parse().unwrap(),
            vaddr: "192.0.2.1".parse().unwrap(),
            vport: 80,
        }
    }

    fn dest(last: u8) -> Arc<Dest> {
        Arc::new(Dest::new(
            IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, last)),
            80,
            1,
        ))
    }

    #[test]
    fn same_client_same_dest_until_expiry() {
        let t = Templates::default();
        let (a, b) = (dest(1), dest(2));
        let t1 = t
            .get_or_schedule(key("10.1.1.1"), 0, 300, || Some(a.clone()))
            .unwrap();
        assert_eq!(a.persist_conns(), 1);
        let t2 = t
            .get_or_schedule(key("10.1.1.1"), 10, 300, || Some(b.clone()))
            .unwrap();
        assert!(Arc::ptr_eq(&t1.dest, &a) && Arc::ptr_eq(&t2.dest, &a));
        assert_eq!(t1.controlled(), 2);
        t1.release();
        t2.release();
        // Last use at 10: alive until 310.
        assert_eq!(t.sweep(309), 1);
        assert_eq!(t.sweep(310), 0);
        assert_eq!(a.persist_conns(), 0);
        let t3 = t
            .get_or_schedule(key("10.1.1.1"), 311, 300, || Some(b.clone()))
            .unwrap();
        assert!(Arc::ptr_eq(&t3.dest, &b), "expired: scheduled anew");
    }

    #[test]
    fn controlled_templates_do_not_expire() {
        let t = Templates::default();
        let a = dest(1);
        let t1 = t
            .get_or_schedule(key("10.1.1.1"), 0, 5, || Some(a.clone()))
            .unwrap();
        assert_eq!(t.sweep(1000), 1);
        t1.release();
        assert_eq!(t.sweep(1000), 0);
    }

    #[test]
    fn sync_due_once_per_quarter_timeout() {
        let t = Templates::default();
        let a = dest(1);
        let t1 = t
            .get_or_schedule(key("10.1.1.1"), 100, 200, || Some(a.clone()))
            .unwrap();
        assert!(t1.sync_due(100), "never sent: due");
        assert!(!t1.sync_due(100), "claimed: not twice");
        assert!(!t1.sync_due(149));
        assert!(t1.sync_due(150), "a quarter of 200 s later");
        // Long timeouts: at most a minute.
        let t2 = t
            .get_or_schedule(key("10.1.1.2"), 0, 3600, || Some(a.clone()))
            .unwrap();
        assert!(t2.sync_due(0));
        assert!(!t2.sync_due(59));
        assert!(t2.sync_due(60));
        // Short ones: at most once a second.
        let t3 = t
            .get_or_schedule(key("10.1.1.3"), 0, 2, || Some(a.clone()))
            .unwrap();
        assert!(t3.sync_due(0) && !t3.sync_due(0) && t3.sync_due(1));
    }

    #[test]
    fn install_creates_refreshes_and_replaces() {
        let t = Templates::default();
        let (a, b, c) = (dest(1), dest(2), dest(3));
        t.install(key("10.1.1.1"), a.clone(), 300, 0);
        assert_eq!(a.persist_conns(), 1);
        // A new connection after failover keeps the synced real server.
        let got = t
            .get_or_schedule(key("10.1.1.1"), 10, 300, || Some(b.clone()))
            .unwrap();
        assert!(Arc::ptr_eq(&got.dest, &a));
        got.release();
        // Refreshed by the master: alive until 200 + 300.
        t.install(key("10.1.1.1"), a.clone(), 300, 200);
        assert_eq!(t.sweep(499), 1);
        assert!(Arc::ptr_eq(&t.dest_of(&key("10.1.1.1"), 499).unwrap(), &a));
        assert_eq!(a.persist_conns(), 1, "a refresh binds nothing more");
        // The master moved the client: replaced.
        t.install(key("10.1.1.1"), c.clone(), 300, 300);
        assert!(Arc::ptr_eq(&t.dest_of(&key("10.1.1.1"), 300).unwrap(), &c));
        assert_eq!((a.persist_conns(), c.persist_conns()), (0, 1));
        // Not refreshed: it expires as any template.
        assert_eq!(t.sweep(600), 0);
        assert!(t.dest_of(&key("10.1.1.1"), 600).is_none());
        assert_eq!(c.persist_conns(), 0);
    }

    #[test]
    fn quiesced_dest_keeps_template_removed_dest_does_not() {
        let t = Templates::default();
        let (a, b) = (dest(1), dest(2));
        t.get_or_schedule(key("10.1.1.1"), 0, 300, || Some(a.clone()))
            .unwrap();
        a.set_weight(0);
        let same = t
            .get_or_schedule(key("10.1.1.1"), 1, 300, || Some(b.clone()))
            .unwrap();
        assert!(Arc::ptr_eq(&same.dest, &a));
        a.set_available(false);
        let moved = t
            .get_or_schedule(key("10.1.1.1"), 2, 300, || Some(b.clone()))
            .unwrap();
        assert!(Arc::ptr_eq(&moved.dest, &b));
        assert!(t
            .get_or_schedule(key("10.9.9.9"), 2, 300, || None)
            .is_none());
    }
}
