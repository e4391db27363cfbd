//! SYNPROXY in the pipeline (a service's `synproxy = true`, tapvsadm `-j enable`; NAT and
//! FullNAT only). The byte work is `modes::synproxy`; this owns the per-worker state and the
//! hooks in [`Pipeline::vip`] (client side) and [`Pipeline::transit`] (server side):
//!
//! - A SYN to such a service with no connection is answered with a syncookie SYN/ACK from
//!   the pipeline's `tx` buffer. Nothing is created.
//! - A client ACK with no connection (or hitting one in TIME_WAIT/CLOSE: reuse) is checked
//!   against the cookie. A valid one takes a handshake store from the worker's pool, schedules
//!   a real server ([`Pipeline::new_conn`]), marks the connection `SYNPROXY` and keeps the ACK
//!   in the store; the SYN built from it (client ISN, options from the cookie) is run through
//!   [`Pipeline::process`] as if the client had sent it, so DNAT/FullNAT, MSS clamping and
//!   the output step are the usual ones. An invalid one is refused with a RST and counted
//!   (`synproxy_ack_bad`).
//! - While the server's answer is pending, client segments with data or FIN are stored (at
//!   most [`STORE_FRAMES`] frames, [`STORE_BYTES`] bytes per handshake), pure duplicate ACKs
//!   dropped (beyond [`SYNPROXY_DUP_ACKS`] as an ACK storm), a RST ends the connection. The
//!   SYN is retransmitted from [`Pipeline::tick`] every [`SYN_RETRY_MS`], [`SYN_RETRIES`]
//!   times, then the connection is given up.
//! - The server's SYN/ACK fixes the deltas (sequence: server ISN − cookie; timestamps: its
//!   TSval − the SYN/ACK's) and is not forwarded; the stored frames are run through
//!   [`Pipeline::process`] again, so the stored ACK completes the server's handshake (carrying
//!   TOA in FullNAT). A server RST instead is forwarded with its sequence number made the
//!   client's (cookie + 1).
//! - From then on every packet of the connection is shifted: server → client seq −= delta,
//!   TSval −= ts delta, window rescaled to the scale offered to the client; client → server
//!   ack, SACK blocks += delta, TSecr += ts delta.
//!
//! Per-connection data lives in a side store indexed by slot, grown when a SYNPROXY
//! connection is created and read only for connections with the `SYNPROXY` bit; handshake
//! stores come from a pool allocated with the pipeline. No allocation per packet.

use modes::synproxy::{self as sp, Secret};

use super::{Env, Frame, Pipeline, Sink, Verdict};
use crate::datapath::stats::Drop;
use crate::datapath::tcp_state::{flags, Dir, State};
use crate::sys::tap::{MAX_FRAME, VNET_HDR_LEN};

/// Pure duplicate ACKs a pending handshake drops before counting an ACK storm (DPVS
/// `dup_ack_thresh`).
pub const SYNPROXY_DUP_ACKS: u16 = 10;
/// Client frames one handshake stores (DPVS `skb_store_thresh`).
pub const STORE_FRAMES: usize = 3;
/// Bytes (virtio-net headers included) one handshake stores.
pub const STORE_BYTES: usize = 4096;
/// Handshakes one worker can have pending at once.
pub const HANDSHAKES: usize = 256;
/// Retransmissions of the SYN to the real server.
pub const SYN_RETRIES: u8 = 3;
/// Milliseconds between SYN retransmissions.
pub const SYN_RETRY_MS: u64 = 1000;
/// TTL of the SYN/ACKs sent to clients (DPVS `synack_ttl`).
const SYNACK_TTL: u8 = 63;
/// No handshake store.
const NO_HS: u16 = u16::MAX;

/// One SYNPROXY connection's shifts.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SpConn {
    /// Server ISN − cookie.
    delta: u32,
    /// Server TSval − the SYN/ACK's TSval.
    ts_delta: u32,
    /// The server's window scale, when the client was offered window scaling.
    rescale: Option<u8>,
    /// The cookie (the client's view of the server's ISN).
    cookie_isn: u32,
    /// The client's ISN.
    client_isn: u32,
    /// The handshake store while the server's SYN/ACK is pending, else [`NO_HS`].
    hs: u16,
}

/// A pending handshake: the connection, the stored client frames, the SYN's retries.
struct Pending {
    slot: u32,
    gen: u32,
    /// The port the client's frames came in on.
    port: usize,
    /// What the cookie told.
    hs: sp::Handshake,
    /// When the SYN was last sent (ms).
    sent_ms: u64,
    tries: u8,
    dup_acks: u16,
    /// Stored frames: (offset, length) in `buf`, virtio-net header included.
    frames: [(u16, u16); STORE_FRAMES],
    n: usize,
    used: usize,
    buf: Box<[u8]>,
}

/// One worker's SYNPROXY state.
pub(crate) struct Synproxy {
    secret: Secret,
    conns: Vec<SpConn>,
    pool: Vec<Pending>,
    free: Vec<u16>,
    active: Vec<u16>,
    scratch: Box<[u8]>,
    /// The SYN to a real server is being run through the pipeline (the pending hook lets it
    /// pass).
    injecting: bool,
}

impl Synproxy {
    /// The state of a new pipeline: a random key, [`HANDSHAKES`] stores.
    pub(crate) fn new() -> Synproxy {
        use std::hash::BuildHasher;
        let s = foldhash::fast::RandomState::default();
        Synproxy {
            secret: Secret {
                k0: s.hash_one(0x5359_4e50_524f_5859_u64),
                k1: s.hash_one(0x636f_6f6b_6965_u64),
            },
            conns: Vec::new(),
            pool: (0..HANDSHAKES)
                .map(|_| Pending {
                    slot: 0,
                    gen: 0,
                    port: 0,
                    hs: sp::Handshake {
                        client_isn: 0,
                        cookie_isn: 0,
                        mss: 0,
                        sack: false,
                        wscale: None,
                        ts: None,
                    },
                    sent_ms: 0,
                    tries: 0,
                    dup_acks: 0,
                    frames: [(0, 0); STORE_FRAMES],
                    n: 0,
                    used: 0,
                    buf: vec![0u8; STORE_BYTES].into_boxed_slice(),
                })
                .collect(),
            free: (0..HANDSHAKES as u16).rev().collect(),
            active: Vec::with_capacity(HANDSHAKES),
            scratch: vec![0u8; MAX_FRAME].into_boxed_slice(),
            injecting: false,
        }
    }

    /// Back to the state of a new one (no deltas, every handshake store free), keeping the
    /// stores and the key; for [`Pipeline::reset`].
    pub(crate) fn reset(&mut self) {
        self.conns.clear();
        self.active.clear();
        self.free.clear();
        self.free.extend((0..HANDSHAKES as u16).rev());
        self.injecting = false;
    }

    /// Handshakes pending now.
    pub(crate) fn pending(&self) -> usize {
        self.active.len()
    }

    fn release(&mut self, i: u16) {
        if let Some(at) = self.active.iter().position(|&a| a == i) {
            self.active.swap_remove(at);
            self.free.push(i);
        }
    }

    /// Stores a client frame in handshake `i`; false when it does not fit.
    fn store(&mut self, i: u16, frame: &[u8]) -> bool {
        let Some(p) = self.pool.get_mut(usize::from(i)) else {
            return false;
        };
        if p.n >= STORE_FRAMES || p.used + frame.len() > STORE_BYTES {
            return false;
        }
        p.buf[p.used..p.used + frame.len()].copy_from_slice(frame);
        p.frames[p.n] = (p.used as u16, frame.len() as u16);
        p.n += 1;
        p.used += frame.len();
        true
    }
}

impl Pipeline {
    /// The side-store entry of SYNPROXY connection `slot`.
    fn sp_conn(&mut self, slot: u32) -> &mut SpConn {
        let i = slot as usize;
        if self.sp.conns.len() <= i {
            // Grown when a connection is created (never for a packet of a known one).
            self.sp.conns.resize(i + 1, SpConn::default());
        }
        &mut self.sp.conns[i]
    }

    /// Client side, no connection (or one in TIME_WAIT/CLOSE, `reuse`, which a SYN leaves in
    /// place): a SYN to a SYNPROXY service gets a cookie; an ACK is checked and, when valid,
    /// opens the connection to a real server (replacing `reuse`). `None`: not SYNPROXY's (the
    /// usual path goes on).
    pub(super) fn synproxy_new<S: Sink>(
        &mut self,
        env: &Env,
        sink: &mut S,
        port: usize,
        buf: &mut [u8],
        f: &Frame,
        reuse: Option<u32>,
    ) -> Option<Verdict> {
        let pkt = f.pkt;
        let svc = env.snap.service(pkt.proto, pkt.dst, pkt.dport)?;
        if !svc.synproxy {
            return None;
        }
        let fl = pkt.tcp_flags & (flags::SYN | flags::ACK | flags::RST);
        let frame = &buf[VNET_HDR_LEN..f.len];
        if fl == flags::SYN {
            // The deny and allow lists refuse before any cookie is sent, as DPVS checks its
            // blacklist before the SYN proxy (the limits are checked at the ACK, in `new_conn`).
            if let Err(why) = svc.access.check_lists(pkt.src) {
                return Some(self.refuse(env, sink, port, frame, f, why));
            }
            let info = &env.snap.ports[port];
            let fullnat_toa = svc.toa && svc.forward.contains(&modes::Forward::FullNat);
            let mss = info
                .mtu
                .saturating_sub(40 + if fullnat_toa { 8 } else { 0 })
                .min(u32::from(u16::MAX)) as u16;
            let p = sp::SynAckParams {
                mac: info.mac.into(),
                mss,
                ttl: SYNACK_TTL,
                now_ms: self.now_ms,
            };
            return Some(
                match sp::answer_syn(
                    &mut self.tx[VNET_HDR_LEN..],
                    frame,
                    &pkt,
                    &self.sp.secret,
                    &p,
                ) {
                    Some((n, _)) => {
                        if self.send_tx(sink, port, n) {
                            self.c.synproxy_syn_cookies_sent += 1;
                        }
                        Verdict::Answer
                    }
                    None => self.drop(Drop::NoService),
                },
            );
        }
        if fl != flags::ACK {
            return None;
        }
        let Some(hs) = sp::check_ack(frame, &pkt, &self.sp.secret, self.now_ms) else {
            // A stray segment hitting a closing connection is that connection's.
            if reuse.is_some() {
                return None;
            }
            return Some(self.refuse(env, sink, port, frame, f, Drop::SynproxyAckBad));
        };
        let Some(&i) = self.sp.free.last() else {
            return Some(self.drop(Drop::SynproxyPoolFull));
        };
        if let Some(old) = reuse {
            self.table.remove(old);
            self.c.synproxy_reused += 1;
        }
        let (slot, _) = match self.new_conn(env, sink, port, buf, f, true) {
            Ok(x) => x,
            Err(v) => return Some(v),
        };
        self.c.synproxy_ack_valid += 1;
        self.sp.free.pop();
        self.sp.active.push(i);
        let c = self.table.get_mut(slot);
        c.set_synproxy();
        let gen = c.generation();
        *self.sp_conn(slot) = SpConn {
            cookie_isn: hs.cookie_isn,
            client_isn: hs.client_isn,
            hs: i,
            ..SpConn::default()
        };
        let now_ms = self.now_ms;
        if let Some(p) = self.sp.pool.get_mut(usize::from(i)) {
            p.slot = slot;
            p.gen = gen;
            p.port = port;
            p.hs = hs;
            p.sent_ms = now_ms;
            p.tries = 0;
            p.dup_acks = 0;
            p.n = 0;
            p.used = 0;
        }
        self.sp.store(i, &buf[..f.len]);
        Some(self.synproxy_send_syn(env, sink, i))
    }

    /// Builds the SYN of handshake `i` from its stored ACK and runs it through the pipeline.
    fn synproxy_send_syn<S: Sink>(&mut self, env: &Env, sink: &mut S, i: u16) -> Verdict {
        let mut scratch = std::mem::take(&mut self.sp.scratch);
        if scratch.len() < MAX_FRAME {
            // Re-entered while stored frames are being released (the scratch buffer is in
            // use): a released frame may not start another handshake.
            self.sp.scratch = scratch;
            return self.drop(Drop::SynproxyPending);
        }
        let Some(p) = self.sp.pool.get(usize::from(i)) else {
            self.sp.scratch = scratch;
            return self.drop(Drop::SynproxyPoolFull);
        };
        let (off, len) = (usize::from(p.frames[0].0), usize::from(p.frames[0].1));
        let stored = &p.buf[off..off + len];
        let port = p.port;
        let n = modes::packet::parse(&stored[VNET_HDR_LEN..])
            .ok()
            .and_then(|pkt| {
                sp::ack_to_syn(
                    &mut scratch[VNET_HDR_LEN..],
                    &stored[VNET_HDR_LEN..],
                    &pkt,
                    &p.hs,
                )
            });
        let v = match n {
            Some(n) => {
                scratch[..VNET_HDR_LEN].fill(0);
                self.c.synproxy_syns_sent += 1;
                self.sp.injecting = true;
                let v = self.process(env, port, &mut scratch, VNET_HDR_LEN + n, true, sink);
                self.sp.injecting = false;
                v
            }
            None => self.drop(Drop::NoConnection),
        };
        self.sp.scratch = scratch;
        v
    }

    /// Client side, a SYNPROXY connection whose server handshake is pending: stores or drops
    /// the frame. `None` once the connection is open (or for the SYN being injected).
    pub(super) fn synproxy_hold(&mut self, buf: &[u8], f: &Frame, slot: u32) -> Option<Verdict> {
        if self.sp.injecting {
            return None;
        }
        let i = self.sp.conns.get(slot as usize)?.hs;
        if i == NO_HS {
            return None;
        }
        let pkt = f.pkt;
        if pkt.tcp_flags & flags::RST != 0 {
            self.sp.release(i);
            self.sp_conn(slot).hs = NO_HS;
            self.table.remove(slot);
            return Some(self.drop(Drop::SynproxyPending));
        }
        let pure_ack = pkt.payload_len == 0 && pkt.tcp_flags & (flags::SYN | flags::FIN) == 0;
        if pure_ack || pkt.tcp_flags & flags::SYN != 0 {
            let p = self.sp.pool.get_mut(usize::from(i))?;
            p.dup_acks = p.dup_acks.saturating_add(1);
            return Some(if p.dup_acks > SYNPROXY_DUP_ACKS {
                self.drop(Drop::SynproxyAckStorm)
            } else {
                self.drop(Drop::SynproxyPending)
            });
        }
        if self.sp.store(i, &buf[..f.len]) {
            let c = self.table.get(slot);
            Some(Verdict::Hold {
                port: usize::from(c.out),
                hop: c.hop,
            })
        } else {
            Some(self.drop(Drop::SynproxyStoreFull))
        }
    }

    /// Client → server shift of an open SYNPROXY connection (before DNAT/FullNAT).
    #[inline]
    pub(super) fn synproxy_in(&mut self, buf: &mut [u8], f: &Frame, slot: u32) {
        if let Some(s) = self.sp.conns.get(slot as usize) {
            let (d, t) = (s.delta, s.ts_delta);
            sp::shift_client(&mut buf[VNET_HDR_LEN..f.len], &f.pkt, f.csum, d, t);
        }
    }

    /// Server side of a SYNPROXY connection before the usual path: the server's SYN/ACK
    /// completes the handshake (stored frames released, `Some`), a RST during it gets the
    /// client's sequence number, anything else during it is dropped. `None`: go on (and
    /// shift with [`Pipeline::synproxy_out`]).
    pub(super) fn synproxy_server<S: Sink>(
        &mut self,
        env: &Env,
        sink: &mut S,
        buf: &[u8],
        f: &Frame,
        slot: u32,
    ) -> Option<Verdict> {
        let s = *self.sp.conns.get(slot as usize)?;
        if s.hs == NO_HS {
            return None;
        }
        let pkt = f.pkt;
        let frame = &buf[VNET_HDR_LEN..f.len];
        let seq = frame
            .get(pkt.l4 + 4..pkt.l4 + 8)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        if pkt.tcp_flags & flags::RST != 0 {
            // The client knows the server's side as the cookie: seq = cookie + 1.
            self.sp.release(s.hs);
            let e = self.sp_conn(slot);
            e.hs = NO_HS;
            e.delta = seq.wrapping_sub(s.cookie_isn.wrapping_add(1));
            self.c.synproxy_server_rst += 1;
            return None;
        }
        let Some(sa) = sp::server_syn_ack(frame, &pkt) else {
            return Some(self.drop(Drop::SynproxyPending));
        };
        if sa.ack != s.client_isn.wrapping_add(1) {
            return Some(self.drop(Drop::NoConnection));
        }
        let p = self.sp.pool.get(usize::from(s.hs))?;
        let (hs, port, n, frames) = (p.hs, p.port, p.n, p.frames);
        let ts_delta = match (sa.tsval, hs.ts) {
            (Some(srv), Some((_, ours))) => srv.wrapping_sub(ours),
            _ => 0,
        };
        {
            let e = self.sp_conn(slot);
            e.delta = sa.isn.wrapping_sub(s.cookie_isn);
            e.ts_delta = ts_delta;
            e.rescale = hs.wscale.map(|_| sa.wscale);
            e.hs = NO_HS;
        }
        self.table
            .on_packet(slot, Dir::Output, pkt.tcp_flags, self.now);
        self.c.synproxy_established += 1;
        // Release the stored frames through the usual client path, now shifted.
        let mut scratch = std::mem::take(&mut self.sp.scratch);
        for &(off, len) in frames.iter().take(n) {
            let (off, len) = (usize::from(off), usize::from(len));
            let Some(src) = self
                .sp
                .pool
                .get(usize::from(s.hs))
                .and_then(|p| p.buf.get(off..off + len))
            else {
                continue;
            };
            // The scratch buffer is empty when this runs re-entered (a released frame's path
            // led here again): nothing is released then.
            let Some(dst) = scratch.get_mut(..len) else {
                continue;
            };
            dst.copy_from_slice(src);
            self.process(env, port, &mut scratch, len, true, sink);
        }
        self.sp.scratch = scratch;
        self.sp.release(s.hs);
        Some(Verdict::Answer)
    }

    /// Server → client shift of a SYNPROXY connection (before SNAT/FullNAT).
    #[inline]
    pub(super) fn synproxy_out(&mut self, buf: &mut [u8], f: &Frame, slot: u32) {
        if let Some(s) = self.sp.conns.get(slot as usize) {
            let (d, t, r) = (s.delta, s.ts_delta, s.rescale);
            sp::shift_server(&mut buf[VNET_HDR_LEN..f.len], &f.pkt, f.csum, d, t, r);
        }
    }

    /// Timers: retransmits pending SYNs, gives up handshakes after the last try, frees
    /// stores of connections that are gone.
    pub(super) fn synproxy_tick<S: Sink>(&mut self, env: &Env, sink: &mut S) {
        let mut k = 0;
        while k < self.sp.active.len() {
            let i = self.sp.active[k];
            let Some(p) = self.sp.pool.get(usize::from(i)) else {
                k += 1;
                continue;
            };
            let (slot, gen, sent, tries) = (p.slot, p.gen, p.sent_ms, p.tries);
            let live = self.table.is_current(slot, gen)
                && self.sp.conns.get(slot as usize).is_some_and(|s| s.hs == i);
            if !live {
                self.sp.release(i);
                continue;
            }
            if self.now_ms.saturating_sub(sent) < SYN_RETRY_MS {
                k += 1;
                continue;
            }
            if tries >= SYN_RETRIES {
                self.sp.release(i);
                self.sp_conn(slot).hs = NO_HS;
                self.table.remove(slot);
                self.c.synproxy_timeouts += 1;
                continue;
            }
            if let Some(p) = self.sp.pool.get_mut(usize::from(i)) {
                p.tries += 1;
                p.sent_ms = self.now_ms;
            }
            self.c.synproxy_syn_retries += 1;
            self.synproxy_send_syn(env, sink, i);
            k += 1;
        }
    }

    /// Whether a connection in `state` may be replaced by a valid-cookie ACK.
    pub(super) fn synproxy_reusable(state: State) -> bool {
        matches!(state, State::TimeWait | State::Close)
    }
}
