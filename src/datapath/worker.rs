//! A data-path worker: it owns one queue of every port, its connection table and its counters,
//! and runs the path of a frame: read with its virtio-net header, parse, classify (ARP, traffic
//! for the appliance itself, a packet of a connection, a new flow to a VIP, noise), look up or
//! create the connection, rewrite per forwarding method, route, resolve the next hop, write.
//!
//! Ownership: a connection belongs to the worker given by [`owner_of`] the client's address and
//! port, which both directions carry (source of client packets, destination of NAT replies). A
//! frame that arrives on another worker's queue is copied into a pooled buffer and handed to the
//! owner through a bounded queue. Normally that never happens: the ports' eBPF steering program
//! ([`crate::datapath::steer`]) computes the same owner in the kernel, so both directions of a connection
//! arrive on its owner's queue from the first frame. The hand-over covers what the program
//! does not classify (ICMP errors) and kernels that refuse the program (`steering = "flow"`).
//!
//! Nothing here allocates per packet, takes a lock, or logs.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use modes::nat::{self, Csum};
use modes::packet::{self, Kind, Packet};
use modes::reply;
use modes::wire::vnet::VnetHdr;
use modes::Forward;

use crate::control::runtime::{Redirect, Shared};
use crate::datapath::conn::{ConnTable, FlowKey, InsertError, NewConn};
use crate::datapath::neigh::{NeighEvent, NeighTable};
use crate::datapath::persist::TemplateKey;
use crate::datapath::service::Snapshot;
use crate::datapath::stats::{Counters, DestCounters, Drop};
use crate::datapath::tcp_state::{flags, Dir, State};
use crate::sys;
use crate::sys::tap::{TapQueue, MAX_FRAME, VNET_HDR_LEN};

/// Frames read from one queue before moving to the next.
const BATCH: usize = 64;
/// Frames a worker holds while their next hop is being resolved.
const PENDING_MAX: usize = 32;
/// How long a held frame waits for ARP.
const PENDING_TTL: Duration = Duration::from_secs(1);
/// Counter publication interval.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// The worker owning the connection of client `ip`:`port` among `n` workers. The eBPF
/// steering program ([`crate::datapath::steer::program`]) computes exactly this; change both together.
#[inline]
pub fn owner_of(ip: Ipv4Addr, port: u16, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let h = (u32::from(ip) ^ u32::from(port).rotate_left(16)).wrapping_mul(0x9E37_79B1);
    ((u64::from(h) * n as u64) >> 32) as usize
}

/// What `process` learnt about a frame, handed to the path that forwards it.
#[derive(Clone, Copy)]
struct Frame {
    /// Header + frame length in the buffer.
    len: usize,
    pkt: Packet,
    csum: Csum,
    vnet: VnetHdr,
}

struct Pending {
    buf: Box<[u8]>,
    len: usize,
    port: usize,
    hop: Ipv4Addr,
    deadline: Instant,
}

/// Everything a worker owns except its receive buffer.
struct Ctx {
    id: usize,
    workers: usize,
    queues: Vec<Arc<TapQueue>>,
    shared: Arc<Shared>,
    table: ConnTable,
    c: Counters,
    /// Traffic per real server, indexed by its stable id.
    dstats: Vec<DestCounters>,
    tx: Box<[u8]>,
    /// TUN: one segment of a GSO super-frame.
    seg: Box<[u8]>,
    /// TUN: the encapsulated segment.
    enc: Box<[u8]>,
    pending: Vec<Pending>,
    spare: Vec<Box<[u8]>>,
    wake: Vec<bool>,
    epoch: Instant,
    now: u32,
}

/// A worker thread's state.
pub struct Worker {
    ctx: Ctx,
    rx: Box<[u8]>,
}

impl Worker {
    /// A worker `id` of `workers`, reading `queues` (one per port).
    pub fn new(
        id: usize,
        queues: Vec<Arc<TapQueue>>,
        shared: Arc<Shared>,
        max_conns: usize,
    ) -> Worker {
        let workers = shared.redirect.len();
        let timeouts = *shared.timeouts.load_full();
        Worker {
            ctx: Ctx {
                id,
                workers,
                queues,
                table: ConnTable::for_worker(max_conns, timeouts, id, workers),
                c: Counters::default(),
                dstats: Vec::new(),
                tx: vec![0u8; 2048].into_boxed_slice(),
                seg: vec![0u8; MAX_FRAME].into_boxed_slice(),
                enc: vec![0u8; MAX_FRAME].into_boxed_slice(),
                pending: Vec::with_capacity(PENDING_MAX),
                spare: (0..PENDING_MAX)
                    .map(|_| vec![0u8; MAX_FRAME].into_boxed_slice())
                    .collect(),
                wake: vec![false; workers],
                epoch: shared.epoch,
                now: 0,
                shared,
            },
            rx: vec![0u8; MAX_FRAME].into_boxed_slice(),
        }
    }

    /// Runs until the daemon's stop flag is set.
    ///
    /// Each round waits in one `poll(2)` over the worker's queues and its doorbell, then reads
    /// only the queues that are ready, each until it is empty (or a batch is done, which
    /// leaves it ready for the next round). A trickle of frames so costs a poll, a read, an
    /// empty read and a write per frame, and a burst amortises the poll. The snapshot and the
    /// neighbour table are read through `arc_swap` caches, which only compare a pointer while
    /// nothing changes: no shared reference count is touched per round.
    pub fn run(mut self) {
        let ctx = &mut self.ctx;
        let nports = ctx.queues.len();
        let mut pfds: Vec<libc::pollfd> = ctx
            .queues
            .iter()
            .map(|q| sys::poll_in(std::os::fd::AsRawFd::as_raw_fd(&**q)))
            .collect();
        pfds.push(sys::poll_in(std::os::fd::AsRawFd::as_raw_fd(
            &ctx.shared.wake[ctx.id],
        )));
        let shared = ctx.shared.clone();
        let mut snap_cache = arc_swap::Cache::new(&shared.snapshot);
        let mut neigh_cache = arc_swap::Cache::new(&shared.neigh);
        let mut last_publish = Instant::now();
        let mut last_timeouts = ctx.shared.timeouts.load_full();
        let mut last_snap: Option<Arc<Snapshot>> = None;
        let mut last_dump = 0u64;
        while !ctx.shared.stop.load(Ordering::Relaxed) {
            let timeout = if ctx.pending.is_empty() { 100 } else { 10 };
            for p in pfds.iter_mut() {
                p.revents = 0;
            }
            let _ = sys::poll(&mut pfds, timeout);
            if pfds[nports].revents != 0 {
                ctx.shared.wake[ctx.id].drain();
            }
            let instant = Instant::now();
            ctx.now = instant.duration_since(ctx.epoch).as_secs() as u32;
            let snap: &Arc<Snapshot> = snap_cache.load();
            let neigh: &Arc<NeighTable> = neigh_cache.load();
            if last_snap.as_ref().is_none_or(|l| !Arc::ptr_eq(l, snap)) {
                // Only on a configuration change: room for the counters of new real servers.
                let bound = snap.dest_id_bound() as usize;
                if ctx.dstats.len() < bound {
                    ctx.dstats.resize(bound, DestCounters::default());
                }
                last_snap = Some(snap.clone());
            }
            let dump = ctx.shared.dump_gen.load(Ordering::Acquire);
            if dump != last_dump {
                ctx.dump(dump);
                last_dump = dump;
            }

            while let Some(mut r) = ctx.shared.redirect[ctx.id].pop() {
                let (port, len) = (r.port, r.len);
                ctx.process(port, &mut r.data, len, snap, neigh, true);
                let _ = ctx.shared.pool.push(r);
            }
            for (port, pfd) in pfds[..nports].iter().enumerate() {
                if pfd.revents == 0 {
                    continue;
                }
                for _ in 0..BATCH {
                    match ctx.queues[port].read(&mut self.rx) {
                        Ok(Some(n)) => ctx.process(port, &mut self.rx, n, snap, neigh, false),
                        Ok(None) => break,
                        Err(_) => {
                            ctx.c.drop(Drop::TxError);
                            break;
                        }
                    }
                }
            }
            if !ctx.pending.is_empty() {
                ctx.flush_pending(neigh, instant);
            }
            for w in 0..ctx.workers {
                if std::mem::take(&mut ctx.wake[w]) {
                    ctx.shared.wake[w].notify();
                }
            }
            ctx.table.expire(ctx.now);
            if instant.duration_since(last_publish) >= PUBLISH_EVERY {
                let t = ctx.shared.timeouts.load_full();
                if !Arc::ptr_eq(&t, &last_timeouts) {
                    ctx.table.set_timeouts(*t);
                    last_timeouts = t;
                }
                ctx.publish();
                last_publish = instant;
            }
        }
        ctx.table.clear();
        ctx.publish();
    }
}

impl Ctx {
    /// Writes this worker's connections for `tapvsadm -L -c` (on request only).
    fn dump(&mut self, gen: u64) {
        let now = self.now;
        let mut out = Vec::with_capacity(self.table.len());
        self.table.for_each(|c| {
            let proto = if c.proto == 17 {
                modes::Protocol::Udp
            } else {
                modes::Protocol::Tcp
            };
            out.push(tapvs_adm::ConnEntry {
                proto,
                expire_secs: ConnTable::expires_in(c, now),
                state: c.state.name().to_string(),
                client: std::net::SocketAddrV4::new(c.caddr, c.cport),
                vip: std::net::SocketAddrV4::new(c.vaddr, c.vport),
                dest: std::net::SocketAddrV4::new(c.daddr, c.dport),
            });
        });
        if let Ok(mut slot) = self.shared.dumps[self.id].lock() {
            *slot = (gen, out);
        }
        self.shared.dump_done.notify();
    }

    fn publish(&mut self) {
        let counts = self.table.counts();
        self.c.conn_states = counts.per_state;
        self.c.conns_created = counts.created;
        self.c.conns_expired = counts.expired;
        if let Ok(mut slot) = self.shared.published[self.id].lock() {
            *slot = self.c;
        }
        if let Ok(mut slot) = self.shared.dest_published[self.id].lock() {
            slot.clone_from(&self.dstats);
        }
    }

    /// Handles one frame read from `port`: `buf[..len]` holds the virtio-net header and the
    /// Ethernet frame; the rest of `buf` is room for rewrites that grow it (TOA, IPIP).
    fn process(
        &mut self,
        port: usize,
        buf: &mut [u8],
        len: usize,
        snap: &Snapshot,
        neigh: &NeighTable,
        redirected: bool,
    ) {
        if !redirected {
            self.c.rx_frames += 1;
            self.c.rx_bytes += len.saturating_sub(VNET_HDR_LEN) as u64;
        }
        if len < VNET_HDR_LEN {
            self.c.parse_drops[packet::DropReason::TruncatedEthernet as usize] += 1;
            return;
        }
        let vnet = VnetHdr::parse(&buf[..VNET_HDR_LEN]).unwrap_or_default();
        let frame = &buf[VNET_HDR_LEN..len];
        let pkt = match packet::parse(frame) {
            Ok(p) => p,
            Err(r) => {
                self.c.parse_drops[r as usize] += 1;
                return;
            }
        };
        if pkt.kind == Kind::Ipv4 && snap.is_vip(pkt.src) {
            // Replies of DR/TUN real servers go straight to the client; count any reaching us.
            return self.c.drop(Drop::VipSourced);
        }
        let our_mac = snap.ports[port].mac;
        let dst_mac = [frame[0], frame[1], frame[2], frame[3], frame[4], frame[5]];
        let group = dst_mac[0] & 1 == 1;
        if !group && dst_mac != our_mac {
            self.c.drop(Drop::NotForUs);
            return;
        }
        match pkt.kind {
            Kind::Arp => {
                // The host stack resolves its own next hops: it needs the replies to us.
                if snap.is_local(pkt.dst) && self.shared.host_enabled.load(Ordering::Relaxed) {
                    self.hand_to_host_stack(port, &buf[..len], &pkt);
                }
                let frame = &buf[VNET_HDR_LEN..len];
                self.arp(port, frame, snap, neigh)
            }
            Kind::Ipv4 => {
                if group {
                    self.c.drop(Drop::NotForUs);
                    return;
                }
                if !redirected {
                    if vnet.is_gso() {
                        self.c.rx_gso += 1;
                    }
                    if vnet.needs_csum() {
                        self.c.rx_partial_csum += 1;
                    }
                }
                let csum = Csum::from_vnet(&vnet, &pkt);
                let f = Frame {
                    len,
                    pkt,
                    csum,
                    vnet,
                };
                if snap.is_vip(pkt.dst) {
                    self.vip(port, buf, f, snap, neigh);
                } else if (snap.is_lip(pkt.dst) && !pkt.is_icmp())
                    || (pkt.is_icmp()
                        && self.icmp_error_for_conn(&buf[VNET_HDR_LEN..len], &pkt, snap))
                {
                    self.transit(port, buf, f, snap, neigh);
                } else if snap.is_local(pkt.dst) {
                    if !self.hand_to_host_stack(port, &buf[..len], &pkt) {
                        self.host(port, &buf[VNET_HDR_LEN..len], &pkt, csum, snap);
                    }
                } else {
                    self.transit(port, buf, f, snap, neigh);
                }
            }
        }
    }

    fn arp(&mut self, port: usize, frame: &[u8], snap: &Snapshot, neigh: &NeighTable) {
        let Ok(a) = modes::wire::arp::ArpPacket::new_checked(frame.get(14..).unwrap_or(&[])) else {
            self.c.parse_drops[packet::DropReason::BadArp as usize] += 1;
            return;
        };
        let (op, spa, sha, tpa) = (a.op(), a.spa(), a.sha(), a.tpa());
        let info = &snap.ports[port];
        let for_us =
            info.addresses.iter().any(|c| c.addr == tpa) || snap.is_vip(tpa) || snap.is_lip(tpa);
        let on_link = info.addresses.iter().any(|c| c.contains(spa));
        // Learn the sender when the frame concerns us (a request to us or any reply to us), or
        // refresh an entry we already hold; never from frames for other hosts otherwise.
        if on_link && !spa.is_unspecified() && sha.0[0] & 1 == 0 {
            let known = neigh.entry(spa);
            let fresh = known.is_some_and(|n| {
                n.mac == sha.0 && n.port == port && self.now.saturating_sub(n.confirmed) < 30
            });
            if (for_us || op == 2 || known.is_some()) && !fresh {
                let _ = self.shared.learn.push(NeighEvent::Learned {
                    ip: spa,
                    mac: sha.0,
                    port,
                });
                self.shared.control_wake.notify();
            }
        }
        if op == 1 && for_us && spa != tpa {
            if let Some(n) =
                reply::arp_reply(&mut self.tx[VNET_HDR_LEN..], frame, info.mac.into(), tpa)
            {
                self.tx[..VNET_HDR_LEN].fill(0);
                if self.queues[port]
                    .write(&self.tx[..VNET_HDR_LEN + n])
                    .is_ok()
                {
                    self.c.arp_replies += 1;
                    self.c.tx_frames += 1;
                    self.c.tx_bytes += n as u64;
                } else {
                    self.c.drop(Drop::TxError);
                }
                return;
            }
        }
        self.c.drop(Drop::ArpIgnored);
    }

    /// Writes a locally generated frame (in `self.tx` after the header room) out of `port`.
    fn send_tx(&mut self, port: usize, len: usize) -> bool {
        self.tx[..VNET_HDR_LEN].fill(0);
        if self.queues[port]
            .write(&self.tx[..VNET_HDR_LEN + len])
            .is_ok()
        {
            self.c.tx_frames += 1;
            self.c.tx_bytes += len as u64;
            true
        } else {
            self.c.drop(Drop::TxError);
            false
        }
    }

    /// Answers as a host with no listening sockets: echo replies, RSTs, port unreachables.
    fn host(&mut self, port: usize, frame: &[u8], pkt: &Packet, csum: Csum, snap: &Snapshot) {
        let mac = snap.ports[port].mac.into();
        match pkt.proto {
            1 => {
                if let Some(n) =
                    reply::icmp_echo_reply(&mut self.tx[VNET_HDR_LEN..], frame, pkt, mac)
                {
                    if self.send_tx(port, n) {
                        self.c.echo_replies += 1;
                    }
                } else {
                    self.c.drop(Drop::IcmpIgnored);
                }
            }
            6 => self.refuse_tcp(port, frame, pkt, snap, Drop::NoService),
            17 => self.refuse_udp(port, frame, pkt, csum, snap, Drop::NoService),
            _ => self.c.drop(Drop::UnsupportedProtocol),
        }
    }

    /// Hands a frame for the appliance's own address to the health checks' host stack, when
    /// one runs: TCP, UDP, ICMP other than echo requests (answered here), and ARP. Returns
    /// whether it did.
    fn hand_to_host_stack(&mut self, port: usize, buf: &[u8], pkt: &Packet) -> bool {
        if !self.shared.host_enabled.load(Ordering::Relaxed) {
            return false;
        }
        if pkt.is_icmp() {
            let icmp_type = buf.get(VNET_HDR_LEN + pkt.l4).copied().unwrap_or(0);
            if icmp_type == 8 {
                return false;
            }
        }
        match self.shared.pool.pop() {
            Some(mut r) => {
                r.data[..buf.len()].copy_from_slice(buf);
                r.len = buf.len();
                r.port = port;
                if let Err(r) = self.shared.host_rx.push(r) {
                    let _ = self.shared.pool.push(r);
                    self.c.drop(Drop::RedirectFull);
                } else {
                    self.shared.host_wake.notify();
                }
            }
            None => self.c.drop(Drop::RedirectFull),
        }
        true
    }

    /// With `expire_nodest_conn`, ends a connection whose real server was deleted, at its next
    /// packet (which is dropped). Returns whether it did.
    fn dest_gone(&mut self, slot: u32) -> bool {
        if self.table.get(slot).dest.is_available()
            || !self.shared.expire_nodest.load(Ordering::Relaxed)
        {
            return false;
        }
        self.table.remove(slot);
        self.c.drop(Drop::DestRemoved);
        true
    }

    /// Refuses a TCP segment with a RST, a UDP datagram with ICMP port unreachable.
    fn refuse(
        &mut self,
        port: usize,
        frame: &[u8],
        pkt: &Packet,
        csum: Csum,
        snap: &Snapshot,
        why: Drop,
    ) {
        if pkt.proto == 6 {
            self.refuse_tcp(port, frame, pkt, snap, why);
        } else {
            self.refuse_udp(port, frame, pkt, csum, snap, why);
        }
    }

    fn refuse_tcp(&mut self, port: usize, frame: &[u8], pkt: &Packet, snap: &Snapshot, why: Drop) {
        self.c.drop(why);
        let mac = snap.ports[port].mac.into();
        if let Some(n) = reply::tcp_rst(&mut self.tx[VNET_HDR_LEN..], frame, pkt, mac) {
            if self.send_tx(port, n) {
                self.c.rst_sent += 1;
            }
        }
    }

    fn refuse_udp(
        &mut self,
        port: usize,
        frame: &[u8],
        pkt: &Packet,
        csum: Csum,
        snap: &Snapshot,
        why: Drop,
    ) {
        self.c.drop(why);
        let mac = snap.ports[port].mac.into();
        // Port unreachable comes from the address that was asked (a VIP or our own).
        if let Some(n) = reply::icmp_unreachable(
            &mut self.tx[VNET_HDR_LEN..],
            frame,
            pkt,
            csum,
            mac,
            pkt.dst,
            3,
        ) {
            if self.send_tx(port, n) {
                self.c.icmp_errors_sent += 1;
            }
        }
    }

    /// Hands the frame to its owning worker. Returns false when this worker is the owner.
    fn redirect(&mut self, owner: usize, port: usize, buf: &[u8]) -> bool {
        if owner == self.id {
            return false;
        }
        match self.shared.pool.pop() {
            Some(mut r) => {
                r.data[..buf.len()].copy_from_slice(buf);
                r.len = buf.len();
                r.port = port;
                match self.shared.redirect[owner].push(r) {
                    Ok(()) => {
                        self.c.redirected += 1;
                        self.wake[owner] = true;
                    }
                    Err(r) => {
                        let _ = self.shared.pool.push(r);
                        self.c.drop(Drop::RedirectFull);
                    }
                }
            }
            None => self.c.drop(Drop::RedirectFull),
        }
        true
    }

    /// A packet addressed to a VIP.
    fn vip(&mut self, port: usize, buf: &mut [u8], f: Frame, snap: &Snapshot, neigh: &NeighTable) {
        let Frame { len, pkt, csum, .. } = f;
        let pkt = &pkt;
        match pkt.proto {
            6 | 17 => {}
            1 => return self.host(port, &buf[VNET_HDR_LEN..len], pkt, csum, snap),
            _ => return self.c.drop(Drop::UnsupportedProtocol),
        }
        if self.redirect(
            owner_of(pkt.src, pkt.sport, self.workers),
            port,
            &buf[..len],
        ) {
            return;
        }
        if pkt.ttl <= 1 {
            return self.ttl_exceeded(port, &buf[VNET_HDR_LEN..len], pkt, csum, snap);
        }
        let key = FlowKey::new(pkt.proto, pkt.src, pkt.sport, pkt.dst, pkt.dport);
        let syn_only =
            pkt.proto == 6 && pkt.tcp_flags & (flags::SYN | flags::ACK | flags::RST) == flags::SYN;
        let mut found = self.table.lookup(&key);
        if let Some(fd) = found {
            // A new SYN on a tuple whose connection is closing starts a new connection
            // (IPVS conn_reuse_mode=1).
            let st = self.table.get(fd.slot).state;
            if syn_only && matches!(st, State::TimeWait | State::Close) {
                self.table.remove(fd.slot);
                found = None;
            }
        }
        let (slot, dir) = match found {
            Some(fd) => (fd.slot, fd.dir),
            None => {
                let frame = &buf[VNET_HDR_LEN..len];
                match self.new_conn(port, frame, pkt, csum, syn_only, snap) {
                    Some(x) => x,
                    None => return,
                }
            }
        };
        if self.dest_gone(slot) {
            return;
        }
        let c = self.table.on_packet(slot, dir, pkt.tcp_flags, self.now);
        let (daddr, dport, fwd, local, toa_done) = (c.daddr, c.dport, c.fwd, c.local, c.toa_done);
        if let Some(d) = self.dstats.get_mut(c.dest_id as usize) {
            d.in_pkts += 1;
            d.in_bytes += u64::from(pkt.ip_total_len);
        }
        let mut len = len;
        match fwd {
            Forward::Nat => nat::dnat(&mut buf[VNET_HDR_LEN..len], pkt, csum, daddr, dport),
            Forward::Dr => {}
            Forward::Tun => {
                self.c.fwd_in += 1;
                return self.tunnel(port, buf, f, daddr, snap, neigh);
            }
            Forward::FullNat => {
                let Some((lip, lport)) = local else {
                    return self.c.drop(Drop::NoLocalPort);
                };
                let frame = &mut buf[VNET_HDR_LEN..len];
                modes::fullnat::fnat_in(frame, pkt, csum, lip, lport, daddr, dport);
                if pkt.proto == 6 && !toa_done {
                    len = self.fullnat_toa(buf, f, slot, syn_only, daddr, snap);
                }
            }
        }
        self.c.fwd_in += 1;
        self.forward(buf, len, pkt, daddr, snap, neigh);
    }

    /// Schedules a new connection for a packet to a VIP; answers and returns None when it
    /// cannot be created.
    fn new_conn(
        &mut self,
        port: usize,
        frame: &[u8],
        pkt: &Packet,
        csum: Csum,
        syn_only: bool,
        snap: &Snapshot,
    ) -> Option<(u32, Dir)> {
        let Some((svc_idx, svc)) = snap.service(pkt.proto, pkt.dst, pkt.dport) else {
            self.refuse(port, frame, pkt, csum, snap, Drop::NoService);
            return None;
        };
        if pkt.proto == 6 && !syn_only {
            if pkt.tcp_flags & flags::RST != 0 {
                self.c.drop(Drop::NoConnectionTcp);
            } else {
                self.refuse(port, frame, pkt, csum, snap, Drop::NoConnectionTcp);
            }
            return None;
        }
        let input = sched::Input {
            proto: pkt.proto,
            src: IpAddr::V4(pkt.src),
            src_port: pkt.sport,
            dst: IpAddr::V4(pkt.dst),
            dst_port: pkt.dport,
            now_secs: u64::from(self.now),
        };
        let pick = || svc.sched.schedule(&svc.dests, &input);
        let (i, template) = match svc.persistent {
            None => (pick(), None),
            Some(timeout) => {
                let key = TemplateKey {
                    proto: pkt.proto,
                    client: Ipv4Addr::from(u32::from(pkt.src) & svc.netmask),
                    vaddr: pkt.dst,
                    vport: svc.vport,
                };
                let t = self
                    .shared
                    .templates
                    .get_or_schedule(key, self.now, timeout, || {
                        pick().map(|i| svc.dests[i].clone())
                    });
                let i = t
                    .as_ref()
                    .and_then(|t| svc.dests.iter().position(|d| Arc::ptr_eq(d, &t.dest)));
                (i, t)
            }
        };
        let Some(i) = i else {
            if let Some(t) = template {
                t.release();
            }
            self.refuse(port, frame, pkt, csum, snap, Drop::NoRealServer);
            return None;
        };
        let dest = &svc.dests[i];
        let IpAddr::V4(daddr) = dest.addr() else {
            self.c.drop(Drop::NoRoute);
            return None;
        };
        let fwd = svc.forward[i];
        let nc = NewConn {
            proto: pkt.proto,
            caddr: pkt.src,
            cport: pkt.sport,
            vaddr: pkt.dst,
            vport: pkt.dport,
            daddr,
            // Real port 0 (all-ports service): the port the client asked for.
            dport: if dest.port() == 0 {
                pkt.dport
            } else {
                dest.port()
            },
            fwd,
            svc: svc_idx,
            dest_id: svc.dest_ids[i],
            dest: dest.clone(),
            template,
            one_packet: svc.ops,
            local_pool: (fwd == Forward::FullNat).then(|| svc.local_addresses.clone()),
        };
        let dir = match fwd {
            Forward::Nat | Forward::FullNat => Dir::Input,
            Forward::Dr | Forward::Tun => Dir::InputOnly,
        };
        let dest_id = svc.dest_ids[i] as usize;
        match self.table.insert(nc, self.now) {
            Ok(s) => {
                if let Some(d) = self.dstats.get_mut(dest_id) {
                    d.conns += 1;
                }
                Some((s, dir))
            }
            Err(InsertError::Full) => {
                self.c.drop(Drop::ConnTableFull);
                None
            }
            Err(InsertError::NoLocalPort) => {
                self.refuse(port, frame, pkt, csum, snap, Drop::NoLocalPort);
                None
            }
        }
    }

    /// FullNAT's TOA: clamps the SYN's MSS to leave room for the option (and inserts it there
    /// when the service asks), and inserts it into the first ACK after the handshake. Returns
    /// the frame's new length (header included).
    fn fullnat_toa(
        &mut self,
        buf: &mut [u8],
        f: Frame,
        slot: u32,
        syn: bool,
        daddr: Ipv4Addr,
        snap: &Snapshot,
    ) -> usize {
        let Frame {
            len,
            pkt,
            csum,
            mut vnet,
        } = f;
        let (caddr, cport) = {
            let c = self.table.get(slot);
            (c.caddr, c.cport)
        };
        let Some((_, svc)) = snap.service(pkt.proto, pkt.dst, pkt.dport) else {
            return len;
        };
        if !svc.toa {
            self.table.get_mut(slot).toa_done = true;
            return len;
        }
        let mtu = snap
            .router
            .lookup(daddr)
            .map_or(1500, |(out, _)| snap.ports[out].mtu);
        if syn {
            let mss = mtu.saturating_sub(40 + modes::toa::TOA_LEN as u32) as u16;
            modes::tun::mss_clamp(&mut buf[VNET_HDR_LEN..len], &pkt, csum, mss);
            if !svc.toa_on_syn {
                return len;
            }
        } else if pkt.tcp_flags & flags::ACK == 0 {
            return len;
        }
        // A frame that is not GSO must still fit the egress MTU with the option.
        let fits = vnet.is_gso() || u32::from(pkt.ip_total_len) + modes::toa::TOA_LEN as u32 <= mtu;
        let inserted = fits
            && match modes::toa::insert_toa_with(
                &mut buf[VNET_HDR_LEN..],
                len - VNET_HDR_LEN,
                &pkt,
                csum,
                Some(&mut vnet),
                caddr,
                cport,
            ) {
                Ok(n) => {
                    vnet.write(&mut buf[..VNET_HDR_LEN]);
                    self.c.toa_added += 1;
                    if !syn {
                        self.table.get_mut(slot).toa_done = true;
                    }
                    return VNET_HDR_LEN + n;
                }
                Err(_) => false,
            };
        if !inserted {
            self.c.toa_skipped += 1;
            if !syn {
                self.table.get_mut(slot).toa_done = true;
            }
        }
        len
    }

    /// TUN: IPIP-encapsulates to the real server. SYNs get their MSS clamped by the tunnel
    /// overhead; a packet that would exceed the egress MTU gets ICMP fragmentation needed when
    /// DF is set (as IPVS) and is dropped; GSO super-frames are segmented first (virtio-net
    /// has no IPIP GSO type) and partial checksums completed.
    fn tunnel(
        &mut self,
        in_port: usize,
        buf: &mut [u8],
        f: Frame,
        rip: Ipv4Addr,
        snap: &Snapshot,
        neigh: &NeighTable,
    ) {
        let Frame {
            len,
            pkt,
            csum,
            vnet,
        } = f;
        let Some((out, hop)) = snap.router.lookup(rip) else {
            return self.c.drop(Drop::NoRoute);
        };
        let info = &snap.ports[out];
        let mtu = info.mtu as usize;
        let Some(outer_src) = info.source_for(rip) else {
            return self.c.drop(Drop::NoRoute);
        };
        let overhead = modes::tun::OVERHEAD;
        if pkt.tcp_flags & flags::SYN != 0 {
            let mss = mtu.saturating_sub(overhead + 40) as u16;
            modes::tun::mss_clamp(&mut buf[VNET_HDR_LEN..len], &pkt, csum, mss);
        }
        let ip_len = if vnet.is_gso() {
            (pkt.payload_offset() - pkt.l3) + usize::from(vnet.gso_size)
        } else {
            usize::from(pkt.ip_total_len)
        };
        if ip_len + overhead > mtu {
            self.c.drop(Drop::FragNeeded);
            if modes::tun::dont_fragment(&buf[VNET_HDR_LEN..len], &pkt) {
                let inp = &snap.ports[in_port];
                if let Some(src) = inp.source_for(pkt.src) {
                    let next_mtu = (mtu - overhead) as u16;
                    let quote = &buf[VNET_HDR_LEN..len];
                    let (mac, out_buf) = (inp.mac.into(), &mut self.tx[VNET_HDR_LEN..]);
                    if let Some(n) =
                        reply::icmp_frag_needed(out_buf, quote, &pkt, csum, mac, src, next_mtu)
                    {
                        if self.send_tx(in_port, n) {
                            self.c.icmp_errors_sent += 1;
                        }
                    }
                }
            }
            return;
        }
        nat::decrement_ttl(&mut buf[VNET_HDR_LEN..len], &pkt);
        let ttl = pkt.ttl - 1;
        let Some(mac) = neigh.get(hop, out) else {
            let _ = self
                .shared
                .learn
                .push(NeighEvent::Wanted { ip: hop, port: out });
            self.shared.control_wake.notify();
            return self.c.drop(Drop::NeighUnresolved);
        };
        let (src_mac, dst_mac) = (info.mac.into(), mac.into());
        if vnet.is_gso() {
            let mut seg = std::mem::take(&mut self.seg);
            let mut enc = std::mem::take(&mut self.enc);
            let q = &self.queues[out];
            let (mut sent, mut bytes, mut errors) = (0u64, 0u64, 0u64);
            let frame = &buf[VNET_HDR_LEN..len];
            let n = modes::gso::segment_tcp4(frame, &vnet, &pkt, &mut seg, |s| {
                let Ok(sp) = packet::parse(s) else { return };
                enc[..VNET_HDR_LEN].fill(0);
                enc[VNET_HDR_LEN..VNET_HDR_LEN + s.len()].copy_from_slice(s);
                let room = &mut enc[VNET_HDR_LEN..];
                let Some(m) = modes::tun::encapsulate(room, s.len(), &sp, outer_src, rip, ttl)
                else {
                    return;
                };
                nat::set_macs(&mut enc[VNET_HDR_LEN..VNET_HDR_LEN + m], src_mac, dst_mac);
                if q.write(&enc[..VNET_HDR_LEN + m]).is_ok() {
                    sent += 1;
                    bytes += m as u64;
                } else {
                    errors += 1;
                }
            });
            self.seg = seg;
            self.enc = enc;
            self.c.segments += n.unwrap_or(0) as u64;
            self.c.tx_frames += sent;
            self.c.tx_bytes += bytes;
            self.c.drops[Drop::TxError as usize] += errors;
            return;
        }
        if vnet.needs_csum() {
            let (start, off) = (usize::from(vnet.csum_start), usize::from(vnet.csum_offset));
            modes::checksum::complete_partial(&mut buf[VNET_HDR_LEN..len], start, off);
        }
        let room = &mut buf[VNET_HDR_LEN..];
        let Some(m) = modes::tun::encapsulate(room, len - VNET_HDR_LEN, &pkt, outer_src, rip, ttl)
        else {
            return self.c.drop(Drop::FragNeeded);
        };
        buf[..VNET_HDR_LEN].fill(0);
        nat::set_macs(&mut buf[VNET_HDR_LEN..VNET_HDR_LEN + m], src_mac, dst_mac);
        self.write_frame(out, &buf[..VNET_HDR_LEN + m]);
    }

    /// A packet to neither a VIP nor the appliance (or to a FullNAT local address): a NAT or
    /// FullNAT reply, or noise.
    fn transit(
        &mut self,
        port: usize,
        buf: &mut [u8],
        f: Frame,
        snap: &Snapshot,
        neigh: &NeighTable,
    ) {
        let Frame { len, pkt, csum, .. } = f;
        let pkt = &pkt;
        if pkt.is_icmp() {
            return self.icmp_error(port, buf, f, snap, neigh);
        }
        if pkt.proto != 6 && pkt.proto != 17 {
            return self.c.drop(Drop::NoConnection);
        }
        // FullNAT local ports encode their worker; NAT replies carry the client as destination.
        let owner = if snap.is_lip(pkt.dst) {
            usize::from(pkt.dport) % self.workers
        } else {
            owner_of(pkt.dst, pkt.dport, self.workers)
        };
        if self.redirect(owner, port, &buf[..len]) {
            return;
        }
        if pkt.ttl <= 1 {
            return self.ttl_exceeded(port, &buf[VNET_HDR_LEN..len], pkt, csum, snap);
        }
        let key = FlowKey::new(pkt.proto, pkt.src, pkt.sport, pkt.dst, pkt.dport);
        let Some(fd) = self.table.lookup(&key) else {
            return self.c.drop(Drop::NoConnection);
        };
        if fd.dir != Dir::Output {
            return self.c.drop(Drop::NoConnection);
        }
        if self.dest_gone(fd.slot) {
            return;
        }
        let c = self
            .table
            .on_packet(fd.slot, fd.dir, pkt.tcp_flags, self.now);
        let (vaddr, vport, caddr, cport, fwd) = (c.vaddr, c.vport, c.caddr, c.cport, c.fwd);
        if let Some(d) = self.dstats.get_mut(c.dest_id as usize) {
            d.out_pkts += 1;
            d.out_bytes += u64::from(pkt.ip_total_len);
        }
        let frame = &mut buf[VNET_HDR_LEN..len];
        if fwd == Forward::FullNat {
            modes::fullnat::fnat_out(frame, pkt, csum, vaddr, vport, caddr, cport);
        } else {
            nat::snat(frame, pkt, csum, vaddr, vport);
        }
        self.c.fwd_out += 1;
        self.forward(buf, len, pkt, caddr, snap, neigh);
    }

    /// Whether `pkt` is an ICMP error quoting a packet this appliance sent to a real server
    /// (NAT: client → RIP; FullNAT: LIP → RIP), which then belongs to the connection's path.
    fn icmp_error_for_conn(&self, frame: &[u8], pkt: &Packet, snap: &Snapshot) -> bool {
        let Some((_, isrc, _, _, _)) = modes::icmp_nat::inner_tuple(frame, pkt) else {
            return false;
        };
        !snap.is_local(pkt.dst) || snap.is_lip(isrc)
    }

    /// An ICMP error from the servers' side about a connection's packet, translated back to
    /// the client as IPVS does: the quoted packet and the outer source become what the client
    /// sent and talked to (VIP:vport, and for FullNAT the client's own address and port).
    fn icmp_error(
        &mut self,
        port: usize,
        buf: &mut [u8],
        f: Frame,
        snap: &Snapshot,
        neigh: &NeighTable,
    ) {
        let Frame { len, pkt, csum, .. } = f;
        let pkt = &pkt;
        let frame = &buf[VNET_HDR_LEN..len];
        let Some((proto, isrc, isport, idst, idport)) = modes::icmp_nat::inner_tuple(frame, pkt)
        else {
            return self.c.drop(Drop::NoConnection);
        };
        // The quoted packet went client (or LIP) → real server: its source names the owner.
        let owner = if snap.is_lip(isrc) {
            usize::from(isport) % self.workers
        } else {
            owner_of(isrc, isport, self.workers)
        };
        if self.redirect(owner, port, &buf[..len]) {
            return;
        }
        if pkt.ttl <= 1 {
            return self.ttl_exceeded(port, frame, pkt, csum, snap);
        }
        // The connection's reply key is the quoted packet's tuple reversed.
        let key = FlowKey::new(proto, idst, idport, isrc, isport);
        let Some(fd) = self.table.lookup(&key).filter(|fd| fd.dir == Dir::Output) else {
            return self.c.drop(Drop::NoConnection);
        };
        let c = self.table.get(fd.slot);
        let (vaddr, vport, caddr, cport, fwd) = (c.vaddr, c.vport, c.caddr, c.cport, c.fwd);
        let frame = &mut buf[VNET_HDR_LEN..len];
        let done = if fwd == Forward::FullNat {
            modes::icmp_nat::rewrite_inner(frame, pkt, caddr, cport, vaddr, vport)
                && modes::icmp_nat::set_outer_addrs(frame, pkt, vaddr, caddr)
        } else {
            modes::icmp_nat::nat_out(frame, pkt, vaddr, vport)
        };
        if !done {
            return self.c.drop(Drop::NoConnection);
        }
        self.c.fwd_out += 1;
        self.forward(buf, len, pkt, caddr, snap, neigh);
    }

    /// Answers a packet whose TTL would expire here with ICMP time exceeded (from the
    /// ingress port's address) and drops it.
    fn ttl_exceeded(
        &mut self,
        port: usize,
        frame: &[u8],
        pkt: &Packet,
        csum: Csum,
        snap: &Snapshot,
    ) {
        self.c.drop(Drop::TtlExceeded);
        let info = &snap.ports[port];
        if let Some(src) = info.source_for(pkt.src) {
            if let Some(n) = reply::icmp_time_exceeded(
                &mut self.tx[VNET_HDR_LEN..],
                frame,
                pkt,
                csum,
                info.mac.into(),
                src,
            ) {
                if self.send_tx(port, n) {
                    self.c.icmp_errors_sent += 1;
                }
            }
        }
    }

    /// Routes a rewritten frame (`buf[..len]`) towards `dst`, decrements its TTL and sends it.
    /// The caller has checked that the TTL allows forwarding.
    fn forward(
        &mut self,
        buf: &mut [u8],
        len: usize,
        pkt: &Packet,
        dst: Ipv4Addr,
        snap: &Snapshot,
        neigh: &NeighTable,
    ) {
        let Some((out, hop)) = snap.router.lookup(dst) else {
            return self.c.drop(Drop::NoRoute);
        };
        let frame = &mut buf[VNET_HDR_LEN..len];
        nat::decrement_ttl(frame, pkt);
        match neigh.get(hop, out) {
            Some(mac) => {
                nat::set_macs(frame, snap.ports[out].mac.into(), mac.into());
                self.write_frame(out, &buf[..len]);
            }
            None => self.hold(out, hop, &buf[..len]),
        }
    }

    fn write_frame(&mut self, port: usize, buf: &[u8]) {
        if self.queues[port].write(buf).is_ok() {
            self.c.tx_frames += 1;
            self.c.tx_bytes += (buf.len() - VNET_HDR_LEN) as u64;
        } else {
            self.c.drop(Drop::TxError);
        }
    }

    /// Keeps a frame until `hop` is resolved (or the wait times out) and asks for resolution.
    fn hold(&mut self, port: usize, hop: Ipv4Addr, buf: &[u8]) {
        let _ = self.shared.learn.push(NeighEvent::Wanted { ip: hop, port });
        self.shared.control_wake.notify();
        let Some(mut b) = self.spare.pop() else {
            return self.c.drop(Drop::NeighUnresolved);
        };
        b[..buf.len()].copy_from_slice(buf);
        self.pending.push(Pending {
            buf: b,
            len: buf.len(),
            port,
            hop,
            deadline: Instant::now() + PENDING_TTL,
        });
    }

    fn flush_pending(&mut self, neigh: &NeighTable, now: Instant) {
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            if let Some(mac) = neigh.get(p.hop, p.port) {
                let mut p = self.pending.swap_remove(i);
                let src = self.shared.snapshot.load().ports[p.port].mac;
                nat::set_macs(&mut p.buf[VNET_HDR_LEN..p.len], src.into(), mac.into());
                self.write_frame(p.port, &p.buf[..p.len]);
                self.spare.push(p.buf);
            } else if now >= p.deadline {
                let p = self.pending.swap_remove(i);
                self.c.drop(Drop::NeighUnresolved);
                self.spare.push(p.buf);
            } else {
                i += 1;
            }
        }
    }
}

/// A pooled buffer carrying a frame to its owning worker.
pub fn new_redirect() -> Box<Redirect> {
    Box::new(Redirect {
        data: vec![0u8; MAX_FRAME].into_boxed_slice(),
        len: 0,
        port: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_spread() {
        let ip: Ipv4Addr = "10.0.0.2".parse().unwrap();
        let mut counts = [0usize; 4];
        for p in 1000..5000u16 {
            let o = owner_of(ip, p, 4);
            assert_eq!(o, owner_of(ip, p, 4));
            counts[o] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "{counts:?}");
        }
        assert_eq!(owner_of(ip, 1, 1), 0);
    }
}
