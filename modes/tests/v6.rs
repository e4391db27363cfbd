//! IPv6 wire groundwork against etherparse as the oracle: the IPv6 view,
//! extension-header walk and ICMPv6 parser never panic on any bytes; the
//! walk agrees with etherparse on generated chains; 16-byte address and
//! port checksum updates (full, partial, UDPv6) equal a full recomputation;
//! TCPv6 GSO segments equal segments built independently.

use etherparse::{Ipv6Slice, PacketBuilder};
use modes::checksum;
use modes::gso::segment_tcp6;
use modes::offload::complete_partial;
use modes::wire::icmpv6::{self, Icmpv6Packet, Icmpv6Repr};
use modes::wire::ipv6::{self, upper_layer, Ipv6Packet, Ipv6Repr, V6Error};
use modes::wire::vnet::{VnetHdr, GSO_ECN, GSO_TCPV4, GSO_TCPV6};
use modes::wire::{TcpPacket, UdpPacket};
use proptest::prelude::*;
use std::net::Ipv6Addr;

const SRC_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const DST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const L4: usize = 14 + 40;

#[derive(Clone, Copy, Debug, Default)]
struct Flags {
    fin: bool,
    psh: bool,
    cwr: bool,
    ece: bool,
}

/// Ethernet + IPv6 + TCP (ACK set) built by etherparse, checksum complete.
fn tcp6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ports: (u16, u16),
    seq: u32,
    f: Flags,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv6(src.octets(), dst.octets(), 64)
        .tcp(ports.0, ports.1, seq, 1000)
        .ack(0x0102_0304);
    if f.fin {
        b = b.fin();
    }
    if f.psh {
        b = b.psh();
    }
    if f.cwr {
        b = b.cwr();
    }
    if f.ece {
        b = b.ece();
    }
    let b = b.options_raw(opts).unwrap();
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// Ethernet + IPv6 + UDP built by etherparse, checksum complete.
fn udp6(src: Ipv6Addr, dst: Ipv6Addr, ports: (u16, u16), payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(SRC_MAC, DST_MAC)
        .ipv6(src.octets(), dst.octets(), 64)
        .udp(ports.0, ports.1)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// Inserts a Destination Options header of `(units + 1) × 8` bytes (one
/// PadN option) between the IPv6 header and the upper layer. The
/// upper-layer checksum stays valid: the pseudo-header does not count
/// extension headers.
fn with_dest_opts(frame: &[u8], units: u8) -> Vec<u8> {
    let size = (usize::from(units) + 1) * 8;
    let mut ext = vec![0u8; size];
    ext[0] = frame[14 + 6];
    ext[1] = units;
    ext[2] = 1;
    ext[3] = (size - 4) as u8;
    let mut v = frame[..L4].to_vec();
    v.extend_from_slice(&ext);
    v.extend_from_slice(&frame[L4..]);
    v[14 + 6] = ipv6::NH_DEST_OPTS;
    let plen = u16::from_be_bytes([v[18], v[19]]) + size as u16;
    v[18..20].copy_from_slice(&plen.to_be_bytes());
    v
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// Exercises every reader on `bytes`; only panics matter.
fn poke(bytes: &[u8]) {
    let p = Ipv6Packet::new_unchecked(bytes);
    let _ = (
        p.version(),
        p.traffic_class(),
        p.flow_label(),
        p.payload_len(),
    );
    let _ = (
        p.next_header(),
        p.hop_limit(),
        p.src_addr(),
        p.dst_addr(),
        p.payload(),
    );
    let _ = Ipv6Repr::parse(&p);
    if let Ok((_, off)) = upper_layer(bytes) {
        assert!(off <= ipv6::HEADER_LEN + usize::from(p.payload_len()));
        assert!(off <= bytes.len());
    }
    let i = Icmpv6Packet::new_unchecked(bytes);
    let _ = (
        i.msg_type(),
        i.code(),
        i.checksum(),
        i.rest_of_header(),
        i.mtu(),
    );
    let _ = (
        i.na_flags(),
        i.target_addr(),
        i.data(),
        i.quoted_packet(),
        i.nd_options(),
    );
    let (a, b) = (Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
    let _ = Icmpv6Repr::parse(a, b, &i);
    let _ = icmpv6::find_nd_option(bytes, 1);
    let _ = icmpv6::nd_options_valid(bytes);
    let _ = icmpv6::ll_addr_option(bytes, 2);
    let mut m = bytes.to_vec();
    let mut w = Ipv6Packet::new_unchecked(&mut m[..]);
    w.set_flow_label(u32::MAX);
    w.set_traffic_class(0xff);
    w.set_dst_addr(a);
    let _ = w.payload_mut();
    let mut w = Icmpv6Packet::new_unchecked(&mut m[..]);
    w.set_target_addr(a);
    let _ = w.nd_options_mut();
    w.fill_checksum(a, b);
}

fn arb_addr() -> impl Strategy<Value = Ipv6Addr> {
    any::<[u8; 16]>().prop_map(Ipv6Addr::from)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn readers_never_panic_on_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        poke(&bytes);
        // The same bytes behind an IPv6 version nibble and an Ethernet
        // header, to get past the first checks of the walk and of GSO.
        let mut v6 = bytes.clone();
        if let Some(b) = v6.first_mut() {
            *b = 0x60 | (*b & 0x0f);
        }
        poke(&v6);
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x86, 0xdd]);
        frame.extend_from_slice(&v6);
        let hdr = VnetHdr { gso_type: GSO_TCPV6, gso_size: 8, ..VnetHdr::default() };
        let mut out = vec![0u8; 300];
        let _ = segment_tcp6(&frame, &hdr, &mut out, |s| assert!(s.len() <= frame.len()));
    }

    #[test]
    fn mutated_chains_never_panic(
        exts in prop::collection::vec((prop_oneof![Just(43u8), Just(60u8)], 0u8..3), 0..10),
        at in 0usize..120,
        byte in any::<u8>(),
        cut in 0usize..200,
    ) {
        let mut b = chain(&exts, 6, 12);
        if let Some(x) = b.get_mut(at) {
            *x = byte;
        }
        b.truncate(cut.max(1));
        poke(&b);
    }

    /// Generated chains of Hop-by-Hop (first only), Routing and
    /// Destination Options headers: the walk finds what etherparse finds.
    #[test]
    fn walk_agrees_with_etherparse(
        hbh in prop::option::of(0u8..4),
        rest in prop::collection::vec((prop_oneof![Just(43u8), Just(60u8)], 0u8..4), 0..7),
        last in prop_oneof![Just(6u8), Just(17u8), Just(58u8)],
        tail in 1usize..64,
    ) {
        let mut exts: Vec<(u8, u8)> = hbh.map(|u| (0u8, u)).into_iter().collect();
        exts.extend(rest);
        let b = chain(&exts, last, tail);
        let (proto, off) = upper_layer(&b).unwrap();
        let hdrs: usize = exts.iter().map(|e| (usize::from(e.1) + 1) * 8).sum();
        prop_assert_eq!((proto, off), (last, 40 + hdrs));
        let e = Ipv6Slice::from_slice(&b).unwrap();
        prop_assert_eq!(e.payload().ip_number.0, proto);
        prop_assert_eq!(e.payload().payload.len(), b.len() - off);
        // A fragment header anywhere in the chain is refused.
        let mut with_frag = exts.clone();
        let at = tail % (exts.len() + 1);
        with_frag.insert(at, (44, 0));
        prop_assert_eq!(upper_layer(&chain(&with_frag, last, tail)), Err(V6Error::Fragment));
    }

    /// Full checksums: a destination address and port change applied
    /// incrementally equals etherparse's recomputation (TCP and UDP).
    #[test]
    fn full_updates_equal_recomputation(
        src in arb_addr(), dst in arb_addr(), new_dst in arb_addr(),
        sport in any::<u16>(), dport in any::<u16>(), new_dport in any::<u16>(),
        len in 0usize..1500, seed in any::<u8>(), tcp in any::<bool>(),
    ) {
        let data = payload(len, seed);
        let (build, field): (&dyn Fn(Ipv6Addr, u16) -> Vec<u8>, usize) = if tcp {
            (&|d, p| tcp6(src, d, (sport, p), 1, Flags::default(), &[], &data), L4 + 16)
        } else {
            (&|d, p| udp6(src, d, (sport, p), &data), L4 + 6)
        };
        let old = build(dst, dport);
        let want = build(new_dst, new_dport);
        let c = u16::from_be_bytes([old[field], old[field + 1]]);
        let c = if tcp {
            let c = checksum::update128(c, dst, new_dst);
            checksum::update16(c, dport, new_dport)
        } else {
            let c = checksum::udp6_update128(c, dst, new_dst);
            checksum::udp6_update16(c, dport, new_dport)
        };
        prop_assert_eq!(c.to_be_bytes(), [want[field], want[field + 1]]);
        if tcp {
            prop_assert!(TcpPacket::new_unchecked(&want[L4..]).verify_checksum_v6(src, new_dst));
        } else {
            prop_assert!(UdpPacket::new_unchecked(&want[L4..]).verify_checksum_v6(src, new_dst));
            prop_assert_ne!(c, 0);
        }
    }

    /// Partial checksums: the pseudo-header sum updated for a new source
    /// and destination, then finished as a device would, equals
    /// etherparse's full checksum of the rewritten packet.
    #[test]
    fn partial_updates_equal_recomputation(
        src in arb_addr(), dst in arb_addr(), new_src in arb_addr(), new_dst in arb_addr(),
        sport in any::<u16>(), dport in any::<u16>(),
        len in 0usize..1500, seed in any::<u8>(), tcp in any::<bool>(),
    ) {
        let data = payload(len, seed);
        let (proto, off) = if tcp { (6u8, 16usize) } else { (17, 6) };
        let build = |s: Ipv6Addr, d: Ipv6Addr| if tcp {
            tcp6(s, d, (sport, dport), 9, Flags::default(), &[], &data)
        } else {
            udp6(s, d, (sport, dport), &data)
        };
        let mut frame = build(src, dst);
        let l4_len = (frame.len() - L4) as u32;
        let p = checksum::pseudo_header_v6(src, dst, proto, l4_len);
        let p = checksum::update128_partial(p, src, new_src);
        let p = checksum::update128_partial(p, dst, new_dst);
        prop_assert_eq!(p, checksum::pseudo_header_v6(new_src, new_dst, proto, l4_len));
        let mut ip = Ipv6Packet::new_unchecked(&mut frame[14..]);
        ip.set_src_addr(new_src);
        ip.set_dst_addr(new_dst);
        frame[L4 + off..L4 + off + 2].copy_from_slice(&p.to_be_bytes());
        prop_assert!(complete_partial(&mut frame, L4, off));
        prop_assert_eq!(frame, build(new_src, new_dst));
    }

    #[test]
    fn gso_v6_matches_reference(
        len in 0usize..6000, mss in 1u16..1500, seed in any::<u8>(),
        f in any::<(bool, bool, bool, bool)>(), ext in prop::option::of(0u8..3),
        seq in any::<u32>(),
    ) {
        let flags = Flags { fin: f.0, psh: f.1, cwr: f.2, ece: f.3 };
        check_gso(&payload(len, seed), mss, flags, ext, seq, false);
    }
}

/// A bare IPv6 packet: `exts` (next header, units) then `tail` upper-layer
/// bytes of protocol `last`.
fn chain(exts: &[(u8, u8)], last: u8, tail: usize) -> Vec<u8> {
    let mut b = vec![0u8; 40];
    for (i, &(_, units)) in exts.iter().enumerate() {
        let mut h = vec![0u8; (usize::from(units) + 1) * 8];
        h[0] = exts.get(i + 1).map_or(last, |e| e.0);
        h[1] = units;
        if h.len() > 8 || exts[i].0 != 43 {
            // PadN over the rest (Routing headers keep zeros: type 0,
            // segments left 0, which etherparse accepts as raw).
            h[2] = 1;
            h[3] = (h.len() - 4) as u8;
        }
        b.extend_from_slice(&h);
    }
    b.extend(std::iter::repeat_n(0xab, tail));
    let r = Ipv6Repr {
        src: "2001:db8::1".parse().unwrap(),
        dst: "2001:db8::2".parse().unwrap(),
        next_header: exts.first().map_or(last, |e| e.0),
        payload_len: (b.len() - 40) as u16,
        hop_limit: 64,
    };
    r.emit(&mut Ipv6Packet::new_unchecked(&mut b[..]));
    b
}

const TCP_OPTS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];

/// Segments a super-frame of `data` and compares every segment with a
/// frame built by etherparse for that chunk (sequence number advanced,
/// FIN/PSH only on the last, CWR only on the first).
fn check_gso(data: &[u8], mss: u16, f: Flags, ext: Option<u8>, seq: u32, partial: bool) -> usize {
    let (s, d): (Ipv6Addr, Ipv6Addr) = (
        "2001:db8::10".parse().unwrap(),
        "2001:db8:1::20".parse().unwrap(),
    );
    let build = |seq: u32, f: Flags, chunk: &[u8]| {
        let fr = tcp6(s, d, (40000, 443), seq, f, &TCP_OPTS, chunk);
        match ext {
            Some(u) => with_dest_opts(&fr, u),
            None => fr,
        }
    };
    let mut frame = build(seq, f, data);
    let ext_len = ext.map_or(0, |u| (usize::from(u) + 1) * 8);
    let l4 = L4 + ext_len;
    if partial {
        let l4_len = (frame.len() - l4) as u32;
        let p = checksum::pseudo_header_v6(s, d, 6, l4_len);
        frame[l4 + 16..l4 + 18].copy_from_slice(&p.to_be_bytes());
    }
    // Ethernet padding is not copied into segments.
    frame.extend_from_slice(&[0xee; 4]);
    let hdr = VnetHdr {
        gso_type: GSO_TCPV6 | GSO_ECN,
        gso_size: mss,
        ..VnetHdr::default()
    };
    let hl = l4 + 20 + TCP_OPTS.len();
    let mut out = vec![0u8; hl + usize::from(mss)];
    let mut segs = Vec::new();
    let n = segment_tcp6(&frame, &hdr, &mut out, |x| segs.push(x.to_vec())).unwrap();
    let chunks: Vec<&[u8]> = if data.is_empty() {
        vec![&[]]
    } else {
        data.chunks(usize::from(mss)).collect()
    };
    assert_eq!((n, segs.len()), (chunks.len(), chunks.len()));
    let mut off = 0u32;
    for (i, (seg, chunk)) in segs.iter().zip(&chunks).enumerate() {
        let last = i + 1 == chunks.len();
        let sf = Flags {
            fin: f.fin && last,
            psh: f.psh && last,
            cwr: f.cwr && i == 0,
            ece: f.ece,
        };
        assert_eq!(seg, &build(seq.wrapping_add(off), sf, chunk), "segment {i}");
        assert!(TcpPacket::new_unchecked(&seg[l4..]).verify_checksum_v6(s, d));
        off = off.wrapping_add(chunk.len() as u32);
    }
    n
}

#[test]
fn gso_v6_cases() {
    let all = Flags {
        fin: true,
        psh: true,
        cwr: true,
        ece: true,
    };
    let big = payload(1448 * 3 + 7, 5);
    assert_eq!(check_gso(&big, 1448, all, None, u32::MAX - 100, false), 4);
    assert_eq!(check_gso(&big, 1448, all, Some(2), 7, true), 4);
    assert_eq!(
        check_gso(&big[..1448 * 3], 1448, Flags::default(), Some(0), 0, true),
        3
    );
    assert_eq!(check_gso(&[], 536, all, Some(1), 1, false), 1);
    assert_eq!(check_gso(&big[..10], 536, all, None, 1, true), 1);
}

#[test]
fn gso_v6_refusals_emit_nothing() {
    let (s, d) = (Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST);
    let data = payload(3000, 1);
    let frame = tcp6(s, d, (1, 2), 0, Flags::default(), &[], &data);
    let gso = |gso_type: u8, gso_size: u16| VnetHdr {
        gso_type,
        gso_size,
        ..VnetHdr::default()
    };
    let mut out = vec![0u8; 2000];
    let run = |f: &[u8], h: VnetHdr, o: &mut [u8]| {
        let mut emitted = 0;
        let r = segment_tcp6(f, &h, o, |_| emitted += 1);
        (r, emitted)
    };
    assert_eq!(run(&frame, gso(GSO_TCPV6, 1000), &mut out), (Some(3), 3));
    assert_eq!(run(&frame, gso(GSO_TCPV4, 1000), &mut out), (None, 0));
    assert_eq!(run(&frame, gso(GSO_TCPV6, 0), &mut out), (None, 0));
    assert_eq!(
        run(&frame, gso(GSO_TCPV6, 1000), &mut out[..1000]),
        (None, 0)
    );
    // Not GSO: one segment, whatever its size, if `out` holds it.
    let mut big = vec![0u8; frame.len()];
    assert_eq!(run(&frame, VnetHdr::default(), &mut big), (Some(1), 1));
    assert_eq!(big, frame);
    // UDP, a fragment header, a truncated frame, IPv4 ethertype.
    let u = udp6(s, d, (1, 2), &data);
    assert_eq!(run(&u, gso(GSO_TCPV6, 1000), &mut out), (None, 0));
    let mut frag = with_dest_opts(&frame, 0);
    frag[14 + 6] = ipv6::NH_FRAGMENT;
    assert_eq!(run(&frag, gso(GSO_TCPV6, 1000), &mut out), (None, 0));
    assert_eq!(
        run(&frame[..frame.len() - 1], gso(GSO_TCPV6, 1000), &mut out),
        (None, 0)
    );
    let mut v4 = frame.clone();
    v4[12..14].copy_from_slice(&[8, 0]);
    assert_eq!(run(&v4, gso(GSO_TCPV6, 1000), &mut out), (None, 0));
    // A TCP data offset past the payload.
    let mut bad = tcp6(s, d, (1, 2), 0, Flags::default(), &[], &[]);
    bad[L4 + 12] = 0xf0;
    assert_eq!(run(&bad, gso(GSO_TCPV6, 1000), &mut out), (None, 0));
}

#[test]
fn icmpv6_builders_agree_with_etherparse() {
    let (s, d): (Ipv6Addr, Ipv6Addr) = ("fe80::1".parse().unwrap(), "fe80::2".parse().unwrap());
    let reprs = [
        Icmpv6Repr::EchoReply {
            ident: 3,
            seq_no: 4,
            data: b"abc",
        },
        Icmpv6Repr::NeighborAdvert {
            flags: icmpv6::NA_SOLICITED,
            target: s,
            target_ll: Some(modes::EthernetAddress(SRC_MAC)),
        },
        Icmpv6Repr::PacketTooBig {
            mtu: 1280,
            quoted: &[0x60; 100],
        },
    ];
    for r in reprs {
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(s, d, &mut Icmpv6Packet::new_unchecked(&mut b[..]))
            .unwrap();
        let (h, _) = etherparse::Icmpv6Header::from_slice(&b).unwrap();
        let want = etherparse::Icmpv6Header::with_checksum(
            h.icmp_type,
            s.octets(),
            d.octets(),
            &b[h.header_len()..],
        )
        .unwrap();
        assert_eq!(h.checksum, want.checksum, "{r:?}");
    }
}
