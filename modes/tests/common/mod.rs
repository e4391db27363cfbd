//! Shared fixtures for the integration tests: frames built with etherparse
//! (an implementation independent of this crate) and etherparse-based
//! checksum oracles.
#![allow(dead_code)]

use etherparse::checksum::Sum16BitWords;
use etherparse::{
    IpHeaders, Ipv4Header, Ipv4Options, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
};
use std::net::Ipv4Addr;

pub const CLIENT_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
pub const LB_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0xaa];
pub const RS_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
pub const VIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
pub const RIP: Ipv4Addr = Ipv4Addr::new(10, 20, 30, 40);

/// 40 bytes of TCP options: MSS, SACK-permitted, timestamps, window scale,
/// one SACK block, NOP padding.
pub const TCP_OPTS_40: [u8; 40] = [
    2, 4, 0x05, 0xb4, // MSS 1460
    4, 2, // SACK permitted
    8, 10, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, // timestamps
    1, 3, 3, 7, // NOP, window scale 7
    5, 10, 0, 0, 0x10, 0, 0, 0, 0x20, 0, // SACK block
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, // NOP padding
];

/// 8 bytes of IPv4 options (IHL 7): router alert, NOP NOP NOP EOL.
pub const IP_OPTS_8: [u8; 8] = [0x94, 0x04, 0x00, 0x00, 1, 1, 1, 0];

#[derive(Clone, Debug)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        seq: u32,
        ack: Option<u32>,
        syn: bool,
        fin: bool,
        rst: bool,
        opts: Vec<u8>,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    IcmpEcho {
        request: bool,
        id: u16,
        seq: u16,
    },
    IcmpRaw {
        t: u8,
        code: u8,
        rest: [u8; 4],
    },
}

#[derive(Clone, Debug)]
pub struct Spec {
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub ident: u16,
    pub df: bool,
    pub ip_opts: Vec<u8>,
    pub l4: L4,
    pub payload: Vec<u8>,
}

impl Spec {
    /// Client → VIP:80 TCP ACK|PSH with the full 40-byte option space and
    /// IPv4 options.
    pub fn tcp_request(payload_len: usize) -> Spec {
        Spec {
            smac: CLIENT_MAC,
            dmac: LB_MAC,
            src: CLIENT,
            dst: VIP,
            ttl: 61,
            ident: 0x4242,
            df: true,
            ip_opts: IP_OPTS_8.to_vec(),
            l4: L4::Tcp {
                sport: 40001,
                dport: 80,
                seq: 0x0102_0304,
                ack: Some(0xa0b0_c0d0),
                syn: false,
                fin: false,
                rst: false,
                opts: TCP_OPTS_40.to_vec(),
            },
            payload: pattern(payload_len),
        }
    }

    pub fn udp_request(payload_len: usize) -> Spec {
        Spec {
            l4: L4::Udp {
                sport: 5353,
                dport: 53,
            },
            ip_opts: vec![],
            ..Spec::tcp_request(payload_len)
        }
    }

    pub fn echo_request(payload_len: usize) -> Spec {
        Spec {
            l4: L4::IcmpEcho {
                request: true,
                id: 0x77,
                seq: 3,
            },
            ip_opts: vec![],
            ..Spec::tcp_request(payload_len)
        }
    }

    pub fn set_ports(&mut self, s: u16, d: u16) {
        match &mut self.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => {
                *sport = s;
                *dport = d;
            }
            _ => {}
        }
    }

    pub fn ports(&self) -> (u16, u16) {
        match &self.l4 {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => (*sport, *dport),
            _ => (0, 0),
        }
    }

    pub fn build(&self) -> Vec<u8> {
        let ip = Ipv4Header {
            source: self.src.octets(),
            destination: self.dst.octets(),
            time_to_live: self.ttl,
            identification: self.ident,
            dont_fragment: self.df,
            options: Ipv4Options::try_from(&self.ip_opts[..]).unwrap(),
            ..Default::default()
        };
        let b = PacketBuilder::ethernet2(self.smac, self.dmac)
            .ip(IpHeaders::Ipv4(ip, Default::default()));
        let mut out = Vec::new();
        match &self.l4 {
            L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                syn,
                fin,
                rst,
                opts,
            } => {
                let mut t = b.tcp(*sport, *dport, *seq, 64240);
                if let Some(a) = ack {
                    t = t.ack(*a);
                }
                if *syn {
                    t = t.syn();
                }
                if *fin {
                    t = t.fin();
                }
                if *rst {
                    t = t.rst();
                }
                if !self.payload.is_empty() {
                    t = t.psh();
                }
                t.options_raw(opts)
                    .unwrap()
                    .write(&mut out, &self.payload)
                    .unwrap();
            }
            L4::Udp { sport, dport } => b
                .udp(*sport, *dport)
                .write(&mut out, &self.payload)
                .unwrap(),
            L4::IcmpEcho { request, id, seq } => {
                if *request {
                    b.icmpv4_echo_request(*id, *seq)
                        .write(&mut out, &self.payload)
                        .unwrap()
                } else {
                    b.icmpv4_echo_reply(*id, *seq)
                        .write(&mut out, &self.payload)
                        .unwrap()
                }
            }
            L4::IcmpRaw { t, code, rest } => b
                .icmpv4_raw(*t, *code, *rest)
                .write(&mut out, &self.payload)
                .unwrap(),
        }
        out
    }
}

/// Deterministic payload bytes.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0])
        .collect()
}

/// Offset of the L4 header in an untagged Ethernet/IPv4 frame.
pub fn l4_off(frame: &[u8]) -> usize {
    14 + usize::from(frame[14] & 0x0f) * 4
}

/// The IPv4 pseudo-header sum (uncomplemented), computed with etherparse:
/// what a NEEDS_CSUM frame's L4 checksum field holds.
pub fn ep_pseudo_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u16 {
    // etherparse sums in native byte order: the result's native bytes are
    // the big-endian checksum bytes.
    let c = Sum16BitWords::new()
        .add_4bytes(src.octets())
        .add_4bytes(dst.octets())
        .add_2bytes([0, proto])
        .add_2bytes(len.to_be_bytes())
        .ones_complement();
    !u16::from_be_bytes(c.to_ne_bytes())
}

/// Replaces the L4 checksum of a built TCP/UDP frame with the partial sum,
/// as the kernel hands it over with NEEDS_CSUM. Returns (csum_start,
/// csum_offset).
pub fn make_partial(frame: &mut [u8]) -> (usize, usize) {
    let l4 = l4_off(frame);
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let proto = frame[23];
    let src = Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
    let dst = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
    let l4_len = (14 + total - l4) as u16;
    let off = if proto == 6 { 16 } else { 6 };
    let p = ep_pseudo_sum(src, dst, proto, l4_len);
    frame[l4 + off..l4 + off + 2].copy_from_slice(&p.to_be_bytes());
    (l4, off)
}

/// The L4 checksum field of a TCP/UDP frame.
pub fn l4_csum(frame: &[u8]) -> u16 {
    let l4 = l4_off(frame);
    let off = if frame[23] == 6 { 16 } else { 6 };
    u16::from_be_bytes([frame[l4 + off], frame[l4 + off + 1]])
}

/// Treats the two one's-complement zeros as equal.
pub fn norm(c: u16) -> u16 {
    if c == 0xffff {
        0
    } else {
        c
    }
}

/// Asserts that etherparse parses `frame` and that the IPv4 header checksum
/// and the TCP/UDP/ICMP checksum in it equal etherparse's recomputation.
pub fn assert_checksums_valid(frame: &[u8]) {
    let p = SlicedPacket::from_ethernet(frame).expect("etherparse rejects the frame");
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4: {:?}", p.net)
    };
    let h = ip.header().to_header();
    assert_eq!(
        h.header_checksum,
        h.calc_header_checksum(),
        "IPv4 header checksum"
    );
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => assert_eq!(
            norm(t.checksum()),
            norm(t.calc_checksum_ipv4(h.source, h.destination).unwrap()),
            "TCP checksum"
        ),
        Some(TransportSlice::Udp(u)) => {
            if u.checksum() != 0 {
                assert_eq!(
                    u.checksum(),
                    u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap(),
                    "UDP checksum"
                );
            }
        }
        Some(TransportSlice::Icmpv4(i)) => assert_eq!(
            Sum16BitWords::new().add_slice(i.slice()).ones_complement(),
            0,
            "ICMP checksum"
        ),
        other => panic!("unexpected transport {other:?}"),
    }
}

/// etherparse's full TCP/UDP checksum of the L4 segment in `frame`.
pub fn ep_full_l4_csum(frame: &[u8]) -> u16 {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!()
    };
    let h = ip.header().to_header();
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => t.calc_checksum_ipv4(h.source, h.destination).unwrap(),
        Some(TransportSlice::Udp(u)) => u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap(),
        other => panic!("unexpected transport {other:?}"),
    }
}

/// `assert_eq!` for frames that reports the first differing offsets
/// instead of dumping kilobytes.
#[track_caller]
pub fn assert_frames_eq(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let diffs: Vec<(usize, u8, u8)> = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| (i, *a, *b))
        .take(8)
        .collect();
    panic!(
        "{what}: frames differ (len {} vs {}); first (offset, got, want): {diffs:?}",
        got.len(),
        want.len()
    );
}
