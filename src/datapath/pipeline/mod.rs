//! The frame pipeline: the pure core of a worker. It takes one received frame (virtio-net header
//! first) and decides what becomes of it, with no I/O of its own and the time passed in.
//!
//! [`Pipeline::process`] parses fixed-offset L2–L4 views, classifies the frame (ARP, traffic for
//! the appliance itself, a packet of a known connection in either direction, a new flow to a
//! VIP:port, an ICMP error about a connection, or noise), looks the connection up or schedules
//! a real server and creates it, applies the connection's transmitter (NAT, DR, TUN, FullNAT
//! with TOA, NAT64 as FullNAT across families; bound once when the connection was created) and
//! hands the rewritten frame to the one output step in [`egress`]. A SYNPROXY service's
//! handshakes go through `synproxy.rs` first (syncookie answers, the real server's handshake,
//! sequence shifts). It returns a
//! [`Verdict`]; every frame it emits (the rewritten frame, TUN segments, answers such as ARP
//! replies, echo replies, RSTs and ICMP errors, held frames released) goes to a [`Sink`] the
//! caller provides. The worker loop ([`crate::datapath::worker`]) does the reads, writes and
//! hand-overs around it; unit tests feed frames and collect what it emits, without root or a
//! TAP device.
//!
//! Nothing here allocates per packet, takes a lock (persistence templates aside, touched only
//! when a persistent connection starts), or logs. Counters are plain fields, published by the
//! worker.

use std::net::{IpAddr, Ipv4Addr};

use modes::icmp_nat;
use modes::nat::{self, Csum};
use modes::packet::{self, DropReason, Kind, Packet};
use modes::reply;
use modes::wire::vnet::VnetHdr;

use crate::datapath::conn::{
    ConnTable, Evict, FlowKey, InsertError, NewConn, PressureConfig, Toa, Xmit,
};
use modes::Forward;
mod egress;
mod nd;
pub use nd::link_local;
mod sync;
mod synproxy;
pub use sync::{sync_state, template_entry, SyncDrop, SYNC_PERIOD, SYNC_THRESHOLD};
pub use synproxy::{
    HANDSHAKES as SYNPROXY_HANDSHAKES, STORE_BYTES as SYNPROXY_STORE_BYTES,
    STORE_FRAMES as SYNPROXY_STORE_FRAMES, SYNPROXY_DUP_ACKS, SYN_RETRIES as SYNPROXY_SYN_RETRIES,
    SYN_RETRY_MS as SYNPROXY_SYN_RETRY_MS,
};

use crate::config::RpFilter;
use crate::datapath::acl::{IcmpLimiter, RateTable};
use crate::datapath::ha::Standby;
use crate::datapath::neigh::{NeighEvent, NeighTable};
use crate::datapath::persist::{TemplateKey, Templates};
use crate::datapath::service::{Service, Snapshot, Source};
use crate::datapath::stats::{Counters, DestCounters, Drop};
use crate::datapath::tcp_state::{flags, Dir, State, Timeouts};
use crate::sys::tap::{MAX_FRAME, VNET_HDR_LEN};
use egress::{Encap, Held, Target};

/// Frames a pipeline holds while their next hop is being resolved.
pub const HELD_MAX: usize = 32;
/// How long a held frame waits for its next hop, in milliseconds.
pub const HELD_TTL_MS: u64 = 1000;
/// Neighbour events a pipeline keeps until the worker passes them on.
const EVENTS_MAX: usize = 64;
/// Connection-table wheel entries one [`Pipeline::tick`] looks at at most: bounds the frame
/// delay expiry can cause (a few hundred microseconds even when millions fall due at once;
/// see `benches/conntable.rs`).
pub const EXPIRE_BUDGET: usize = 512;

/// The worker owning the connection of client `ip`:`port` among `n` workers. The eBPF
/// steering program ([`crate::datapath::steer::program`]) computes exactly this; change both
/// together. An IPv6 address enters as the XOR of its four 32-bit words (as IPVS folds IPv6
/// addresses for hashing), an IPv4 address as its one word.
#[inline]
pub fn owner_of(ip: impl Into<IpAddr>, port: u16, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let h = (fold_addr(ip.into()) ^ u32::from(port).rotate_left(16)).wrapping_mul(0x9E37_79B1);
    ((u64::from(h) * n as u64) >> 32) as usize
}

/// An address as one 32-bit word: IPv4 as is, IPv6 its four words XORed (each read in
/// network byte order).
#[inline]
pub fn fold_addr(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => {
            let w = a.to_bits();
            (w >> 96) as u32 ^ (w >> 64) as u32 ^ (w >> 32) as u32 ^ w as u32
        }
    }
}

/// Whether the ICMPv6 `pkt` is an error about a connection's packet, for `icmp_error`: a
/// quoted TCP/UDP tuple, and sent to a client (NAT) or to a local address (FullNAT), not to a
/// VIP or the appliance's own address.
fn conn_error(snap: &Snapshot, frame: &[u8], pkt: &Packet) -> bool {
    !snap.is_vip(pkt.dst)
        && icmp_nat::quoted_tuple(frame, pkt)
            .is_some_and(|t| !snap.is_local(pkt.dst) || snap.is_lip(t.1))
}

/// What the pipeline reads besides the frame: the published state and the time.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    /// The service snapshot.
    pub snap: &'a Snapshot,
    /// The published neighbour table.
    pub neigh: &'a NeighTable,
    /// Persistence templates (shared; touched only when a persistent connection starts).
    pub templates: &'a Templates,
    /// Milliseconds since the daemon's epoch.
    pub now_ms: u64,
    /// IPVS `expire_nodest_conn`: end a connection whose real server was deleted.
    pub expire_nodest: bool,
    /// A host stack (health checks) takes the frames addressed to the appliance itself.
    pub host_stack: bool,
    /// Hot standby: the virtual addresses VRRP does not own here now
    /// ([`crate::datapath::ha::NO_STANDBY`] without VRRP).
    pub standby: &'a Standby,
}

/// Where the frames the pipeline emits go: the worker writes them to its queue of `port`; a
/// test collects them.
pub trait Sink {
    /// Sends `frame` (a virtio-net header, then the Ethernet frame) out of `port`. Returns
    /// whether it was accepted.
    fn send(&mut self, port: usize, frame: &[u8]) -> bool;
}

/// What became of a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Rewritten and sent out of `port` to next hop `hop` (as several frames when a GSO
    /// super-frame had to be segmented for a tunnel).
    Transmit {
        /// Egress port.
        port: usize,
        /// Next hop.
        hop: IpAddr,
    },
    /// Rewritten and held until `hop` on `port` is resolved (then sent, or dropped after
    /// [`HELD_TTL_MS`]); or, for a SYNPROXY connection whose real server has not answered
    /// yet, stored until it does (then sent through this connection's `port` and `hop`).
    Hold {
        /// Egress port.
        port: usize,
        /// The unresolved next hop.
        hop: IpAddr,
    },
    /// The frame belongs to another worker's connection: the caller hands it to `owner`.
    Redirect {
        /// The owning worker.
        owner: usize,
    },
    /// Answered by the appliance as a host (ARP reply, echo reply); the answer was sent.
    Answer,
    /// For the host stack (health checks): the caller delivers a copy. Any answer the
    /// pipeline gave as well (an ARP reply) was sent.
    Host,
    /// For the HA thread: a VRRP advert (IP protocol 112), or an IPVS sync message when the
    /// backup sync daemon runs. The caller hands it over.
    Vrrp,
    /// Dropped, counted with this reason. A refusal (RST, ICMP error) may have been sent.
    Drop(Drop),
    /// Malformed, counted by this parse reason.
    Malformed(DropReason),
}

/// What `process` learnt about a frame, handed along its path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Frame {
    /// Header + frame length in the buffer.
    pub len: usize,
    pub pkt: Packet,
    pub csum: Csum,
    pub vnet: VnetHdr,
}

/// One worker's frame pipeline: its connection table, counters and scratch buffers.
pub struct Pipeline {
    id: usize,
    workers: usize,
    pub(crate) table: ConnTable,
    pub(crate) c: Counters,
    /// Traffic per real server, indexed by its stable id.
    pub(crate) dstats: Vec<DestCounters>,
    /// Answers built here (ARP, echo, RST, ICMP errors).
    pub(crate) tx: Box<[u8]>,
    /// TUN: one segment of a GSO super-frame.
    pub(crate) seg: Box<[u8]>,
    /// TUN: the encapsulated segment.
    pub(crate) enc: Box<[u8]>,
    pub(crate) held: Vec<Held>,
    pub(crate) spare: Vec<Box<[u8]>>,
    events: Vec<NeighEvent>,
    /// Connection sync (master): updates for the sync thread, drained by the worker.
    pub(crate) sync_out: Vec<modes::wire::ipvs_sync::SyncConn>,
    /// Updates that found `sync_out` full.
    pub(crate) sync_overflow: u64,
    /// Seconds since the epoch (the connection table's clock).
    pub(crate) now: u32,
    /// Milliseconds since the epoch.
    pub(crate) now_ms: u64,
    /// `conn_rate` token buckets (this worker's share).
    rates: RateTable,
    /// The ICMP error limiter (this worker's share of `[defence]`).
    icmp: IcmpLimiter,
    /// SYNPROXY: the cookie key, per-connection shifts, pending handshakes.
    pub(crate) sp: synproxy::Synproxy,
}

impl Pipeline {
    /// The pipeline of worker `id` among `workers`, with room for `max_conns` connections.
    pub fn new(id: usize, workers: usize, max_conns: usize, timeouts: Timeouts) -> Pipeline {
        Pipeline {
            id,
            workers,
            table: ConnTable::for_worker(max_conns, timeouts, id, workers),
            c: Counters::default(),
            dstats: Vec::new(),
            tx: vec![0u8; 2048].into_boxed_slice(),
            seg: vec![0u8; MAX_FRAME].into_boxed_slice(),
            enc: vec![0u8; MAX_FRAME].into_boxed_slice(),
            held: Vec::with_capacity(HELD_MAX),
            spare: (0..HELD_MAX)
                .map(|_| vec![0u8; MAX_FRAME].into_boxed_slice())
                .collect(),
            events: Vec::with_capacity(EVENTS_MAX),
            sync_out: Vec::with_capacity(sync::SYNC_OUT_MAX),
            sync_overflow: 0,
            now: 0,
            now_ms: 0,
            rates: RateTable::new(workers),
            icmp: IcmpLimiter::new(workers),
            sp: synproxy::Synproxy::new(),
        }
    }

    /// SYNPROXY handshakes waiting for their real server's SYN/ACK.
    pub fn synproxy_pending(&self) -> usize {
        self.sp.pending()
    }

    /// Brings the pipeline back to its state when new ([`ConnTable::reset`], no held frames,
    /// events or sync updates, zero counters, clock at 0) while keeping its buffers, which are
    /// most of what [`Pipeline::new`] costs. Not for the datapath: the fuzz harness runs each
    /// input through one reset pipeline.
    pub fn reset(&mut self) {
        self.table.reset();
        self.c = Counters::default();
        self.dstats.clear();
        for h in self.held.drain(..) {
            self.spare.push(h.into_buf());
        }
        self.events.clear();
        self.sync_out.clear();
        self.sync_overflow = 0;
        self.now = 0;
        self.now_ms = 0;
        self.rates = RateTable::new(self.workers);
        self.icmp = IcmpLimiter::new(self.workers);
        self.sp.reset();
    }

    /// The connection table.
    pub fn table(&self) -> &ConnTable {
        &self.table
    }

    /// Sets the table-pressure defences (`[defence]`; off in a new pipeline).
    pub fn set_pressure(&mut self, cfg: PressureConfig) {
        self.table.set_pressure(cfg);
    }

    /// The connection table, mutably (expiry, timeouts, shutdown).
    pub fn table_mut(&mut self) -> &mut ConnTable {
        &mut self.table
    }

    /// The counters, with the connection table's counts folded in.
    pub fn counters(&mut self) -> &Counters {
        let counts = self.table.counts();
        self.c.conn_states = counts.per_state;
        self.c.conns_created = counts.created;
        self.c.conns_expired = counts.expired;
        self.c.conns_evicted_embryonic = counts.evicted[Evict::Embryonic as usize];
        self.c.conns_evicted_udp = counts.evicted[Evict::UdpUnreplied as usize];
        self.c.conns_evicted_closing = counts.evicted[Evict::Closing as usize];
        self.c.pressure_episodes = counts.pressure_episodes;
        self.c.pressure_workers = u64::from(self.table.under_pressure());
        &self.c
    }

    /// The counters, for what the caller counts (hand-over failures, write errors).
    pub fn counters_mut(&mut self) -> &mut Counters {
        &mut self.c
    }

    /// Traffic per real server, indexed by its stable id.
    pub fn dest_counters(&self) -> &[DestCounters] {
        &self.dstats
    }

    /// Makes room for the counters of real-server ids below `bound` (on a new snapshot).
    pub fn reserve_dests(&mut self, bound: usize) {
        if self.dstats.len() < bound {
            self.dstats.resize(bound, DestCounters::default());
        }
    }

    /// Whether connection expiry has work left (the worker then polls without waiting).
    pub fn expiry_backlog(&self) -> bool {
        self.table.expiry_backlog(self.now)
    }

    /// Whether frames are held for neighbour resolution.
    pub fn has_held(&self) -> bool {
        !self.held.is_empty()
    }

    /// The neighbour events gathered since the last call (learned senders, wanted next hops),
    /// for the control thread.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, NeighEvent> {
        self.events.drain(..)
    }

    pub(crate) fn event(&mut self, ev: NeighEvent) {
        if self.events.len() < EVENTS_MAX && !self.events.contains(&ev) {
            self.events.push(ev);
        }
    }

    fn set_time(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
        self.now = (now_ms / 1000) as u32;
    }

    /// Timers: expires connections (at most [`EXPIRE_BUDGET`] wheel entries per call), and sends or drops held frames whose next hop the
    /// published neighbour table now resolves or whose wait is over.
    pub fn tick<S: Sink>(&mut self, env: &Env, sink: &mut S) {
        self.set_time(env.now_ms);
        self.table.expire_some(self.now, EXPIRE_BUDGET);
        if self.sp.pending() > 0 {
            self.synproxy_tick(env, sink);
        }
        if !self.held.is_empty() {
            self.release_held(env, sink, None);
        }
    }

    /// Decides the fate of one frame read from `port`: `buf[..len]` holds the virtio-net header
    /// and the Ethernet frame; the rest of `buf` (at least [`MAX_FRAME`] in all) is room for
    /// rewrites that grow it (TOA, IPIP). `redirected` frames were handed over by another
    /// worker and were counted as received there.
    pub fn process<S: Sink>(
        &mut self,
        env: &Env,
        port: usize,
        buf: &mut [u8],
        len: usize,
        redirected: bool,
        sink: &mut S,
    ) -> Verdict {
        self.set_time(env.now_ms);
        if !redirected {
            self.c.rx_frames += 1;
            self.c.rx_bytes += len.saturating_sub(VNET_HDR_LEN) as u64;
        }
        if len < VNET_HDR_LEN {
            return self.malformed(DropReason::TruncatedEthernet);
        }
        let vnet = VnetHdr::parse(&buf[..VNET_HDR_LEN]).unwrap_or_default();
        let frame = &buf[VNET_HDR_LEN..len];
        let pkt = match packet::parse(frame) {
            Ok(p) => p,
            Err(r) => return self.malformed(r),
        };
        let snap = env.snap;
        // One lookup classifies the source (for ARP, the sender's address).
        let source = snap.source_class(pkt.src);
        if pkt.kind != Kind::Arp && source == Source::Vip {
            // Replies of DR/TUN real servers go straight to the client; count any reaching us.
            return self.drop(Drop::VipSourced);
        }
        let Some(info) = snap.ports.get(port) else {
            return self.drop(Drop::NotForUs);
        };
        let dst_mac = [frame[0], frame[1], frame[2], frame[3], frame[4], frame[5]];
        let group = dst_mac[0] & 1 == 1;
        if !group && dst_mac != info.mac {
            return self.drop(Drop::NotForUs);
        }
        if pkt.kind == Kind::Arp {
            // A martian sender is neither learnt nor answered; 0.0.0.0 is an address probe
            // (RFC 5227), answered as before.
            if source != Source::Ordinary && !pkt.src4().is_unspecified() {
                return self.drop(Drop::MartianSource);
            }
            // The host stack resolves its own next hops: it needs the replies to us.
            let verdict = self.arp(env, sink, port, len, buf);
            return if snap.is_local(pkt.dst) && env.host_stack {
                Verdict::Host
            } else {
                verdict
            };
        }
        if env.standby.sync_backup
            && pkt.kind == Kind::Ipv4
            && pkt.proto == packet::PROTO_UDP
            && pkt.dport == env.standby.sync_port
            && (group || snap.is_local(pkt.dst))
            && source == Source::Ordinary
        {
            // An IPVS sync message for the backup sync daemon (the HA thread).
            return Verdict::Vrrp;
        }
        if pkt.proto == modes::wire::vrrp::PROTO_VRRP {
            // Multicast (224.0.0.18, ff02::12) or unicast to us, IPv4 or IPv6 (the parser
            // gives ARP no protocol): the VRRP thread validates it.
            return if env.standby.vrrp && source == Source::Ordinary {
                Verdict::Vrrp
            } else {
                self.drop(Drop::UnsupportedProtocol)
            };
        }
        // An ICMPv6 error quoting a packet this appliance sent to a real server takes the
        // path of ICMP errors below; the rest of ICMPv6 is the host role.
        if pkt.is_icmpv6() && (group || !conn_error(snap, &buf[VNET_HDR_LEN..len], &pkt)) {
            // Neighbour Discovery (to solicited-node groups too) and echo; a solicitation from
            // `::` (duplicate address detection) is the one unspecified source answered.
            if source != Source::Ordinary && !pkt.src.is_unspecified() {
                return self.drop(Drop::MartianSource);
            }
            return self.icmp6(env, sink, port, &buf[VNET_HDR_LEN..len], &pkt, group);
        }
        if group {
            return self.drop(Drop::NotForUs);
        }
        // Martian sources (as the kernel's ip_route_input_slow), then the port's reverse-path
        // filter, before anything creates state or forwards.
        if source != Source::Ordinary {
            return self.drop(Drop::MartianSource);
        }
        let rp_ok = match info.rp_filter {
            RpFilter::Off => true,
            RpFilter::Strict => snap.router.lookup(pkt.src).is_some_and(|r| r.0 == port),
            RpFilter::Loose => snap.router.lookup(pkt.src).is_some(),
        };
        if !rp_ok {
            return self.drop(Drop::RpFilter);
        }
        if !redirected {
            if vnet.is_gso() {
                self.c.rx_gso += 1;
            }
            if vnet.needs_csum() {
                self.c.rx_partial_csum += 1;
            }
        }
        let f = Frame {
            len,
            pkt,
            csum: Csum::from_vnet(&vnet, &pkt),
            vnet,
        };
        if snap.is_vip(pkt.dst) {
            if env.standby.is_down(pkt.dst) {
                return self.drop(Drop::Standby);
            }
            return self.vip(env, sink, port, buf, &f);
        }
        if pkt.is_icmp() || pkt.is_icmpv6() {
            // An ICMP or ICMPv6 error quoting a packet this appliance sent to a real server
            // (NAT: client → RIP; FullNAT: LIP → RIP) belongs to that connection's path.
            let inner = icmp_nat::quoted_tuple(&buf[VNET_HDR_LEN..len], &pkt);
            return match inner {
                Some(t) if !snap.is_local(pkt.dst) || snap.is_lip(t.1) => {
                    self.icmp_error(env, sink, port, buf, &f, t)
                }
                _ if snap.is_local(pkt.dst) => self.local(env, sink, port, buf, &f),
                _ => self.drop(Drop::NoConnection),
            };
        }
        if !snap.is_lip(pkt.dst) && snap.is_local(pkt.dst) {
            return self.local(env, sink, port, buf, &f);
        }
        self.transit(env, sink, port, buf, &f)
    }

    fn malformed(&mut self, r: DropReason) -> Verdict {
        self.c.parse_drops[r as usize] += 1;
        Verdict::Malformed(r)
    }

    pub(crate) fn drop(&mut self, d: Drop) -> Verdict {
        self.c.drop(d);
        Verdict::Drop(d)
    }

    /// Sends a frame through the sink and counts it.
    pub(crate) fn emit<S: Sink>(c: &mut Counters, sink: &mut S, port: usize, frame: &[u8]) -> bool {
        if sink.send(port, frame) {
            c.tx_frames += 1;
            c.tx_bytes += frame.len().saturating_sub(VNET_HDR_LEN) as u64;
            true
        } else {
            c.drop(Drop::TxError);
            false
        }
    }

    /// Sends a locally generated frame of `n` bytes (in `self.tx` after the header room).
    pub(crate) fn send_tx<S: Sink>(&mut self, sink: &mut S, port: usize, n: usize) -> bool {
        self.tx[..VNET_HDR_LEN].fill(0);
        Self::emit(&mut self.c, sink, port, &self.tx[..VNET_HDR_LEN + n])
    }

    /// ARP: learns the sender when the frame concerns us, releases frames held for it, and
    /// answers requests for our addresses, VIPs and local addresses.
    fn arp<S: Sink>(
        &mut self,
        env: &Env,
        sink: &mut S,
        port: usize,
        len: usize,
        buf: &[u8],
    ) -> Verdict {
        let frame = &buf[VNET_HDR_LEN..len];
        let Ok(a) = modes::wire::arp::ArpPacket::new_checked(frame.get(14..).unwrap_or(&[])) else {
            return self.malformed(DropReason::BadArp);
        };
        let (op, spa, sha, tpa) = (a.op(), a.spa(), a.sha(), a.tpa());
        let snap = env.snap;
        let info = &snap.ports[port];
        let (tpa6, spa6) = (IpAddr::V4(tpa), IpAddr::V4(spa));
        let owned =
            info.addresses.iter().any(|c| c.addr == tpa6) || snap.is_vip(tpa6) || snap.is_lip(tpa6);
        let for_us = (owned && !env.standby.is_down(tpa6)) || env.standby.is_floating(port, tpa);
        let on_link = info.addresses.iter().any(|c| c.contains(spa6));
        // Learn the sender when the frame concerns us (a request to us or any reply to us), or
        // refresh an entry we already hold; never from frames for other hosts otherwise.
        if on_link && !spa.is_unspecified() && sha.0[0] & 1 == 0 {
            let known = env.neigh.entry(spa6);
            let fresh = known.is_some_and(|n| {
                n.mac == sha.0 && n.port == port && self.now.saturating_sub(n.confirmed) < 30
            });
            if (for_us || op == 2 || known.is_some()) && !fresh {
                self.event(NeighEvent::Learned {
                    ip: spa6,
                    mac: sha.0,
                    port,
                });
            }
            if (for_us || op == 2) && !self.held.is_empty() {
                self.release_held(env, sink, Some((spa6, port, sha.0)));
            }
        }
        if op == 1 && for_us && spa != tpa {
            if let Some(n) =
                reply::arp_reply(&mut self.tx[VNET_HDR_LEN..], frame, info.mac.into(), tpa)
            {
                if self.send_tx(sink, port, n) {
                    self.c.arp_replies += 1;
                }
                return Verdict::Answer;
            }
        }
        self.drop(Drop::ArpIgnored)
    }

    /// A packet for the appliance's own address: to the host stack when one runs (all but
    /// echo requests), else answered as a host with no listening sockets.
    fn local<S: Sink>(
        &mut self,
        env: &Env,
        sink: &mut S,
        port: usize,
        buf: &[u8],
        f: &Frame,
    ) -> Verdict {
        let pkt = &f.pkt;
        // The host stack (health checks) speaks both families; echo requests to us are
        // answered here (ICMPv6 never comes this way: `icmp6` has it).
        if env.host_stack {
            let echo = pkt.kind == Kind::Ipv4
                && pkt.is_icmp()
                && buf.get(VNET_HDR_LEN + pkt.l4).copied() == Some(8);
            if !echo {
                return Verdict::Host;
            }
        }
        self.host(env, sink, port, buf, f)
    }

    /// Answers as a host with no listening sockets: echo replies, RSTs, port unreachables.
    fn host<S: Sink>(
        &mut self,
        env: &Env,
        sink: &mut S,
        port: usize,
        buf: &[u8],
        f: &Frame,
    ) -> Verdict {
        let frame = &buf[VNET_HDR_LEN..f.len];
        let mac = env.snap.ports[port].mac.into();
        match f.pkt.proto {
            1 => match reply::icmp_echo_reply(&mut self.tx[VNET_HDR_LEN..], frame, &f.pkt, mac) {
                Some(n) => {
                    if self.send_tx(sink, port, n) {
                        self.c.echo_replies += 1;
                    }
                    Verdict::Answer
                }
                None => self.drop(Drop::IcmpIgnored),
            },
            6 | 17 => self.refuse(env, sink, port, frame, f, Drop::NoService),
            _ => self.drop(Drop::UnsupportedProtocol),
        }
    }

    /// Refuses a TCP segment with a RST (none for a RST), a UDP datagram with ICMP port
    /// unreachable from the address that was asked; counts `why`.
    fn refuse<S: Sink>(
        &mut self,
        env: &Env,
        sink: &mut S,
        port: usize,
        frame: &[u8],
        f: &Frame,
        why: Drop,
    ) -> Verdict {
        let pkt = &f.pkt;
        let mac = env.snap.ports[port].mac.into();
        if pkt.proto == 6 {
            if pkt.tcp_flags & flags::RST == 0 {
                if let Some(n) = reply::tcp_rst(&mut self.tx[VNET_HDR_LEN..], frame, pkt, mac) {
                    if self.send_tx(sink, port, n) {
                        self.c.rst_sent += 1;
                    }
                }
            }
        } else if self.icmp_allowed(env, pkt.src) {
            let out = &mut self.tx[VNET_HDR_LEN..];
            if let Some(n) = reply::icmp_unreachable(out, frame, pkt, f.csum, mac, pkt.dst, 3) {
                if self.send_tx(sink, port, n) {
                    self.c.icmp_errors_sent += 1;
                }
            }
        }
        self.drop(why)
    }

    /// Whether an ICMP error to `dst` is within the `[defence]` limits now (every ICMP error
    /// the pipeline sends asks first; echo replies do not, as the kernel's default
    /// `icmp_ratemask`); counts `icmp_ratelimited` when not.
    pub(crate) fn icmp_allowed(&mut self, env: &Env, dst: IpAddr) -> bool {
        if self.icmp.allow(&env.snap.icmp_limits, dst, self.now_ms) {
            true
        } else {
            self.c.icmp_ratelimited += 1;
            false
        }
    }

    /// The service's access control on a new connection from `src` (only called when the
    /// service has some): the deny and allow lists, `conn_limit`, then `conn_rate` (a token is
    /// taken only from a connection the rest admits). The refusal's reason when refused.
    fn admit(&mut self, svc: &Service, src: IpAddr) -> Result<(), Drop> {
        let a = &svc.access;
        a.check_lists(src)?;
        if a.conn_limit > 0 {
            let open: u64 = svc.dests.iter().map(|d| u64::from(d.open_conns())).sum();
            if open >= u64::from(a.conn_limit) {
                return Err(Drop::ConnLimit);
            }
        }
        if a.conn_rate > 0 {
            let key = crate::datapath::service::svc_key(svc.proto.number(), svc.vip, svc.vport);
            let mask = if src.is_ipv6() {
                a.rate_mask6
            } else {
                a.rate_mask
            };
            let prefix = crate::config::ip_bits(src) & mask;
            if !self
                .rates
                .admit(key.digest(), prefix, a.conn_rate, self.now_ms)
            {
                return Err(Drop::RateLimited);
            }
        }
        Ok(())
    }

    /// The owner of a frame, when it is not this worker.
    #[inline]
    fn elsewhere(&mut self, owner: usize) -> Option<Verdict> {
        (owner != self.id).then_some(Verdict::Redirect { owner })
    }

    /// With `expire_nodest_conn`, ends a connection whose real server was deleted, at its next
    /// packet (which is dropped).
    #[inline]
    fn dest_gone(&mut self, env: &Env, slot: u32) -> Option<Verdict> {
        if !env.expire_nodest || self.table.get(slot).dest.is_available() {
            return None;
        }
        self.table.remove(slot);
        Some(self.drop(Drop::DestRemoved))
    }

    /// A packet addressed to a VIP: a client's packet of a connection, or a new flow.
    fn vip<S: Sink>(
        &mut self,
        env: &Env,
        sink: &mut S,
        port: usize,
        buf: &mut [u8],
        f: &Frame,
    ) -> Verdict {
        let pkt = f.pkt;
        match pkt.proto {
            6 | 17 => {}
            1 => return self.host(env, sink, port, buf, f),
            _ => return self.drop(Drop::UnsupportedProtocol),
        }
        if let Some(v) = self.elsewhere(owner_of(pkt.src, pkt.sport, self.workers)) {
            return v;
        }
        if let Some(v) = self.ttl_expired(env, sink, port, buf, f) {
            return v;
        }
        let key = FlowKey::new(pkt.proto, pkt.src, pkt.sport, pkt.dst, pkt.dport);
        let syn_only =
            pkt.proto == 6 && pkt.tcp_flags & (flags::SYN | flags::ACK | flags::RST) == flags::SYN;
        let mut found = self.table.lookup(&key);
        if pkt.proto == 6 {
            // SYNPROXY: cookies for SYNs, the ACK check (also replacing a closing entry), the
            // pending handshake's store.
            let hook = match found {
                None => self.synproxy_new(env, sink, port, buf, f, None),
                Some(fd) => {
                    let c = self.table.get(fd.slot);
                    let reusable = Self::synproxy_reusable(c.state);
                    let held = if c.synproxy() {
                        self.synproxy_hold(buf, f, fd.slot)
                    } else {
                        None
                    };
                    if held.is_some() {
                        held
                    } else if reusable {
                        self.synproxy_new(env, sink, port, buf, f, Some(fd.slot))
                    } else {
                        None
                    }
                }
            };
            if let Some(v) = hook {
                return v;
            }
        }
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
            None => match self.new_conn(env, sink, port, buf, f, syn_only) {
                Ok(x) => x,
                Err(v) => return v,
            },
        };
        if let Some(v) = self.dest_gone(env, slot) {
            return v;
        }
        let c = self.table.get(slot);
        let (xmit, daddr, dport) = (c.xmit, c.daddr, c.dport);
        let to = Target::Bound {
            port: usize::from(c.out),
            hop: c.hop,
        };
        // The transmitters side by side; all share the output step.
        let encap = match xmit {
            Xmit::Tun { src } => {
                if pkt.tcp_flags & flags::SYN != 0 {
                    let mtu = env.snap.ports[usize::from(c.out)].mtu;
                    let mss = modes::tun::max_mss(&pkt, mtu);
                    modes::tun::mss_clamp(&mut buf[VNET_HDR_LEN..f.len], &pkt, f.csum, mss);
                }
                Encap::Ipip { src, dst: daddr }
            }
            // NAT64: the IPv4 packet is 20 bytes shorter than the client's.
            Xmit::FullNat {
                lip: IpAddr::V4(_), ..
            } if pkt.kind == Kind::Ipv6 => Encap::Translate { grow: -20 },
            _ => Encap::None,
        };
        let path = match self.output_route(env, sink, port, buf, f, to, encap) {
            Ok(p) => p,
            Err(v) => return v,
        };
        let old = self.table.get(slot).state;
        let c = self.table.on_packet(slot, dir, pkt.tcp_flags, self.now);
        let dest_id = c.dest_id as usize;
        if c.synproxy() {
            self.synproxy_in(buf, f, slot);
        }
        if env.standby.sync_master {
            self.sync_note(slot, old, true, env.standby.sync_refresh);
        }
        if let Some(d) = self.dstats.get_mut(dest_id) {
            d.in_pkts += 1;
            d.in_bytes += u64::from(pkt.ip_total_len);
        }
        self.c.fwd_in += 1;
        match xmit {
            Xmit::Nat => nat::dnat(&mut buf[VNET_HDR_LEN..f.len], &pkt, f.csum, daddr, dport),
            Xmit::Dr | Xmit::Tun { .. } => {}
            Xmit::FullNat { lip, lport, toa } => {
                let mut f = *f;
                if let (IpAddr::V4(l4), IpAddr::V4(d4), Kind::Ipv6) = (lip, daddr, pkt.kind) {
                    // NAT64: the client's IPv6 packet becomes an IPv4 one from LIP:lport.
                    let to = |b: &mut [u8], n, p: &Packet, c, h: &mut VnetHdr| {
                        modes::nat64::to_v4(b, n, p, c, Some(h), (l4, lport), (d4, dport))
                    };
                    if !Self::translate(buf, &mut f, to) {
                        return self.drop(Drop::UnsupportedProtocol);
                    }
                } else {
                    let frame = &mut buf[VNET_HDR_LEN..f.len];
                    modes::fullnat::fnat_in(frame, &pkt, f.csum, lip, lport, daddr, dport);
                }
                if pkt.proto == 6 && toa != Toa::Off {
                    // The option changes the frame's length (and its GSO header).
                    self.fullnat_toa(env, buf, &mut f, slot, toa, syn_only);
                }
                return self.transmit(env, sink, buf, &f, path);
            }
        }
        self.transmit(env, sink, buf, f, path)
    }

    /// Schedules a new connection for a packet to a VIP and binds its transmitter; answers
    /// (or drops) and returns the verdict when it cannot be created.
    fn new_conn<S: Sink>(
        &mut self,
        env: &Env,
        sink: &mut S,
        port: usize,
        buf: &[u8],
        f: &Frame,
        syn_only: bool,
    ) -> Result<(u32, Dir), Verdict> {
        let pkt = &f.pkt;
        let snap = env.snap;
        let frame = &buf[VNET_HDR_LEN..f.len];
        let Some(svc) = snap.service(pkt.proto, pkt.dst, pkt.dport) else {
            return Err(self.refuse(env, sink, port, frame, f, Drop::NoService));
        };
        // Only a SYN starts a TCP connection, unless the service is sloppy (IPVS
        // `sloppy_tcp`: a flow that ECMP moved here mid-stream is scheduled on its next
        // packet and continues, ESTABLISHED after its ACK); a RST never creates one.
        if pkt.proto == 6 && !syn_only && (!svc.sloppy_tcp || pkt.tcp_flags & flags::RST != 0) {
            return Err(self.refuse(env, sink, port, frame, f, Drop::NoConnectionTcp));
        }
        if !svc.access.is_none() {
            if let Err(why) = self.admit(svc, pkt.src) {
                return Err(self.refuse(env, sink, port, frame, f, why));
            }
        }
        // Under table pressure, new connections per client prefix are rate-limited (dropped
        // without an answer: a flood gets nothing back, a real client retransmits).
        if !self.table.admit(pkt.src, self.now_ms) {
            return Err(self.drop(Drop::PrefixRateLimit));
        }
        let input = sched::Input {
            proto: pkt.proto,
            src: pkt.src,
            src_port: pkt.sport,
            dst: pkt.dst,
            dst_port: pkt.dport,
            now_secs: u64::from(self.now),
        };
        let pick = || svc.sched.schedule(&svc.dests, &input);
        let (i, template) = match svc.persistent {
            None => (pick(), None),
            Some(timeout) => {
                let key = TemplateKey {
                    proto: pkt.proto,
                    client: crate::config::ip_from_bits(
                        pkt.src,
                        crate::config::ip_bits(pkt.src) & svc.netmask,
                    ),
                    vaddr: pkt.dst,
                    vport: svc.vport,
                };
                let t = env.templates.get_or_schedule(key, self.now, timeout, || {
                    pick().map(|i| svc.dests[i].clone())
                });
                let i = t.as_ref().and_then(|t| {
                    svc.dests
                        .iter()
                        .position(|d| std::sync::Arc::ptr_eq(d, &t.dest))
                });
                (i, t)
            }
        };
        let Some(i) = i else {
            if let Some(t) = template {
                t.release();
            }
            return Err(self.refuse(env, sink, port, frame, f, Drop::NoRealServer));
        };
        let dest = &svc.dests[i];
        let fwd = svc.forward[i];
        let v6 = pkt.kind == Kind::Ipv6;
        // Only FullNAT crosses families (NAT64: an IPv4 real server behind an IPv6 VIP).
        if dest.addr().is_ipv6() != v6 && !(fwd == Forward::FullNat && v6) {
            if let Some(t) = template {
                t.release();
            }
            return Err(self.drop(Drop::UnsupportedProtocol));
        }
        // The output route to the real server (and a tunnel's source), bound in the
        // connection.
        let daddr = dest.addr();
        let route = snap.router.lookup(daddr).and_then(|(out, hop)| {
            let tun_src = match fwd {
                Forward::Tun => snap.ports[out].source_for_ip(daddr)?,
                _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            };
            Some((daddr, out, hop, tun_src))
        });
        let Some((daddr, out, hop, tun_src)) = route else {
            if let Some(t) = template {
                t.release();
            }
            return Err(self.drop(Drop::NoRoute));
        };
        let toa = match (fwd, svc.toa, svc.toa_on_syn) {
            (Forward::FullNat, true, false) => Toa::OnAck,
            (Forward::FullNat, true, true) => Toa::OnSynAndAck,
            _ => Toa::Off,
        };
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
            out: out as u8,
            hop,
            tun_src,
            toa,
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
                if env.standby.sync_master {
                    let c = self.table.get(s);
                    if let Some(t) = c.template.clone() {
                        self.sync_template(&t, c.xmit);
                    }
                }
                Ok((s, dir))
            }
            Err(InsertError::Full) => Err(self.drop(Drop::ConnTableFull)),
            Err(InsertError::NoLocalPort) => {
                Err(self.refuse(env, sink, port, frame, f, Drop::NoLocalPort))
            }
        }
    }

    /// FullNAT's TOA: clamps the SYN's MSS to leave room for the option (and inserts it there
    /// when the service asks), and inserts it into the first ACK after the handshake. Updates
    /// the frame's length and header in `f`.
    fn fullnat_toa(
        &mut self,
        env: &Env,
        buf: &mut [u8],
        f: &mut Frame,
        slot: u32,
        toa: Toa,
        syn: bool,
    ) {
        let pkt = f.pkt;
        let c = self.table.get(slot);
        let (caddr, cport) = (c.caddr, c.cport);
        let mtu = env.snap.ports[usize::from(c.out)].mtu;
        // IP and TCP headers, and the option: kind 254 (8 bytes) for an IPv4 client, kind 253
        // (20 bytes) for an IPv6 one.
        let (headers, toa_len) = match (pkt.kind, caddr) {
            (Kind::Ipv6, IpAddr::V6(_)) => (60, modes::toa::TOA6_LEN as u32),
            (_, IpAddr::V6(_)) => (40, modes::toa::TOA6_LEN as u32),
            (Kind::Ipv6, IpAddr::V4(_)) => (60, modes::toa::TOA_LEN as u32),
            _ => (40, modes::toa::TOA_LEN as u32),
        };
        if syn {
            let mss = mtu.saturating_sub(headers + toa_len) as u16;
            modes::tun::mss_clamp(&mut buf[VNET_HDR_LEN..f.len], &pkt, f.csum, mss);
            if toa != Toa::OnSynAndAck {
                return;
            }
        } else if pkt.tcp_flags & flags::ACK == 0 {
            return;
        }
        // A frame that is not GSO must still fit the egress MTU with the option.
        let fits = f.vnet.is_gso() || pkt.ip_total_len + toa_len <= mtu;
        let inserted = fits
            && match modes::toa::insert_toa_with(
                &mut buf[VNET_HDR_LEN..],
                f.len - VNET_HDR_LEN,
                &pkt,
                f.csum,
                Some(&mut f.vnet),
                caddr,
                cport,
            ) {
                Ok(n) => {
                    f.vnet.write(&mut buf[..VNET_HDR_LEN]);
                    f.len = VNET_HDR_LEN + n;
                    if let Ok(p) = packet::parse(&buf[VNET_HDR_LEN..f.len]) {
                        f.pkt = p;
                    }
                    self.c.toa_added += 1;
                    true
                }
                Err(_) => false,
            };
        if !inserted {
            self.c.toa_skipped += 1;
        }
        if !syn {
            self.table.get_mut(slot).toa_done();
        }
    }

    /// NAT64's rewrite of the frame in `buf` (`to`: [`modes::nat64::to_v4`] or `to_v6` with the
    /// connection's addresses), then the frame's length, virtio-net header, classification
    /// and checksum kind updated in `f`. False (the frame unchanged) when it cannot be
    /// translated.
    fn translate(
        buf: &mut [u8],
        f: &mut Frame,
        to: impl FnOnce(&mut [u8], usize, &Packet, Csum, &mut VnetHdr) -> Option<usize>,
    ) -> bool {
        let frame = &mut buf[VNET_HDR_LEN..];
        let Some(n) = to(frame, f.len - VNET_HDR_LEN, &f.pkt, f.csum, &mut f.vnet) else {
            return false;
        };
        let Ok(p) = packet::parse(&buf[VNET_HDR_LEN..VNET_HDR_LEN + n]) else {
            return false;
        };
        f.vnet.write(&mut buf[..VNET_HDR_LEN]);
        f.len = VNET_HDR_LEN + n;
        f.pkt = p;
        true
    }

    /// A packet to neither a VIP nor the appliance (or to a FullNAT local address): a NAT or
    /// FullNAT reply, or noise.
    fn transit<S: Sink>(
        &mut self,
        env: &Env,
        sink: &mut S,
        port: usize,
        buf: &mut [u8],
        f: &Frame,
    ) -> Verdict {
        let pkt = f.pkt;
        if pkt.proto != 6 && pkt.proto != 17 {
            return self.drop(Drop::NoConnection);
        }
        // FullNAT local ports encode their worker; NAT replies carry the client as destination.
        let owner = if env.snap.is_lip(pkt.dst) {
            usize::from(pkt.dport) % self.workers
        } else {
            owner_of(pkt.dst, pkt.dport, self.workers)
        };
        if let Some(v) = self.elsewhere(owner) {
            return v;
        }
        if let Some(v) = self.ttl_expired(env, sink, port, buf, f) {
            return v;
        }
        let key = FlowKey::new(pkt.proto, pkt.src, pkt.sport, pkt.dst, pkt.dport);
        let Some(fd) = self.table.lookup(&key).filter(|fd| fd.dir == Dir::Output) else {
            return self.drop(Drop::NoConnection);
        };
        if let Some(v) = self.dest_gone(env, fd.slot) {
            return v;
        }
        let spx = self.table.get(fd.slot).synproxy();
        if spx {
            if let Some(v) = self.synproxy_server(env, sink, buf, f, fd.slot) {
                return v;
            }
        }
        let c = self.table.get(fd.slot);
        let caddr = c.caddr;
        // NAT64: the reply becomes an IPv6 packet, 20 bytes longer than the server's.
        let nat64 = caddr.is_ipv6() && pkt.kind == Kind::Ipv4;
        let encap = if nat64 {
            Encap::Translate { grow: 20 }
        } else {
            Encap::None
        };
        let path = match self.output_route(env, sink, port, buf, f, Target::Lookup(caddr), encap) {
            Ok(p) => p,
            Err(v) => return v,
        };
        let old = self.table.get(fd.slot).state;
        let c = self
            .table
            .on_packet(fd.slot, fd.dir, pkt.tcp_flags, self.now);
        let (vaddr, vport, cport, xmit) = (c.vaddr, c.vport, c.cport, c.xmit);
        if let Some(d) = self.dstats.get_mut(c.dest_id as usize) {
            d.out_pkts += 1;
            d.out_bytes += u64::from(pkt.ip_total_len);
        }
        if env.standby.sync_master {
            self.sync_note(
                fd.slot,
                old,
                fd.dir != Dir::Output,
                env.standby.sync_refresh,
            );
        }
        if spx {
            self.synproxy_out(buf, f, fd.slot);
        }
        if let (true, IpAddr::V6(v6), IpAddr::V6(c6)) = (nat64, vaddr, caddr) {
            let mut f = *f;
            let to = |b: &mut [u8], n, p: &Packet, c, h: &mut VnetHdr| {
                modes::nat64::to_v6(b, n, p, c, Some(h), (v6, vport), (c6, cport))
            };
            if !Self::translate(buf, &mut f, to) {
                return self.drop(Drop::UnsupportedProtocol);
            }
            self.c.fwd_out += 1;
            return self.transmit(env, sink, buf, &f, path);
        }
        let frame = &mut buf[VNET_HDR_LEN..f.len];
        if let Xmit::FullNat { .. } = xmit {
            modes::fullnat::fnat_out(frame, &pkt, f.csum, vaddr, vport, caddr, cport);
        } else {
            nat::snat(frame, &pkt, f.csum, vaddr, vport);
        }
        self.c.fwd_out += 1;
        self.transmit(env, sink, buf, f, path)
    }

    /// An ICMP error from the servers' side about a connection's packet (its quoted tuple
    /// already parsed), translated back to the client as IPVS does: the quoted packet and the
    /// outer source become what the client sent and talked to (VIP:vport, and for FullNAT the
    /// client's own address and port).
    fn icmp_error<S: Sink>(
        &mut self,
        env: &Env,
        sink: &mut S,
        port: usize,
        buf: &mut [u8],
        f: &Frame,
        inner: (u8, IpAddr, u16, IpAddr, u16),
    ) -> Verdict {
        let pkt = f.pkt;
        let (proto, isrc, isport, idst, idport) = inner;
        // The quoted packet went client (or LIP) → real server: its source names the owner.
        let owner = if env.snap.is_lip(isrc) {
            usize::from(isport) % self.workers
        } else {
            owner_of(isrc, isport, self.workers)
        };
        if let Some(v) = self.elsewhere(owner) {
            return v;
        }
        if let Some(v) = self.ttl_expired(env, sink, port, buf, f) {
            return v;
        }
        // The connection's reply key is the quoted packet's tuple reversed.
        let key = FlowKey::new(proto, idst, idport, isrc, isport);
        let Some(fd) = self.table.lookup(&key).filter(|fd| fd.dir == Dir::Output) else {
            return self.drop(Drop::NoConnection);
        };
        let c = self.table.get(fd.slot);
        let (vaddr, vport, caddr, cport, xmit) = (c.vaddr, c.vport, c.caddr, c.cport, c.xmit);
        // NAT64: an ICMP error from the IPv4 side becomes the client's ICMPv6 error: 40 bytes
        // longer, its quote cut to fit the IPv6 minimum MTU.
        let nat64 = caddr.is_ipv6() && pkt.kind == Kind::Ipv4;
        if caddr.is_ipv6() != (pkt.kind == Kind::Ipv6) && !nat64 {
            return self.drop(Drop::IcmpIgnored);
        }
        let encap = if nat64 {
            let len = i64::from(pkt.ip_total_len);
            let grow = ((len + 40).min(modes::wire::icmpv6::MIN_MTU as i64) - len).clamp(-128, 40);
            Encap::Translate { grow: grow as i8 }
        } else {
            Encap::None
        };
        let path = match self.output_route(env, sink, port, buf, f, Target::Lookup(caddr), encap) {
            Ok(p) => p,
            Err(v) => return v,
        };
        if let (true, IpAddr::V6(v6), IpAddr::V6(c6)) = (nat64, vaddr, caddr) {
            let mut f = *f;
            let to = |b: &mut [u8], n, p: &Packet, _, h: &mut VnetHdr| {
                modes::nat64::icmp_to_v6(b, n, p, Some(h), (c6, cport), (v6, vport))
            };
            if !Self::translate(buf, &mut f, to) {
                return self.drop(Drop::IcmpIgnored);
            }
            self.c.fwd_out += 1;
            return self.transmit(env, sink, buf, &f, path);
        }
        let frame = &mut buf[VNET_HDR_LEN..f.len];
        let done = if let Xmit::FullNat { .. } = xmit {
            icmp_nat::rewrite_inner(frame, &pkt, caddr, cport, vaddr, vport)
                && icmp_nat::set_outer_addrs(frame, &pkt, vaddr, caddr)
        } else {
            icmp_nat::nat_out(frame, &pkt, vaddr, vport)
        };
        if !done {
            return self.drop(Drop::NoConnection);
        }
        self.c.fwd_out += 1;
        self.transmit(env, sink, buf, f, path)
    }
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
