//! The VRRP thread (hot standby): runs the `[[vrrp]]` instances' state machines
//! ([`crate::vrrp`]) off the data path. Workers hand it received adverts (IPv4 protocol or
//! IPv6 next header 112) through `ha.rx`; it validates them (counting rejects by keepalived's
//! reasons), drives the state machines with its clock, and sends adverts from the instance
//! port's own MAC and its first IPv4 address (an IPv6 instance: its link-local address)
//! through that port's TAP (worker 0's queue; a TAP write is one atomic frame), to 224.0.0.18
//! (ff02::12) or to each unicast peer. On each transition it publishes the [`Standby`] view
//! the workers read (a backup neither answers ARP or Neighbour Solicitations for nor forwards
//! to the virtual addresses), and on becoming MASTER sends keepalived's gratuitous ARP bursts
//! (unsolicited Neighbour Advertisements for IPv6 addresses): 5 at once, 5 more after 5 s.
//! It runs the notify scripts, polls tracked ports and services (a port administratively
//! down, a service whose health-check quorum is lost: FAULT, or the tracking weight added to
//! the priority), moves the members of each sync group together ([`crate::vrrp::group`]), and
//! on stop sends priority 0 for every instance it is MASTER of.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use modes::advert::{ipv4_multicast_mac, ipv6_multicast_mac, vrrp_advert, vrrp_advert6};
use modes::wire::ethernet::EthernetAddress;
use modes::wire::ipv4::Ipv4Packet;
use modes::wire::ipv6::Ipv6Packet;
use modes::wire::vrrp::{self, VrrpRepr};

use crate::config::Config;
use crate::control::shared::Shared;
use crate::datapath::ha::{InstanceStats, Standby, VrrpStats};
use crate::datapath::neigh::NeighEvent;
use crate::datapath::service::Snapshot;
use crate::sys::tap::{TapQueue, VNET_HDR_LEN};
use crate::sys::{self};
use crate::vrrp::config::{effective_priority, track_effect, SyncGroupConfig, VrrpConfig};
use crate::vrrp::group::{self, Member, Step};
use crate::vrrp::{check, Expect, Instance, Output, Params, Reject, State};

/// Gratuitous ARPs per burst (keepalived's `vrrp_garp_master_repeat`).
pub const GARP_REPEAT: usize = 5;
/// Delay before the second burst, ms (keepalived's `vrrp_garp_master_delay`).
pub const GARP_DELAY_MS: u64 = 5000;
/// How often tracked ports and services are polled, ms.
const TRACK_EVERY_MS: u64 = 200;
/// Rounds of [`group::reconcile`] per group and turn (it settles in two).
const GROUP_ROUNDS: usize = 4;

/// One instance and its bookkeeping.
struct Inst {
    cfg: VrrpConfig,
    fsm: Instance,
    expect: Expect,
    stats: InstanceStats,
    /// When the second gratuitous ARP burst is due.
    garp_again: Option<u64>,
    /// One of its own tracked objects (weight 0) is down: FAULT (for the whole sync group).
    faulty: bool,
    /// Its sync group (index in `groups`), if any.
    group: Option<usize>,
}

/// A sync group and the state last reported for it.
struct Group {
    cfg: SyncGroupConfig,
    state: State,
}

/// The VRRP thread's state.
pub struct VrrpThread {
    shared: Arc<Shared>,
    queues: Vec<Arc<TapQueue>>,
    /// TAP device name per port (for tracking).
    taps: Vec<String>,
    insts: Vec<Inst>,
    groups: Vec<Group>,
    /// The services without quorum as last tracked (a new set is tracked at once).
    quorum_seen: Arc<Vec<(modes::Protocol, std::net::SocketAddr)>>,
    port_rejected: Vec<[u64; Reject::COUNT]>,
    buf: Vec<u8>,
    ident: u16,
    scripts: crate::control::script::Scripts,
    sync: crate::control::sync::SyncDaemon,
}

/// Whether the configuration has VRRP instances.
pub fn wanted(cfg: &Config) -> bool {
    !cfg.vrrp.is_empty()
}

/// The view before any instance has run: every virtual address down (not answered, not
/// forwarded, not announced), adverts handed to the VRRP thread.
pub fn initial_standby(cfg: &Config) -> Standby {
    Standby {
        vrrp: true,
        down: cfg
            .vrrp
            .iter()
            .flat_map(|v| v.addresses.iter().copied())
            .collect(),
        ..Standby::default()
    }
}

/// The ports an address is announced on: VIPs and FullNAT local addresses on every port (the
/// appliance answers ARP and Neighbour Solicitations for them everywhere), others on the port
/// whose network holds them, else (a link-local floating address too) the instance's port.
fn garp_ports(snap: &Snapshot, ip: IpAddr, inst_port: usize) -> Vec<usize> {
    if snap.is_vip(ip) || snap.is_lip(ip) {
        return (0..snap.ports.len()).collect();
    }
    vec![floating_port(snap, ip, inst_port)]
}

/// The port a floating address is answered on: the one whose network holds it, else the
/// instance's.
fn floating_port(snap: &Snapshot, ip: IpAddr, inst_port: usize) -> usize {
    snap.ports
        .iter()
        .position(|p| p.addresses.iter().any(|c| c.contains(ip)))
        .unwrap_or(inst_port)
}

impl VrrpThread {
    /// The thread for `cfg`'s instances, sending through `queues` (one per port).
    pub fn new(cfg: &Config, shared: Arc<Shared>, queues: Vec<Arc<TapQueue>>) -> VrrpThread {
        let mut insts = cfg
            .vrrp
            .iter()
            .map(|v| Inst {
                fsm: Instance::new(Params {
                    version: v.version,
                    priority: v.priority,
                    advert_int_cs: v.advert_int_cs,
                    initial_master: v.initial_master,
                    preempt: v.preempt,
                    preempt_delay_ms: u64::from(v.preempt_delay) * 1000,
                    primary: v.src,
                }),
                expect: Expect {
                    version: v.version,
                    vrid: v.vrid,
                    auth: v.auth_pass.as_deref().map(vrrp::pass_data),
                    advert_int_cs: v.advert_int_cs,
                    addrs: v.addresses.clone(),
                },
                stats: InstanceStats {
                    name: v.name.clone(),
                    priority: v.priority,
                    ..InstanceStats::default()
                },
                cfg: v.clone(),
                garp_again: None,
                faulty: false,
                group: None,
            })
            .collect::<Vec<Inst>>();
        for (g, cfg) in cfg.vrrp_sync_groups.iter().enumerate() {
            for &m in &cfg.members {
                if let Some(i) = insts.get_mut(m) {
                    i.group = Some(g);
                }
            }
        }
        let groups = cfg
            .vrrp_sync_groups
            .iter()
            .map(|g| Group {
                cfg: g.clone(),
                state: State::Init,
            })
            .collect();
        VrrpThread {
            shared,
            queues,
            taps: cfg.ports.iter().map(|p| p.tap.clone()).collect(),
            insts,
            groups,
            quorum_seen: Arc::new(Vec::new()),
            port_rejected: vec![[0; Reject::COUNT]; cfg.ports.len()],
            buf: vec![0u8; 2048],
            ident: 0,
            scripts: crate::control::script::Scripts::new(),
            sync: crate::control::sync::SyncDaemon::new(),
        }
    }

    fn now(&self) -> u64 {
        self.shared.epoch.elapsed().as_millis() as u64
    }

    /// Runs until the daemon stops; then stops every instance (priority 0 from a master).
    pub fn run(mut self) {
        let mut pfd = [sys::poll_in(self.shared.ha.wake.as_raw_fd())];
        let now = self.now();
        for i in 0..self.insts.len() {
            let out = self.insts[i].fsm.start(now);
            self.apply(i, out, now);
        }
        self.track(now);
        self.sync_groups(now);
        self.publish();
        let mut last_track = now;
        while !self.shared.stop.load(Ordering::Relaxed) {
            let now = self.now();
            self.sync_settings();
            self.receive(now);
            self.sync.poll(&self.shared, &self.queues, now, false);
            for i in 0..self.insts.len() {
                // A sync-group member due to take over waits for its group (sync_groups).
                if self.held(i, now) {
                    continue;
                }
                let out = self.insts[i].fsm.poll(now);
                self.apply(i, out, now);
                if self.insts[i].garp_again.is_some_and(|t| now >= t) {
                    self.insts[i].garp_again = None;
                    if self.insts[i].fsm.state() == State::Master {
                        self.garp(i);
                    }
                }
            }
            let quorum_changed =
                !Arc::ptr_eq(&self.shared.ha.quorum_lost.load(), &self.quorum_seen);
            if quorum_changed || now.saturating_sub(last_track) >= TRACK_EVERY_MS {
                self.track(now);
                last_track = now;
            }
            self.sync_groups(now);
            self.publish();
            self.scripts.reap();
            let now = self.now();
            let next = self
                .insts
                .iter()
                .enumerate()
                .flat_map(|(k, i)| {
                    // A held member is looked at again when its group changes (every turn).
                    let d = if self.held(k, now) {
                        None
                    } else {
                        i.fsm.next_deadline()
                    };
                    [d, i.garp_again]
                })
                .chain([self.sync.next_deadline()])
                .flatten()
                .min()
                .unwrap_or(u64::MAX);
            let wait = next.saturating_sub(now).min(TRACK_EVERY_MS) as i32;
            if wait > 0 {
                let _ = sys::poll(&mut pfd, wait);
            }
            self.shared.ha.wake.drain();
        }
        let now = self.now();
        self.sync.poll(&self.shared, &self.queues, now, true);
        for i in 0..self.insts.len() {
            let out = self.insts[i].fsm.stop();
            self.apply(i, out, now);
        }
        self.publish();
    }

    /// Applies changed sync-daemon settings (`tapvsadm --start-daemon/--stop-daemon`) and
    /// tells the workers which roles run.
    fn sync_settings(&mut self) {
        let conf = *self
            .shared
            .ha
            .sync_conf
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let cur = self.shared.ha.standby.load_full();
        let port = conf.backup.map(|b| b.mcast_port).unwrap_or(0);
        if conf == self.sync.conf()
            && cur.sync_master == conf.master.is_some()
            && cur.sync_backup == conf.backup.is_some()
            && cur.sync_port == port
            && cur.sync_refresh == conf.refresh_period
        {
            return;
        }
        self.sync.set_conf(conf);
        let s = Standby {
            sync_master: conf.master.is_some(),
            sync_backup: conf.backup.is_some(),
            sync_port: port,
            sync_refresh: conf.refresh_period,
            ..(*cur).clone()
        };
        self.shared.ha.standby.store(Arc::new(s));
        tracing::info!(
            master = conf.master.is_some(),
            backup = conf.backup.is_some(),
            "sync daemon settings"
        );
    }

    /// Validates and applies the adverts the workers handed over.
    fn receive(&mut self, now: u64) {
        while let Some(r) = self.shared.ha.rx.pop() {
            let (port, len) = (r.port, r.len);
            let frame = r.data.get(VNET_HDR_LEN..len).unwrap_or(&[]);
            if self.sync.receive(&self.shared, port, frame) {
                let _ = self.shared.pool.push(r);
                continue;
            }
            let res = self.advert(port, frame, now);
            if let Err(why) = res {
                if let Some(c) = self.port_rejected.get_mut(port) {
                    c[why.index()] += 1;
                }
            }
            let _ = self.shared.pool.push(r);
        }
    }

    /// One advert frame (Ethernet on, IPv4 or IPv6): rejects before an instance is found
    /// are returned.
    fn advert(&mut self, port: usize, frame: &[u8], now: u64) -> Result<(), Reject> {
        let Some((ttl, src, dst, payload)) = ip_of(frame)? else {
            // A sync datagram the sync daemon (no longer) wants.
            return Ok(());
        };
        let vrid = check::vrid_of(payload).ok_or(Reject::Truncated)?;
        // The VRID names one instance per port and family (an IPv4 and an IPv6 instance may
        // share it, as in keepalived).
        let Some(i) = self.insts.iter().position(|x| {
            x.cfg.port == port && x.cfg.vrid == vrid && x.cfg.src.is_ipv6() == src.is_ipv6()
        }) else {
            return Err(Reject::WrongVrid);
        };
        let inst = &mut self.insts[i];
        match check::validate(&inst.expect, ttl, src, dst, payload) {
            Err(why) => {
                inst.stats.rejected[why.index()] += 1;
                Ok(())
            }
            Ok(c) => {
                if c.advert.src == inst.cfg.src {
                    // Our own advert, reflected back: not a peer's.
                    return Ok(());
                }
                inst.stats.received += 1;
                if c.advert.priority == 0 {
                    inst.stats.received_prio_zero += 1;
                }
                if c.addr_list_mismatch {
                    inst.stats.addr_list_mismatch += 1;
                }
                let out = inst.fsm.advert(now, &c.advert);
                self.apply(i, out, now);
                Ok(())
            }
        }
    }

    /// Whether instance `i` is a sync-group member whose master-down timer ran out: it takes
    /// over only with its group.
    fn held(&self, i: usize, now: u64) -> bool {
        self.insts[i].group.is_some() && self.insts[i].fsm.due_master(now)
    }

    /// Tracked ports and services: a weight-0 object down puts the instance (and its sync
    /// group) in FAULT; weighted ones set the effective priority.
    fn track(&mut self, now: u64) {
        let lost = self.shared.ha.quorum_lost.load_full();
        self.quorum_seen = lost.clone();
        for i in 0..self.insts.len() {
            let cfg = &self.insts[i].cfg;
            if cfg.track_ports.is_empty() && cfg.track_services.is_empty() {
                continue;
            }
            let mut fault = false;
            let mut delta = 0i32;
            for t in &cfg.track_ports {
                let up = self
                    .taps
                    .get(t.port)
                    .is_some_and(|n| crate::sys::tap::link_is_up(n).unwrap_or(false));
                let (f, d) = track_effect(t.weight, up);
                fault |= f;
                delta += d;
            }
            for t in &cfg.track_services {
                let ok = !lost.contains(&(t.proto, t.addr));
                let (f, d) = track_effect(t.weight, ok);
                fault |= f;
                delta += d;
            }
            let prio = effective_priority(cfg.priority, delta);
            if prio != self.insts[i].fsm.priority() {
                tracing::warn!(instance = %cfg.name, priority = prio, "VRRP tracked priority changed");
                let out = self.insts[i].fsm.set_priority(now, prio);
                self.apply(i, out, now);
            }
            if fault != self.insts[i].faulty {
                self.insts[i].faulty = fault;
                tracing::warn!(instance = %self.insts[i].cfg.name, fault, "VRRP tracked object changed");
                if self.insts[i].group.is_none() {
                    let out = self.insts[i].fsm.set_fault(now, fault);
                    self.apply(i, out, now);
                }
            }
        }
    }

    /// Moves the members of each sync group together ([`group::reconcile`]) and reports the
    /// group's own transitions (log, notify scripts).
    fn sync_groups(&mut self, now: u64) {
        for g in 0..self.groups.len() {
            for _ in 0..GROUP_ROUNDS {
                let members = self.members(g, now);
                let steps = group::reconcile(&members);
                if steps.is_empty() {
                    break;
                }
                for (k, step) in steps {
                    let i = self.groups[g].cfg.members[k];
                    let fsm = &mut self.insts[i].fsm;
                    let out = match step {
                        Step::Fault(on) => fsm.set_fault(now, on),
                        Step::Master => fsm.poll(now),
                        Step::Backup => fsm.leave_master(now),
                    };
                    self.apply(i, out, now);
                }
            }
            let state = group::state(&self.members(g, now));
            if state != self.groups[g].state {
                self.groups[g].state = state;
                tracing::info!(group = %self.groups[g].cfg.name, state = state.as_str(), "VRRP sync group transition");
                let cfg = &self.groups[g].cfg;
                let script = match state {
                    State::Master => cfg.notify_master.clone(),
                    State::Backup => cfg.notify_backup.clone(),
                    State::Fault => cfg.notify_fault.clone(),
                    State::Init => None,
                };
                if let Some(s) = script {
                    let envs = [
                        ("TAPVS_VRRP_GROUP", cfg.name.clone()),
                        ("TAPVS_VRRP_STATE", state.as_str().to_string()),
                    ];
                    let what = format!("vrrp sync group {} notify", cfg.name);
                    self.spawn(&what, &s, &[], &envs);
                }
            }
        }
    }

    fn members(&self, g: usize, now: u64) -> Vec<Member> {
        self.groups[g]
            .cfg
            .members
            .iter()
            .map(|&i| Member {
                state: self.insts[i].fsm.state(),
                due: self.insts[i].fsm.due_master(now),
                fault: self.insts[i].faulty,
            })
            .collect()
    }

    /// Carries out what the state machine asked for.
    fn apply(&mut self, i: usize, out: Output, now: u64) {
        if let Some(prio) = out.advert {
            self.send_advert(i, prio);
        }
        let Some(state) = out.became else {
            return;
        };
        let inst = &mut self.insts[i];
        inst.stats.transitions[state.index()] += 1;
        tracing::info!(instance = %inst.cfg.name, state = state.as_str(), priority = inst.fsm.priority(), "VRRP transition");
        self.update_standby();
        if state == State::Master {
            self.garp(i);
            self.insts[i].garp_again = Some(now + GARP_DELAY_MS);
        } else {
            self.insts[i].garp_again = None;
        }
        self.notify(i, state);
    }

    /// Publishes which virtual addresses are down and which floating addresses are answered.
    fn update_standby(&mut self) {
        let snap = self.shared.snapshot.load_full();
        let mut s = Standby {
            vrrp: true,
            down: Vec::new(),
            floating: Vec::new(),
            ..(**self.shared.ha.standby.load()).clone()
        };
        for inst in &self.insts {
            if inst.fsm.state() == State::Master {
                for &a in &inst.cfg.addresses {
                    if !snap.is_vip(a) && !snap.is_lip(a) {
                        // IPv4 in ARP, IPv6 in Neighbour Discovery.
                        s.floating.push((floating_port(&snap, a, inst.cfg.port), a));
                    }
                }
            } else {
                s.down.extend(inst.cfg.addresses.iter().copied());
            }
        }
        self.shared.ha.standby.store(Arc::new(s));
    }

    fn write(&mut self, port: usize, n: usize) {
        self.buf[..VNET_HDR_LEN].fill(0);
        if let Some(q) = self.queues.get(port) {
            let _ = q.write(&self.buf[..VNET_HDR_LEN + n]);
        }
    }

    fn send_advert(&mut self, i: usize, prio: u8) {
        let snap = self.shared.snapshot.load_full();
        let inst = &self.insts[i];
        let port = inst.cfg.port;
        let Some(info) = snap.ports.get(port) else {
            return;
        };
        let mac = EthernetAddress(info.mac);
        let repr = VrrpRepr {
            version: inst.cfg.version,
            vrid: inst.cfg.vrid,
            priority: prio,
            naddr: inst.cfg.addresses.len() as u8,
            auth_type: if inst.expect.auth.is_some() {
                vrrp::AUTH_PASS
            } else {
                vrrp::AUTH_NONE
            },
            adver_int_cs: inst.cfg.advert_int_cs,
            auth: inst.expect.auth.unwrap_or([0; vrrp::AUTH_LEN]),
        };
        let mut dests: Vec<(IpAddr, EthernetAddress)> = Vec::new();
        if inst.cfg.unicast_peers.is_empty() {
            dests.push(match inst.cfg.src {
                IpAddr::V4(_) => (
                    vrrp::MCAST_GROUP.into(),
                    ipv4_multicast_mac(vrrp::MCAST_GROUP),
                ),
                IpAddr::V6(_) => (
                    vrrp::MCAST_GROUP6.into(),
                    ipv6_multicast_mac(vrrp::MCAST_GROUP6),
                ),
            });
        } else {
            let neigh = self.shared.neigh.load();
            for &peer in &inst.cfg.unicast_peers {
                match neigh.entry(peer) {
                    Some(n) => dests.push((peer, EthernetAddress(n.mac))),
                    None => {
                        let _ = self
                            .shared
                            .learn
                            .push(NeighEvent::Wanted { ip: peer, port });
                        self.shared.control_wake.notify();
                    }
                }
            }
        }
        let (src, addrs) = (inst.cfg.src, inst.cfg.addresses.clone());
        let mut sent = 0;
        for (dst, dmac) in dests {
            self.ident = self.ident.wrapping_add(1);
            let ident = self.ident;
            let out = &mut self.buf[VNET_HDR_LEN..];
            let n = match (src, dst) {
                (IpAddr::V4(src), IpAddr::V4(dst)) => {
                    let addrs: Vec<_> = addrs.iter().filter_map(v4).collect();
                    vrrp_advert(out, mac, dmac, src, dst, ident, &repr, &addrs)
                }
                (IpAddr::V6(src), IpAddr::V6(dst)) => {
                    let addrs: Vec<_> = addrs.iter().filter_map(v6).collect();
                    vrrp_advert6(out, mac, dmac, src, dst, &repr, &addrs)
                }
                _ => None,
            };
            if let Some(n) = n {
                self.write(port, n);
                sent += 1;
            }
        }
        let st = &mut self.insts[i].stats;
        st.sent += sent;
        if prio == 0 {
            st.sent_prio_zero += sent;
        }
    }

    /// One burst of gratuitous ARPs (IPv4) or unsolicited Neighbour Advertisements (IPv6,
    /// RFC 4861 §7.2.6, to all-nodes with the override flag) for instance `i`'s addresses.
    fn garp(&mut self, i: usize) {
        let snap = self.shared.snapshot.load_full();
        let inst_port = self.insts[i].cfg.port;
        let addrs = self.insts[i].cfg.addresses.clone();
        for _ in 0..GARP_REPEAT {
            for &a in &addrs {
                for p in garp_ports(&snap, a, inst_port) {
                    let Some(info) = snap.ports.get(p) else {
                        continue;
                    };
                    let (out, mac) = (&mut self.buf[VNET_HDR_LEN..], EthernetAddress(info.mac));
                    let n = match a {
                        IpAddr::V4(a) => modes::reply::gratuitous_arp(out, mac, a),
                        IpAddr::V6(a) => modes::reply::unsolicited_na(out, mac, a),
                    };
                    if let Some(n) = n {
                        self.write(p, n);
                    }
                }
            }
        }
    }

    /// Runs the instance's notify scripts for `state` (through `/bin/sh -c`; reaped later).
    fn notify(&mut self, i: usize, state: State) {
        let cfg = &self.insts[i].cfg;
        let prio = self.insts[i].fsm.priority();
        let specific = match state {
            State::Master => cfg.notify_master.clone(),
            State::Backup => cfg.notify_backup.clone(),
            State::Fault => cfg.notify_fault.clone(),
            State::Init => None,
        };
        let mut cmds: Vec<(String, Vec<String>)> = Vec::new();
        if let Some(s) = specific {
            cmds.push((s, Vec::new()));
        }
        if let Some(s) = cfg.notify.clone() {
            if state != State::Init {
                cmds.push((
                    s,
                    vec![
                        "INSTANCE".into(),
                        cfg.name.clone(),
                        state.as_str().into(),
                        prio.to_string(),
                    ],
                ));
            }
        }
        let envs = [
            ("TAPVS_VRRP_INSTANCE", cfg.name.clone()),
            ("TAPVS_VRRP_STATE", state.as_str().to_string()),
        ];
        let what = format!("vrrp instance {} notify", cfg.name);
        for (script, args) in cmds {
            self.spawn(&what, &script, &args, &envs);
        }
    }

    /// Starts `script` through the shared hook-script runner with `args` and `envs`.
    fn spawn(&mut self, what: &str, script: &str, args: &[String], envs: &[(&str, String)]) {
        let env: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.scripts.spawn(what, script, args, &env);
    }

    /// Copies the counters where `/metrics` reads them.
    fn publish(&mut self) {
        for inst in &mut self.insts {
            inst.stats.state = inst.fsm.state().index();
            inst.stats.priority = inst.fsm.priority();
        }
        let snap = self.shared.snapshot.load_full();
        let stats = VrrpStats {
            instances: self.insts.iter().map(|i| i.stats.clone()).collect(),
            port_rejected: self
                .port_rejected
                .iter()
                .enumerate()
                .map(|(p, c)| {
                    (
                        snap.ports
                            .get(p)
                            .map(|x| x.name.clone())
                            .unwrap_or_default(),
                        *c,
                    )
                })
                .collect(),
            groups: self
                .groups
                .iter()
                .map(|g| (g.cfg.name.clone(), g.state.index()))
                .collect(),
        };
        *self
            .shared
            .ha
            .stats
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = stats;
        self.sync.publish(&self.shared);
    }
}

/// The IPv4 address in `a`, if it is one.
fn v4(a: &IpAddr) -> Option<std::net::Ipv4Addr> {
    match a {
        IpAddr::V4(a) => Some(*a),
        IpAddr::V6(_) => None,
    }
}

/// The IPv6 address in `a`, if it is one.
fn v6(a: &IpAddr) -> Option<std::net::Ipv6Addr> {
    match a {
        IpAddr::V6(a) => Some(*a),
        IpAddr::V4(_) => None,
    }
}

/// TTL or hop limit, source, destination and payload of an advert.
type AdvertIp<'a> = (u8, IpAddr, IpAddr, &'a [u8]);

/// The IP layer of a frame handed to the VRRP thread: that of an IPv4 protocol-112 packet or
/// an IPv6 one whose next header is 112 (no extension headers, as VRRP sends it); `None` for
/// anything else (a sync datagram).
fn ip_of(frame: &[u8]) -> Result<Option<AdvertIp<'_>>, Reject> {
    let l3 = frame.get(14..).unwrap_or(&[]);
    match l3.first().map(|b| b >> 4) {
        Some(6) => {
            let ip = Ipv6Packet::new_checked(l3).map_err(|_| Reject::Truncated)?;
            if ip.next_header() != vrrp::PROTO_VRRP {
                return Ok(None);
            }
            let (ttl, src, dst) = (ip.hop_limit(), ip.src_addr(), ip.dst_addr());
            let end = (40 + usize::from(ip.payload_len())).min(l3.len());
            let payload = l3.get(40..end).unwrap_or(&[]);
            Ok(Some((ttl, src.into(), dst.into(), payload)))
        }
        _ => {
            let ip = Ipv4Packet::new_checked(l3).map_err(|_| Reject::Truncated)?;
            if ip.protocol() != vrrp::PROTO_VRRP {
                return Ok(None);
            }
            let (ttl, src, dst) = (ip.ttl(), ip.src_addr(), ip.dst_addr());
            let end = usize::from(ip.total_len()).min(l3.len());
            let payload = l3.get(ip.header_len()..end).unwrap_or(&[]);
            Ok(Some((ttl, src.into(), dst.into(), payload)))
        }
    }
}

/// Records the VRRP metrics (with their HELP) into the current `metrics` recorder.
pub fn record(shared: &Shared) {
    use metrics::{counter, describe_counter, describe_gauge, gauge};
    crate::control::sync::record(shared);
    let st = shared
        .ha
        .stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if st.instances.is_empty() {
        return;
    }
    describe_gauge!(
        "tapvs_vrrp_state",
        "VRRP instance state: 1 for the current one of INIT, BACKUP, MASTER, FAULT."
    );
    describe_gauge!("tapvs_vrrp_priority", "VRRP instance effective priority.");
    describe_counter!(
        "tapvs_vrrp_transitions_total",
        "VRRP transitions into each state."
    );
    describe_counter!(
        "tapvs_vrrp_adverts_sent_total",
        "VRRP adverts sent (priority=zero: the master stopping)."
    );
    describe_counter!(
        "tapvs_vrrp_adverts_received_total",
        "Valid VRRP adverts received (priority=zero: the peer master stopping)."
    );
    describe_counter!(
        "tapvs_vrrp_adverts_rejected_total",
        "VRRP adverts rejected, by keepalived's reason, per instance (or per port before an instance matched)."
    );
    describe_counter!(
        "tapvs_vrrp_address_list_mismatches_total",
        "Valid VRRP adverts whose address list differs from the instance's (accepted, as keepalived)."
    );
    for i in &st.instances {
        let name = i.name.clone();
        for s in State::ALL {
            gauge!("tapvs_vrrp_state", "instance" => name.clone(), "state" => s.as_str())
                .set(if i.state == s.index() { 1.0 } else { 0.0 });
            counter!("tapvs_vrrp_transitions_total", "instance" => name.clone(), "state" => s.as_str())
                .absolute(i.transitions[s.index()]);
        }
        gauge!("tapvs_vrrp_priority", "instance" => name.clone()).set(f64::from(i.priority));
        counter!("tapvs_vrrp_adverts_sent_total", "instance" => name.clone(), "priority" => "nonzero")
            .absolute(i.sent - i.sent_prio_zero);
        counter!("tapvs_vrrp_adverts_sent_total", "instance" => name.clone(), "priority" => "zero")
            .absolute(i.sent_prio_zero);
        counter!("tapvs_vrrp_adverts_received_total", "instance" => name.clone(), "priority" => "nonzero")
            .absolute(i.received - i.received_prio_zero);
        counter!("tapvs_vrrp_adverts_received_total", "instance" => name.clone(), "priority" => "zero")
            .absolute(i.received_prio_zero);
        counter!("tapvs_vrrp_address_list_mismatches_total", "instance" => name.clone())
            .absolute(i.addr_list_mismatch);
        for r in Reject::ALL {
            counter!("tapvs_vrrp_adverts_rejected_total", "instance" => name.clone(), "port" => "", "reason" => r.as_str())
                .absolute(i.rejected[r.index()]);
        }
    }
    if !st.groups.is_empty() {
        describe_gauge!(
            "tapvs_vrrp_group_state",
            "VRRP sync group state: 1 for the current one of INIT, BACKUP, MASTER, FAULT."
        );
    }
    for (name, state) in &st.groups {
        for s in State::ALL {
            gauge!("tapvs_vrrp_group_state", "group" => name.clone(), "state" => s.as_str())
                .set(if *state == s.index() { 1.0 } else { 0.0 });
        }
    }
    for (port, c) in &st.port_rejected {
        for r in Reject::ALL {
            counter!("tapvs_vrrp_adverts_rejected_total", "instance" => "", "port" => port.clone(), "reason" => r.as_str())
                .absolute(c[r.index()]);
        }
    }
}
