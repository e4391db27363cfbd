//! The running appliance: opens the TAP ports, publishes the first snapshot, starts one worker
//! per configured worker count and the control thread, and stops them all on request.
//!
//! The control thread keeps the neighbour cache (learning from what workers report, probing
//! real servers, gateways and wanted next hops by ARP, ageing entries) and publishes it to the
//! workers. It sends its ARP probes through worker 0's queue of each port (a TAP write is one
//! atomic frame, so sharing the descriptor for writes is safe).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use crate::config::Config;
use crate::config::IoBackend;
use crate::control::estimator::{Estimator, ESTIMATOR_INTERVAL};
use crate::control::shared::{fold, published, Shared, REDIRECT_POOL_PER_WORKER};
use crate::control::table::Table;
use crate::datapath::conn::PressureConfig;
use crate::datapath::neigh::{NeighCache, NeighEvent, NeighTable};
use crate::datapath::persist::Templates;
use crate::datapath::service::Snapshot;
use crate::datapath::stats::{Counters, Stats};
use crate::datapath::tcp_state::Timeouts;
use crate::datapath::worker::{new_redirect, Worker, WorkerShared};
use crate::sys::tap::{Tap, TapError, TapQueue, VNET_HDR_LEN};
use crate::sys::{self, EventFd};

/// Errors starting the daemon.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A TAP port could not be set up.
    #[error("port {port:?}: {source}")]
    Tap {
        /// Port name.
        port: String,
        /// The error.
        source: TapError,
    },
    /// The configuration could not be turned into a snapshot.
    #[error("{0}")]
    Config(String),
    /// A system resource could not be created.
    #[error("{0}")]
    Sys(std::io::Error),
}

/// The workers' I/O method: `[io] backend`, with `auto` settled by making a small ring here
/// (workers make their own on their threads). `uring` where no ring can be made refuses to
/// start, naming the field.
fn io_backend(cfg: &Config) -> Result<IoBackend, StartError> {
    if cfg.io.backend == IoBackend::Poll {
        return Ok(IoBackend::Poll);
    }
    let probe = crate::sys::uring::RingConfig {
        rx_bufs: 1,
        tx_bufs: 1,
        buf_size: 4096,
    };
    match crate::sys::uring::Ring::new(probe) {
        Ok(_) => {
            tracing::info!("worker I/O: io_uring");
            Ok(IoBackend::Uring)
        }
        Err(e) if cfg.io.backend == IoBackend::Uring => Err(StartError::Config(format!(
            "{}: io.backend: \"uring\", but this kernel refuses it: {e}",
            cfg.file.display()
        ))),
        Err(e) => {
            tracing::info!(error = %e, "worker I/O: poll (no io_uring)");
            Ok(IoBackend::Poll)
        }
    }
}

/// A running appliance. Dropping it stops it.
pub struct Daemon {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl Daemon {
    /// Opens the ports and starts the threads. Returns once every port is up and every worker
    /// is reading, so traffic can flow as soon as this returns. TAP devices are created in the
    /// calling thread's network namespace.
    pub fn start(cfg: &Config) -> Result<Daemon, StartError> {
        Self::start_from(cfg, cfg.control.socket.clone())
    }

    /// [`Daemon::start`] for a config whose file gives `file_socket` as `control.socket`
    /// (the command line overrode it): a reload compares the file with the file.
    pub fn start_from(cfg: &Config, file_socket: String) -> Result<Daemon, StartError> {
        let (table, snapshot) = Table::from_config(cfg).map_err(StartError::Config)?;
        let workers = cfg.workers;
        let backend = io_backend(cfg)?;
        let control_socket = if cfg.control.socket.is_empty() {
            None
        } else {
            let path = std::path::PathBuf::from(&cfg.control.socket);
            let l = crate::control::socket::bind(&path).map_err(|e| {
                StartError::Config(format!("control socket {}: {e}", path.display()))
            })?;
            Some((l, path))
        };
        let metrics = match cfg.metrics {
            None => None,
            Some(addr) => Some(
                std::net::TcpListener::bind(addr)
                    .map_err(|e| StartError::Config(format!("metrics listener {addr}: {e}")))?,
            ),
        };
        let mut port_queues: Vec<Vec<Arc<TapQueue>>> = Vec::new();
        for p in &cfg.ports {
            let tap_err = |source| StartError::Tap {
                port: p.name.clone(),
                source,
            };
            let tap = Tap::open(&p.tap, workers).map_err(tap_err)?;
            if let Some(mtu) = p.mtu {
                tap.set_mtu(mtu).map_err(tap_err)?;
            }
            tap.set_queue_len(p.queue_len).map_err(tap_err)?;
            if let Some(br) = &p.bridge {
                tap.attach_to_bridge(br).map_err(tap_err)?;
            }
            tap.set_up().map_err(tap_err)?;
            port_queues.push(tap.into_queues().into_iter().map(Arc::new).collect());
        }
        let mut steering = crate::datapath::steer::Steering::new(
            cfg.steering,
            workers,
            port_queues.iter().map(|q| q[0].clone()).collect(),
        );
        // A refusal is logged and leaves the kernel's steering: frames still reach their owner.
        let _ = steering.update(&snapshot.address_sets());
        let pool = ArrayQueue::new(REDIRECT_POOL_PER_WORKER * workers);
        for _ in 0..REDIRECT_POOL_PER_WORKER * workers {
            let _ = pool.push(new_redirect());
        }
        let wake = (0..workers)
            .map(|_| EventFd::new())
            .collect::<Result<Vec<_>, _>>()
            .map_err(StartError::Sys)?;
        let shared = Arc::new(Shared {
            dp: Arc::new(WorkerShared {
                snapshot: ArcSwap::from_pointee(snapshot),
                neigh: ArcSwap::from_pointee(NeighTable::default()),
                timeouts: ArcSwap::from_pointee(Timeouts::new(
                    cfg.timeouts.tcp,
                    cfg.timeouts.tcp_fin,
                    cfg.timeouts.udp,
                )),
                redirect: (0..workers)
                    .map(|_| ArrayQueue::new(REDIRECT_POOL_PER_WORKER))
                    .collect(),
                pool,
                wake,
                learn: ArrayQueue::new(4096),
                control_wake: EventFd::new().map_err(StartError::Sys)?,
                stop: AtomicBool::new(false),
                published: (0..workers)
                    .map(|_| Mutex::new(Counters::default()))
                    .collect(),
                templates: Templates::default(),
                dest_published: (0..workers).map(|_| Mutex::new(Vec::new())).collect(),
                dump_gen: AtomicU64::new(0),
                dumps: (0..workers).map(|_| Mutex::default()).collect(),
                dump_done: EventFd::new().map_err(StartError::Sys)?,
                expire_nodest: AtomicBool::new(cfg.control.expire_nodest_conn),
                host_enabled: AtomicBool::new(false),
                host_rx: ArrayQueue::new(256),
                host_wake: EventFd::new().map_err(StartError::Sys)?,
                epoch: Instant::now(),
                ha: crate::datapath::ha::HaShared::new(workers).map_err(StartError::Sys)?,
                capture: crate::datapath::capture::CaptureShared::new(
                    workers,
                    cfg.ports.iter().map(|p| p.name.clone()).collect(),
                ),
            }),
            table: crate::control::shared::TableLock::new(table),
            zero_base: Mutex::new(HashMap::new()),
            estimator: Mutex::new(Estimator::default()),
            steering: Mutex::new(steering),
            reload: crate::control::shared::ReloadState::new(cfg, file_socket),
        });
        let per_worker_conns = cfg.max_connections / workers;
        let mut threads = Vec::new();
        for w in 0..workers {
            let queues: Vec<Arc<TapQueue>> = port_queues.iter().map(|q| q[w].clone()).collect();
            let worker = Worker::new(
                w,
                queues,
                shared.dp.clone(),
                per_worker_conns,
                PressureConfig::from(&cfg.defence),
                crate::config::IoConfig { backend },
            );
            threads.push(
                std::thread::Builder::new()
                    .name(format!("tapvs-w{w}"))
                    .spawn(move || worker.run())
                    .map_err(StartError::Sys)?,
            );
        }
        let control_queues: Vec<Arc<TapQueue>> = port_queues.iter().map(|q| q[0].clone()).collect();
        let checks = if crate::control::checks::wanted(cfg) {
            shared.host_enabled.store(true, Ordering::Relaxed);
            Some(
                crate::control::checks::Checks::new(cfg, &shared, &control_queues)
                    .map_err(StartError::Config)?,
            )
        } else {
            None
        };
        // The HA thread always runs: VRRP when configured, the sync daemon when configured or
        // started by tapvsadm.
        *shared
            .ha
            .sync_conf
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = cfg.sync;
        {
            if crate::control::vrrp::wanted(cfg) {
                shared
                    .ha
                    .standby
                    .store(Arc::new(crate::control::vrrp::initial_standby(cfg)));
            }
            let vrrp =
                crate::control::vrrp::VrrpThread::new(cfg, shared.clone(), control_queues.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("tapvs-vrrp".into())
                    .spawn(move || vrrp.run())
                    .map_err(StartError::Sys)?,
            );
        }
        let control = ControlThread {
            shared: shared.clone(),
            queues: control_queues,
            cache: NeighCache::new(cfg.neighbour.max_entries, cfg.neighbour.timeout),
        };
        threads.push(
            std::thread::Builder::new()
                .name("tapvs-control".into())
                .spawn(move || control.run())
                .map_err(StartError::Sys)?,
        );
        if let Some(checks) = checks {
            let sh = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("tapvs-health".into())
                    .spawn(move || checks.run(sh))
                    .map_err(StartError::Sys)?,
            );
        }
        if let Some((listener, path)) = control_socket {
            let sh = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("tapvs-ctl".into())
                    .spawn(move || crate::control::socket::serve(sh, listener, path))
                    .map_err(StartError::Sys)?,
            );
        }
        if let Some(listener) = metrics {
            let sh = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("tapvs-metrics".into())
                    .spawn(move || crate::control::metrics::serve(sh, listener))
                    .map_err(StartError::Sys)?,
            );
        }
        // Scale-out: the VIPs to BIRD (a watchdog withdraws them when this process ends).
        threads.extend(crate::control::announce::start(cfg, &shared).map_err(StartError::Config)?);
        Ok(Daemon { shared, threads })
    }

    /// The folded counters of all workers (as of their last publication, at most 100 ms old).
    pub fn stats(&self) -> Stats {
        fold(&self.shared)
    }

    /// Each worker's own counters (as of its last publication), in worker order.
    pub fn worker_stats(&self) -> Vec<Counters> {
        published(&self.shared)
    }

    /// Whether the eBPF steering program is attached to the ports.
    pub fn steering_active(&self) -> bool {
        self.shared
            .steering
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_active()
    }

    /// Executes an ipvsadm command line as the control socket would.
    pub fn execute(&self, args: &[String], stdin: &str) -> tapvs_adm::Response {
        crate::control::socket::execute(&self.shared, args, stdin)
    }

    /// Reads the config file again and applies the difference (see
    /// [`crate::control::reload`]); returns what changed, or why nothing did.
    pub fn reload(&self) -> Result<String, String> {
        crate::control::reload::reload(&self.shared)
    }

    /// The current service snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshot.load_full()
    }

    /// The current neighbour table.
    pub fn neighbours(&self) -> Arc<NeighTable> {
        self.shared.neigh.load_full()
    }

    /// Stops all threads and waits for them; returns the final counters.
    pub fn shutdown(mut self) -> Stats {
        self.stop_threads();
        self.stats()
    }

    fn stop_threads(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for w in &self.shared.wake {
            w.notify();
        }
        self.shared.control_wake.notify();
        self.shared.host_wake.notify();
        self.shared.ha.wake.notify();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// The gratuitous ARPs a snapshot calls for, as (port, address), for the addresses not yet in
/// `announced` (which they join): each port's own addresses on that port, and the VIPs and
/// FullNAT local addresses, which the appliance answers ARP for on every port, on every port.
/// Sent when the ports come up and when a new snapshot brings new addresses, so neighbours and
/// bridges learn at once where they live (as after a failover).
fn announcements(
    snap: &Snapshot,
    announced: &mut std::collections::HashSet<std::net::IpAddr>,
) -> Vec<(usize, std::net::IpAddr)> {
    let mut out = Vec::new();
    for (i, p) in snap.ports.iter().enumerate() {
        for a in &p.addresses {
            if !announced.contains(&a.addr) {
                out.push((i, a.addr));
            }
        }
    }
    let mut shared: Vec<std::net::IpAddr> = snap.vips().chain(snap.lips()).collect();
    shared.sort_unstable();
    shared.dedup();
    for ip in shared {
        if !announced.contains(&ip) {
            out.extend((0..snap.ports.len()).map(|i| (i, ip)));
        }
    }
    announced.extend(out.iter().map(|&(_, ip)| ip));
    out
}

/// The control thread's state.
struct ControlThread {
    shared: Arc<Shared>,
    queues: Vec<Arc<TapQueue>>,
    cache: NeighCache,
}

impl ControlThread {
    fn run(mut self) {
        let mut buf = [0u8; 128];
        let mut probes = Vec::new();
        let mut pfd = [sys::poll_in(std::os::fd::AsRawFd::as_raw_fd(
            &self.shared.control_wake,
        ))];
        let mut last_snapshot = None;
        let mut last_snapshot_work = Instant::now()
            .checked_sub(Duration::from_secs(1))
            .unwrap_or_else(Instant::now);
        let mut announced = std::collections::HashSet::new();
        let mut last_sweep = u32::MAX;
        let mut last_sample = Instant::now();
        while !self.shared.stop.load(Ordering::Relaxed) {
            let now = self.shared.epoch.elapsed().as_secs() as u32;
            let snap = self.shared.snapshot.load_full();
            // A new snapshot costs O(real servers) here: taken at most every 100 ms while
            // edits stream in (workers ask for the next hops they need meanwhile), and the
            // announcements only when the address sets changed (an O(1) check).
            let changed = last_snapshot
                .as_ref()
                .is_none_or(|s: &Arc<Snapshot>| !Arc::ptr_eq(s, &snap));
            if changed && last_snapshot_work.elapsed() >= Duration::from_millis(100) {
                last_snapshot_work = Instant::now();
                for (ip, port) in snap.wanted_neighbours() {
                    self.cache.want(ip, port);
                }
                let same_addresses = last_snapshot
                    .as_ref()
                    .is_some_and(|s| s.same_address_sets(&snap));
                let announce = if same_addresses {
                    Vec::new()
                } else {
                    announcements(&snap, &mut announced)
                };
                for (port, ip) in announce {
                    if self.shared.ha.standby.load().is_down(ip) {
                        // VRRP announces its addresses when it becomes master.
                        continue;
                    }
                    let mac = snap.ports[port].mac.into();
                    let out = &mut buf[VNET_HDR_LEN..];
                    // Gratuitous ARP, or for IPv6 an unsolicited Neighbour Advertisement.
                    let sent = match ip {
                        std::net::IpAddr::V4(ip) => modes::reply::gratuitous_arp(out, mac, ip),
                        std::net::IpAddr::V6(ip) => modes::reply::unsolicited_na(out, mac, ip),
                    };
                    if let Some(n) = sent {
                        buf[..VNET_HDR_LEN].fill(0);
                        let _ = self.queues[port].write(&buf[..VNET_HDR_LEN + n]);
                    }
                }
                last_snapshot = Some(snap.clone());
            }
            while let Some(ev) = self.shared.learn.pop() {
                match ev {
                    NeighEvent::Learned { ip, mac, port } => self.cache.learn(ip, mac, port, now),
                    NeighEvent::Wanted { ip, port } => self.cache.want(ip, port),
                }
            }
            if now != last_sweep {
                self.shared.templates.sweep(now);
                last_sweep = now;
            }
            let since = last_sample.elapsed();
            if since >= ESTIMATOR_INTERVAL {
                let totals = crate::control::socket::dest_totals(&self.shared);
                self.shared
                    .estimator
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .sample(&totals, since.as_secs_f64());
                last_sample = Instant::now();
            }
            probes.clear();
            self.cache.tick(now, &mut probes);
            for &(ip, port) in &probes {
                let info = &snap.ports[port];
                let ip = match ip {
                    std::net::IpAddr::V4(ip) => ip,
                    std::net::IpAddr::V6(ip) => {
                        // A Neighbour Solicitation from the port's address on the target's
                        // network (else its link-local one).
                        let src = match info.source_for_ip(ip.into()) {
                            Some(std::net::IpAddr::V6(s)) => s,
                            _ => crate::datapath::pipeline::link_local(info.mac),
                        };
                        let out = &mut buf[VNET_HDR_LEN..];
                        if let Some(n) =
                            modes::reply::neighbour_solicit(out, info.mac.into(), src, ip)
                        {
                            buf[..VNET_HDR_LEN].fill(0);
                            let _ = self.queues[port].write(&buf[..VNET_HDR_LEN + n]);
                        }
                        continue;
                    }
                };
                let src = info
                    .source_for(ip)
                    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
                if let Some(n) =
                    modes::reply::arp_request(&mut buf[VNET_HDR_LEN..], info.mac.into(), src, ip)
                {
                    buf[..VNET_HDR_LEN].fill(0);
                    let _ = self.queues[port].write(&buf[..VNET_HDR_LEN + n]);
                }
            }
            if let Some(t) = self.cache.take_update() {
                self.shared.neigh.store(Arc::new(t));
                for w in &self.shared.wake {
                    w.notify();
                }
            }
            let _ = sys::poll(&mut pfd, 100);
            self.shared.control_wake.drain();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_cover_own_addresses_vips_and_lips_once() {
        let cfg = crate::config::parse(
            r#"
[[port]]
name = "ext"
tap = "t0"
addresses = ["10.0.0.1/24"]

[[port]]
name = "int"
tap = "t1"
addresses = ["172.16.0.1/24", "172.16.1.1/24"]

[[service]]
protocol = "tcp"
address = "192.0.2.1:80"
scheduler = "rr"
local_addresses = ["172.16.0.100"]

[[service.real]]
address = "172.16.0.2:80"
forward = "fullnat"
"#,
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let (_, snap) = Table::from_config(&cfg).unwrap();
        let mut announced = std::collections::HashSet::new();
        let mut got = announcements(&snap, &mut announced);
        got.sort();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(
            got,
            vec![
                (0, ip("10.0.0.1")),
                (0, ip("172.16.0.100")),
                (0, ip("192.0.2.1")),
                (1, ip("172.16.0.1")),
                (1, ip("172.16.0.100")),
                (1, ip("172.16.1.1")),
                (1, ip("192.0.2.1")),
            ]
        );
        assert!(announcements(&snap, &mut announced).is_empty());
    }

    /// IPv6 port addresses and VIPs are announced too (as unsolicited Neighbour
    /// Advertisements), and the frame the control thread sends for one is a valid NA.
    #[test]
    fn ipv6_addresses_and_vips_are_announced() {
        let cfg = crate::config::parse(
            r#"
[[port]]
name = "ext"
tap = "t0"
addresses = ["10.0.0.1/24", "2001:db8:c::1/64"]
"#,
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let (_, mut snap) = Table::from_config(&cfg).unwrap();
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // A VIP6 enters the snapshot (the control table does not hold IPv6 services yet).
        let dests = vec![std::sync::Arc::new(sched::Dest::new(
            ip("2001:db8:c::9"),
            80,
            1,
        ))];
        snap.with_service(std::sync::Arc::new(crate::datapath::service::Service {
            proto: modes::Protocol::Tcp,
            vip: ip("2001:db8:f::80"),
            vport: 80,
            dests: dests.clone(),
            dest_ids: vec![0],
            forward: vec![modes::Forward::Dr],
            sched: sched::build(&sched::SchedSpec::new("rr".to_string()), &dests)
                .unwrap()
                .into(),
            persistent: None,
            netmask: u128::MAX,
            ops: false,
            local_addresses: std::sync::Arc::from(Vec::new()),
            toa: false,
            toa_on_syn: false,
            sloppy_tcp: false,
            access: Default::default(),
            synproxy: false,
        }));
        let mut got = announcements(&snap, &mut std::collections::HashSet::new());
        got.sort();
        assert_eq!(
            got,
            vec![
                (0, ip("10.0.0.1")),
                (0, ip("2001:db8:c::1")),
                (0, ip("2001:db8:f::80"))
            ]
        );
        let mut buf = [0u8; 128];
        let mac = [2, 0, 0, 0, 0, 1];
        let std::net::IpAddr::V6(v) = got[2].1 else {
            unreachable!()
        };
        let n = modes::reply::unsolicited_na(&mut buf, mac.into(), v).unwrap();
        let pkt = modes::packet::parse(&buf[..n]).unwrap();
        assert_eq!(modes::reply::na_info(&buf[..n], &pkt).unwrap().0, v);
    }
}
