//! What the data path shares with the hot-standby side (`control::vrrp`): the published
//! [`Standby`] view (which virtual addresses this appliance does not own now, and which
//! floating addresses it answers ARP for), read by the pipeline through [`Env`]
//! (crate::datapath::pipeline::Env), and [`HaShared`], the bounded queue that carries received
//! VRRP adverts (IP protocol 112) from the workers to the VRRP thread in pooled buffers, with
//! its doorbell and the VRRP side's published counters. No allocation per packet: a worker
//! moves a pooled buffer; the pipeline's checks are a length test when VRRP is off.

use std::net::Ipv4Addr;
use std::sync::Mutex;

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
    /// Virtual addresses of instances that are not MASTER: not answered in ARP, not forwarded
    /// to, not announced.
    pub down: Vec<Ipv4Addr>,
    /// (port, address): floating addresses (not VIPs or own addresses) of MASTER instances,
    /// answered in ARP on that port.
    pub floating: Vec<(usize, Ipv4Addr)>,
}

/// No VRRP: every address is owned, nothing floats.
pub static NO_STANDBY: Standby = Standby {
    vrrp: false,
    down: Vec::new(),
    floating: Vec::new(),
};

impl Standby {
    /// Whether `ip` is a virtual address this appliance does not own now.
    #[inline]
    pub fn is_down(&self, ip: Ipv4Addr) -> bool {
        !self.down.is_empty() && self.down.contains(&ip)
    }

    /// Whether `ip` is a floating address this appliance answers ARP for on `port`.
    #[inline]
    pub fn is_floating(&self, port: usize, ip: Ipv4Addr) -> bool {
        !self.floating.is_empty() && self.floating.contains(&(port, ip))
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

/// The VRRP side's published counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VrrpStats {
    /// Per instance, in configuration order.
    pub instances: Vec<InstanceStats>,
    /// Adverts rejected before an instance was found (bad length, version, TTL, checksum, an
    /// unknown VRID), per port name and reason index.
    pub port_rejected: Vec<(String, [u64; crate::vrrp::Reject::COUNT])>,
}

/// The hand-over of adverts from the workers to the VRRP thread. `R` is the pooled buffer type.
pub struct HaShared<R> {
    /// Adverts for the VRRP thread.
    pub rx: ArrayQueue<R>,
    /// The VRRP thread's doorbell.
    pub wake: EventFd,
    /// The current view.
    pub standby: ArcSwap<Standby>,
    /// Published counters.
    pub stats: Mutex<VrrpStats>,
}

impl<R> HaShared<R> {
    /// An empty hand-over (VRRP off until a [`Standby`] with `vrrp` is stored).
    pub fn new() -> std::io::Result<Self> {
        Ok(HaShared {
            rx: ArrayQueue::new(VRRP_RX_QUEUE),
            wake: EventFd::new()?,
            standby: ArcSwap::from_pointee(Standby::default()),
            stats: Mutex::new(VrrpStats::default()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let a = Ipv4Addr::new(10, 0, 0, 100);
        assert!(!NO_STANDBY.is_down(a));
        let s = Standby {
            vrrp: true,
            down: vec![a],
            floating: vec![(1, Ipv4Addr::new(172, 16, 0, 254))],
        };
        assert!(s.is_down(a));
        assert!(!s.is_down(Ipv4Addr::new(10, 0, 0, 101)));
        assert!(s.is_floating(1, Ipv4Addr::new(172, 16, 0, 254)));
        assert!(!s.is_floating(0, Ipv4Addr::new(172, 16, 0, 254)));
    }
}
