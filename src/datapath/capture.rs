//! Live capture (`tapvs capture`), the data-path side: the capture filter, the bounded
//! pre-allocated slots frames are copied into, the per-worker rings that carry them to the
//! control socket, and the per-frame [`Tap`] a worker uses while a capture runs.
//!
//! Costs while no capture runs: one relaxed atomic load per worker round
//! ([`CaptureShared::active`]) and one branch per frame on the result. While a capture runs, a
//! worker copies matching frames (at most [`SNAP`] bytes each, the original length kept) into
//! slots taken from a shared free pool and pushes them to its own ring; no allocation, lock or
//! log per frame. An empty pool or a full ring drops the frame and counts it.
//!
//! Frames are taken as received (before the pipeline rewrites the buffer in place) and as
//! sent. A received frame that does not match by itself is held in a slot while the pipeline
//! runs: if a frame it causes to be sent matches (the VIP side of a NAT reply, the real-server
//! side of a client's packet), it is kept too, before that frame, so both sides of a
//! connection are in the capture. Frames sent as a consequence of a matching received frame
//! are kept as well. A frame handed to another worker is taken once, by the worker that read
//! it from the TAP.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;

use crate::sys::tap::VNET_HDR_LEN;

/// Bytes of each frame kept (tcpdump's snap length): longer frames, GSO super-frames in
/// particular, are truncated with their original length recorded.
pub const SNAP: usize = 2048;
/// Slots shared by all workers while a capture runs (about 8.5 MiB, allocated when a capture
/// starts and freed when it ends).
pub const SLOTS: usize = 4096;

/// Which way a frame went through the appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Read from a TAP.
    Rx = 0,
    /// Written to a TAP.
    Tx = 1,
}

/// One captured frame.
pub struct Slot {
    /// Wall-clock time it was seen, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// Length of the Ethernet frame (without the virtio-net header).
    pub orig_len: u32,
    /// Bytes kept in `data` (at most [`SNAP`]).
    pub len: u32,
    /// The port (index in the config's `[[port]]` list).
    pub port: u16,
    /// Received or sent.
    pub dir: Dir,
    /// The first `len` bytes of the frame.
    pub data: [u8; SNAP],
}

impl Slot {
    /// An empty slot (the control plane allocates them when a capture starts).
    pub fn new() -> Box<Slot> {
        Box::new(Slot {
            ts_ns: 0,
            orig_len: 0,
            len: 0,
            port: 0,
            dir: Dir::Rx,
            data: [0; SNAP],
        })
    }

    /// The bytes kept.
    pub fn frame(&self) -> &[u8] {
        &self.data[..self.len as usize]
    }

    fn fill(&mut self, port: usize, dir: Dir, frame: &[u8]) {
        let n = frame.len().min(SNAP);
        self.data[..n].copy_from_slice(&frame[..n]);
        self.len = n as u32;
        self.orig_len = frame.len() as u32;
        self.port = port as u16;
        self.dir = dir;
        self.ts_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    }
}

/// What a capture keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// Every frame.
    All,
    /// IPv4 TCP or UDP frames from or to this address and port (outer or, for IPIP, inner
    /// header), and the frames of the same packets on the other side of the appliance.
    Service(SocketAddrV4),
    /// IPv4 frames from or to this address (outer or inner header), and the frames of the same
    /// packets on the other side.
    Real(Ipv4Addr),
}

const KIND_ALL: u64 = 1;
const KIND_SERVICE: u64 = 2;
const KIND_REAL: u64 = 3;

impl Filter {
    /// The filter as one non-zero word (kind, port, address), for [`CaptureShared`].
    fn encode(self) -> u64 {
        match self {
            Filter::All => KIND_ALL << 48,
            Filter::Service(a) => {
                KIND_SERVICE << 48 | u64::from(a.port()) << 32 | u64::from(u32::from(*a.ip()))
            }
            Filter::Real(a) => KIND_REAL << 48 | u64::from(u32::from(a)),
        }
    }

    /// The filter a word encodes; `None` for 0 (no capture).
    fn decode(w: u64) -> Option<Filter> {
        let addr = Ipv4Addr::from(w as u32);
        match w >> 48 {
            KIND_ALL => Some(Filter::All),
            KIND_SERVICE => Some(Filter::Service(SocketAddrV4::new(addr, (w >> 32) as u16))),
            KIND_REAL => Some(Filter::Real(addr)),
            _ => None,
        }
    }

    /// Whether the Ethernet frame `f` (no virtio-net header) matches by itself. Anything that
    /// is not a well-formed enough IPv4 packet matches only [`Filter::All`].
    pub fn matches(&self, f: &[u8]) -> bool {
        if *self == Filter::All {
            return true;
        }
        if f.len() < 14 || f[12..14] != [0x08, 0x00] {
            return false;
        }
        let ip = &f[14..];
        match self.matches_ip(ip) {
            Some(true) => true,
            // IPIP: the inner packet too.
            _ if ip.len() >= 20 && ip[9] == 4 => {
                let ihl = usize::from(ip[0] & 0x0f) * 4;
                ip.get(ihl..)
                    .is_some_and(|inner| self.matches_ip(inner) == Some(true))
            }
            _ => false,
        }
    }

    /// Whether the IPv4 packet `ip` matches; `None` when it is too short or not IPv4.
    fn matches_ip(&self, ip: &[u8]) -> Option<bool> {
        if ip.len() < 20 || ip[0] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        Some(match *self {
            Filter::All => true,
            Filter::Real(a) => src == a || dst == a,
            Filter::Service(sa) => {
                let proto = ip[9];
                // Ports only in a first fragment (tapvs drops fragments, but capture sees
                // frames before that).
                let first = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0;
                if !(proto == 6 || proto == 17) || !first || ihl < 20 {
                    return Some(false);
                }
                let Some(l4) = ip.get(ihl..ihl + 4) else {
                    return Some(false);
                };
                let sport = u16::from_be_bytes([l4[0], l4[1]]);
                let dport = u16::from_be_bytes([l4[2], l4[3]]);
                (src == *sa.ip() && sport == sa.port()) || (dst == *sa.ip() && dport == sa.port())
            }
        })
    }
}

/// The capture state the workers share with the control socket.
pub struct CaptureShared {
    /// 0: no capture; else the encoded [`Filter`].
    state: AtomicU64,
    /// A capture session holds the rings.
    busy: AtomicBool,
    /// Free slots.
    pool: ArrayQueue<Box<Slot>>,
    /// Per worker: the frames it captured, oldest first.
    rings: Vec<ArrayQueue<Box<Slot>>>,
    /// Frames delivered to capture clients, ever.
    pub frames_total: AtomicU64,
    /// Frames that matched but found no free slot or a full ring, ever.
    pub dropped_total: AtomicU64,
    /// The port names, in config order.
    pub ports: Vec<String>,
}

impl CaptureShared {
    /// For `workers` workers and the ports named `ports`. Only the queues are allocated here;
    /// slots are allocated when a capture starts.
    pub fn new(workers: usize, ports: Vec<String>) -> CaptureShared {
        CaptureShared {
            state: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            pool: ArrayQueue::new(SLOTS),
            rings: (0..workers).map(|_| ArrayQueue::new(SLOTS)).collect(),
            frames_total: AtomicU64::new(0),
            dropped_total: AtomicU64::new(0),
            ports,
        }
    }

    /// The running capture's filter, if any: the one load a worker does per round.
    #[inline]
    pub fn active(&self) -> Option<Filter> {
        match self.state.load(Ordering::Relaxed) {
            0 => None,
            w => Filter::decode(w),
        }
    }

    /// Starts a capture with `filter`: fills the pool, then turns the workers on. `None` when
    /// a capture is already running.
    pub fn begin(&self, filter: Filter) -> Option<CaptureGuard<'_>> {
        if self
            .busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None;
        }
        // Stragglers of the last capture (a worker that pushed just after it ended).
        for r in &self.rings {
            while let Some(s) = r.pop() {
                let _ = self.pool.push(s);
            }
        }
        while self.pool.len() < SLOTS {
            if self.pool.push(Slot::new()).is_err() {
                break;
            }
        }
        self.state.store(filter.encode(), Ordering::Release);
        Some(CaptureGuard { shared: self })
    }

    /// The next captured frame of worker `w`; give it back with [`CaptureShared::recycle`].
    pub fn take(&self, w: usize) -> Option<Box<Slot>> {
        self.rings.get(w)?.pop()
    }

    /// Returns a slot to the free pool.
    pub fn recycle(&self, s: Box<Slot>) {
        let _ = self.pool.push(s);
    }

    /// Number of workers (rings).
    pub fn workers(&self) -> usize {
        self.rings.len()
    }

    /// Counts a frame that could not be kept.
    #[cold]
    fn drop_one(&self) {
        self.dropped_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A free slot, or `None` (counted as a drop).
    fn slot(&self) -> Option<Box<Slot>> {
        let s = self.pool.pop();
        if s.is_none() {
            self.drop_one();
        }
        s
    }

    /// Queues `s` on worker `w`'s ring (a full ring drops it, counted).
    fn push(&self, w: usize, s: Box<Slot>) {
        match self.rings.get(w) {
            Some(r) => {
                if let Err(s) = r.push(s) {
                    self.drop_one();
                    let _ = self.pool.push(s);
                }
            }
            None => {
                let _ = self.pool.push(s);
            }
        }
    }
}

/// A running capture: dropping it stops the workers' copying and frees the slots (frames still
/// in the rings are discarded: drain them first).
pub struct CaptureGuard<'a> {
    shared: &'a CaptureShared,
}

impl CaptureGuard<'_> {
    /// Turns the workers' copying off (frames already in the rings stay until taken).
    pub fn stop(&self) {
        self.shared.state.store(0, Ordering::Release);
    }
}

impl Drop for CaptureGuard<'_> {
    fn drop(&mut self) {
        self.stop();
        for r in &self.shared.rings {
            while r.pop().is_some() {}
        }
        while self.shared.pool.pop().is_some() {}
        self.shared.busy.store(false, Ordering::Release);
    }
}

/// What became of the received frame of the current [`Tap`].
enum Rx {
    /// None (a timer's frames), or already dealt with.
    None,
    /// Kept in the ring (or by the worker that read it, for a handed-over frame): the frames
    /// sent for it are kept as well.
    Kept,
    /// Held while the pipeline runs, kept if a frame sent for it matches.
    Held(Box<Slot>),
}

/// One worker's capture of one received frame and the frames sent for it (or of the frames a
/// timer sends, with no received frame). Frames carry their virtio-net header.
pub struct Tap<'a> {
    shared: &'a CaptureShared,
    worker: usize,
    filter: Filter,
    rx: Rx,
}

impl<'a> Tap<'a> {
    /// For worker `worker` under `filter`, no received frame.
    pub fn new(shared: &'a CaptureShared, worker: usize, filter: Filter) -> Tap<'a> {
        Tap {
            shared,
            worker,
            filter,
            rx: Rx::None,
        }
    }

    /// A frame read on `port` (header and frame), before the pipeline runs; `redirected`: it
    /// was read (and taken, if it matched) by another worker.
    pub fn received(&mut self, port: usize, buf: &[u8], redirected: bool) {
        let Some(frame) = buf.get(VNET_HDR_LEN..) else {
            return;
        };
        if self.filter.matches(frame) {
            if !redirected {
                if let Some(mut s) = self.shared.slot() {
                    s.fill(port, Dir::Rx, frame);
                    self.shared.push(self.worker, s);
                }
            }
            self.rx = Rx::Kept;
        } else if let Some(mut s) = self.shared.pool.pop() {
            s.fill(port, Dir::Rx, frame);
            self.rx = Rx::Held(s);
        }
    }

    /// A frame the pipeline sends out of `port` (header and frame).
    pub fn sent(&mut self, port: usize, buf: &[u8]) {
        let Some(frame) = buf.get(VNET_HDR_LEN..) else {
            return;
        };
        if !matches!(self.rx, Rx::Kept) && !self.filter.matches(frame) {
            return;
        }
        if let Rx::Held(s) = std::mem::replace(&mut self.rx, Rx::Kept) {
            self.shared.push(self.worker, s);
        }
        if let Some(mut s) = self.shared.slot() {
            s.fill(port, Dir::Tx, frame);
            self.shared.push(self.worker, s);
        }
    }
}

impl Drop for Tap<'_> {
    fn drop(&mut self) {
        if let Rx::Held(s) = std::mem::replace(&mut self.rx, Rx::None) {
            self.shared.recycle(s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + TCP/UDP frame (ports only, enough for the filter).
    fn frame(proto: u8, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, proto, 0, 0];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0; 16]);
        f
    }

    /// `inner` (Ethernet frame) wrapped in IPIP from `src` to `dst`.
    fn ipip(src: [u8; 4], dst: [u8; 4], inner: &[u8]) -> Vec<u8> {
        let mut f = inner[..14].to_vec();
        let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 4, 0, 0];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&inner[14..]);
        f
    }

    fn with_hdr(f: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; VNET_HDR_LEN];
        v.extend_from_slice(f);
        v
    }

    const VIP: [u8; 4] = [10, 0, 0, 10];
    const CLIENT: [u8; 4] = [10, 0, 0, 2];
    const RS: [u8; 4] = [172, 16, 0, 2];

    fn service() -> Filter {
        Filter::Service("10.0.0.10:80".parse().unwrap())
    }

    #[test]
    fn filter_words_round_trip() {
        for f in [
            Filter::All,
            service(),
            Filter::Service("255.255.255.255:65535".parse().unwrap()),
            Filter::Service("0.0.0.0:0".parse().unwrap()),
            Filter::Real(Ipv4Addr::new(172, 16, 0, 2)),
        ] {
            assert_ne!(f.encode(), 0);
            assert_eq!(Filter::decode(f.encode()), Some(f));
        }
        assert_eq!(Filter::decode(0), None);
        assert_eq!(Filter::decode(9 << 48), None);
    }

    #[test]
    fn service_filter_matches_either_direction_and_ipip() {
        let s = service();
        assert!(s.matches(&frame(6, CLIENT, 40000, VIP, 80)));
        assert!(s.matches(&frame(6, VIP, 80, CLIENT, 40000)));
        assert!(s.matches(&frame(17, CLIENT, 40000, VIP, 80)));
        // Another port of the VIP, the VIP's address on the other side, ICMP.
        assert!(!s.matches(&frame(6, CLIENT, 40000, VIP, 443)));
        assert!(!s.matches(&frame(6, CLIENT, 80, VIP, 443)));
        assert!(!s.matches(&frame(1, CLIENT, 40000, VIP, 80)));
        // After NAT: client to real server.
        assert!(!s.matches(&frame(6, CLIENT, 40000, RS, 80)));
        // TUN: the inner packet is the client's.
        let tun = ipip([172, 16, 0, 1], RS, &frame(6, CLIENT, 40000, VIP, 80));
        assert!(s.matches(&tun));
        let other = ipip([172, 16, 0, 1], RS, &frame(6, CLIENT, 40000, VIP, 81));
        assert!(!s.matches(&other));
        // A later fragment carries no ports.
        let mut frag = frame(6, CLIENT, 40000, VIP, 80);
        frag[14 + 6] = 0x00;
        frag[14 + 7] = 0x10;
        assert!(!s.matches(&frag));
    }

    #[test]
    fn real_filter_and_bad_frames() {
        let r = Filter::Real(Ipv4Addr::from(RS));
        assert!(r.matches(&frame(6, CLIENT, 40000, RS, 80)));
        assert!(r.matches(&frame(6, RS, 80, CLIENT, 40000)));
        assert!(r.matches(&frame(1, RS, 0, CLIENT, 0)));
        assert!(!r.matches(&frame(6, CLIENT, 40000, VIP, 80)));
        assert!(r.matches(&ipip(
            [172, 16, 0, 1],
            [172, 16, 0, 3],
            &frame(6, CLIENT, 1, RS, 80)
        )));
        // Truncated, ARP, IPv6, garbage: no panic, no match (except for All).
        let full = frame(6, CLIENT, 40000, RS, 80);
        for n in 0..full.len() {
            let _ = r.matches(&full[..n]);
            let _ = service().matches(&full[..n]);
        }
        assert!(!r.matches(&full[..33]));
        let mut arp = full.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!r.matches(&arp));
        assert!(Filter::All.matches(&arp));
        assert!(Filter::All.matches(&[]));
        let mut bad_ihl = full.clone();
        bad_ihl[14] = 0x4f;
        assert!(!service().matches(&bad_ihl));
    }

    fn drain(c: &CaptureShared, w: usize) -> Vec<(Dir, Vec<u8>)> {
        let mut v = Vec::new();
        while let Some(s) = c.take(w) {
            v.push((s.dir, s.frame().to_vec()));
            c.recycle(s);
        }
        v
    }

    #[test]
    fn taps_keep_both_sides_of_a_connection() {
        let c = CaptureShared::new(2, vec!["ext".into(), "int".into()]);
        assert_eq!(c.active(), None);
        let g = c.begin(service()).expect("first capture");
        assert!(c.begin(Filter::All).is_none(), "one capture at a time");
        let f = c.active().expect("active");
        let to_vip = frame(6, CLIENT, 40000, VIP, 80);
        let to_rs = frame(6, CLIENT, 40000, RS, 80);
        let from_rs = frame(6, RS, 80, CLIENT, 40000);
        let from_vip = frame(6, VIP, 80, CLIENT, 40000);
        let unrelated = frame(6, CLIENT, 40001, [10, 0, 0, 11], 80);
        // Client to VIP, DNAT to the real server: both kept, in order.
        {
            let mut t = Tap::new(&c, 0, f);
            t.received(0, &with_hdr(&to_vip), false);
            t.sent(1, &with_hdr(&to_rs));
        }
        // The reply: the real server's frame is held, kept once its SNAT matches.
        {
            let mut t = Tap::new(&c, 0, f);
            t.received(1, &with_hdr(&from_rs), false);
            t.sent(0, &with_hdr(&from_vip));
        }
        // Unrelated traffic: nothing, and its held slot goes back.
        {
            let mut t = Tap::new(&c, 0, f);
            t.received(0, &with_hdr(&unrelated), false);
            t.sent(1, &with_hdr(&unrelated));
        }
        let got = drain(&c, 0);
        assert_eq!(
            got,
            vec![
                (Dir::Rx, to_vip.clone()),
                (Dir::Tx, to_rs.clone()),
                (Dir::Rx, from_rs.clone()),
                (Dir::Tx, from_vip.clone()),
            ]
        );
        // A frame handed over: taken by the worker that read it, not again by the owner, whose
        // frames sent for it are kept.
        {
            let mut t = Tap::new(&c, 0, f);
            t.received(0, &with_hdr(&to_vip), false);
        }
        {
            let mut t = Tap::new(&c, 1, f);
            t.received(0, &with_hdr(&to_vip), true);
            t.sent(1, &with_hdr(&to_rs));
        }
        assert_eq!(drain(&c, 0), vec![(Dir::Rx, to_vip.clone())]);
        assert_eq!(drain(&c, 1), vec![(Dir::Tx, to_rs.clone())]);
        assert_eq!(c.pool.len(), SLOTS, "every slot back in the pool");
        drop(g);
        assert_eq!(c.active(), None);
        assert_eq!(c.pool.len(), 0, "slots freed");
        assert!(
            c.begin(Filter::All).is_some(),
            "a new capture after the end"
        );
    }

    #[test]
    fn full_rings_drop_and_count_and_truncate_long_frames() {
        let c = CaptureShared::new(1, vec![]);
        let _g = c.begin(Filter::All).unwrap();
        let mut big = vec![0u8; VNET_HDR_LEN + 65000];
        big[VNET_HDR_LEN] = 7;
        for _ in 0..SLOTS + 10 {
            let mut t = Tap::new(&c, 0, Filter::All);
            t.received(0, &big, false);
        }
        assert_eq!(c.dropped_total.load(Ordering::Relaxed), 10);
        let s = c.take(0).unwrap();
        assert_eq!((s.len as usize, s.orig_len), (SNAP, 65000));
        assert_eq!(s.frame()[0], 7);
        // A short buffer (no header): ignored.
        Tap::new(&c, 0, Filter::All).received(0, &[0u8; 4], false);
    }
}
