//! What the control plane's threads share: the workers' part ([`WorkerShared`]) and the
//! control plane's own (the live table, `-Z` baselines, the rate estimator, the steering
//! program), with the two operations every control thread needs: publishing a snapshot and
//! folding the workers' counters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LockResult, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::control::estimator::Estimator;
use crate::control::table::Table;
use crate::datapath::service::Snapshot;
use crate::datapath::stats::{Counters, DestCounters, Stats};
use crate::datapath::worker::WorkerShared;

/// Pooled hand-over buffers per worker.
pub const REDIRECT_POOL_PER_WORKER: usize = 64;

/// State shared by the workers and the control plane: what the workers read
/// ([`WorkerShared`], reached through `Deref`) and the control plane's own.
pub struct Shared {
    /// The part the workers share.
    pub dp: Arc<WorkerShared>,
    /// The live service table (control plane only).
    pub table: TableLock,
    /// `-Z` baselines per real-server id.
    pub zero_base: Mutex<HashMap<u32, DestCounters>>,
    /// Rates per real server.
    pub estimator: Mutex<Estimator>,
    /// The eBPF queue-selection program of the ports (control plane only).
    pub steering: Mutex<crate::datapath::steer::Steering>,
    /// What `tapvs reload` needs (the config last applied).
    pub reload: ReloadState,
}

/// The live table's lock, which a bulk writer (`-R`, taking it a chunk at a time) can make
/// give way: [`TableLock::lock`] counts the threads waiting for it, and
/// [`TableLock::give_way`] lets them in between two chunks. A plain mutex is not fair: the
/// restoring thread would take it back at once, and a listing could wait for the whole restore.
#[derive(Debug)]
pub struct TableLock {
    inner: Mutex<Table>,
    waiting: AtomicUsize,
}

/// The longest a bulk writer waits for others between two chunks.
const GIVE_WAY_MAX: Duration = Duration::from_millis(50);

impl TableLock {
    /// A lock around `table`.
    pub fn new(table: Table) -> TableLock {
        TableLock {
            inner: Mutex::new(table),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Locks the table, counted as waiting until it has it.
    pub fn lock(&self) -> LockResult<MutexGuard<'_, Table>> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let g = self.inner.lock();
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        g
    }

    /// Locks the table for a bulk writer's chunk (not counted: it gives way to the others).
    pub fn lock_bulk(&self) -> LockResult<MutexGuard<'_, Table>> {
        self.inner.lock()
    }

    /// Whether another thread waits for the table.
    pub fn contended(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    /// Between two chunks of a bulk writer (holding no guard): lets the threads waiting for
    /// the table take it first, for at most [`GIVE_WAY_MAX`].
    pub fn give_way(&self) {
        let t0 = Instant::now();
        while self.contended() && t0.elapsed() < GIVE_WAY_MAX {
            std::thread::yield_now();
        }
    }
}

impl std::ops::Deref for Shared {
    type Target = WorkerShared;

    fn deref(&self) -> &WorkerShared {
        &self.dp
    }
}

/// Makes `snap` the snapshot the workers use, first updating the ports' steering map when its
/// address sets changed (an O(1) check: unchanged sets are shared with the current snapshot),
/// and wakes the control thread.
pub fn publish_snapshot(shared: &Shared, snap: Snapshot) {
    let mut steering = shared.steering.lock().unwrap_or_else(|e| e.into_inner());
    if !snap.same_address_sets(&shared.snapshot.load()) {
        let _ = steering.update(&snap.address_sets());
    }
    shared.snapshot.store(Arc::new(snap));
    drop(steering);
    shared.control_wake.notify();
}

/// The folded counters of all workers, as last published.
pub fn fold(shared: &Shared) -> Stats {
    Stats::fold(published(shared).iter())
}

/// Each worker's counters as last published, in worker order.
pub fn published(shared: &Shared) -> Vec<Counters> {
    shared
        .published
        .iter()
        .map(|m| *m.lock().unwrap_or_else(|e| e.into_inner()))
        .collect()
}

/// What a reload ([`crate::control::reload`]) needs to remember: the config last applied, and
/// the config the health thread has yet to take.
#[derive(Debug)]
pub struct ReloadState {
    /// The config last applied (its `control.socket` as the file gives it).
    pub running: Mutex<crate::config::Config>,
    /// A reloaded config for the health thread ([`ReloadState::take_checks`]).
    checks: Mutex<Option<Arc<crate::config::Config>>>,
}

impl ReloadState {
    /// The state of a daemon started from `cfg`, read from its file (`file_socket`: the
    /// file's `control.socket`, which the command line may have overridden).
    pub fn new(cfg: &crate::config::Config, file_socket: String) -> ReloadState {
        let mut c = cfg.clone();
        c.control.socket = file_socket;
        ReloadState {
            running: Mutex::new(c),
            checks: Mutex::new(None),
        }
    }

    /// Leaves `cfg` for the health thread (replacing one it has not taken yet).
    pub fn hand_to_checks(&self, cfg: Arc<crate::config::Config>) {
        *self.checks.lock().unwrap_or_else(|e| e.into_inner()) = Some(cfg);
    }

    /// The config the health thread is to switch to, if a reload gave one.
    pub fn take_checks(&self) -> Option<Arc<crate::config::Config>> {
        self.checks.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}
