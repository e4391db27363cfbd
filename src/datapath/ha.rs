//! What the data path shares with the hot-standby side (`control::vrrp`): the published
//! [`Standby`] view (which virtual addresses this appliance does not own now, and which
//! floating addresses it answers ARP for), read by the pipeline through [`Env`]
//! (crate::datapath::pipeline::Env), and [`HaShared`], the bounded queue that carries received
//! VRRP adverts (IP protocol 112) from the workers to the VRRP thread in pooled buffers, with
//! its doorbell and the VRRP side's published counters, and the services that lost their
//! health-check quorum (the health thread publishes them, the VRRP thread's service tracking
//! reads them a few times a second). No allocation per packet: a worker
//! moves a pooled buffer; the pipeline's checks are a length test when VRRP is off.

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

pub use modes::wire::ipvs_sync::SyncConn;

use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;

use crate::sys::EventFd;

/// Adverts waiting for the VRRP thread (more are dropped and counted).
pub const VRRP_RX_QUEUE: usize = 256;

/// The addresses VRRP decides about, as the workers see them. Published whole on every state
/// change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standby {
    /// VRRP is configured: the workers hand adverts to the VRRP thread.
    pub vrrp: bool,
    /// Virtual addresses of instances that are not MASTER, IPv4 or IPv6: not answered in ARP
    /// or Neighbour Discovery, not forwarded to, not announced.
    pub down: Vec<IpAddr>,
    /// (port, address): floating addresses (not VIPs or own addresses) of MASTER instances,
    /// answered in ARP (IPv4) or Neighbour Discovery (IPv6) on that port.
    pub floating: Vec<(usize, IpAddr)>,
    /// The sync daemon runs as master: workers report new connections, state changes and
    /// threshold updates.
    pub sync_master: bool,
    /// The sync daemon runs as backup: workers hand it UDP datagrams to `sync_port`.
    pub sync_backup: bool,
    /// UDP port of the sync daemon (8848).
    pub sync_port: u16,
    /// Master: also sync a connection on a client packet when its last update is this many
    /// seconds old (IPVS's `sync_refresh_period`; 0 = off).
    pub sync_refresh: u32,
}

/// No VRRP: every address is owned, nothing floats.
pub static NO_STANDBY: Standby = Standby {
    vrrp: false,
    down: Vec::new(),
    floating: Vec::new(),
    sync_master: false,
    sync_backup: false,
    sync_port: 0,
    sync_refresh: 0,
};

impl Standby {
    /// Whether `ip` is a virtual address this appliance does not own now.
    #[inline]
    pub fn is_down(&self, ip: impl Into<IpAddr>) -> bool {
        !self.down.is_empty() && self.down.contains(&ip.into())
    }

    /// Whether `ip` is a floating address this appliance answers ARP or Neighbour
    /// Discovery for on `port`.
    #[inline]
    pub fn is_floating(&self, port: usize, ip: impl Into<IpAddr>) -> bool {
        !self.floating.is_empty() && self.floating.contains(&(port, ip.into()))
    }
}

/// Counters of one VRRP instance, as the VRRP thread publishes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceStats {
    /// Instance name.
    pub name: String,
    /// State index ([`crate::vrrp::State::index`]).
    pub state: usize,
    /// Effective priority.
    pub priority: u8,
    /// Transitions into each state, by state index.
    pub transitions: [u64; 4],
    /// Adverts sent.
    pub sent: u64,
    /// Adverts sent with priority 0.
    pub sent_prio_zero: u64,
    /// Valid adverts received.
    pub received: u64,
    /// Valid adverts received with priority 0.
    pub received_prio_zero: u64,
    /// Valid adverts whose address list differs from ours.
    pub addr_list_mismatch: u64,
    /// Rejected adverts by [`crate::vrrp::Reject`] index (VRID errors are per port).
    pub rejected: [u64; crate::vrrp::Reject::COUNT],
}

/// The sync daemon's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Messages sent (master).
    pub messages_sent: u64,
    /// Connection entries sent (master).
    pub conns_sent: u64,
    /// Messages received (backup).
    pub messages_received: u64,
    /// Connection entries received (backup).
    pub conns_received: u64,
    /// Messages dropped: malformed, another sync id, on another port (backup).
    pub messages_dropped: u64,
    /// Entries dropped: malformed (backup), a full queue (either side).
    pub conns_dropped: u64,
    /// Of the dropped entries, the ones cut short by the message's end (backup).
    pub conns_truncated: u64,
    /// Of the dropped entries, the malformed ones: an unknown entry type or version, a size
    /// below the family's entry length, a bad or unknown mandatory option (backup).
    pub conns_malformed: u64,
}

/// The VRRP side's published counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VrrpStats {
    /// Per instance, in configuration order.
    pub instances: Vec<InstanceStats>,
    /// Adverts rejected before an instance was found (bad length, version, TTL, checksum, an
    /// unknown VRID), per port name and reason index.
    pub port_rejected: Vec<(String, [u64; crate::vrrp::Reject::COUNT])>,
    /// Per sync group: its name and state index.
    pub groups: Vec<(String, usize)>,
}

/// Connection updates a master's workers queue for the sync thread.
pub const SYNC_TX_QUEUE: usize = 8192;
/// Synced connections waiting for one worker.
pub const SYNC_RX_QUEUE: usize = 4096;

/// The hand-over between the workers and the HA thread (VRRP and connection sync). `R` is the
/// pooled buffer type.
pub struct HaShared<R> {
    /// Adverts and sync datagrams for the HA thread.
    pub rx: ArrayQueue<R>,
    /// Master: connection updates from every worker, for the sync thread to batch.
    pub sync_tx: ArrayQueue<SyncConn>,
    /// Backup: per worker, synced connections to create or refresh in its table.
    pub sync_rx: Vec<ArrayQueue<SyncConn>>,
    /// Updates dropped on a full queue (master side), and synced entries a worker dropped
    /// (unknown service or real server, table full).
    pub sync_dropped: AtomicU64,
    /// Synced entries workers created or refreshed.
    pub sync_applied: AtomicU64,
    /// The sync daemon's roles and settings (`[sync]`, `tapvsadm --start-daemon`); the HA
    /// thread applies changes.
    pub sync_conf: Mutex<crate::syncd::SyncConfig>,
    /// The sync daemon's counters, published by the HA thread.
    pub sync_stats: Mutex<SyncStats>,
    /// The VRRP thread's doorbell.
    pub wake: EventFd,
    /// The current view.
    pub standby: ArcSwap<Standby>,
    /// Published counters.
    pub stats: Mutex<VrrpStats>,
    /// Services whose health-check quorum is lost now, published whole by the health thread
    /// on each change (read by the VRRP thread's `track_services`; never by workers).
    pub quorum_lost: ArcSwap<Vec<(modes::Protocol, std::net::SocketAddr)>>,
}

impl<R> HaShared<R> {
    /// An empty hand-over for `workers` workers (VRRP and sync off until a [`Standby`] says
    /// otherwise).
    pub fn new(workers: usize) -> std::io::Result<Self> {
        Ok(HaShared {
            rx: ArrayQueue::new(VRRP_RX_QUEUE),
            sync_tx: ArrayQueue::new(SYNC_TX_QUEUE),
            sync_rx: (0..workers)
                .map(|_| ArrayQueue::new(SYNC_RX_QUEUE))
                .collect(),
            sync_dropped: AtomicU64::new(0),
            sync_applied: AtomicU64::new(0),
            sync_conf: Mutex::new(crate::syncd::SyncConfig::default()),
            sync_stats: Mutex::new(SyncStats::default()),
            wake: EventFd::new()?,
            standby: ArcSwap::from_pointee(Standby::default()),
            stats: Mutex::new(VrrpStats::default()),
            quorum_lost: ArcSwap::from_pointee(Vec::new()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn lookups() {
        let a = Ipv4Addr::new(10, 0, 0, 100);
        assert!(!NO_STANDBY.is_down(a));
        let a6: std::net::Ipv6Addr = "2001:db8:f::80".parse().unwrap();
        let s = Standby {
            vrrp: true,
            down: vec![a.into(), a6.into()],
            floating: vec![
                (1, Ipv4Addr::new(172, 16, 0, 254).into()),
                (1, "fe80::1".parse::<IpAddr>().unwrap()),
            ],
            ..Standby::default()
        };
        assert!(s.is_down(a));
        assert!(!s.is_down(Ipv4Addr::new(10, 0, 0, 101)));
        // IPv6 virtual addresses are down the same way; the families do not mix.
        assert!(s.is_down(a6));
        assert!(!s.is_down("2001:db8:f::81".parse::<std::net::Ipv6Addr>().unwrap()));
        assert!(!s.is_down(a.to_ipv6_mapped()));
        assert!(s.is_floating(1, Ipv4Addr::new(172, 16, 0, 254)));
        assert!(!s.is_floating(0, Ipv4Addr::new(172, 16, 0, 254)));
        assert!(s.is_floating(1, "fe80::1".parse::<std::net::Ipv6Addr>().unwrap()));
        assert!(!s.is_floating(0, "fe80::1".parse::<std::net::Ipv6Addr>().unwrap()));
    }
}
