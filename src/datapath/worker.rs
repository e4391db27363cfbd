//! A data-path worker thread: the I/O and timers around its [`Pipeline`]. It owns one queue of
//! every port and reads frames with their virtio-net headers, gives each to the pipeline, and
//! carries out the verdict: frames the pipeline emits are written to this worker's queue of
//! their port, frames of another worker's connection are handed over, frames for the host
//! stack are queued to it. It also publishes its counters, answers connection dumps and passes
//! the pipeline's neighbour events to the control thread.
//!
//! Ownership: a connection belongs to the worker given by
//! [`owner_of`](crate::datapath::pipeline::owner_of) the client's address and port. A frame that
//! arrives on another worker's queue is copied into a pooled buffer and handed to the owner
//! through a bounded queue. Normally that never happens: the ports' eBPF steering program
//! ([`crate::datapath::steer`]) computes the same owner in the kernel. The hand-over covers what
//! the program does not classify (ICMP errors) and kernels that refuse the program.
//!
//! [`WorkerShared`] is what the workers share with the control plane: the published snapshot
//! and neighbour table, the hand-over queues and doorbells, and the published counters. The
//! control plane creates it; nothing here depends on the control plane.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;

use crate::config::{IoBackend, IoConfig};
use crate::datapath::capture::{CaptureShared, Filter, Tap};
use crate::datapath::conn::PressureConfig;
use crate::datapath::ha::{HaShared, Standby};
use crate::datapath::neigh::{NeighEvent, NeighTable};
use crate::datapath::persist::Templates;
use crate::datapath::pipeline::{Env, Pipeline, Sink, Verdict};
use crate::datapath::service::Snapshot;
use crate::datapath::stats::{Counters, DestCounters, Drop};
use crate::datapath::tcp_state::Timeouts;
use crate::sys::tap::{TapQueue, MAX_FRAME};
use crate::sys::uring::{Event, Ring, RingConfig, RingIo};
use crate::sys::{self, EventFd};

/// Frames read from one queue before moving to the next.
const BATCH: usize = 64;
/// Counter publication interval.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// A frame on its way to the worker that owns its connection (or to the host stack).
pub struct Redirect {
    /// Header and frame bytes (only `..len` are meaningful).
    pub data: Box<[u8]>,
    /// Length of the frame in `data`.
    pub len: usize,
    /// Port it arrived on.
    pub port: usize,
}

/// A pooled buffer carrying a frame to its owning worker.
pub fn new_redirect() -> Box<Redirect> {
    Box::new(Redirect {
        data: vec![0u8; MAX_FRAME].into_boxed_slice(),
        len: 0,
        port: 0,
    })
}

/// Connections per dump page: what one worker round copies out at most, so a dump of
/// millions of connections never stalls the data path.
pub const DUMP_PAGE: usize = 4096;

/// One page of a worker's connection dump: asked for by the control socket (`from`, with a
/// new `gen`), answered by the worker (`answered == gen`, `conns`, `next`).
#[derive(Debug, Default)]
pub struct DumpPage {
    /// The request's generation.
    pub gen: u64,
    /// The generation answered.
    pub answered: u64,
    /// The slot to start at.
    pub from: u32,
    /// Up to [`DUMP_PAGE`] connections.
    pub conns: Vec<ConnInfo>,
    /// The slot the next page starts at; `None` when this was the last page.
    pub next: Option<u32>,
}

/// One connection as a dump (`tapvsadm -L -c`) sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// IP protocol number.
    pub proto: u8,
    /// Seconds until it expires.
    pub expire_secs: u32,
    /// TCP state name (or UDP).
    pub state: &'static str,
    /// The client.
    pub client: SocketAddr,
    /// The virtual service.
    pub vip: SocketAddr,
    /// The real server.
    pub dest: SocketAddr,
}

/// What the workers share with the control plane.
pub struct WorkerShared {
    /// The service snapshot.
    pub snapshot: ArcSwap<Snapshot>,
    /// The neighbour table.
    pub neigh: ArcSwap<NeighTable>,
    /// Connection timeouts.
    pub timeouts: ArcSwap<Timeouts>,
    /// Per worker: frames handed to it by other workers.
    pub redirect: Vec<ArrayQueue<Box<Redirect>>>,
    /// Free hand-over buffers.
    pub pool: ArrayQueue<Box<Redirect>>,
    /// Per worker: its doorbell.
    pub wake: Vec<EventFd>,
    /// Events for the control thread.
    pub learn: ArrayQueue<NeighEvent>,
    /// The control thread's doorbell.
    pub control_wake: EventFd,
    /// Set to stop every thread.
    pub stop: AtomicBool,
    /// Per worker: counters as last published.
    pub published: Vec<Mutex<Counters>>,
    /// Persistence templates, shared by all workers (touched only on connection setup/end).
    pub templates: Templates,
    /// Per worker: traffic per real server as last published.
    pub dest_published: Vec<Mutex<Vec<DestCounters>>>,
    /// Bumped after a dump page was asked of a worker (in its [`DumpPage`]): the doorbell.
    pub dump_gen: AtomicU64,
    /// Per worker: the page of connections asked for and the answer.
    pub dumps: Vec<Mutex<DumpPage>>,
    /// Rung by a worker that finished a dump.
    pub dump_done: EventFd,
    /// IPVS `expire_nodest_conn`.
    pub expire_nodest: AtomicBool,
    /// Whether a health-check host stack runs (workers then hand it frames for our addresses).
    pub host_enabled: AtomicBool,
    /// Frames for the host stack.
    pub host_rx: ArrayQueue<Box<Redirect>>,
    /// The host stack's doorbell.
    pub host_wake: EventFd,
    /// Start of daemon time (connection and neighbour clocks count from here).
    pub epoch: Instant,
    /// Hot standby: adverts to the VRRP thread, the published [`Standby`] view.
    ///
    /// [`Standby`]: crate::datapath::ha::Standby
    pub ha: HaShared<Box<Redirect>>,
    /// Live capture (`tapvs capture`): the filter the workers check once per round, and the
    /// rings they copy matching frames into.
    pub capture: CaptureShared,
}

/// Writes the pipeline's frames to this worker's queues (and, while a capture runs, offers
/// them to it first): queued on the worker's io_uring when it has one (straight from the
/// receive buffer for the frame being processed, else copied), written with `write(2)`
/// otherwise.
struct Queues<'a, 'c> {
    queues: &'a [Arc<TapQueue>],
    tap: Option<&'a mut Tap<'c>>,
    ring: Option<&'a mut RingIo>,
    /// The receive buffer of the frame being processed: its id and address.
    rx: Option<(u16, usize)>,
    /// Set once a frame was queued straight from that buffer (it is then kept until written).
    in_place: bool,
    /// `write(2)` calls made.
    syscalls: u64,
}

impl<'a> Queues<'a, '_> {
    fn new(queues: &'a [Arc<TapQueue>], ring: Option<&'a mut RingIo>) -> Self {
        Queues {
            queues,
            tap: None,
            ring,
            rx: None,
            in_place: false,
            syscalls: 0,
        }
    }
}

impl Sink for Queues<'_, '_> {
    #[inline]
    fn send(&mut self, port: usize, frame: &[u8]) -> bool {
        if let Some(t) = self.tap.as_deref_mut() {
            t.sent(port, frame);
        }
        let Some(q) = self.queues.get(port) else {
            return false;
        };
        if let Some(ring) = self.ring.as_deref_mut() {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&**q);
            // The pipeline writes a frame from its receive buffer only as its last step, so
            // the buffer is not changed after this.
            if let Some((bid, addr)) = self.rx {
                if !self.in_place
                    && frame.as_ptr() as usize == addr
                    && ring.write_rx(fd, bid, frame.len())
                {
                    self.in_place = true;
                    return true;
                }
            }
            if ring.write_copy(fd, frame) {
                return true;
            }
        }
        self.syscalls += 1;
        q.write(frame).is_ok()
    }
}

/// Receive buffers per worker ring (each holds the largest frame). Few, so that bulk
/// transfers cycle through buffers that stay in the cache (with 256, one TCP stream made 17.3
/// against 21.9 Gbit/s); a burst that uses them all ends the read until the round's end.
const RING_RX_BUFS: u16 = 32;
/// Transmit (copy) buffers per worker ring.
const RING_TX_BUFS: u16 = 128;
/// The tag of the doorbell's poll on the ring.
const DOORBELL: u32 = u32::MAX;

/// The sizes of a worker's ring.
pub fn ring_config() -> RingConfig {
    RingConfig {
        rx_bufs: RING_RX_BUFS,
        tx_bufs: RING_TX_BUFS,
        buf_size: MAX_FRAME,
    }
}

/// How a worker waits for and moves frames ([`IoBackend`]), made on the worker's thread (a
/// ring has one submitting thread).
enum Io {
    /// `poll(2)` over the queues and the doorbell, one `read`/`write` per frame.
    Poll {
        pfds: Vec<libc::pollfd>,
        rx: Box<[u8]>,
    },
    /// io_uring: a multishot read per queue and a poll of the doorbell on one ring.
    Uring {
        ring: Box<Ring>,
        events: Vec<Event>,
        /// Queues whose read ended and must be armed again (at the end of the round).
        rearm: Vec<u32>,
        /// Reads ended by an error (not by running out of buffers) wait for this instant.
        retry_at: Option<Instant>,
    },
}

/// A worker thread's state.
pub struct Worker {
    id: usize,
    queues: Vec<Arc<TapQueue>>,
    shared: Arc<WorkerShared>,
    pipeline: Pipeline,
    /// The `[io]` settings, the backend settled (`auto` made `uring` or `poll`).
    io: IoConfig,
    /// Workers to ring after this round's hand-overs.
    wake: Vec<bool>,
    /// The running capture's filter, read once per round.
    capture: Option<Filter>,
}

impl Worker {
    /// A worker `id`, reading `queues` (one per port) as `io` says.
    pub fn new(
        id: usize,
        queues: Vec<Arc<TapQueue>>,
        shared: Arc<WorkerShared>,
        max_conns: usize,
        pressure: PressureConfig,
        io: IoConfig,
    ) -> Worker {
        let workers = shared.redirect.len();
        let timeouts = *shared.timeouts.load_full();
        let mut pipeline = Pipeline::new(id, workers, max_conns, timeouts);
        pipeline.set_pressure(pressure);
        Worker {
            id,
            queues,
            pipeline,
            io,
            wake: vec![false; workers],
            capture: None,
            shared,
        }
    }

    /// The worker's I/O: a ring with every queue's read and the doorbell's poll armed, unless
    /// `poll` was asked for or the ring cannot be made (then `poll`, logged).
    fn make_io(&self) -> Io {
        let fd = |q: &Arc<TapQueue>| std::os::fd::AsRawFd::as_raw_fd(&**q);
        let doorbell = std::os::fd::AsRawFd::as_raw_fd(&self.shared.wake[self.id]);
        if self.io.backend != IoBackend::Poll {
            let armed = Ring::new(ring_config()).and_then(|mut ring| {
                let (_, io) = ring.parts();
                let mut ok = io.arm_poll(doorbell, DOORBELL);
                for (port, q) in self.queues.iter().enumerate() {
                    ok &= io.arm_read(fd(q), port as u32);
                }
                if !ok {
                    return Err(std::io::Error::from_raw_os_error(libc::EBUSY));
                }
                io.enter(None)?;
                Ok(ring)
            });
            match armed {
                Ok(ring) => {
                    tracing::debug!(worker = self.id, "I/O through io_uring");
                    return Io::Uring {
                        ring: Box::new(ring),
                        // A round's completions at most: every receive buffer's frame and
                        // write, every transmit buffer's write, the doorbell and the reads'
                        // ends; no growth on the data path.
                        events: Vec::with_capacity(
                            2 * usize::from(RING_RX_BUFS) + usize::from(RING_TX_BUFS) + 64,
                        ),
                        rearm: Vec::with_capacity(self.queues.len()),
                        retry_at: None,
                    };
                }
                Err(e) if self.io.backend == IoBackend::Uring => {
                    tracing::error!(worker = self.id, error = %e, "io_uring failed: poll instead")
                }
                Err(e) => tracing::info!(worker = self.id, error = %e, "no io_uring: poll"),
            }
        }
        let mut pfds: Vec<libc::pollfd> = self.queues.iter().map(|q| sys::poll_in(fd(q))).collect();
        pfds.push(sys::poll_in(doorbell));
        Io::Poll {
            pfds,
            rx: vec![0u8; MAX_FRAME].into_boxed_slice(),
        }
    }

    /// Waits up to `timeout_ms` for work; whether the doorbell rang.
    fn wait(&mut self, io: &mut Io, timeout_ms: i32) -> bool {
        let c = self.pipeline.counters_mut();
        c.wakeups += 1;
        match io {
            Io::Poll { pfds, .. } => {
                for p in pfds.iter_mut() {
                    p.revents = 0;
                }
                c.syscalls += 1;
                let _ = sys::poll(pfds, timeout_ms);
                pfds.last().is_some_and(|p| p.revents != 0)
            }
            Io::Uring {
                ring,
                events,
                rearm,
                ..
            } => {
                let (_, rio) = ring.parts();
                let before = rio.enters;
                let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms as u64));
                if rio.enter(timeout).is_err() {
                    c.drop(Drop::TxError);
                }
                c.syscalls += rio.enters - before;
                ring.reap(events);
                let mut rung = false;
                for ev in events.iter() {
                    if let Event::Ready {
                        tag: DOORBELL,
                        more,
                    } = *ev
                    {
                        rung = true;
                        if !more {
                            rearm.push(DOORBELL);
                        }
                    }
                }
                rung
            }
        }
    }

    /// Reads and processes what arrived on the queues: with poll, each ready queue until it
    /// is empty (or a batch is done, which leaves it ready for the next round); with the ring,
    /// the round's completions.
    fn receive(&mut self, env: &Env, io: &mut Io) {
        match io {
            Io::Poll { pfds, rx } => {
                let nports = self.queues.len();
                for (port, pfd) in pfds.iter().enumerate().take(nports) {
                    if pfd.revents == 0 {
                        continue;
                    }
                    for _ in 0..BATCH {
                        self.pipeline.counters_mut().syscalls += 1;
                        let read = self.queues[port].read(rx);
                        if let Ok(Some(n)) = read {
                            self.frame(env, port, &mut rx[..], n, false, None, None);
                        }
                        match read {
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(_) => {
                                self.pipeline.counters_mut().drop(Drop::TxError);
                                break;
                            }
                        }
                    }
                }
            }
            Io::Uring {
                ring,
                events,
                rearm,
                retry_at,
                ..
            } => {
                for ev in events.iter() {
                    match *ev {
                        Event::Frame { port, bid, len } => {
                            let (rx, rio) = ring.parts();
                            let addr = rx.addr(bid);
                            let Some(buf) = rx.frame_mut(bid) else {
                                continue;
                            };
                            let in_place = self.frame(
                                env,
                                port as usize,
                                buf,
                                len,
                                false,
                                Some(rio),
                                Some((bid, addr)),
                            );
                            if !in_place {
                                rx.recycle(bid);
                            }
                        }
                        Event::RxWritten { bid, errno } => {
                            ring.parts().0.recycle(bid);
                            if errno != 0 {
                                self.pipeline.counters_mut().drop(Drop::TxError);
                            }
                        }
                        Event::TxFailed { .. } => self.pipeline.counters_mut().drop(Drop::TxError),
                        Event::ReadEnded { port, errno } => {
                            // Out of buffers, or ended with its last frame (errno 0): armed
                            // again at the round's end. A failing queue is retried after a
                            // pause, not in a loop.
                            if errno != libc::ENOBUFS && errno != 0 {
                                self.pipeline.counters_mut().drop(Drop::TxError);
                                *retry_at = Some(Instant::now() + Duration::from_millis(100));
                            }
                            rearm.push(port);
                        }
                        Event::Ready { .. } => {}
                    }
                }
                events.clear();
            }
        }
    }

    /// Arms again the ring's reads and poll that ended (not before a failed read's pause).
    fn rearm(&self, io: &mut Io) {
        let Io::Uring {
            ring,
            rearm,
            retry_at,
            ..
        } = io
        else {
            return;
        };
        if rearm.is_empty() || retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        *retry_at = None;
        let (_, rio) = ring.parts();
        let mut left = Vec::new();
        for tag in rearm.drain(..) {
            let ok = if tag == DOORBELL {
                rio.arm_poll(
                    std::os::fd::AsRawFd::as_raw_fd(&self.shared.wake[self.id]),
                    DOORBELL,
                )
            } else {
                let fd = std::os::fd::AsRawFd::as_raw_fd(&*self.queues[tag as usize]);
                rio.arm_read(fd, tag)
            };
            if !ok {
                left.push(tag);
            }
        }
        rearm.extend(left);
    }

    /// The ring's submission side, for the sinks of frames not from a receive buffer.
    fn ring_io(io: &mut Io) -> Option<&mut RingIo> {
        match io {
            Io::Uring { ring, .. } => Some(ring.parts().1),
            Io::Poll { .. } => None,
        }
    }

    /// Runs until the daemon's stop flag is set.
    ///
    /// Each round waits once for work (one `poll(2)` over the worker's queues and its
    /// doorbell, or one `io_uring_enter` that also submits the previous round's writes), then
    /// processes what arrived. The snapshot and the neighbour table are read through
    /// `arc_swap` caches, which only compare a pointer while nothing changes: no shared
    /// reference count is touched per round.
    pub fn run(mut self) {
        let mut io = self.make_io();
        let shared = self.shared.clone();
        let mut snap_cache = arc_swap::Cache::new(&shared.snapshot);
        let mut neigh_cache = arc_swap::Cache::new(&shared.neigh);
        let mut standby_cache = arc_swap::Cache::new(&shared.ha.standby);
        let mut last_publish = Instant::now();
        let mut last_timeouts = shared.timeouts.load_full();
        let mut last_snap: Option<Arc<Snapshot>> = None;
        let mut last_dump = 0u64;
        while !shared.stop.load(Ordering::Relaxed) {
            let timeout = if self.pipeline.expiry_backlog() {
                0
            } else if self.pipeline.has_held() {
                10
            } else {
                100
            };
            if self.wait(&mut io, timeout) {
                self.pipeline.counters_mut().syscalls += 1;
                shared.wake[self.id].drain();
            }
            let instant = Instant::now();
            let snap: &Arc<Snapshot> = snap_cache.load();
            let neigh: &Arc<NeighTable> = neigh_cache.load();
            let standby: &Arc<Standby> = standby_cache.load();
            if last_snap.as_ref().is_none_or(|l| !Arc::ptr_eq(l, snap)) {
                // Only on a configuration change: room for the counters of new real servers.
                self.pipeline.reserve_dests(snap.dest_id_bound() as usize);
                last_snap = Some(snap.clone());
            }
            let env = Env {
                snap,
                neigh,
                templates: &shared.templates,
                now_ms: instant.duration_since(shared.epoch).as_millis() as u64,
                expire_nodest: shared.expire_nodest.load(Ordering::Relaxed),
                host_stack: shared.host_enabled.load(Ordering::Relaxed),
                standby,
            };
            // The one load a round costs while no capture runs.
            self.capture = shared.capture.active();
            let dump = shared.dump_gen.load(Ordering::Acquire);
            if dump != last_dump {
                self.dump(dump, env.now_ms);
                last_dump = dump;
            }
            if let Some(q) = shared.ha.sync_rx.get(self.id) {
                // Backup: connections synced from the master, owned by this worker.
                let (mut ok, mut bad) = (0, 0);
                while let Some(e) = q.pop() {
                    match self.pipeline.sync_apply(&env, &e) {
                        Ok(()) => ok += 1,
                        Err(_) => bad += 1,
                    }
                }
                if ok > 0 {
                    shared.ha.sync_applied.fetch_add(ok, Ordering::Relaxed);
                }
                if bad > 0 {
                    shared.ha.sync_dropped.fetch_add(bad, Ordering::Relaxed);
                }
            }
            while let Some(mut r) = shared.redirect[self.id].pop() {
                let (port, len) = (r.port, r.len);
                self.frame(
                    &env,
                    port,
                    &mut r.data,
                    len,
                    true,
                    Self::ring_io(&mut io),
                    None,
                );
                let _ = shared.pool.push(r);
            }
            self.receive(&env, &mut io);
            let capture = self.capture;
            let mut tap = capture.map(|f| Tap::new(&shared.capture, self.id, f));
            let mut sink = Queues::new(&self.queues, Self::ring_io(&mut io));
            sink.tap = tap.as_mut();
            self.pipeline.tick(&env, &mut sink);
            let written = sink.syscalls;
            self.pipeline.counters_mut().syscalls += written;
            self.rearm(&mut io);
            self.pass_events();
            self.pass_sync();
            for w in 0..self.wake.len() {
                if std::mem::take(&mut self.wake[w]) {
                    shared.wake[w].notify();
                }
            }
            if instant.duration_since(last_publish) >= PUBLISH_EVERY {
                let t = shared.timeouts.load_full();
                if !Arc::ptr_eq(&t, &last_timeouts) {
                    self.pipeline.table_mut().set_timeouts(*t);
                    last_timeouts = t;
                }
                self.publish();
                last_publish = instant;
            }
        }
        self.pipeline.table_mut().clear();
        self.publish();
        drop(io);
    }

    /// One frame through the pipeline, and its verdict carried out. `ring` queues the writes
    /// when the worker has one; `rx` is the receive buffer `buf` is (id and address), whose
    /// frame may be written straight from it: the return value says it was, and the buffer
    /// must then be kept until the ring reports the write.
    #[allow(clippy::too_many_arguments)]
    fn frame(
        &mut self,
        env: &Env,
        port: usize,
        buf: &mut [u8],
        len: usize,
        redirected: bool,
        ring: Option<&mut RingIo>,
        rx: Option<(u16, usize)>,
    ) -> bool {
        let (verdict, in_place, written) = {
            // Taken before the pipeline rewrites the buffer in place.
            let mut tap = self.capture.map(|f| {
                let mut t = Tap::new(&self.shared.capture, self.id, f);
                t.received(port, &buf[..len], redirected);
                t
            });
            let mut sink = Queues::new(&self.queues, ring);
            sink.tap = tap.as_mut();
            sink.rx = rx;
            let verdict = self
                .pipeline
                .process(env, port, buf, len, redirected, &mut sink);
            (verdict, sink.in_place, sink.syscalls)
        };
        self.pipeline.counters_mut().syscalls += written;
        match verdict {
            Verdict::Redirect { owner } if self.hand_over(owner, port, &buf[..len]) => {
                self.pipeline.counters_mut().redirected += 1;
                self.wake[owner] = true;
            }
            Verdict::Host if self.hand_over(usize::MAX, port, &buf[..len]) => {
                self.shared.host_wake.notify();
            }
            Verdict::Vrrp if self.hand_over(usize::MAX - 1, port, &buf[..len]) => {
                self.shared.ha.wake.notify();
            }
            _ => {}
        }
        in_place
    }

    /// Copies a frame into a pooled buffer for worker `to` (`usize::MAX`: the host stack,
    /// `usize::MAX - 1`: the VRRP thread).
    fn hand_over(&mut self, to: usize, port: usize, frame: &[u8]) -> bool {
        let Some(mut r) = self.shared.pool.pop() else {
            self.pipeline.counters_mut().drop(Drop::RedirectFull);
            return false;
        };
        r.data[..frame.len()].copy_from_slice(frame);
        r.len = frame.len();
        r.port = port;
        let queue = match self.shared.redirect.get(to) {
            Some(q) => q,
            None if to == usize::MAX - 1 => &self.shared.ha.rx,
            None => &self.shared.host_rx,
        };
        match queue.push(r) {
            Ok(()) => true,
            Err(r) => {
                let _ = self.shared.pool.push(r);
                self.pipeline.counters_mut().drop(Drop::RedirectFull);
                false
            }
        }
    }

    /// Passes the pipeline's connection-sync updates to the HA thread, ringing it once.
    fn pass_sync(&mut self) {
        let ha = &self.shared.ha;
        let (updates, mut lost) = self.pipeline.drain_sync();
        let mut any = false;
        for u in updates {
            if ha.sync_tx.push(u).is_err() {
                lost += 1;
            } else {
                any = true;
            }
        }
        if lost > 0 {
            ha.sync_dropped.fetch_add(lost, Ordering::Relaxed);
        }
        if any {
            ha.wake.notify();
        }
    }

    /// Passes the pipeline's neighbour events to the control thread, ringing it once.
    fn pass_events(&mut self) {
        let mut any = false;
        for ev in self.pipeline.drain_events() {
            let _ = self.shared.learn.push(ev);
            any = true;
        }
        if any {
            self.shared.control_wake.notify();
        }
    }

    /// Writes this worker's connections for `tapvsadm -L -c` (on request only).
    fn dump(&mut self, gen: u64, now_ms: u64) {
        let now = (now_ms / 1000) as u32;
        let table = self.pipeline.table();
        let Ok(mut slot) = self.shared.dumps[self.id].lock() else {
            return;
        };
        if slot.gen == slot.answered {
            return; // no page asked of this worker
        }
        let mut out = std::mem::take(&mut slot.conns);
        out.clear();
        out.reserve(DUMP_PAGE);
        let next = table.for_each_from(slot.from, DUMP_PAGE, |c| {
            out.push(ConnInfo {
                proto: c.proto,
                expire_secs: crate::datapath::conn::ConnTable::expires_in(c, now),
                state: c.state.name(),
                client: SocketAddr::new(c.caddr, c.cport),
                vip: SocketAddr::new(c.vaddr, c.vport),
                dest: SocketAddr::new(c.daddr, c.dport),
            });
        });
        let _ = gen;
        slot.conns = out;
        slot.next = next;
        slot.answered = slot.gen;
        drop(slot);
        self.shared.dump_done.notify();
    }

    fn publish(&mut self) {
        let c = *self.pipeline.counters();
        if let Ok(mut slot) = self.shared.published[self.id].lock() {
            *slot = c;
        }
        if let Ok(mut slot) = self.shared.dest_published[self.id].lock() {
            slot.clear();
            slot.extend_from_slice(self.pipeline.dest_counters());
        }
    }
}
