//! The one output step every transmitter shares, as IPVS's transmitters share their output
//! route: the route (bound in the connection towards a real server, looked up towards a
//! client), the TTL, the MTU with ICMP fragmentation needed, then, after the mode's rewrite,
//! the TTL decrement, the next hop's MAC or a hold until it is resolved, the tunnel's
//! encapsulation (segmenting GSO super-frames, which virtio-net cannot carry inside IPIP) and
//! the write to the sink.
//!
//! The checks ([`Pipeline::ttl_expired`], [`Pipeline::output_route`]) run before the rewrite so
//! an ICMP error quotes the packet as the client sent it; the sending ([`Pipeline::transmit`])
//! runs after it. Held frames are kept in preallocated buffers with what the last step needs,
//! and released by the sender's ARP frame as soon as the pipeline sees it, or by the published
//! neighbour table on the next tick.

use std::net::IpAddr;

use modes::nat;
use modes::packet;
use modes::reply;

use crate::datapath::neigh::NeighEvent;
use crate::datapath::pipeline::{Env, Frame, Pipeline, Sink, Verdict, HELD_TTL_MS};
use crate::datapath::stats::Drop;
use crate::sys::tap::VNET_HDR_LEN;

/// Where a frame is routed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// The egress port and next hop the connection bound when it was created.
    Bound {
        /// Egress port.
        port: usize,
        /// Next hop.
        hop: IpAddr,
    },
    /// Looked up in the routing table for this destination (replies to clients).
    Lookup(IpAddr),
}

/// The encapsulation applied in the last step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encap {
    /// None: the frame leaves as rewritten.
    None,
    /// IPIP (IPv4) or IPv6-in-IPv6 (IPv6) from `src` to `dst`, of the inner packet's family.
    Ipip {
        /// Outer source.
        src: IpAddr,
        /// Outer destination (the real server).
        dst: IpAddr,
    },
    /// No encapsulation, but the mode's rewrite translates the packet between families
    /// (NAT64): the IP header grows by `grow` bytes (−20 IPv6 → IPv4, +20 IPv4 → IPv6).
    Translate {
        /// The header length change.
        grow: i8,
    },
}

impl Encap {
    /// Bytes the encapsulation (or translation) adds to the IP packet.
    fn overhead(self) -> isize {
        match self {
            Encap::None => 0,
            Encap::Ipip {
                src: IpAddr::V4(_), ..
            } => modes::tun::OVERHEAD as isize,
            Encap::Ipip { .. } => modes::tun::OVERHEAD6 as isize,
            Encap::Translate { grow } => isize::from(grow),
        }
    }
}

/// The route a frame takes, decided before its rewrite.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Path {
    port: usize,
    hop: IpAddr,
    encap: Encap,
}

/// A frame waiting for its next hop.
pub(crate) struct Held {
    buf: Box<[u8]>,
    f: Frame,
    path: Path,
    deadline_ms: u64,
}

impl Held {
    /// The buffer, given back to the spares when the frame is dropped unsent.
    pub(super) fn into_buf(self) -> Box<[u8]> {
        self.buf
    }
}

impl Pipeline {
    /// Answers a packet whose TTL would expire here with ICMP time exceeded (from the ingress
    /// port's address) and drops it; `None` when the TTL allows forwarding.
    #[inline]
    pub(crate) fn ttl_expired<S: Sink>(
        &mut self,
        env: &Env,
        sink: &mut S,
        in_port: usize,
        buf: &[u8],
        f: &Frame,
    ) -> Option<Verdict> {
        if f.pkt.ttl > 1 {
            return None;
        }
        Some(self.time_exceeded(env, sink, in_port, buf, f))
    }

    #[cold]
    fn time_exceeded<S: Sink>(
        &mut self,
        env: &Env,
        sink: &mut S,
        in_port: usize,
        buf: &[u8],
        f: &Frame,
    ) -> Verdict {
        let pkt = &f.pkt;
        let info = &env.snap.ports[in_port];
        let src = info.source_for_ip(pkt.src);
        if let Some(src) = src.filter(|_| self.icmp_allowed(env, pkt.src)) {
            let quote = &buf[VNET_HDR_LEN..f.len];
            if let Some(n) = reply::icmp_time_exceeded(
                &mut self.tx[VNET_HDR_LEN..],
                quote,
                pkt,
                f.csum,
                info.mac.into(),
                src,
            ) {
                if self.send_tx(sink, in_port, n) {
                    self.c.icmp_errors_sent += 1;
                }
            }
        }
        self.drop(Drop::TtlExceeded)
    }

    /// The output route of a frame not yet rewritten: egress port and next hop, and the MTU
    /// check (the IP packet, or one GSO segment, plus the encapsulation must fit the egress
    /// MTU). An oversized packet with DF set gets ICMP fragmentation needed, quoting it as
    /// received, and every oversized packet is dropped (tapvs does not fragment).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn output_route<S: Sink>(
        &mut self,
        env: &Env,
        sink: &mut S,
        in_port: usize,
        buf: &[u8],
        f: &Frame,
        to: Target,
        encap: Encap,
    ) -> Result<Path, Verdict> {
        let (port, hop) = match to {
            Target::Bound { port, hop } => (port, hop),
            Target::Lookup(dst) => match env.snap.router.lookup(dst) {
                Some(r) => r,
                None => return Err(self.drop(Drop::NoRoute)),
            },
        };
        let Some(out) = env.snap.ports.get(port) else {
            return Err(self.drop(Drop::NoRoute));
        };
        let pkt = &f.pkt;
        let mtu = out.mtu as usize;
        let overhead = encap.overhead();
        let ip_len = if f.vnet.is_gso() {
            (pkt.payload_offset() - pkt.l3) + usize::from(f.vnet.gso_size)
        } else {
            pkt.ip_total_len as usize
        };
        let out_len = ip_len.saturating_add_signed(overhead);
        if out_len > mtu {
            let next_mtu = mtu.saturating_add_signed(-overhead);
            return Err(self.frag_needed(env, sink, in_port, buf, f, next_mtu));
        }
        Ok(Path { port, hop, encap })
    }

    /// Answers an oversized packet with ICMP fragmentation needed (`next_mtu`) when DF is
    /// set, quoting it as received, and drops it.
    #[cold]
    fn frag_needed<S: Sink>(
        &mut self,
        env: &Env,
        sink: &mut S,
        in_port: usize,
        buf: &[u8],
        f: &Frame,
        next_mtu: usize,
    ) -> Verdict {
        let pkt = &f.pkt;
        let quote = &buf[VNET_HDR_LEN..f.len];
        // Not rate-limited, as the kernel exempts fragmentation needed from icmp_ratemask and
        // the global budget: path MTU discovery must not stall (and the answer is smaller than
        // the packet that asked for it).
        // IPv6 routers never fragment: every oversized packet gets Packet Too Big.
        if pkt.kind == packet::Kind::Ipv6 || modes::tun::dont_fragment(quote, pkt) {
            let inp = &env.snap.ports[in_port];
            if let Some(src) = inp.source_for_ip(pkt.src) {
                let next_mtu = next_mtu.min(usize::from(u16::MAX)) as u32;
                let (mac, out_buf) = (inp.mac.into(), &mut self.tx[VNET_HDR_LEN..]);
                if let Some(n) =
                    reply::packet_too_big(out_buf, quote, pkt, f.csum, mac, src, next_mtu)
                {
                    if self.send_tx(sink, in_port, n) {
                        self.c.icmp_errors_sent += 1;
                    }
                }
            }
        }
        self.drop(Drop::FragNeeded)
    }

    /// Sends a rewritten frame along its path: decrements the TTL, then writes it with the
    /// next hop's MAC (encapsulated when the path says so), or holds it until the next hop is
    /// resolved.
    #[inline(always)]
    pub(crate) fn transmit<S: Sink>(
        &mut self,
        env: &Env,
        sink: &mut S,
        buf: &mut [u8],
        f: &Frame,
        path: Path,
    ) -> Verdict {
        nat::decrement_ttl(&mut buf[VNET_HDR_LEN..f.len], &f.pkt);
        match env.neigh.get(path.hop, path.port) {
            Some(mac) => {
                let src = env.snap.ports[path.port].mac;
                self.finish(sink, buf, f, path, src, mac);
                Verdict::Transmit {
                    port: path.port,
                    hop: path.hop,
                }
            }
            None => self.hold(buf, *f, path),
        }
    }

    /// The last step: MACs and write, or for a tunnel [`Pipeline::finish_tunnel`].
    #[inline(always)]
    fn finish<S: Sink>(
        &mut self,
        sink: &mut S,
        buf: &mut [u8],
        f: &Frame,
        path: Path,
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
    ) {
        let Encap::Ipip { src, dst } = path.encap else {
            // Not a tunnel (a translation was applied by the mode's rewrite).
            nat::set_macs(
                &mut buf[VNET_HDR_LEN..f.len],
                src_mac.into(),
                dst_mac.into(),
            );
            Self::emit(&mut self.c, sink, path.port, &buf[..f.len]);
            return;
        };
        self.finish_tunnel(sink, buf, f, path.port, (src, dst), (src_mac, dst_mac));
    }

    /// The last step of a tunnel: the IPIP or IPv6-in-IPv6 header (segmenting a GSO
    /// super-frame first, completing a partial checksum), MACs, write.
    #[inline(never)]
    fn finish_tunnel<S: Sink>(
        &mut self,
        sink: &mut S,
        buf: &mut [u8],
        f: &Frame,
        port: usize,
        (src, dst): (IpAddr, IpAddr),
        (src_mac, dst_mac): ([u8; 6], [u8; 6]),
    ) {
        let (src_mac, dst_mac) = (src_mac.into(), dst_mac.into());
        let len = f.len;
        // The inner TTL was decremented already; the outer header carries the same.
        let ttl = f.pkt.ttl.saturating_sub(1);
        if f.vnet.is_gso() {
            let mut seg = std::mem::take(&mut self.seg);
            let mut enc = std::mem::take(&mut self.enc);
            let c = &mut self.c;
            let frame = &buf[VNET_HDR_LEN..len];
            let each = |s: &[u8]| {
                let Ok(sp) = packet::parse(s) else { return };
                enc[..VNET_HDR_LEN].fill(0);
                enc[VNET_HDR_LEN..VNET_HDR_LEN + s.len()].copy_from_slice(s);
                let room = &mut enc[VNET_HDR_LEN..];
                let Some(m) = modes::tun::encapsulate(room, s.len(), &sp, src, dst, ttl) else {
                    return;
                };
                nat::set_macs(&mut enc[VNET_HDR_LEN..VNET_HDR_LEN + m], src_mac, dst_mac);
                Self::emit(c, sink, port, &enc[..VNET_HDR_LEN + m]);
            };
            let n = if f.pkt.kind == packet::Kind::Ipv6 {
                modes::gso::segment_tcp6(frame, &f.vnet, &mut seg, each)
            } else {
                modes::gso::segment_tcp4(frame, &f.vnet, &f.pkt, &mut seg, each)
            };
            self.seg = seg;
            self.enc = enc;
            self.c.segments += n.unwrap_or(0) as u64;
            return;
        }
        if f.vnet.needs_csum() {
            let (start, off) = (
                usize::from(f.vnet.csum_start),
                usize::from(f.vnet.csum_offset),
            );
            modes::offload::complete_partial(&mut buf[VNET_HDR_LEN..len], start, off);
        }
        let room = &mut buf[VNET_HDR_LEN..];
        let Some(m) = modes::tun::encapsulate(room, len - VNET_HDR_LEN, &f.pkt, src, dst, ttl)
        else {
            self.c.drop(Drop::FragNeeded);
            return;
        };
        buf[..VNET_HDR_LEN].fill(0);
        nat::set_macs(&mut buf[VNET_HDR_LEN..VNET_HDR_LEN + m], src_mac, dst_mac);
        Self::emit(&mut self.c, sink, port, &buf[..VNET_HDR_LEN + m]);
    }

    /// Keeps a rewritten frame until its next hop is resolved (or the wait ends) and asks the
    /// control thread to resolve it.
    fn hold(&mut self, buf: &[u8], f: Frame, path: Path) -> Verdict {
        self.event(NeighEvent::Wanted {
            ip: path.hop,
            port: path.port,
        });
        let Some(mut b) = self.spare.pop() else {
            return self.drop(Drop::NeighUnresolved);
        };
        b[..f.len].copy_from_slice(&buf[..f.len]);
        self.held.push(Held {
            buf: b,
            f,
            path,
            deadline_ms: self.now_ms + HELD_TTL_MS,
        });
        Verdict::Hold {
            port: path.port,
            hop: path.hop,
        }
    }

    /// Sends the held frames whose next hop is now known, from an ARP frame just seen
    /// (`seen`: address, port, MAC) or else the published neighbour table, and drops those
    /// whose wait is over.
    pub(crate) fn release_held<S: Sink>(
        &mut self,
        env: &Env,
        sink: &mut S,
        seen: Option<(IpAddr, usize, [u8; 6])>,
    ) {
        let mut i = 0;
        while i < self.held.len() {
            let h = &self.held[i];
            let mac = match seen {
                Some((ip, port, mac)) => (h.path.hop == ip && h.path.port == port).then_some(mac),
                None => env.neigh.get(h.path.hop, h.path.port),
            };
            if let Some(mac) = mac {
                let mut h = self.held.remove(i);
                let src = env.snap.ports.get(h.path.port).map(|p| p.mac);
                match src {
                    Some(src) => self.finish(sink, &mut h.buf, &h.f, h.path, src, mac),
                    None => self.c.drop(Drop::NoRoute),
                }
                self.spare.push(h.buf);
            } else if seen.is_none() && self.now_ms >= h.deadline_ms {
                let h = self.held.remove(i);
                self.c.drop(Drop::NeighUnresolved);
                self.spare.push(h.buf);
            } else {
                i += 1;
            }
        }
    }
}
