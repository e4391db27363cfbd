//! SYNPROXY (Alibaba LVS, DPVS `-j enable`), the byte-level half: the director answers a
//! client's SYN itself with a syncookie SYN/ACK ([`answer_syn`]), checks the client's ACK
//! against the cookie ([`check_ack`]), turns that ACK into the SYN it sends the real server
//! ([`ack_to_syn`]), reads the server's SYN/ACK ([`server_syn_ack`]), and from then on shifts
//! sequence numbers between the two sequence spaces ([`shift_client`], [`shift_server`]).
//!
//! The cookie (the SYN/ACK's sequence number) is a keyed SipHash-2-4 of the client's tuple,
//! its ISN and a 64-second counter, with the counter's parity and an index into [`MSS_TABLE`]
//! in its low 4 bits: a SYN costs no state. A cookie is accepted for the current and the
//! previous counter. With timestamps the SYN/ACK's TSval carries the client's window scale and
//! SACK permission in its low 6 bits, as Linux syncookies do; without timestamps neither is
//! offered. Shifts keep full checksums valid by RFC 1624 (fields at odd offsets of the segment
//! included); a partial checksum (virtio `NEEDS_CSUM`, GSO super-frames) holds only the
//! pseudo-header sum, which none of these fields enter, so it is left as it is.

use crate::checksum::{delta16, fold};
use crate::nat::Csum;
use crate::packet::{Kind, Packet, PROTO_TCP};
use crate::wire::ethernet::{self, EthernetAddress};
use crate::wire::ipv4::{self, Ipv4Packet};
use crate::wire::tcp::{self, TcpPacket};
use crate::wire::{get_u16, get_u32, get_u8, set_bytes, set_u16, set_u32};
use std::net::Ipv4Addr;

/// The MSS values a cookie can carry (its low 3 bits index this table); the client's MSS is
/// rounded down to the largest entry not above it.
pub const MSS_TABLE: [u16; 8] = [536, 1200, 1300, 1400, 1440, 1452, 1460, 8960];
/// Seconds per cookie counter step; a cookie is valid for the current and the previous step.
pub const COUNTER_SECS: u64 = 64;
/// The window scale offered to clients (the server's own is translated to it).
pub const OUR_WSCALE: u8 = 7;
/// TSval bits that carry the options: window scale (0..=14, 15 = none) and SACK (bit 4).
const TS_OPT_MASK: u32 = 0x3f;
/// TSval option bits: no window scale.
const TS_NO_WSCALE: u32 = 0xf;
/// TSval option bits: SACK permitted.
const TS_SACK: u32 = 0x10;

/// The per-process cookie key (and timestamp offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secret {
    /// SipHash key, first half.
    pub k0: u64,
    /// SipHash key, second half.
    pub k1: u64,
}

#[inline(always)]
fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-2-4 of three 64-bit words (24 bytes).
fn siphash(s: &Secret, words: [u64; 3]) -> u64 {
    let mut v = [
        s.k0 ^ 0x736f_6d65_7073_6575,
        s.k1 ^ 0x646f_7261_6e64_6f6d,
        s.k0 ^ 0x6c79_6765_6e65_7261,
        s.k1 ^ 0x7465_6462_7974_6573,
    ];
    for m in words {
        v[3] ^= m;
        sip_round(&mut v);
        sip_round(&mut v);
        v[0] ^= m;
    }
    let b = 24u64 << 56;
    v[3] ^= b;
    sip_round(&mut v);
    sip_round(&mut v);
    v[0] ^= b;
    v[2] ^= 0xff;
    for _ in 0..4 {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// A client's connection as its SYN names it (client → VIP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    /// Client address.
    pub saddr: Ipv4Addr,
    /// Client port.
    pub sport: u16,
    /// Virtual address.
    pub daddr: Ipv4Addr,
    /// Virtual port.
    pub dport: u16,
}

/// The cookie counter at `now_ms`.
#[inline]
pub fn counter(now_ms: u64) -> u32 {
    (now_ms / 1000 / COUNTER_SECS) as u32
}

/// The cookie for `t` with client ISN `isn`, counter `count` and MSS index `mss_idx` (< 8).
pub fn cookie(s: &Secret, t: &Tuple, isn: u32, count: u32, mss_idx: u8) -> u32 {
    let w0 = (u64::from(u32::from(t.saddr)) << 32) | u64::from(u32::from(t.daddr));
    let w1 = (u64::from(t.sport) << 48) | (u64::from(t.dport) << 32) | u64::from(isn);
    let w2 = (u64::from(count) << 3) | u64::from(mss_idx & 7);
    let h = siphash(s, [w0, w1, w2]) as u32;
    (h & !0xf) | ((count & 1) << 3) | u32::from(mss_idx & 7)
}

/// The MSS index `c` carries if it is a valid cookie for `t` and client ISN `isn` made in the
/// counter step of `now_ms` or the one before.
pub fn check_cookie(s: &Secret, t: &Tuple, isn: u32, c: u32, now_ms: u64) -> Option<u8> {
    let now = counter(now_ms);
    let idx = (c & 7) as u8;
    let count = if now & 1 == (c >> 3) & 1 {
        now
    } else {
        now.wrapping_sub(1)
    };
    (cookie(s, t, isn, count, idx) == c).then_some(idx)
}

/// The index of the largest [`MSS_TABLE`] entry not above `mss` (0 for anything smaller).
pub fn mss_index(mss: u16) -> u8 {
    MSS_TABLE.iter().rposition(|&m| m <= mss).unwrap_or(0) as u8
}

/// TCP options of a segment, as far as SYNPROXY needs them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Opts {
    /// MSS option.
    pub mss: Option<u16>,
    /// SACK permitted.
    pub sack_perm: bool,
    /// Window scale shift.
    pub wscale: Option<u8>,
    /// Timestamps (TSval, TSecr) and the offset of TSval in the options.
    pub ts: Option<(u32, u32, usize)>,
    /// SACK blocks: offset of the first block in the options and the number of blocks.
    pub sack: Option<(usize, usize)>,
}

/// Reads the options bytes `opts` (after the 20-byte header); a malformed list ends the walk.
pub fn options(opts: &[u8]) -> Opts {
    let mut o = Opts::default();
    let mut i = 0;
    while let Some(&k) = opts.get(i) {
        match k {
            tcp::OPT_END => break,
            tcp::OPT_NOP => i += 1,
            _ => {
                let len = usize::from(get_u8(opts, i + 1));
                if len < 2 || i + len > opts.len() {
                    break;
                }
                match (k, len) {
                    (tcp::OPT_MSS, 4) => o.mss = Some(get_u16(opts, i + 2)),
                    (tcp::OPT_SACK_PERMITTED, 2) => o.sack_perm = true,
                    (tcp::OPT_WINDOW_SCALE, 3) => o.wscale = Some(get_u8(opts, i + 2).min(14)),
                    (tcp::OPT_TIMESTAMPS, 10) => {
                        o.ts = Some((get_u32(opts, i + 2), get_u32(opts, i + 6), i + 2));
                    }
                    (tcp::OPT_SACK, _) if (len - 2) % 8 == 0 => {
                        o.sack = Some((i + 2, (len - 2) / 8))
                    }
                    _ => {}
                }
                i += len;
            }
        }
    }
    o
}

/// The options bytes of the TCP segment `pkt` describes in `frame`.
fn opts_of<'a>(frame: &'a [u8], pkt: &Packet) -> &'a [u8] {
    let start = pkt.l4.saturating_add(tcp::field::OPTIONS);
    frame.get(start..pkt.payload_offset()).unwrap_or_default()
}

/// What the SYN/ACK to a client offers (besides the cookie).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynAckParams {
    /// The director's MAC on the port (the SYN/ACK's source).
    pub mac: EthernetAddress,
    /// The MSS announced to the client (what the real server should receive).
    pub mss: u16,
    /// TTL of the SYN/ACK.
    pub ttl: u8,
    /// Milliseconds since the epoch (counter and timestamp clock).
    pub now_ms: u64,
}

/// Answers the client SYN `syn` (an Ethernet frame; `pkt` its parse) with a syncookie
/// SYN/ACK written into `out` (an Ethernet frame, no vnet header); returns its length and the
/// cookie. `None` (nothing answered) for anything but a TCP SYN without ACK/RST, or if `out`
/// is too small.
pub fn answer_syn(
    out: &mut [u8],
    syn: &[u8],
    pkt: &Packet,
    s: &Secret,
    p: &SynAckParams,
) -> Option<(usize, u32)> {
    if !pkt.is_tcp() || pkt.tcp_flags & (tcp::SYN | tcp::ACK | tcp::RST) != tcp::SYN {
        return None;
    }
    let l4 = syn.get(pkt.l4..)?;
    let isn = get_u32(l4, tcp::field::SEQ);
    let o = options(opts_of(syn, pkt));
    let t = Tuple {
        saddr: pkt.src4(),
        sport: pkt.sport,
        daddr: pkt.dst4(),
        dport: pkt.dport,
    };
    let idx = mss_index(o.mss.unwrap_or(536));
    let c = cookie(s, &t, isn, counter(p.now_ms), idx);
    // Options: MSS; with timestamps SACK-permitted (or two NOPs) and TS; window scale.
    let mut opt = [0u8; 20];
    let mut n = 4;
    set_bytes(
        &mut opt,
        0,
        &[tcp::OPT_MSS, 4, (p.mss >> 8) as u8, p.mss as u8],
    );
    if let Some((tsval, _, _)) = o.ts {
        let bits = u32::from(o.wscale.unwrap_or(TS_NO_WSCALE as u8))
            | if o.sack_perm { TS_SACK } else { 0 };
        let ours = ((p.now_ms as u32).wrapping_add(s.k1 as u32) & !TS_OPT_MASK) | bits;
        if o.sack_perm {
            set_bytes(&mut opt, 4, &[tcp::OPT_SACK_PERMITTED, 2]);
        } else {
            set_bytes(&mut opt, 4, &[tcp::OPT_NOP, tcp::OPT_NOP]);
        }
        set_bytes(&mut opt, 6, &[tcp::OPT_TIMESTAMPS, 10]);
        set_bytes(&mut opt, 8, &ours.to_be_bytes());
        set_bytes(&mut opt, 12, &tsval.to_be_bytes());
        n = 16;
        if o.wscale.is_some() {
            set_bytes(
                &mut opt,
                16,
                &[tcp::OPT_NOP, tcp::OPT_WINDOW_SCALE, 3, OUR_WSCALE],
            );
            n = 20;
        }
    }
    let tcp_len = tcp::MIN_HEADER_LEN + n;
    let ip_len = ipv4::MIN_HEADER_LEN + tcp_len;
    let len = ethernet::HEADER_LEN + ip_len;
    let buf = out.get_mut(..len)?;
    buf.fill(0);
    set_bytes(
        buf,
        ethernet::field::DST,
        syn.get(ethernet::field::SRC..12)?,
    );
    set_bytes(buf, ethernet::field::SRC, &p.mac.0);
    set_u16(buf, ethernet::field::ETHERTYPE, ethernet::ETHERTYPE_IPV4);
    {
        let mut ip = Ipv4Packet::new_unchecked(buf.get_mut(ethernet::HEADER_LEN..)?);
        ip.set_version(4);
        ip.set_ihl(5);
        ip.set_total_len(ip_len as u16);
        ip.set_dont_frag(true);
        ip.set_ttl(p.ttl);
        ip.set_protocol(PROTO_TCP);
        ip.set_src_addr(pkt.dst4());
        ip.set_dst_addr(pkt.src4());
        ip.fill_checksum();
    }
    let seg = buf.get_mut(ethernet::HEADER_LEN + ipv4::MIN_HEADER_LEN..)?;
    let mut t = TcpPacket::new_unchecked(&mut *seg);
    t.set_src_port(pkt.dport);
    t.set_dst_port(pkt.sport);
    t.set_seq_number(c);
    t.set_ack_number(isn.wrapping_add(1));
    t.set_data_offset((tcp_len / 4) as u8);
    t.set_flags(tcp::SYN | tcp::ACK);
    t.set_window_len(u16::MAX);
    set_bytes(seg, tcp::field::OPTIONS, opt.get(..n)?);
    let mut t = TcpPacket::new_unchecked(seg);
    t.fill_checksum(pkt.dst4(), pkt.src4());
    Some((len, c))
}

/// What a valid client ACK tells: the two ISNs and the options the SYN offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// The client's ISN (the ACK's seq − 1).
    pub client_isn: u32,
    /// The cookie (the ACK's ack − 1), the ISN the client knows for the server side.
    pub cookie_isn: u32,
    /// The client's MSS (rounded down to [`MSS_TABLE`]).
    pub mss: u16,
    /// SACK permitted.
    pub sack: bool,
    /// The client's window scale.
    pub wscale: Option<u8>,
    /// Timestamps: the client's TSval and the TSval the SYN/ACK sent (the ACK's TSecr).
    pub ts: Option<(u32, u32)>,
}

/// Checks a client segment (ACK set, SYN and RST clear) against the cookie: its ack − 1 must
/// be a valid cookie for its tuple with ISN seq − 1. `None` for anything else.
pub fn check_ack(frame: &[u8], pkt: &Packet, s: &Secret, now_ms: u64) -> Option<Handshake> {
    if !pkt.is_tcp() || pkt.tcp_flags & (tcp::SYN | tcp::ACK | tcp::RST) != tcp::ACK {
        return None;
    }
    let l4 = frame.get(pkt.l4..)?;
    let client_isn = get_u32(l4, tcp::field::SEQ).wrapping_sub(1);
    let cookie_isn = get_u32(l4, tcp::field::ACK).wrapping_sub(1);
    let t = Tuple {
        saddr: pkt.src4(),
        sport: pkt.sport,
        daddr: pkt.dst4(),
        dport: pkt.dport,
    };
    let idx = check_cookie(s, &t, client_isn, cookie_isn, now_ms)?;
    let o = options(opts_of(frame, pkt));
    let (sack, wscale, ts) = match o.ts {
        Some((tsval, tsecr, _)) => {
            let ws = tsecr & TS_NO_WSCALE;
            (
                tsecr & TS_SACK != 0,
                (ws != TS_NO_WSCALE).then_some(ws.min(14) as u8),
                Some((tsval, tsecr)),
            )
        }
        None => (false, None, None),
    };
    Some(Handshake {
        client_isn,
        cookie_isn,
        mss: MSS_TABLE.get(usize::from(idx)).copied().unwrap_or(536),
        sack,
        wscale,
        ts,
    })
}

/// Writes into `out` the SYN the director sends the real server for handshake `h`, made from
/// the client's ACK `ack` (an Ethernet frame; `pkt` its parse): same addresses, ports, MACs
/// and IP header (with its options), seq = the client's ISN, no ACK, no data, and the options
/// the cookie recovered (MSS, SACK-permitted, timestamps with the client's TSval, window
/// scale). Checksums in full. Returns the frame's length, `None` if `out` is too small.
pub fn ack_to_syn(out: &mut [u8], ack: &[u8], pkt: &Packet, h: &Handshake) -> Option<usize> {
    if pkt.kind != Kind::Ipv4 {
        return None;
    }
    let mut opt = [0u8; 20];
    set_bytes(
        &mut opt,
        0,
        &[tcp::OPT_MSS, 4, (h.mss >> 8) as u8, h.mss as u8],
    );
    let mut n = 4;
    if let Some((tsval, _)) = h.ts {
        if h.sack {
            set_bytes(&mut opt, 4, &[tcp::OPT_SACK_PERMITTED, 2]);
        } else {
            set_bytes(&mut opt, 4, &[tcp::OPT_NOP, tcp::OPT_NOP]);
        }
        set_bytes(&mut opt, 6, &[tcp::OPT_TIMESTAMPS, 10]);
        set_bytes(&mut opt, 8, &tsval.to_be_bytes());
        n = 16;
    } else if h.sack {
        set_bytes(
            &mut opt,
            4,
            &[tcp::OPT_NOP, tcp::OPT_NOP, tcp::OPT_SACK_PERMITTED, 2],
        );
        n = 8;
    }
    if let Some(ws) = h.wscale {
        set_bytes(&mut opt, n, &[tcp::OPT_NOP, tcp::OPT_WINDOW_SCALE, 3, ws]);
        n += 4;
    }
    let tcp_len = tcp::MIN_HEADER_LEN + n;
    let ip_hdr = pkt.l4.checked_sub(pkt.l3)?;
    let ip_len = ip_hdr + tcp_len;
    let len = pkt.l4 + tcp_len;
    let head = ack.get(..pkt.l4)?;
    let window = get_u16(ack, pkt.l4 + tcp::field::WINDOW);
    let buf = out.get_mut(..len)?;
    buf.get_mut(..pkt.l4)?.copy_from_slice(head);
    {
        let mut ip = Ipv4Packet::new_unchecked(buf.get_mut(pkt.l3..)?);
        ip.set_total_len(ip_len as u16);
        ip.fill_checksum();
    }
    let seg = buf.get_mut(pkt.l4..)?;
    seg.fill(0);
    let mut t = TcpPacket::new_unchecked(&mut *seg);
    t.set_src_port(pkt.sport);
    t.set_dst_port(pkt.dport);
    t.set_seq_number(h.client_isn);
    t.set_ack_number(0);
    t.set_data_offset((tcp_len / 4) as u8);
    t.set_flags(tcp::SYN);
    t.set_window_len(window);
    set_bytes(seg, tcp::field::OPTIONS, opt.get(..n)?);
    let mut t = TcpPacket::new_unchecked(seg);
    t.fill_checksum(pkt.src4(), pkt.dst4());
    Some(len)
}

/// What the real server's SYN/ACK tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSynAck {
    /// The server's ISN.
    pub isn: u32,
    /// Its acknowledgment number.
    pub ack: u32,
    /// Its window scale (0 without the option).
    pub wscale: u8,
    /// Its TSval, if it sent timestamps.
    pub tsval: Option<u32>,
}

/// Reads a server's SYN/ACK; `None` if the segment is not one.
pub fn server_syn_ack(frame: &[u8], pkt: &Packet) -> Option<ServerSynAck> {
    if !pkt.is_tcp() || pkt.tcp_flags & (tcp::SYN | tcp::ACK | tcp::RST) != tcp::SYN | tcp::ACK {
        return None;
    }
    let l4 = frame.get(pkt.l4..)?;
    let o = options(opts_of(frame, pkt));
    Some(ServerSynAck {
        isn: get_u32(l4, tcp::field::SEQ),
        ack: get_u32(l4, tcp::field::ACK),
        wscale: o.wscale.unwrap_or(0),
        tsval: o.ts.map(|t| t.0),
    })
}

/// Checksum deltas of changed fields, split by the parity of their offset in the segment.
#[derive(Default)]
struct Delta {
    even: u64,
    odd: u64,
}

impl Delta {
    /// A 32-bit field at segment offset `rel` changing from `old` to `new`.
    fn add32(&mut self, rel: usize, old: u32, new: u32) {
        let d = delta16((old >> 16) as u16, (new >> 16) as u16) + delta16(old as u16, new as u16);
        if rel % 2 == 0 {
            self.even += d;
        } else {
            self.odd += d;
        }
    }

    /// A 16-bit field at segment offset `rel`.
    fn add16(&mut self, rel: usize, old: u16, new: u16) {
        if rel % 2 == 0 {
            self.even += delta16(old, new);
        } else {
            self.odd += delta16(old, new);
        }
    }

    /// Applies the deltas to the full checksum of the segment at `l4` (a partial one holds
    /// only the pseudo-header sum, which these fields do not enter).
    fn apply(self, frame: &mut [u8], l4: usize, csum: Csum) {
        if csum == Csum::Partial || (self.even == 0 && self.odd == 0) {
            return;
        }
        // A field at an odd offset enters the sum with its bytes swapped (2^8·2^8 ≡ 1).
        let d = u64::from(fold(self.even)) + u64::from(fold(self.odd).swap_bytes());
        let at = l4 + tcp::field::CHECKSUM;
        let c = get_u16(frame, at);
        set_u16(frame, at, !fold(u64::from(!c) + d));
    }
}

/// Rewrites the 32-bit field at `off` (absolute) by `f`, noting the change.
fn rewrite32(frame: &mut [u8], l4: usize, off: usize, d: &mut Delta, f: impl Fn(u32) -> u32) {
    let old = get_u32(frame, off);
    let new = f(old);
    if new != old && frame.len() >= off + 4 {
        set_u32(frame, off, new);
        d.add32(off - l4, old, new);
    }
}

/// Client → server: ack += `delta` (when ACK is set), every SACK block += `delta`, TSecr +=
/// `ts_delta`; the checksum updated as `csum` says. Returns false (nothing changed) if `pkt`
/// is not TCP in `frame`.
pub fn shift_client(frame: &mut [u8], pkt: &Packet, csum: Csum, delta: u32, ts_delta: u32) -> bool {
    if !pkt.is_tcp() || frame.len() < pkt.payload_offset() || pkt.l4_header_len() < 20 {
        return false;
    }
    let l4 = pkt.l4;
    let mut d = Delta::default();
    if pkt.tcp_flags & tcp::ACK != 0 {
        rewrite32(frame, l4, l4 + tcp::field::ACK, &mut d, |a| {
            a.wrapping_add(delta)
        });
    }
    let opts_at = l4 + tcp::field::OPTIONS;
    let o = options(opts_of(frame, pkt));
    if let Some((at, n)) = o.sack {
        for i in 0..n * 2 {
            let off = opts_at + at + 4 * i;
            rewrite32(frame, l4, off, &mut d, |v| v.wrapping_add(delta));
        }
    }
    if let Some((_, _, at)) = o.ts {
        rewrite32(frame, l4, opts_at + at + 4, &mut d, |v| {
            v.wrapping_add(ts_delta)
        });
    }
    d.apply(frame, l4, csum);
    true
}

/// Server → client: seq −= `delta`, TSval −= `ts_delta`, and the window rescaled from the
/// server's shift `server_ws` to [`OUR_WSCALE`] when `rescale` (the client was offered window
/// scaling); the checksum updated as `csum` says. Returns false if `pkt` is not TCP in
/// `frame`.
pub fn shift_server(
    frame: &mut [u8],
    pkt: &Packet,
    csum: Csum,
    delta: u32,
    ts_delta: u32,
    rescale: Option<u8>,
) -> bool {
    if !pkt.is_tcp() || frame.len() < pkt.payload_offset() || pkt.l4_header_len() < 20 {
        return false;
    }
    let l4 = pkt.l4;
    let mut d = Delta::default();
    rewrite32(frame, l4, l4 + tcp::field::SEQ, &mut d, |s| {
        s.wrapping_sub(delta)
    });
    if let Some(ws) = rescale.filter(|&ws| ws != OUR_WSCALE) {
        let at = l4 + tcp::field::WINDOW;
        let old = get_u16(frame, at);
        let bytes = u64::from(old) << ws;
        let new = (bytes >> OUR_WSCALE).min(u64::from(u16::MAX)) as u16;
        if new != old {
            set_u16(frame, at, new);
            d.add16(tcp::field::WINDOW, old, new);
        }
    }
    let o = options(opts_of(frame, pkt));
    if let Some((_, _, at)) = o.ts {
        let off = l4 + tcp::field::OPTIONS + at;
        rewrite32(frame, l4, off, &mut d, |v| v.wrapping_sub(ts_delta));
    }
    d.apply(frame, l4, csum);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum;
    use crate::packet::parse;
    use etherparse::{PacketBuilder, TcpOptionElement};

    const SECRET: Secret = Secret {
        k0: 0x0123_4567_89ab_cdef,
        k1: 0xfedc_ba98_7654_3210,
    };
    const CLIENT: [u8; 4] = [192, 0, 2, 7];
    const VIP: [u8; 4] = [10, 0, 0, 100];

    fn seg(flags: u8, seq: u32, ack: u32, opts: &[TcpOptionElement], data: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(CLIENT, VIP, 64)
            .tcp(40000, 80, seq, 1000);
        let mut b = b.options(opts).unwrap();
        if flags & tcp::SYN != 0 {
            b = b.syn();
        }
        if flags & tcp::ACK != 0 {
            b = b.ack(ack);
        }
        if flags & tcp::PSH != 0 {
            b = b.psh();
        }
        let mut v = Vec::new();
        b.write(&mut v, data).unwrap();
        v
    }

    fn tcp_ok(frame: &[u8]) -> bool {
        let p = parse(frame).unwrap();
        let ip = Ipv4Packet::new_checked(&frame[p.l3..]).unwrap();
        ip.verify_checksum()
            && checksum::l4_checksum_v4(p.src4(), p.dst4(), 6, &frame[p.l4..p.ip_end()]) == 0
    }

    fn params(now_ms: u64) -> SynAckParams {
        SynAckParams {
            mac: EthernetAddress([2, 0, 0, 0, 0, 9]),
            mss: 1460,
            ttl: 63,
            now_ms,
        }
    }

    fn full_syn() -> Vec<u8> {
        seg(
            tcp::SYN,
            5000,
            0,
            &[
                TcpOptionElement::MaximumSegmentSize(1460),
                TcpOptionElement::SelectiveAcknowledgementPermitted,
                TcpOptionElement::Timestamp(777, 0),
                TcpOptionElement::Noop,
                TcpOptionElement::WindowScale(9),
            ],
            &[],
        )
    }

    #[test]
    fn cookie_round_trip_ages_and_tuple() {
        let t = Tuple {
            saddr: CLIENT.into(),
            sport: 40000,
            daddr: VIP.into(),
            dport: 80,
        };
        let now = 1_000_000;
        let c = cookie(&SECRET, &t, 5000, counter(now), 6);
        assert_eq!(check_cookie(&SECRET, &t, 5000, c, now), Some(6));
        // The next step still accepts it, the one after not.
        assert_eq!(check_cookie(&SECRET, &t, 5000, c, now + 64_000), Some(6));
        assert_eq!(check_cookie(&SECRET, &t, 5000, c, now + 128_000), None);
        assert_eq!(check_cookie(&SECRET, &t, 5001, c, now), None);
        let other = Tuple { sport: 40001, ..t };
        assert_eq!(check_cookie(&SECRET, &other, 5000, c, now), None);
        assert_eq!(check_cookie(&SECRET, &t, 5000, c ^ 0x100, now), None);
        let k2 = Secret { k0: 1, ..SECRET };
        assert_eq!(check_cookie(&k2, &t, 5000, c, now), None);
        assert_eq!(mss_index(1460), 6);
        assert_eq!(mss_index(1459), 5);
        assert_eq!(mss_index(100), 0);
    }

    #[test]
    fn syn_ack_carries_cookie_and_options() {
        let syn = full_syn();
        let p = parse(&syn).unwrap();
        let mut out = [0u8; 128];
        let (n, c) = answer_syn(&mut out, &syn, &p, &SECRET, &params(5_000)).unwrap();
        let f = &out[..n];
        assert!(tcp_ok(f));
        let q = parse(f).unwrap();
        assert_eq!(
            (q.src4(), q.dst4(), q.sport, q.dport),
            (p.dst4(), p.src4(), 80, 40000)
        );
        assert_eq!(q.tcp_flags, tcp::SYN | tcp::ACK);
        assert_eq!(q.ttl, 63);
        assert_eq!(&f[0..6], &syn[6..12]);
        assert_eq!(get_u32(f, q.l4 + 4), c);
        assert_eq!(get_u32(f, q.l4 + 8), 5001);
        let o = options(opts_of(f, &q));
        assert_eq!(o.mss, Some(1460));
        assert!(o.sack_perm);
        assert_eq!(o.wscale, Some(OUR_WSCALE));
        let (tsval, tsecr, _) = o.ts.unwrap();
        assert_eq!(tsecr, 777);
        assert_eq!(tsval & 0x3f, 9 | 0x10);
        // No timestamps: no SACK or window scale offered.
        let bare = seg(
            tcp::SYN,
            5000,
            0,
            &[
                TcpOptionElement::MaximumSegmentSize(1300),
                TcpOptionElement::SelectiveAcknowledgementPermitted,
                TcpOptionElement::Noop,
                TcpOptionElement::WindowScale(9),
            ],
            &[],
        );
        let p = parse(&bare).unwrap();
        let (n, _) = answer_syn(&mut out, &bare, &p, &SECRET, &params(5_000)).unwrap();
        let q = parse(&out[..n]).unwrap();
        let o = options(opts_of(&out[..n], &q));
        assert_eq!(
            (o.mss, o.sack_perm, o.wscale, o.ts),
            (Some(1460), false, None, None)
        );
        // Not a SYN: nothing.
        let ack = seg(tcp::ACK, 5001, 1, &[], &[]);
        assert!(answer_syn(&mut out, &ack, &parse(&ack).unwrap(), &SECRET, &params(0)).is_none());
    }

    #[test]
    fn ack_is_checked_and_becomes_the_servers_syn() {
        let syn = full_syn();
        let p = parse(&syn).unwrap();
        let mut out = [0u8; 128];
        let (n, c) = answer_syn(&mut out, &syn, &p, &SECRET, &params(5_000)).unwrap();
        let q = parse(&out[..n]).unwrap();
        let tsval = options(opts_of(&out[..n], &q)).ts.unwrap().0;
        let ack = seg(
            tcp::ACK,
            5001,
            c.wrapping_add(1),
            &[
                TcpOptionElement::Noop,
                TcpOptionElement::Noop,
                TcpOptionElement::Timestamp(778, tsval),
            ],
            &[],
        );
        let pa = parse(&ack).unwrap();
        let h = check_ack(&ack, &pa, &SECRET, 6_000).unwrap();
        assert_eq!(h.client_isn, 5000);
        assert_eq!(h.cookie_isn, c);
        assert_eq!((h.mss, h.sack, h.wscale), (1460, true, Some(9)));
        assert_eq!(h.ts, Some((778, tsval)));
        // A wrong ack, seq or secret fails.
        let bad = seg(tcp::ACK, 5001, c.wrapping_add(2), &[], &[]);
        assert!(check_ack(&bad, &parse(&bad).unwrap(), &SECRET, 6_000).is_none());
        let bad = seg(tcp::ACK, 5002, c.wrapping_add(1), &[], &[]);
        assert!(check_ack(&bad, &parse(&bad).unwrap(), &SECRET, 6_000).is_none());
        let k2 = Secret { k0: 9, ..SECRET };
        assert!(check_ack(&ack, &pa, &k2, 6_000).is_none());
        // The SYN for the server.
        let mut s = [0u8; 128];
        let n = ack_to_syn(&mut s, &ack, &pa, &h).unwrap();
        let f = &s[..n];
        assert!(tcp_ok(f));
        let ps = parse(f).unwrap();
        assert_eq!(ps.tcp_flags, tcp::SYN);
        assert_eq!(
            (ps.src, ps.dst, ps.sport, ps.dport),
            (pa.src, pa.dst, 40000, 80)
        );
        assert_eq!(get_u32(f, ps.l4 + 4), 5000);
        let o = options(opts_of(f, &ps));
        assert_eq!(o.mss, Some(1460));
        assert!(o.sack_perm);
        assert_eq!(o.wscale, Some(9));
        assert_eq!(o.ts.map(|t| (t.0, t.1)), Some((778, 0)));
    }

    #[test]
    fn shifts_keep_full_checksums_and_leave_partial_ones() {
        let delta = 0x8000_0123u32;
        let ts_delta = 0x1234_5678u32;
        let mut f = seg(
            tcp::ACK | tcp::PSH,
            9000,
            7000,
            &[
                TcpOptionElement::Noop,
                TcpOptionElement::Noop,
                TcpOptionElement::Timestamp(1, 2),
                TcpOptionElement::Noop,
                TcpOptionElement::Noop,
                TcpOptionElement::SelectiveAcknowledgement(
                    (100, 200),
                    [Some((300, 400)), None, None],
                ),
            ],
            b"hello",
        );
        let p = parse(&f).unwrap();
        assert!(shift_client(&mut f, &p, Csum::Full, delta, ts_delta));
        assert!(tcp_ok(&f));
        assert_eq!(get_u32(&f, p.l4 + 8), 7000u32.wrapping_add(delta));
        let o = options(opts_of(&f, &p));
        assert_eq!(
            o.ts.map(|t| (t.0, t.1)),
            Some((1, 2u32.wrapping_add(ts_delta)))
        );
        let (at, n) = o.sack.unwrap();
        assert_eq!(n, 2);
        let base = p.l4 + 20 + at;
        let blocks: Vec<u32> = (0..4).map(|i| get_u32(&f, base + 4 * i)).collect();
        let want: Vec<u32> = [100u32, 200, 300, 400]
            .iter()
            .map(|v| v.wrapping_add(delta))
            .collect();
        assert_eq!(blocks, want);
        // Odd-aligned timestamps (a single NOP before them) and a window rescale.
        let mut g = seg(
            tcp::ACK,
            9000,
            7000,
            &[
                TcpOptionElement::Noop,
                TcpOptionElement::Timestamp(50, 60),
                TcpOptionElement::Noop,
            ],
            b"x",
        );
        let p = parse(&g).unwrap();
        assert!(shift_server(
            &mut g,
            &p,
            Csum::Full,
            delta,
            ts_delta,
            Some(9)
        ));
        assert!(tcp_ok(&g));
        assert_eq!(get_u32(&g, p.l4 + 4), 9000u32.wrapping_sub(delta));
        assert_eq!(get_u16(&g, p.l4 + 14), 4000);
        let o = options(opts_of(&g, &p));
        assert_eq!(o.ts.map(|t| t.0), Some(50u32.wrapping_sub(ts_delta)));
        // Partial: the checksum field (the pseudo-header sum) is not touched.
        let mut h = seg(tcp::ACK, 9000, 7000, &[], b"data");
        let p = parse(&h).unwrap();
        let before = get_u16(&h, p.l4 + 16);
        assert!(shift_client(&mut h, &p, Csum::Partial, delta, 0));
        assert_eq!(get_u16(&h, p.l4 + 16), before);
        assert_eq!(get_u32(&h, p.l4 + 8), 7000u32.wrapping_add(delta));
    }

    #[test]
    fn server_syn_ack_is_read() {
        let mut f = seg(
            tcp::SYN | tcp::ACK,
            123,
            5001,
            &[
                TcpOptionElement::MaximumSegmentSize(1460),
                TcpOptionElement::Timestamp(99, 778),
                TcpOptionElement::Noop,
                TcpOptionElement::WindowScale(10),
            ],
            &[],
        );
        let p = parse(&f).unwrap();
        let s = server_syn_ack(&f, &p).unwrap();
        assert_eq!(
            s,
            ServerSynAck {
                isn: 123,
                ack: 5001,
                wscale: 10,
                tsval: Some(99)
            }
        );
        f.truncate(10);
        assert!(server_syn_ack(&f, &p).is_none());
    }
}
