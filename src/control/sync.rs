//! The IPVS connection-sync daemon (protocol v1), run by the HA thread (`control::vrrp`)
//! beside VRRP. Master: takes the connection updates the workers queue (`ha.sync_tx`),
//! batches them into messages up to `sync_maxlen` bytes (at most 255 entries) and sends each as
//! one UDP datagram from the sync port's own MAC and first address to the group (224.0.0.81:8848
//! by default, TTL 1) through that port's TAP, at the latest 20 ms after the first entry waited
//! (IPVS's send delay). Backup: the workers hand it UDP datagrams to the sync port; it checks the
//! message (version, size, sync id) and routes each entry to the worker that owns the client
//! (`owner_of`, what steering picks) through that worker's bounded queue; the worker creates or
//! refreshes the connection without scheduling. Master and backup can run at once.

use std::sync::atomic::Ordering;

use modes::advert::{ipv4_multicast_mac, udp_in_place, UdpHdr, UDP_PAYLOAD_OFF};
use modes::wire::ethernet::EthernetAddress;
use modes::wire::ipv4::Ipv4Packet;
use modes::wire::ipvs_sync::{MessageBuilder, SyncConn, SyncMessage};
use modes::wire::udp::UdpPacket;

use crate::control::shared::Shared;
use crate::datapath::ha::SyncStats;
use crate::datapath::pipeline::owner_of;
use crate::syncd::SyncConfig;
use crate::sys::tap::{TapQueue, VNET_HDR_LEN};

/// Longest an entry waits before its message is sent, ms (IPVS_SYNC_SEND_DELAY is HZ/50).
pub const SEND_DELAY_MS: u64 = 20;

/// The sync daemon's state in the HA thread.
#[derive(Debug, Default)]
pub struct SyncDaemon {
    conf: SyncConfig,
    pending: Vec<SyncConn>,
    pending_bytes: usize,
    first_at: Option<u64>,
    stats: SyncStats,
    ident: u16,
    buf: Vec<u8>,
}

impl SyncDaemon {
    /// A stopped daemon.
    pub fn new() -> SyncDaemon {
        SyncDaemon {
            buf: vec![0u8; 65536],
            ..SyncDaemon::default()
        }
    }

    /// The settings in force.
    pub fn conf(&self) -> SyncConfig {
        self.conf
    }

    /// Applies new settings (a stopped master drops what it had not sent).
    pub fn set_conf(&mut self, conf: SyncConfig) {
        if conf.master.is_none() {
            self.pending.clear();
            self.pending_bytes = 0;
            self.first_at = None;
        }
        self.conf = conf;
    }

    /// When [`SyncDaemon::poll`] must run next.
    pub fn next_deadline(&self) -> Option<u64> {
        self.first_at.map(|t| t + SEND_DELAY_MS)
    }

    /// Master: takes the workers' updates and sends full messages, and the rest once they
    /// waited [`SEND_DELAY_MS`] (all of it when `flush`).
    pub fn poll(
        &mut self,
        shared: &Shared,
        queues: &[std::sync::Arc<TapQueue>],
        now: u64,
        flush: bool,
    ) {
        let Some(m) = self.conf.master else {
            while shared.ha.sync_tx.pop().is_some() {}
            return;
        };
        let maxlen = usize::from(m.maxlen);
        while let Some(e) = shared.ha.sync_tx.pop() {
            self.pending_bytes += e.padded_len();
            self.pending.push(e);
            self.first_at.get_or_insert(now);
            if self.pending_bytes + 8 >= maxlen || self.pending.len() >= 255 {
                self.send(shared, queues);
            }
        }
        if !self.pending.is_empty()
            && (flush || self.first_at.is_some_and(|t| now >= t + SEND_DELAY_MS))
        {
            self.send(shared, queues);
        }
        self.stats.conns_dropped = shared.ha.sync_dropped.load(Ordering::Relaxed);
    }

    /// Sends everything pending, in as many messages as it takes.
    fn send(&mut self, shared: &Shared, queues: &[std::sync::Arc<TapQueue>]) {
        let Some(m) = self.conf.master else {
            return;
        };
        let snap = shared.snapshot.load_full();
        let Some(info) = snap.ports.get(m.port) else {
            return;
        };
        let Some(src) = info.primary() else {
            return;
        };
        let dst_mac = if m.group.is_multicast() {
            Some(ipv4_multicast_mac(m.group))
        } else {
            shared
                .neigh
                .load()
                .entry(m.group)
                .map(|n| EthernetAddress(n.mac))
        };
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        self.first_at = None;
        let Some(dst_mac) = dst_mac else {
            self.stats.conns_dropped += pending.len() as u64;
            return;
        };
        let mut rest = &pending[..];
        while !rest.is_empty() {
            let off = VNET_HDR_LEN + UDP_PAYLOAD_OFF;
            let end = off + usize::from(m.maxlen);
            let mut b = MessageBuilder::new(&mut self.buf[off..end], m.syncid);
            let mut used = 0;
            for e in rest {
                if e.family().is_none() {
                    // Mixed families (the pipeline does not queue them): not expressible.
                    self.stats.conns_dropped += 1;
                } else if !b.push(e) {
                    break;
                }
                used += 1;
            }
            if used == 0 {
                // An entry larger than a message (an IPv6 entry, up to 92 bytes, with a
                // sync_maxlen below 100): dropped alone.
                self.stats.conns_dropped += 1;
                rest = &rest[1..];
                continue;
            }
            rest = &rest[used..];
            let used = usize::from(b.count());
            if used == 0 {
                continue;
            }
            let n = b.finish();
            self.ident = self.ident.wrapping_add(1);
            let h = UdpHdr {
                src_mac: EthernetAddress(info.mac),
                dst_mac,
                src,
                dst: m.group,
                ttl: 1,
                ident: self.ident,
                sport: m.mcast_port,
                dport: m.mcast_port,
            };
            if let Some(len) = udp_in_place(&mut self.buf[VNET_HDR_LEN..], &h, n) {
                self.buf[..VNET_HDR_LEN].fill(0);
                if let Some(q) = queues.get(m.port) {
                    if q.write(&self.buf[..VNET_HDR_LEN + len]).is_ok() {
                        self.stats.messages_sent += 1;
                        self.stats.conns_sent += used as u64;
                        continue;
                    }
                }
                self.stats.conns_dropped += used as u64;
            }
        }
    }

    /// Backup: one UDP frame (Ethernet on) the workers handed over from `port`. Returns false
    /// when it was not a sync datagram for this daemon (the caller may try VRRP).
    pub fn receive(&mut self, shared: &Shared, port: usize, frame: &[u8]) -> bool {
        let Some(b) = self.conf.backup else {
            return false;
        };
        let Ok(ip) = Ipv4Packet::new_checked(frame.get(14..).unwrap_or(&[])) else {
            return false;
        };
        if ip.protocol() != modes::packet::PROTO_UDP {
            return false;
        }
        let Ok(udp) = UdpPacket::new_checked(ip.payload()) else {
            self.stats.messages_dropped += 1;
            return true;
        };
        if udp.dst_port() != b.mcast_port {
            return false;
        }
        if port != b.port || !udp.verify_checksum(ip.src_addr(), ip.dst_addr()) {
            self.stats.messages_dropped += 1;
            return true;
        }
        let Ok(msg) = SyncMessage::new_checked(udp.payload()) else {
            self.stats.messages_dropped += 1;
            return true;
        };
        if b.syncid != 0 && msg.syncid() != b.syncid {
            self.stats.messages_dropped += 1;
            return true;
        }
        self.stats.messages_received += 1;
        let workers = shared.ha.sync_rx.len();
        let mut rung = vec![false; workers];
        for e in msg.conns() {
            match e {
                Ok(c) => {
                    self.stats.conns_received += 1;
                    let w = owner_of(c.caddr, c.cport, workers);
                    if shared.ha.sync_rx[w].push(c).is_ok() {
                        rung[w] = true;
                    } else {
                        shared.ha.sync_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    match e {
                        modes::wire::Error::Truncated => self.stats.conns_truncated += 1,
                        _ => self.stats.conns_malformed += 1,
                    }
                    shared.ha.sync_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        for (w, r) in rung.into_iter().enumerate() {
            if r {
                shared.wake[w].notify();
            }
        }
        self.stats.conns_dropped = shared.ha.sync_dropped.load(Ordering::Relaxed);
        true
    }

    /// Publishes the counters for `/metrics` and `-L --daemon`.
    pub fn publish(&self, shared: &Shared) {
        let mut s = self.stats;
        s.conns_dropped = shared.ha.sync_dropped.load(Ordering::Relaxed);
        *shared
            .ha
            .sync_stats
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = s;
    }
}

/// `tapvsadm --start-daemon`: validates the options against the ports (as the config's `[sync]`
/// section) and starts the role; a role already running is an error and changes nothing.
pub fn start_daemon(shared: &Shared, o: &tapvs_adm::DaemonOpts) -> tapvs_adm::Response {
    use tapvs_adm::{AdmError, DaemonRole, Response};
    if o.mcast_ttl.is_some_and(|t| t != 1) {
        return Response::err(&AdmError::Unsupported("--mcast-ttl other than 1".into()));
    }
    let snap = shared.snapshot.load_full();
    let ports: Vec<(String, u32)> = snap.ports.iter().map(|p| (p.name.clone(), p.mtu)).collect();
    let s = match crate::syncd::settings(
        &ports,
        o.mcast_interface.as_deref(),
        o.syncid.unwrap_or(0),
        o.sync_maxlen,
        o.mcast_group.as_deref(),
        o.mcast_port,
    ) {
        Ok(s) => s,
        Err((field, m)) => {
            return Response::err(&AdmError::Other(format!(
                "--{}: {m}",
                field.replace('_', "-")
            )))
        }
    };
    let mut conf = shared
        .ha
        .sync_conf
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let slot = match o.role {
        DaemonRole::Master => &mut conf.master,
        DaemonRole::Backup => &mut conf.backup,
    };
    if slot.is_some() {
        return Response::err(&AdmError::Other("File exists".into()));
    }
    *slot = Some(s);
    drop(conf);
    shared.ha.wake.notify();
    Response::default()
}

/// `tapvsadm --stop-daemon`: stops the role; one not running is an error.
pub fn stop_daemon(shared: &Shared, role: tapvs_adm::DaemonRole) -> tapvs_adm::Response {
    use tapvs_adm::{AdmError, DaemonRole, Response};
    let mut conf = shared
        .ha
        .sync_conf
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let slot = match role {
        DaemonRole::Master => &mut conf.master,
        DaemonRole::Backup => &mut conf.backup,
    };
    if slot.take().is_none() {
        return Response::err(&AdmError::Other("No such process".into()));
    }
    drop(conf);
    shared.ha.wake.notify();
    Response::default()
}

/// `tapvsadm -L --daemon`: one line per running role, as ipvsadm.
pub fn list_daemons(shared: &Shared) -> String {
    let conf = *shared
        .ha
        .sync_conf
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let snap = shared.snapshot.load_full();
    let lines = describe(&conf, |p| {
        snap.ports
            .get(p)
            .map(|x| x.name.clone())
            .unwrap_or_default()
    });
    lines.iter().map(|l| format!("{l}\n")).collect()
}

/// One line per running role, as ipvsadm's `-L --daemon`.
pub fn describe(conf: &SyncConfig, port_name: impl Fn(usize) -> String) -> Vec<String> {
    let mut out = Vec::new();
    for (role, s) in [("master", conf.master), ("backup", conf.backup)] {
        if let Some(s) = s {
            out.push(format!(
                "{role} sync daemon (mcast={}, syncid={}, maxlen={}, group={}, port={}, ttl=1)",
                port_name(s.port),
                s.syncid,
                s.maxlen,
                s.group,
                s.mcast_port
            ));
        }
    }
    out
}

/// Records the sync metrics (with their HELP) into the current `metrics` recorder.
pub fn record(shared: &Shared) {
    use metrics::{counter, describe_counter, describe_gauge, gauge};
    let conf = *shared
        .ha
        .sync_conf
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let s = *shared
        .ha
        .sync_stats
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    describe_gauge!(
        "tapvs_sync_daemon_running",
        "IPVS sync daemon roles running (role=master|backup)."
    );
    describe_counter!(
        "tapvs_sync_messages_total",
        "IPVS sync messages sent (direction=out) and received (in)."
    );
    describe_counter!(
        "tapvs_sync_connections_total",
        "Connection entries in sync messages sent (out) and received (in)."
    );
    describe_counter!(
        "tapvs_sync_messages_dropped_total",
        "Sync messages dropped: malformed, bad checksum, another sync id or port."
    );
    describe_counter!(
        "tapvs_sync_connections_dropped_total",
        "Sync entries dropped: malformed, a full queue, an unknown service or real server, no room."
    );
    describe_counter!(
        "tapvs_sync_connections_invalid_total",
        "Sync entries a backup dropped as invalid, by reason (truncated, malformed)."
    );
    describe_counter!(
        "tapvs_sync_connections_applied_total",
        "Synced entries a backup's workers created or refreshed."
    );
    for (role, on) in [
        ("master", conf.master.is_some()),
        ("backup", conf.backup.is_some()),
    ] {
        gauge!("tapvs_sync_daemon_running", "role" => role).set(if on { 1.0 } else { 0.0 });
    }
    counter!("tapvs_sync_messages_total", "direction" => "out").absolute(s.messages_sent);
    counter!("tapvs_sync_messages_total", "direction" => "in").absolute(s.messages_received);
    counter!("tapvs_sync_connections_total", "direction" => "out").absolute(s.conns_sent);
    counter!("tapvs_sync_connections_total", "direction" => "in").absolute(s.conns_received);
    counter!("tapvs_sync_messages_dropped_total").absolute(s.messages_dropped);
    counter!("tapvs_sync_connections_dropped_total")
        .absolute(shared.ha.sync_dropped.load(Ordering::Relaxed));
    counter!("tapvs_sync_connections_invalid_total", "reason" => "truncated")
        .absolute(s.conns_truncated);
    counter!("tapvs_sync_connections_invalid_total", "reason" => "malformed")
        .absolute(s.conns_malformed);
    counter!("tapvs_sync_connections_applied_total")
        .absolute(shared.ha.sync_applied.load(Ordering::Relaxed));
}
