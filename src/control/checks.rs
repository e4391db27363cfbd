//! The health-check thread, keepalived's job done by the appliance itself: it runs every real
//! server's checks on the host stack ([`crate::control::host`], from the appliance's own addresses
//! through its own TAPs), and turns their verdicts into changes of the live table: a failed
//! server leaves the pool (or keeps weight 0 with `inhibit_on_failure`), a `misc_dynamic`
//! check sets its weight, and a service whose live weight falls below its quorum gets its
//! sorry server. Each change is logged, counted, and published as a new snapshot; connections
//! of a failed server then follow IPVS semantics (`expire_nodest_conn`). Checks never block
//! the data path: workers only hand this thread the frames addressed to the appliance.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::control::host::HostNet;
use crate::control::script::Scripts;
use crate::control::shared::Shared;
use crate::control::table::{Health, SvcKey};
use crate::health::engine::{Event, QuorumEvent, RealServerHealth, ServiceHealth, SplitMix64};
use crate::sys::tap::TapQueue;

struct Real {
    svc: usize,
    addr: SocketAddr,
    weight: u32,
    inhibit: bool,
    health: RealServerHealth,
    /// What its checks were built from ([`fingerprint`]): a reload keeps the state of a real
    /// server whose fingerprint is unchanged.
    conf: String,
    /// `notify_up` and `notify_down` scripts.
    notify_up: Option<String>,
    notify_down: Option<String>,
}

/// The settings a real server's checks are built from, compared across reloads.
fn fingerprint(s: &crate::config::ServiceConfig, r: &crate::config::RealConfig) -> String {
    format!("{:?}|{:?}|{:?}|{}", s.health, r.health, r.checks, r.weight)
}

struct Svc {
    key: SvcKey,
    quorum: ServiceHealth,
    /// Configured weight of the real servers without checks (always live).
    static_weight: u64,
    /// `quorum_up` and `quorum_down` scripts.
    quorum_up: Option<String>,
    quorum_down: Option<String>,
}

/// The running checks.
pub struct Checks {
    net: HostNet,
    reals: Vec<Real>,
    services: Vec<Svc>,
    scripts: Scripts,
}

/// Whether any real server of the config has health checks.
pub fn wanted(cfg: &Config) -> bool {
    cfg.services
        .iter()
        .any(|s| s.reals.iter().any(|r| !r.checks.is_empty()))
}

impl Checks {
    /// Builds the checks of `cfg` on a host stack sending through `queues` (one per port),
    /// registers sorry servers, and applies the initial states (`alpha`: down).
    pub fn new(cfg: &Config, shared: &Shared, queues: &[Arc<TapQueue>]) -> Result<Checks, String> {
        let snap = shared.snapshot.load_full();
        let net = HostNet::new(&snap.ports, snap.router.clone(), queues, snap.icmp_limits);
        let mut rng = SplitMix64::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64),
        );
        let now = Instant::now();
        let mut reals = Vec::new();
        let mut services = Vec::new();
        for s in &cfg.services {
            let key = crate::control::table::svc_key(s.proto, s.vip);
            let mut static_weight = 0u64;
            let first = reals.len();
            for r in &s.reals {
                let Some(raddr) = Some(r.addr).filter(|_| !r.checks.is_empty()) else {
                    static_weight += u64::from(r.weight);
                    continue;
                };
                let health = crate::health::config::real_server_health(
                    &s.health, &r.health, &r.checks, raddr, r.weight, now, &mut rng,
                )
                .map_err(|(f, m)| format!("service {}: real {}: {f}: {m}", s.vip, r.addr))?;
                let inhibit = r
                    .health
                    .inhibit_on_failure
                    .or(s.health.inhibit_on_failure)
                    .unwrap_or(false);
                reals.push(Real {
                    svc: services.len(),
                    addr: raddr,
                    weight: r.weight,
                    inhibit,
                    health,
                    conf: fingerprint(s, r),
                    notify_up: r.notify_up.clone(),
                    notify_down: r.notify_down.clone(),
                });
            }
            let live: u64 = static_weight
                + reals[first..]
                    .iter()
                    .map(|r| r.health.live_weight())
                    .sum::<u64>();
            services.push(Svc {
                key,
                quorum: s.health.service_health(live),
                static_weight,
                quorum_up: s.health.quorum_up.clone(),
                quorum_down: s.health.quorum_down.clone(),
            });
            if let Some(sorry) = s.sorry_server {
                let fwd = s.reals.first().map_or(modes::Forward::Nat, |r| r.forward);
                let mut t = shared.table.lock().unwrap_or_else(|e| e.into_inner());
                t.set_sorry_server(key, sorry, fwd);
            }
        }
        let checks = Checks {
            net,
            reals,
            services,
            scripts: Scripts::new(),
        };
        for i in 0..checks.reals.len() {
            checks.apply(shared, i);
        }
        for i in 0..checks.services.len() {
            let on = !checks.services[i].quorum.has_quorum();
            checks.set_sorry(shared, i, on);
        }
        checks.publish_quorum(shared);
        Ok(checks)
    }

    /// Switches to the checks of a reloaded config: real servers whose checks are unchanged
    /// keep their state (up or down, counters, timers); others start afresh, as at start;
    /// checks no longer configured stop and their verdicts are forgotten. Sorry servers and
    /// quorums follow the new config.
    fn reconfigure(&mut self, cfg: &Config, shared: &Shared) {
        let mut rng = SplitMix64::new(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(7, |d| d.as_nanos() as u64),
        );
        let now = Instant::now();
        let mut old: std::collections::HashMap<(SvcKey, SocketAddr), Real> =
            std::mem::take(&mut self.reals)
                .into_iter()
                .map(|r| ((self.services[r.svc].key, r.addr), r))
                .collect();
        let old_services: Vec<SvcKey> = self.services.drain(..).map(|s| s.key).collect();
        let mut kept = 0usize;
        for s in &cfg.services {
            let key = crate::control::table::svc_key(s.proto, s.vip);
            let mut static_weight = 0u64;
            let first = self.reals.len();
            for r in &s.reals {
                let Some(raddr) = Some(r.addr).filter(|_| !r.checks.is_empty()) else {
                    static_weight += u64::from(r.weight);
                    continue;
                };
                let conf = fingerprint(s, r);
                let svc = self.services.len();
                match old.remove(&(key, raddr)) {
                    Some(mut o) if o.conf == conf => {
                        o.svc = svc;
                        o.notify_up = r.notify_up.clone();
                        o.notify_down = r.notify_down.clone();
                        kept += 1;
                        self.reals.push(o);
                    }
                    other => {
                        if let Some(mut o) = other {
                            o.health.shutdown(&mut self.net);
                        }
                        // Validated by the reload before it changed anything.
                        let Ok(health) = crate::health::config::real_server_health(
                            &s.health, &r.health, &r.checks, raddr, r.weight, now, &mut rng,
                        ) else {
                            continue;
                        };
                        let inhibit = r
                            .health
                            .inhibit_on_failure
                            .or(s.health.inhibit_on_failure)
                            .unwrap_or(false);
                        // A fresh start: the table forgets the old verdict first.
                        let mut t = shared.table.lock().unwrap_or_else(|e| e.into_inner());
                        if let Ok(snap) = t.clear_health(key, raddr) {
                            Self::publish(shared, snap);
                        }
                        drop(t);
                        self.reals.push(Real {
                            svc,
                            addr: raddr,
                            weight: r.weight,
                            inhibit,
                            health,
                            conf,
                            notify_up: r.notify_up.clone(),
                            notify_down: r.notify_down.clone(),
                        });
                    }
                }
            }
            let live: u64 = static_weight
                + self.reals[first..]
                    .iter()
                    .map(|r| r.health.live_weight())
                    .sum::<u64>();
            self.services.push(Svc {
                key,
                quorum: s.health.service_health(live),
                static_weight,
                quorum_up: s.health.quorum_up.clone(),
                quorum_down: s.health.quorum_down.clone(),
            });
            let mut t = shared.table.lock().unwrap_or_else(|e| e.into_inner());
            match s.sorry_server {
                Some(sorry) => {
                    let fwd = s.reals.first().map_or(modes::Forward::Nat, |r| r.forward);
                    t.set_sorry_server(key, sorry, fwd);
                }
                None => {
                    if let Ok(snap) = t.clear_sorry(key) {
                        Self::publish(shared, snap);
                    }
                }
            }
        }
        for ((key, addr), mut o) in old {
            o.health.shutdown(&mut self.net);
            let mut t = shared.table.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok(snap) = t.clear_health(key, addr) {
                Self::publish(shared, snap);
            }
        }
        for key in old_services {
            if !self.services.iter().any(|s| s.key == key) {
                let mut t = shared.table.lock().unwrap_or_else(|e| e.into_inner());
                if let Ok(snap) = t.clear_sorry(key) {
                    Self::publish(shared, snap);
                }
            }
        }
        for i in 0..self.reals.len() {
            self.apply(shared, i);
        }
        for i in 0..self.services.len() {
            let on = !self.services[i].quorum.has_quorum();
            self.set_sorry(shared, i, on);
        }
        self.publish_quorum(shared);
        tracing::info!(checked = self.reals.len(), kept, "health checks reloaded");
    }

    fn publish(shared: &Shared, snap: Option<crate::datapath::service::Snapshot>) {
        if let Some(snap) = snap {
            crate::control::shared::publish_snapshot(shared, snap);
        }
    }

    /// Writes real server `i`'s state into the live table.
    fn apply(&self, shared: &Shared, i: usize) {
        let r = &self.reals[i];
        let h = Health {
            down: !r.health.is_up(),
            inhibit_on_failure: r.inhibit,
            weight: (r.health.weight() != r.weight).then(|| r.health.weight()),
        };
        let key = self.services[r.svc].key;
        let mut t = shared.table.lock().unwrap_or_else(|e| e.into_inner());
        match t.set_health(key, r.addr, h) {
            Ok(snap) => Self::publish(shared, snap),
            Err(e) => tracing::warn!(real = %r.addr, error = %e, "health change not applied"),
        }
    }

    /// Publishes the services without quorum for VRRP's `track_services`, and wakes the
    /// VRRP thread when the set changed.
    fn publish_quorum(&self, shared: &Shared) {
        let lost: Vec<_> = self
            .services
            .iter()
            .filter(|s| !s.quorum.has_quorum())
            .map(|s| s.key)
            .collect();
        if **shared.ha.quorum_lost.load() != lost {
            shared.ha.quorum_lost.store(Arc::new(lost));
            shared.ha.wake.notify();
        }
    }

    fn set_sorry(&self, shared: &Shared, svc: usize, on: bool) {
        let key = self.services[svc].key;
        let mut t = shared.table.lock().unwrap_or_else(|e| e.into_inner());
        match t.set_sorry_active(key, on) {
            Ok(snap) => Self::publish(shared, snap),
            Err(e) => tracing::warn!(error = %e, "sorry server change not applied"),
        }
    }

    /// Runs service `s`'s `quorum_up` (`up`) or `quorum_down` script, if it has one.
    fn quorum_hook(&mut self, s: usize, up: bool) {
        let svc = &self.services[s];
        let script = if up { &svc.quorum_up } else { &svc.quorum_down };
        if let Some(script) = script {
            let (proto, service) = (svc.key.0.name().to_string(), svc.key.1.to_string());
            self.scripts.spawn(
                &format!("service {service} quorum"),
                script,
                &[],
                &[
                    ("TAPVS_PROTOCOL", &proto),
                    ("TAPVS_SERVICE", &service),
                    ("TAPVS_STATE", if up { "UP" } else { "DOWN" }),
                ],
            );
        }
    }

    /// Runs until the daemon stops.
    pub fn run(mut self, shared: Arc<Shared>) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&shared.host_wake);
        while !shared.stop.load(Ordering::Relaxed) {
            if let Some(cfg) = shared.reload.take_checks() {
                self.reconfigure(&cfg, &shared);
            }
            while let Some(r) = shared.host_rx.pop() {
                self.net.deliver(r.port, &r.data[..r.len]);
                let _ = shared.pool.push(r);
            }
            self.net.poll();
            let now = Instant::now();
            for i in 0..self.reals.len() {
                let Some(ev) = self.reals[i].health.tick(&mut self.net, now) else {
                    continue;
                };
                let r = &self.reals[i];
                let svc = self.services[r.svc].key;
                match &ev {
                    Event::Down { reason } => tracing::warn!(
                        service = %svc.1, real = %r.addr, %reason, "real server DOWN"
                    ),
                    Event::Up { weight } => tracing::info!(
                        service = %svc.1, real = %r.addr, weight, "real server UP"
                    ),
                    Event::Weight(w) => tracing::info!(
                        service = %svc.1, real = %r.addr, weight = w, "real server weight"
                    ),
                }
                let before = {
                    let t = shared.table.lock().unwrap_or_else(|e| e.into_inner());
                    match t.health(svc, r.addr).0 {
                        Some(h) if h.down => "down".to_string(),
                        Some(h) => format!("up weight {}", h.weight.unwrap_or(r.weight)),
                        None => "unchecked".to_string(),
                    }
                };
                let after = match &ev {
                    Event::Down { reason } => format!("down ({reason})"),
                    _ => format!("up weight {}", r.health.weight()),
                };
                crate::control::changelog::health(svc.1, r.addr, &before, &after);
                let hook = match &ev {
                    Event::Up { .. } => r.notify_up.as_deref().map(|s| (s, "UP")),
                    Event::Down { .. } => r.notify_down.as_deref().map(|s| (s, "DOWN")),
                    Event::Weight(_) => None,
                };
                if let Some((script, state)) = hook {
                    let (proto, real) = (svc.0.name().to_string(), r.addr.to_string());
                    let service = svc.1.to_string();
                    self.scripts.spawn(
                        &format!("real server {real} notify"),
                        script,
                        &[],
                        &[
                            ("TAPVS_PROTOCOL", &proto),
                            ("TAPVS_SERVICE", &service),
                            ("TAPVS_REAL", &real),
                            ("TAPVS_STATE", state),
                        ],
                    );
                }
                self.apply(&shared, i);
                let s = r.svc;
                let live = self.services[s].static_weight
                    + self
                        .reals
                        .iter()
                        .filter(|x| x.svc == s)
                        .map(|x| x.health.live_weight())
                        .sum::<u64>();
                match self.services[s].quorum.update(live) {
                    Some(QuorumEvent::Lost) => {
                        tracing::warn!(service = %svc.1, live, "quorum lost: sorry server in");
                        self.set_sorry(&shared, s, true);
                        self.publish_quorum(&shared);
                        self.quorum_hook(s, false);
                    }
                    Some(QuorumEvent::Regained) => {
                        tracing::info!(service = %svc.1, live, "quorum regained: sorry server out");
                        self.set_sorry(&shared, s, false);
                        self.publish_quorum(&shared);
                        self.quorum_hook(s, true);
                    }
                    None => {}
                }
            }
            self.scripts.reap();
            self.net.poll();
            let now = Instant::now();
            let next = self
                .reals
                .iter()
                .filter_map(|r| r.health.next_wakeup())
                .min()
                .map(|t| t.saturating_duration_since(now))
                .into_iter()
                .chain(self.net.poll_delay())
                .min()
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_millis(100));
            let mut pfd = [crate::sys::poll_in(fd)];
            let _ = crate::sys::poll(&mut pfd, next.as_millis() as i32);
            shared.host_wake.drain();
        }
        for r in &mut self.reals {
            r.health.shutdown(&mut self.net);
        }
        self.net.poll();
    }
}
