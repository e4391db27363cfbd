//! One worker's connection table: entries keyed by the client-side tuple with a second key for
//! replies, the TCP state machine applied per packet, expiry by a hashed timer wheel, and a bound.
//!
//! Sharding: the table is per worker (shared-nothing, as DPVS's per-lcore tables). Every packet
//! of a connection is brought to its owning worker (see `owner_of` in the worker module), so no
//! lock is ever taken on the per-packet path. This was chosen by measurement
//! (`shared/reference/crates.md` §4.3: per-worker hashbrown 78–86 ns per random lookup at 1 M
//! entries against 136–148 ns for dashmap, which did not scale on a second thread).
//!
//! Entries live in a slab (`Vec<Conn>` plus a free list). The index is a hash table of 4-byte
//! values (slot number and direction) with no keys stored: a candidate is confirmed by
//! comparing the packet's tuple with the one the connection itself holds, as the kernel's IPVS
//! table chains through its connections. Two index entries per connection (client side and
//! reply side) then cost about 20 bytes at 1 million connections instead of 130 with stored
//! keys. Entries leave the table through the timer wheel, `remove` or `clear`; a generation
//! number guards the wheel's references to reused slots.

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::Ipv4Addr;
use std::sync::Arc;

use hashbrown::{HashMap, HashTable};
use sched::Dest;

use crate::config::Forward;
use crate::persist::Template;
use crate::tcp_state::{self, Dir, State, Timeouts, STATE_COUNT};

/// A packed 5-tuple: protocol, source, source port, destination, destination port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey(u128);

impl FlowKey {
    /// Packs a tuple as seen in a packet.
    pub fn new(proto: u8, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> FlowKey {
        FlowKey(
            (u128::from(proto) << 96)
                | (u128::from(u32::from(src)) << 64)
                | (u128::from(sport) << 48)
                | (u128::from(u32::from(dst)) << 16)
                | u128::from(dport),
        )
    }
}

impl Hash for FlowKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(self.0);
    }
}

/// One connection.
#[derive(Debug, Clone)]
pub struct Conn {
    /// Client address and port.
    pub caddr: Ipv4Addr,
    /// Client port.
    pub cport: u16,
    /// Virtual address.
    pub vaddr: Ipv4Addr,
    /// Virtual port.
    pub vport: u16,
    /// Real server address.
    pub daddr: Ipv4Addr,
    /// Real server port.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// Current state.
    pub state: State,
    /// Forwarding method.
    pub fwd: Forward,
    /// Index of the service in the snapshot it was created from.
    pub svc: u32,
    /// Stable id of the real server (index of its traffic counters).
    pub dest_id: u32,
    /// The real server (its counters follow the connection's state).
    pub dest: Arc<Dest>,
    /// The persistence template that chose the real server, if any.
    pub template: Option<Arc<Template>>,
    /// Second (table-relative) at which the entry expires unless refreshed.
    pub expires: u32,
    /// One-packet scheduling: the entry only maps replies back and lives [`OPS_TIMEOUT`].
    pub one_packet: bool,
    /// FullNAT: the local address and port the real server sees as the client.
    pub local: Option<(Ipv4Addr, u16)>,
    /// FullNAT: the TOA option has been sent (or given up on).
    pub toa_done: bool,
    gen: u32,
    live: bool,
}

/// Lifetime of a one-packet-scheduling entry (it exists only to translate replies).
pub const OPS_TIMEOUT: u32 = 10;

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Slot of the connection.
    pub slot: u32,
    /// Direction of the packet relative to the connection.
    pub dir: Dir,
}

/// Why an entry could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The table holds its maximum number of entries.
    Full,
    /// FullNAT: every local address of the pool is out of ports.
    NoLocalPort,
}

/// One worker's FullNAT local ports: for each local address the ports `p` in 1024..=65535
/// with `p % workers == worker`, so a reply to `LIP:p` identifies its owning worker. A port
/// is never handed out twice while in use, so (LIP, port) pairs never collide.
#[derive(Debug)]
pub struct LocalPorts {
    worker: u16,
    workers: u16,
    free: HashMap<Ipv4Addr, Vec<u16>, foldhash::fast::RandomState>,
    next: usize,
}

impl LocalPorts {
    /// The port space of `worker` among `workers`.
    pub fn new(worker: usize, workers: usize) -> LocalPorts {
        LocalPorts {
            worker: worker as u16,
            workers: workers.max(1) as u16,
            free: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            next: 0,
        }
    }

    /// Takes a free (address, port) from `pool`, trying its addresses round robin.
    pub fn alloc(&mut self, pool: &[Ipv4Addr]) -> Option<(Ipv4Addr, u16)> {
        for k in 0..pool.len() {
            let ip = pool[(self.next + k) % pool.len()];
            let (w, n) = (self.worker, self.workers);
            let ports = self.free.entry(ip).or_insert_with(|| {
                // Highest first, so pop() hands out low ports first.
                (1024..=65535u16).rev().filter(|p| p % n == w).collect()
            });
            if let Some(p) = ports.pop() {
                self.next = (self.next + k + 1) % pool.len();
                return Some((ip, p));
            }
        }
        None
    }

    /// Returns a port.
    pub fn release(&mut self, ip: Ipv4Addr, port: u16) {
        if let Some(v) = self.free.get_mut(&ip) {
            v.push(port);
        }
    }
}

/// Parameters of a new connection.
#[derive(Debug, Clone)]
pub struct NewConn {
    /// IP protocol.
    pub proto: u8,
    /// Client address.
    pub caddr: Ipv4Addr,
    /// Client port.
    pub cport: u16,
    /// Virtual address.
    pub vaddr: Ipv4Addr,
    /// Virtual port.
    pub vport: u16,
    /// Real server address.
    pub daddr: Ipv4Addr,
    /// Real server port.
    pub dport: u16,
    /// Forwarding method.
    pub fwd: Forward,
    /// Service index.
    pub svc: u32,
    /// Stable id of the real server.
    pub dest_id: u32,
    /// The real server.
    pub dest: Arc<Dest>,
    /// The persistence template used, if any (released when the connection ends).
    pub template: Option<Arc<Template>>,
    /// One-packet scheduling: no client-side key (every datagram is scheduled on its own).
    pub one_packet: bool,
    /// FullNAT: candidate local addresses; the table allocates one with a free port.
    pub local_pool: Option<Arc<[Ipv4Addr]>>,
}

const WHEEL_SLOTS: usize = 1024;

/// A hashed timing wheel with one-second ticks and lazy re-arming.
#[derive(Debug)]
struct Wheel {
    buckets: Vec<Vec<(u32, u32)>>,
    spare: Vec<(u32, u32)>,
    /// Last tick processed.
    now: u32,
}

impl Wheel {
    fn new() -> Wheel {
        Wheel {
            buckets: (0..WHEEL_SLOTS).map(|_| Vec::new()).collect(),
            spare: Vec::new(),
            now: 0,
        }
    }

    /// Schedules `(slot, gen)` at second `at` (clamped into the wheel's horizon; entries whose
    /// expiry lies beyond it are re-armed when their bucket comes round).
    fn schedule(&mut self, slot: u32, gen: u32, at: u32) {
        let at = at.clamp(self.now + 1, self.now + WHEEL_SLOTS as u32 - 1);
        self.buckets[at as usize % WHEEL_SLOTS].push((slot, gen));
    }
}

/// Counts kept by the table itself.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableCounts {
    /// Entries per state, indexed by `State as usize`.
    pub per_state: [u64; STATE_COUNT],
    /// Entries created since start.
    pub created: u64,
    /// Entries expired since start.
    pub expired: u64,
}

/// One worker's connection table.
pub struct ConnTable {
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    slots: Vec<Conn>,
    free: Vec<u32>,
    wheel: Wheel,
    max: usize,
    len: usize,
    timeouts: Timeouts,
    counts: TableCounts,
    local_ports: LocalPorts,
}

impl std::fmt::Debug for ConnTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnTable")
            .field("len", &self.len)
            .field("max", &self.max)
            .finish()
    }
}

/// Map values carry the slot in the upper bits and the key's direction in the low two bits.
fn pack(slot: u32, dir: Dir) -> u32 {
    (slot << 2) | dir as u32
}

/// The tuple a packet in direction `dir` of connection `c` carries.
#[inline]
fn key_of(c: &Conn, dir: Dir) -> FlowKey {
    match dir {
        Dir::Input | Dir::InputOnly => FlowKey::new(c.proto, c.caddr, c.cport, c.vaddr, c.vport),
        Dir::Output => {
            let (a, p) = c.local.unwrap_or((c.caddr, c.cport));
            FlowKey::new(c.proto, c.daddr, c.dport, a, p)
        }
    }
}

/// The index entry `v` points at a live connection whose tuple in its direction is `key`.
#[inline]
fn matches(slots: &[Conn], v: u32, key: &FlowKey) -> bool {
    let f = unpack(v);
    slots
        .get(f.slot as usize)
        .is_some_and(|c| c.live && key_of(c, f.dir) == *key)
}

fn unpack(v: u32) -> Found {
    let dir = match v & 3 {
        0 => Dir::Input,
        1 => Dir::Output,
        _ => Dir::InputOnly,
    };
    Found { slot: v >> 2, dir }
}

impl ConnTable {
    /// A table holding at most `max` connections (FullNAT ports of worker 0 of 1).
    pub fn new(max: usize, timeouts: Timeouts) -> ConnTable {
        ConnTable::for_worker(max, timeouts, 0, 1)
    }

    /// The table of `worker` among `workers` (which decides its FullNAT local ports).
    pub fn for_worker(max: usize, timeouts: Timeouts, worker: usize, workers: usize) -> ConnTable {
        let cap = max.min(1 << 16);
        ConnTable {
            index: HashTable::with_capacity(cap * 2),
            hasher: foldhash::fast::RandomState::default(),
            slots: Vec::with_capacity(cap),
            free: Vec::new(),
            wheel: Wheel::new(),
            max: max.min((u32::MAX >> 2) as usize),
            len: 0,
            timeouts,
            counts: TableCounts::default(),
            local_ports: LocalPorts::new(worker, workers),
        }
    }

    /// Number of live connections.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Counters: entries per state, created, expired.
    pub fn counts(&self) -> &TableCounts {
        &self.counts
    }

    /// Replaces the timeouts (applies to packets seen from now on).
    pub fn set_timeouts(&mut self, t: Timeouts) {
        self.timeouts = t;
    }

    /// Finds the connection a packet with this tuple belongs to.
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<Found> {
        let h = self.hasher.hash_one(key);
        self.index
            .find(h, |&v| matches(&self.slots, v, key))
            .map(|&v| unpack(v))
    }

    /// Points `key` at `v`. With `replace`, an entry for the same tuple is taken over (a
    /// one-packet entry's reply key by a newer entry); otherwise the tuple is known to be new.
    fn index_insert(&mut self, key: FlowKey, v: u32, replace: bool) {
        let h = self.hasher.hash_one(key);
        let slots = &self.slots;
        if replace {
            if let Some(e) = self.index.find_mut(h, |&old| matches(slots, old, &key)) {
                *e = v;
                return;
            }
        }
        let hasher = &self.hasher;
        self.index.insert_unique(h, v, |&old| {
            let f = unpack(old);
            hasher.hash_one(key_of(&slots[f.slot as usize], f.dir))
        });
    }

    /// Drops the index entry `v` for tuple `key`, if it is still there.
    fn index_remove(&mut self, key: FlowKey, v: u32) {
        let h = self.hasher.hash_one(key);
        if let Ok(e) = self.index.find_entry(h, |&x| x == v) {
            e.remove();
        }
    }

    /// The connection in `slot`.
    #[inline]
    pub fn get(&self, slot: u32) -> &Conn {
        &self.slots[slot as usize]
    }

    /// The connection in `slot`, mutably (flags such as `toa_done`).
    #[inline]
    pub fn get_mut(&mut self, slot: u32) -> &mut Conn {
        &mut self.slots[slot as usize]
    }

    /// Creates a connection in its initial state (NONE for TCP, UDP for UDP), binds it to its
    /// real server's counters, and returns its slot. The caller then applies the first packet
    /// with [`ConnTable::on_packet`].
    pub fn insert(&mut self, c: NewConn, now: u32) -> Result<u32, InsertError> {
        if self.len >= self.max {
            return Err(InsertError::Full);
        }
        let state = if c.proto == 17 {
            State::Udp
        } else {
            State::None
        };
        let timeout = if c.one_packet {
            OPS_TIMEOUT
        } else {
            self.timeouts.of(state)
        };
        let local = match &c.local_pool {
            Some(pool) => Some(
                self.local_ports
                    .alloc(pool)
                    .ok_or(InsertError::NoLocalPort)?,
            ),
            None => None,
        };
        let replies_seen = matches!(c.fwd, Forward::Nat | Forward::FullNat);
        let in_key = FlowKey::new(c.proto, c.caddr, c.cport, c.vaddr, c.vport);
        let (raddr, rport) = local.unwrap_or((c.caddr, c.cport));
        let out_key = FlowKey::new(c.proto, c.daddr, c.dport, raddr, rport);
        let (slot, gen) = match self.free.pop() {
            Some(s) => (s, self.slots[s as usize].gen.wrapping_add(1)),
            None => (self.slots.len() as u32, 0),
        };
        let conn = Conn {
            caddr: c.caddr,
            cport: c.cport,
            vaddr: c.vaddr,
            vport: c.vport,
            daddr: c.daddr,
            dport: c.dport,
            proto: c.proto,
            state,
            fwd: c.fwd,
            svc: c.svc,
            dest_id: c.dest_id,
            dest: c.dest,
            template: c.template,
            expires: now + timeout,
            one_packet: c.one_packet,
            local,
            toa_done: false,
            gen,
            live: true,
        };
        conn.dest.bind(state.is_active());
        if slot as usize == self.slots.len() {
            self.slots.push(conn);
        } else {
            self.slots[slot as usize] = conn;
        }
        let in_dir = if replies_seen {
            Dir::Input
        } else {
            Dir::InputOnly
        };
        // The caller looked the client-side tuple up and found nothing; reply tuples are unique
        // per connection except for one-packet entries of the same client tuple.
        if !c.one_packet {
            self.index_insert(in_key, pack(slot, in_dir), false);
        }
        if replies_seen {
            self.index_insert(out_key, pack(slot, Dir::Output), c.one_packet);
        }
        self.wheel.schedule(slot, gen, now + timeout);
        self.len += 1;
        self.counts.created += 1;
        self.counts.per_state[state as usize] += 1;
        Ok(slot)
    }

    /// Applies a packet to connection `slot`: advances the TCP state, moves the real server's
    /// active/inactive counters when that changes, and refreshes the expiry.
    #[inline]
    pub fn on_packet(&mut self, slot: u32, dir: Dir, tcp_flags: u8, now: u32) -> &Conn {
        let t = self.timeouts;
        let c = &mut self.slots[slot as usize];
        let old = c.state;
        let new = tcp_state::next(old, dir, tcp_flags);
        if new != old {
            c.state = new;
            self.counts.per_state[old as usize] -= 1;
            self.counts.per_state[new as usize] += 1;
            match (old.is_active(), new.is_active()) {
                (false, true) => c.dest.to_active(),
                (true, false) => c.dest.to_inactive(),
                _ => {}
            }
        }
        c.expires = now + if c.one_packet { OPS_TIMEOUT } else { t.of(new) };
        c
    }

    /// Removes connection `slot` at once (a new SYN reusing a TIME_WAIT/CLOSE tuple).
    pub fn remove(&mut self, slot: u32) {
        if self.slots[slot as usize].live {
            self.release(slot);
        }
    }

    /// Takes live connection `slot` out of the index, its real server's counters, its
    /// template and its local port, and frees the slot.
    fn release(&mut self, slot: u32) {
        let c = &self.slots[slot as usize];
        let in_dir = if c.one_packet {
            None
        } else if matches!(c.fwd, Forward::Nat | Forward::FullNat) {
            Some(Dir::Input)
        } else {
            Some(Dir::InputOnly)
        };
        let out = matches!(c.fwd, Forward::Nat | Forward::FullNat);
        let keys = [
            in_dir.map(|d| (key_of(c, d), pack(slot, d))),
            out.then(|| (key_of(c, Dir::Output), pack(slot, Dir::Output))),
        ];
        for (key, v) in keys.into_iter().flatten() {
            self.index_remove(key, v);
        }
        let c = &mut self.slots[slot as usize];
        c.live = false;
        c.expires = 0;
        c.dest.unbind(c.state.is_active());
        if let Some(t) = c.template.take() {
            t.release();
        }
        if let Some((ip, p)) = c.local {
            self.local_ports.release(ip, p);
        }
        self.counts.per_state[c.state as usize] -= 1;
        self.counts.expired += 1;
        self.free.push(slot);
        self.len -= 1;
    }

    /// Advances the wheel to second `now`, expiring due entries; returns how many expired.
    pub fn expire(&mut self, now: u32) -> usize {
        let mut expired = 0;
        while self.wheel.now < now {
            self.wheel.now += 1;
            let b = self.wheel.now as usize % WHEEL_SLOTS;
            let mut due = std::mem::replace(
                &mut self.wheel.buckets[b],
                std::mem::take(&mut self.wheel.spare),
            );
            for &(slot, gen) in &due {
                let c = &self.slots[slot as usize];
                if !c.live || c.gen != gen {
                    continue;
                }
                if c.expires > self.wheel.now {
                    let at = c.expires;
                    self.wheel.schedule(slot, gen, at);
                    continue;
                }
                self.release(slot);
                expired += 1;
            }
            due.clear();
            self.wheel.spare = due;
        }
        expired
    }

    /// Removes every connection (shutdown), releasing the real servers' counters.
    pub fn clear(&mut self) {
        for slot in 0..self.slots.len() as u32 {
            self.remove(slot);
        }
    }

    /// Seconds until connection `c` expires, as of second `now`.
    pub fn expires_in(c: &Conn, now: u32) -> u32 {
        c.expires.saturating_sub(now)
    }

    /// Visits every live connection.
    pub fn for_each(&self, mut f: impl FnMut(&Conn)) {
        self.slots.iter().filter(|c| c.live).for_each(&mut f);
    }

    /// Hash of a key with the table's hasher (exposed for benches).
    pub fn hash_of(&self, key: &FlowKey) -> u64 {
        self.hasher.hash_one(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tcp_state::flags::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn new_conn(cport: u16, dest: &Arc<Dest>, proto: u8, fwd: Forward) -> NewConn {
        NewConn {
            proto,
            caddr: ip("10.0.0.2"),
            cport,
            vaddr: ip("192.0.2.1"),
            vport: 80,
            daddr: ip("172.16.0.2"),
            dport: 8080,
            fwd,
            svc: 0,
            dest_id: 0,
            dest: dest.clone(),
            template: None,
            one_packet: false,
            local_pool: None,
        }
    }

    fn dest() -> Arc<Dest> {
        Arc::new(Dest::new(ip("172.16.0.2").into(), 8080, 1))
    }

    #[test]
    fn both_keys_find_the_connection() {
        let d = dest();
        let mut t = ConnTable::new(10, Timeouts::default());
        let s = t.insert(new_conn(1000, &d, 6, Forward::Nat), 0).unwrap();
        let f = t
            .lookup(&FlowKey::new(6, ip("10.0.0.2"), 1000, ip("192.0.2.1"), 80))
            .unwrap();
        assert_eq!(
            f,
            Found {
                slot: s,
                dir: Dir::Input
            }
        );
        let r = t
            .lookup(&FlowKey::new(
                6,
                ip("172.16.0.2"),
                8080,
                ip("10.0.0.2"),
                1000,
            ))
            .unwrap();
        assert_eq!(r.dir, Dir::Output);
        assert!(t
            .lookup(&FlowKey::new(17, ip("10.0.0.2"), 1000, ip("192.0.2.1"), 80))
            .is_none());
    }

    #[test]
    fn dr_has_no_reply_key_and_uses_input_only() {
        let d = dest();
        let mut t = ConnTable::new(10, Timeouts::default());
        t.insert(new_conn(1000, &d, 6, Forward::Dr), 0).unwrap();
        let f = t
            .lookup(&FlowKey::new(6, ip("10.0.0.2"), 1000, ip("192.0.2.1"), 80))
            .unwrap();
        assert_eq!(f.dir, Dir::InputOnly);
        assert!(t
            .lookup(&FlowKey::new(
                6,
                ip("172.16.0.2"),
                8080,
                ip("10.0.0.2"),
                1000
            ))
            .is_none());
    }

    #[test]
    fn state_moves_dest_counters() {
        let d = dest();
        let mut t = ConnTable::new(10, Timeouts::default());
        let s = t.insert(new_conn(1000, &d, 6, Forward::Nat), 0).unwrap();
        t.on_packet(s, Dir::Input, SYN, 0);
        assert_eq!((d.active_conns(), d.inactive_conns()), (0, 1));
        t.on_packet(s, Dir::Output, SYN | ACK, 0);
        t.on_packet(s, Dir::Input, ACK, 0);
        assert_eq!((d.active_conns(), d.inactive_conns()), (1, 0));
        assert_eq!(t.get(s).state, State::Established);
        assert_eq!(t.counts().per_state[State::Established as usize], 1);
        t.on_packet(s, Dir::Output, FIN | ACK, 1);
        assert_eq!((d.active_conns(), d.inactive_conns()), (0, 1));
        t.remove(s);
        assert_eq!((d.active_conns(), d.inactive_conns()), (0, 0));
        assert!(t.is_empty());
    }

    #[test]
    fn entries_expire_by_state_timeout_and_refresh_lazily() {
        let d = dest();
        let mut t = ConnTable::new(10, Timeouts::new(900, 120, 5));
        let s = t.insert(new_conn(1, &d, 17, Forward::Nat), 0).unwrap();
        t.on_packet(s, Dir::Input, 0, 0);
        assert_eq!(t.expire(4), 0);
        // Refreshed at second 4: lives until 9.
        t.on_packet(s, Dir::Output, 0, 4);
        assert_eq!(t.expire(8), 0);
        assert_eq!(t.len(), 1);
        assert_eq!(t.expire(9), 1);
        assert!(t.is_empty());
        assert_eq!(d.inactive_conns(), 0);
        assert_eq!(t.counts().expired, 1);
    }

    #[test]
    fn one_packet_entries_map_replies_only_and_expire_fast() {
        let d = dest();
        let mut t = ConnTable::new(10, Timeouts::default());
        let mut nc = new_conn(7, &d, 17, Forward::Nat);
        nc.one_packet = true;
        let a = t.insert(nc.clone(), 0).unwrap();
        assert!(t
            .lookup(&FlowKey::new(17, ip("10.0.0.2"), 7, ip("192.0.2.1"), 80))
            .is_none());
        let reply = FlowKey::new(17, ip("172.16.0.2"), 8080, ip("10.0.0.2"), 7);
        assert_eq!(t.lookup(&reply).unwrap().slot, a);
        // A second datagram of the same tuple to the same server takes the reply key over.
        let b = t.insert(nc, 5).unwrap();
        assert_eq!(t.lookup(&reply).unwrap().slot, b);
        assert_eq!(t.expire(OPS_TIMEOUT), 1);
        assert_eq!(
            t.lookup(&reply).unwrap().slot,
            b,
            "the older entry left b's key alone"
        );
        assert_eq!(t.expire(5 + OPS_TIMEOUT), 1);
        assert!(t.lookup(&reply).is_none());
    }

    #[test]
    fn fullnat_local_ports_are_distinct_owned_and_recycled() {
        let d = dest();
        let pool: Arc<[Ipv4Addr]> = vec![ip("172.16.9.100"), ip("172.16.9.101")].into();
        let mut t = ConnTable::for_worker(100_000, Timeouts::default(), 1, 2);
        let mut seen = std::collections::HashSet::new();
        let mut slots = Vec::new();
        for cport in 0..1000u16 {
            let mut nc = new_conn(cport, &d, 6, Forward::FullNat);
            nc.local_pool = Some(pool.clone());
            let s = t.insert(nc, 0).unwrap();
            let (lip, lport) = t.get(s).local.unwrap();
            assert_eq!(lport % 2, 1, "worker 1 of 2 owns odd ports");
            assert!(lport >= 1024);
            assert!(seen.insert((lip, lport)), "pair reused while in use");
            // Replies come back to LIP:lport.
            let back = FlowKey::new(6, ip("172.16.0.2"), 8080, lip, lport);
            assert_eq!(
                t.lookup(&back).unwrap(),
                Found {
                    slot: s,
                    dir: Dir::Output
                }
            );
            slots.push(s);
        }
        assert_eq!(
            seen.iter().filter(|(l, _)| *l == pool[0]).count(),
            500,
            "round robin"
        );
        // Exhaust: 2 addresses × 32256 odd ports.
        let mut lp = LocalPorts::new(0, 2);
        let one = [ip("10.1.1.1")];
        let mut n = 0;
        while lp.alloc(&one).is_some() {
            n += 1;
        }
        assert_eq!(n, (1024..=65535u32).filter(|p| p % 2 == 0).count());
        lp.release(one[0], 2048);
        assert_eq!(lp.alloc(&one), Some((one[0], 2048)));
        // Removing a connection returns its port.
        let (lip, lport) = t.get(slots[0]).local.unwrap();
        t.remove(slots[0]);
        assert!(t
            .lookup(&FlowKey::new(6, ip("172.16.0.2"), 8080, lip, lport))
            .is_none());
    }

    #[test]
    fn long_timeouts_beyond_the_wheel_are_rearmed() {
        let d = dest();
        let mut t = ConnTable::new(10, Timeouts::new(3000, 120, 300));
        let s = t.insert(new_conn(1, &d, 6, Forward::Nat), 0).unwrap();
        t.on_packet(s, Dir::Input, SYN, 0);
        t.on_packet(s, Dir::Output, SYN | ACK, 0);
        t.on_packet(s, Dir::Input, ACK, 0);
        assert_eq!(t.expire(2999), 0);
        assert_eq!(t.expire(3000), 1);
    }

    #[test]
    fn bound_refuses_and_slots_are_reused() {
        let d = dest();
        let mut t = ConnTable::new(2, Timeouts::default());
        let a = t.insert(new_conn(1, &d, 17, Forward::Nat), 0).unwrap();
        t.insert(new_conn(2, &d, 17, Forward::Nat), 0).unwrap();
        assert_eq!(
            t.insert(new_conn(3, &d, 17, Forward::Nat), 0),
            Err(InsertError::Full)
        );
        t.remove(a);
        let c = t.insert(new_conn(3, &d, 17, Forward::Nat), 0).unwrap();
        assert_eq!(c, a, "freed slot reused");
        // The stale wheel entry of the removed connection must not expire the new one early.
        assert_eq!(t.expire(299), 0);
        assert_eq!(t.len(), 2);
        assert_eq!(t.expire(300), 2);
    }
}
