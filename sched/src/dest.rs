//! One real server as the schedulers see it: its address, its weight, its
//! connection counters and the flags derived from them (upper/lower
//! connection thresholds → "overloaded", health check → "available").
//!
//! A [`Dest`] is shared by every data-path worker through an `Arc<Dest>`, so
//! all mutable state is kept in atomics. The connection table calls the
//! counter transitions ([`Dest::bind`], [`Dest::to_active`], ...) as
//! connections are created, change state and expire; each transition
//! re-applies the IPVS overload rule (`ip_vs_bind_dest` / `ip_vs_unbind_dest`
//! semantics).

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};

/// Largest weight and threshold IPVS accepts (`-w`, `-x`, `-y` are 0..=65535).
pub const MAX_WEIGHT: u32 = 65_535;

/// One real server of a virtual service, as seen by the schedulers.
#[derive(Debug)]
pub struct Dest {
    addr: IpAddr,
    port: u16,
    weight: AtomicU32,
    /// Latest non-zero weight (the weight given at creation if that was 0).
    /// Maglev hashing sizes its table share from this, so quiescing a dest
    /// (weight 0) does not reshuffle the lookup table.
    last_weight: AtomicU32,
    active: AtomicU32,
    inactive: AtomicU32,
    persist: AtomicU32,
    u_threshold: AtomicU32,
    l_threshold: AtomicU32,
    overloaded: AtomicBool,
    available: AtomicBool,
    /// Connections bound here that are not closing (tapvs's per-service `conn_limit`).
    open: AtomicU32,
}

impl Dest {
    /// A new, available destination with no connections and no thresholds.
    /// `weight` is clamped to 0..=65535 (0 = quiesced: no new connections).
    pub fn new(addr: IpAddr, port: u16, weight: u32) -> Self {
        let weight = weight.min(MAX_WEIGHT);
        Dest {
            addr,
            port,
            weight: AtomicU32::new(weight),
            last_weight: AtomicU32::new(weight),
            active: AtomicU32::new(0),
            inactive: AtomicU32::new(0),
            persist: AtomicU32::new(0),
            open: AtomicU32::new(0),
            u_threshold: AtomicU32::new(0),
            l_threshold: AtomicU32::new(0),
            overloaded: AtomicBool::new(false),
            available: AtomicBool::new(true),
        }
    }

    /// The real server's address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The real server's port (0 for all-ports / fwmark services).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Identity of the destination inside a service: `(addr, port)`.
    pub(crate) fn key(&self) -> (IpAddr, u16) {
        (self.addr, self.port)
    }

    /// Current weight (0 = quiesced).
    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    /// The latest non-zero weight this destination had (IPVS `last_weight`).
    pub(crate) fn last_weight(&self) -> u32 {
        self.last_weight.load(Relaxed)
    }

    /// Set the weight (clamped to 0..=65535). A scheduler snapshot keeps
    /// working with live weights, but table-based schedulers (wrr, sh, mh)
    /// only re-read them on [`crate::Scheduler::rebuild`].
    pub fn set_weight(&self, weight: u32) {
        let weight = weight.min(MAX_WEIGHT);
        if weight != 0 {
            self.last_weight.store(weight, Relaxed);
        }
        self.weight.store(weight, Relaxed);
    }

    /// Number of active connections (TCP ESTABLISHED).
    pub fn active_conns(&self) -> u32 {
        self.active.load(Relaxed)
    }

    /// Number of inactive connections (any other state, and UDP).
    pub fn inactive_conns(&self) -> u32 {
        self.inactive.load(Relaxed)
    }

    /// Number of persistence templates pointing at this destination.
    pub fn persist_conns(&self) -> u32 {
        self.persist.load(Relaxed)
    }

    /// Upper connection threshold (`-x`), 0 = none.
    pub fn u_threshold(&self) -> u32 {
        self.u_threshold.load(Relaxed)
    }

    /// Lower connection threshold (`-y`), 0 = none (use 3/4 of the upper).
    pub fn l_threshold(&self) -> u32 {
        self.l_threshold.load(Relaxed)
    }

    /// Set the upper and lower connection thresholds (each clamped to
    /// 0..=65535; 0 = none) and re-apply the overload rule immediately.
    pub fn set_thresholds(&self, upper: u32, lower: u32) {
        self.u_threshold.store(upper.min(MAX_WEIGHT), Relaxed);
        self.l_threshold.store(lower.min(MAX_WEIGHT), Relaxed);
        self.update_overload();
    }

    /// Whether the upper connection threshold has been reached (IPVS
    /// `IP_VS_DEST_F_OVERLOAD`).
    pub fn is_overloaded(&self) -> bool {
        self.overloaded.load(Relaxed)
    }

    /// Whether the destination is in service (false = taken out by a health
    /// check but still listed).
    pub fn is_available(&self) -> bool {
        self.available.load(Relaxed)
    }

    /// Mark the destination in or out of service (health checks).
    pub fn set_available(&self, available: bool) {
        self.available.store(available, Relaxed);
    }

    /// IPVS connection overhead: `active * 256 + inactive`.
    pub fn overhead(&self) -> u64 {
        ((self.active_conns() as u64) << 8) + self.inactive_conns() as u64
    }

    /// Whether a scheduler may pick this destination for a new connection:
    /// available, weight > 0 and not overloaded.
    pub fn is_usable(&self) -> bool {
        self.is_available() && self.weight() > 0 && !self.is_overloaded()
    }

    /// A connection was bound to this destination, in the active (`true`)
    /// or inactive (`false`) state.
    pub fn bind(&self, active: bool) {
        self.counter(active).fetch_add(1, Relaxed);
        self.update_overload();
    }

    /// A connection bound to this destination went away; `active` is the
    /// state it was counted in. Never decrements below 0.
    pub fn unbind(&self, active: bool) {
        saturating_dec(self.counter(active));
        self.update_overload();
    }

    /// A connection moved from the inactive to the active state.
    pub fn to_active(&self) {
        saturating_dec(&self.inactive);
        self.active.fetch_add(1, Relaxed);
        self.update_overload();
    }

    /// A connection moved from the active to the inactive state.
    pub fn to_inactive(&self) {
        saturating_dec(&self.active);
        self.inactive.fetch_add(1, Relaxed);
        self.update_overload();
    }

    /// A persistence template was bound to this destination. Templates do
    /// not count towards the thresholds.
    pub fn bind_persist(&self) {
        self.persist.fetch_add(1, Relaxed);
        self.update_overload();
    }

    /// A persistence template bound to this destination expired.
    pub fn unbind_persist(&self) {
        saturating_dec(&self.persist);
        self.update_overload();
    }

    /// Connections bound here that are open: created and not yet closing (no FIN or RST
    /// seen). Unlike the active/inactive counters, TIME_WAIT and CLOSE entries do not count.
    pub fn open_conns(&self) -> u32 {
        self.open.load(Relaxed)
    }

    /// A connection bound here became open (it was created in, or returned to, an open
    /// state).
    pub fn open_inc(&self) {
        self.open.fetch_add(1, Relaxed);
    }

    /// An open connection bound here began closing or went away. Never decrements below 0.
    pub fn open_dec(&self) {
        saturating_dec(&self.open);
    }

    fn counter(&self, active: bool) -> &AtomicU32 {
        if active {
            &self.active
        } else {
            &self.inactive
        }
    }

    /// The IPVS overload rule, with hysteresis: set when `total >= upper`;
    /// clear when `total < lower`, or (lower == 0) when `total*4 < upper*3`;
    /// always clear when there is no upper threshold. In between, keep.
    fn update_overload(&self) {
        let upper = self.u_threshold() as u64;
        if upper == 0 {
            self.overloaded.store(false, Relaxed);
            return;
        }
        let total = self.active_conns() as u64 + self.inactive_conns() as u64;
        if total >= upper {
            self.overloaded.store(true, Relaxed);
            return;
        }
        let lower = self.l_threshold() as u64;
        let clear = if lower != 0 {
            total < lower
        } else {
            total * 4 < upper * 3
        };
        if clear {
            self.overloaded.store(false, Relaxed);
        }
    }
}

fn saturating_dec(counter: &AtomicU32) {
    // Err only means the counter was already 0: nothing to do.
    let _ = counter.fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn dest(weight: u32) -> Dest {
        Dest::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 80, weight)
    }

    #[test]
    fn new_defaults() {
        let d = dest(3);
        assert_eq!(d.weight(), 3);
        assert_eq!(d.port(), 80);
        assert!(d.is_available());
        assert!(!d.is_overloaded());
        assert!(d.is_usable());
        assert_eq!(d.overhead(), 0);
        assert_eq!((d.u_threshold(), d.l_threshold()), (0, 0));
    }

    #[test]
    fn weight_is_clamped_and_last_weight_kept() {
        let d = dest(100_000);
        assert_eq!(d.weight(), 65_535);
        d.set_weight(7);
        d.set_weight(0);
        assert_eq!(d.weight(), 0);
        assert_eq!(d.last_weight(), 7);
        assert!(!d.is_usable());
    }

    #[test]
    fn usable_needs_available_weight_and_no_overload() {
        let d = dest(1);
        d.set_available(false);
        assert!(!d.is_usable());
        d.set_available(true);
        d.set_thresholds(1, 0);
        assert!(d.is_usable(), "threshold 1 not reached yet");
        d.bind(false);
        assert!(d.is_overloaded());
        assert!(!d.is_usable());
        d.unbind(false);
        d.set_weight(0);
        assert!(!d.is_usable());
    }

    #[test]
    fn counters_and_overhead() {
        let d = dest(1);
        d.bind(false);
        d.bind(false);
        d.to_active();
        assert_eq!((d.active_conns(), d.inactive_conns()), (1, 1));
        assert_eq!(d.overhead(), 257);
        d.to_inactive();
        assert_eq!((d.active_conns(), d.inactive_conns()), (0, 2));
        d.unbind(false);
        d.unbind(false);
        d.unbind(false);
        d.unbind(true);
        d.to_active(); // inactive already 0: stays 0
        assert_eq!((d.active_conns(), d.inactive_conns()), (1, 0));
        d.bind_persist();
        assert_eq!(d.persist_conns(), 1);
        d.unbind_persist();
        d.unbind_persist();
        assert_eq!(d.persist_conns(), 0);
    }

    #[test]
    fn overload_set_at_upper_cleared_by_lower() {
        let d = dest(1);
        d.set_thresholds(4, 2);
        for _ in 0..3 {
            d.bind(false);
        }
        assert!(!d.is_overloaded());
        d.bind(true);
        assert!(d.is_overloaded(), "total 4 >= upper 4");
        d.unbind(false); // 3
        assert!(d.is_overloaded(), "hysteresis: 3 is not < lower 2");
        d.unbind(false); // 2
        assert!(d.is_overloaded(), "2 is not < 2");
        d.unbind(false); // 1
        assert!(!d.is_overloaded(), "1 < lower 2 clears");
    }

    #[test]
    fn overload_cleared_by_three_quarter_rule() {
        let d = dest(1);
        d.set_thresholds(8, 0);
        for _ in 0..8 {
            d.bind(true);
        }
        assert!(d.is_overloaded());
        d.unbind(true); // 7: 28 < 24? no
        d.unbind(true); // 6: 24 < 24? no
        assert!(d.is_overloaded());
        d.unbind(true); // 5: 20 < 24 yes
        assert!(!d.is_overloaded());
        d.bind(true); // 6: below upper, flag stays clear
        assert!(!d.is_overloaded());
    }

    #[test]
    fn persistent_templates_do_not_count() {
        let d = dest(1);
        d.set_thresholds(1, 0);
        d.bind_persist();
        assert!(!d.is_overloaded());
        d.bind(false);
        assert!(d.is_overloaded());
    }

    #[test]
    fn removing_or_raising_upper_threshold() {
        let d = dest(1);
        d.set_thresholds(2, 0);
        d.bind(true);
        d.bind(true);
        assert!(d.is_overloaded());
        d.set_thresholds(0, 0);
        assert!(!d.is_overloaded(), "no upper threshold clears");
        d.set_thresholds(2, 0);
        assert!(d.is_overloaded(), "re-applied immediately");
        d.set_thresholds(10, 0);
        assert!(!d.is_overloaded(), "2*4 < 10*3");
    }
}
