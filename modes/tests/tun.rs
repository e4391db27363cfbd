//! TUN mode and software GSO: IPIP encapsulation compared byte for byte
//! with frames assembled from etherparse headers and parsed back by
//! etherparse as IPv4-in-IPv4; decapsulation round trips; MSS clamping
//! (full and partial checksums, aligned and odd option offsets); TCPv4
//! segmentation compared segment by segment with etherparse-built frames,
//! with a property test that the segments reassemble the super-frame.

mod common;

use common::*;
use etherparse::{
    EtherType, Ethernet2Header, IpDscp, IpEcn, IpNumber, Ipv4Header, NetSlice, PacketBuilder,
    SlicedPacket, TransportSlice,
};
use modes::gso::segment_tcp4;
use modes::nat::Csum;
use modes::offload::complete_partial;
use modes::packet::parse;
use modes::tun::{decapsulate, encapsulate, mss_clamp, OVERHEAD};
use modes::wire::vnet::{self, VnetHdr};
use proptest::prelude::*;
use std::net::Ipv4Addr;

const LB: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// Sets TOS of a built frame (fixing the IP checksum with etherparse).
fn set_tos(frame: &mut [u8], tos: u8) {
    let (mut h, _) = Ipv4Header::from_slice(&frame[14..]).unwrap();
    h.dscp = IpDscp::try_new(tos >> 2).unwrap();
    h.ecn = IpEcn::try_new(tos & 3).unwrap();
    h.header_checksum = h.calc_header_checksum();
    let hl = h.header_len();
    frame[14..14 + hl].copy_from_slice(&h.to_bytes());
}

/// The encapsulated frame, assembled from etherparse headers.
fn expected_ipip(inner_frame: &[u8], src: Ipv4Addr, dst: Ipv4Addr, ttl: u8) -> Vec<u8> {
    let (eth, _) = Ethernet2Header::from_slice(inner_frame).unwrap();
    let (ih, _) = Ipv4Header::from_slice(&inner_frame[14..]).unwrap();
    let inner = &inner_frame[14..14 + usize::from(ih.total_len)];
    let mut oh = Ipv4Header::new(
        inner.len() as u16,
        ttl,
        IpNumber(4),
        src.octets(),
        dst.octets(),
    )
    .unwrap();
    oh.dscp = ih.dscp;
    oh.ecn = ih.ecn;
    oh.identification = ih.identification;
    oh.dont_fragment = ih.dont_fragment;
    oh.header_checksum = oh.calc_header_checksum();
    let mut out = Vec::new();
    eth.write(&mut out).unwrap();
    oh.write(&mut out).unwrap();
    out.extend_from_slice(inner);
    out
}

/// Checks etherparse sees IPv4-in-IPv4 whose inner packet is `inner` and
/// has valid checksums.
fn check_ipip_with_etherparse(frame: &[u8], inner: &[u8]) {
    let p = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv4(outer)) = &p.net else {
        panic!("not IPv4")
    };
    let oh = outer.header().to_header();
    assert_eq!(oh.protocol, IpNumber(4));
    assert_eq!(oh.header_checksum, oh.calc_header_checksum());
    assert_eq!(outer.payload().payload, inner);
    let ip = SlicedPacket::from_ip(outer.payload().payload).unwrap();
    assert!(matches!(ip.net, Some(NetSlice::Ipv4(_))));
    // The inner packet re-framed in Ethernet has valid checksums.
    let mut reframed = frame[..14].to_vec();
    reframed.extend_from_slice(inner);
    assert_checksums_valid(&reframed);
}

fn encap(frame: &[u8], room: usize) -> (Vec<u8>, Option<usize>) {
    let pkt = parse(frame).unwrap();
    let mut buf = frame.to_vec();
    buf.resize(frame.len() + room, 0xee);
    let r = encapsulate(&mut buf, frame.len(), &pkt, LB, RIP, 64);
    (buf, r)
}

#[test]
fn encapsulate_tcp_with_options_tos_and_df() {
    let mut frame = Spec::tcp_request(700).build();
    set_tos(&mut frame, 0xb9);
    let (buf, n) = encap(&frame, OVERHEAD);
    let n = n.unwrap();
    assert_eq!(n, frame.len() + 20);
    let want = expected_ipip(&frame, LB, RIP, 64);
    assert_frames_eq(&buf[..n], &want, "ipip golden");
    check_ipip_with_etherparse(&buf[..n], &frame[14..]);
    // outer DF copied from the inner header
    assert_eq!(buf[14 + 6] & 0x40, 0x40);
}

#[test]
fn encapsulate_udp_without_df_drops_padding() {
    let mut spec = Spec::udp_request(3);
    spec.df = false;
    spec.ident = 0xbeef;
    let frame = spec.build();
    let ip_end = frame.len();
    let mut padded = frame.clone();
    padded.resize(60, 0);
    let pkt = parse(&padded).unwrap();
    let mut buf = padded.clone();
    buf.resize(100, 0);
    let n = encapsulate(&mut buf, padded.len(), &pkt, LB, RIP, 3).unwrap();
    assert_eq!(n, ip_end + 20);
    let want = expected_ipip(&frame, LB, RIP, 3);
    assert_frames_eq(&buf[..n], &want, "ipip golden");
    assert_eq!(buf[14 + 6] & 0x40, 0, "no DF");
    check_ipip_with_etherparse(&buf[..n], &frame[14..]);
}

#[test]
fn encapsulate_refusals_change_nothing() {
    let frame = Spec::tcp_request(10).build();
    // no room
    let (buf, n) = encap(&frame, OVERHEAD - 1);
    assert_eq!(n, None);
    assert_eq!(&buf[..frame.len()], &frame[..]);
    // frame_len beyond the buffer
    let pkt = parse(&frame).unwrap();
    let mut b = frame.clone();
    assert_eq!(
        encapsulate(&mut b, frame.len() + 1, &pkt, LB, RIP, 64),
        None
    );
    // outer total length would exceed 65535
    let big = Spec::udp_request(65_535 - 20 - 8 - 10).build();
    let (buf, n) = encap(&big, 64);
    assert_eq!(n, None);
    assert_eq!(&buf[..big.len()], &big[..]);
    // ARP
    let mut arp = vec![0u8; 64];
    let _ = modes::reply::arp_request(
        &mut arp,
        modes::EthernetAddress(LB_MAC),
        LB,
        Ipv4Addr::new(10, 0, 0, 2),
    )
    .unwrap();
    let apkt = parse(&arp).unwrap();
    assert_eq!(encapsulate(&mut arp, 42, &apkt, LB, RIP, 64), None);
}

#[test]
fn decapsulate_round_trip_and_rejections() {
    let frame = Spec::tcp_request(321).build();
    let (buf, n) = encap(&frame, OVERHEAD);
    let n = n.unwrap();
    let ip = &buf[14..n];
    let (off, len) = decapsulate(ip).unwrap();
    assert_eq!(off, 20);
    assert_eq!(&ip[off..off + len], &frame[14..]);
    // trailing bytes after the outer packet are ignored
    let mut longer = ip.to_vec();
    longer.extend_from_slice(&[0; 9]);
    assert_eq!(decapsulate(&longer), Some((20, frame.len() - 14)));

    let fix = |b: &mut [u8]| {
        b[10] = 0;
        b[11] = 0;
        let (h, _) = Ipv4Header::from_slice(b).unwrap();
        let c = h.calc_header_checksum();
        b[10..12].copy_from_slice(&c.to_be_bytes());
    };
    // not protocol 4
    let mut b = ip.to_vec();
    b[9] = 41;
    fix(&mut b);
    assert_eq!(decapsulate(&b), None);
    // bad outer checksum
    let mut b = ip.to_vec();
    b[10] ^= 1;
    assert_eq!(decapsulate(&b), None);
    // outer fragment
    let mut b = ip.to_vec();
    b[6] |= 0x20;
    fix(&mut b);
    assert_eq!(decapsulate(&b), None);
    // inner header corrupt
    let mut b = ip.to_vec();
    b[20 + 12] ^= 0x10;
    assert_eq!(decapsulate(&b), None);
    // truncated: inner total length beyond the outer packet
    let mut b = ip[..ip.len() - 1].to_vec();
    let t = (b.len()) as u16;
    b[2..4].copy_from_slice(&t.to_be_bytes());
    fix(&mut b);
    assert_eq!(decapsulate(&b), None);
    assert_eq!(decapsulate(&[]), None);
    assert_eq!(decapsulate(&ip[..19]), None);
}

fn syn_spec(opts: Vec<u8>) -> Spec {
    let mut spec = Spec::tcp_request(0);
    spec.l4 = L4::Tcp {
        sport: 40001,
        dport: 80,
        seq: 7,
        ack: None,
        syn: true,
        fin: false,
        rst: false,
        opts,
    };
    spec
}

fn syn_opts(mss: u16, odd: bool) -> Vec<u8> {
    let [a, b] = mss.to_be_bytes();
    let mut o = Vec::new();
    if odd {
        o.push(1); // NOP: MSS value at TCP offset 23
    }
    o.extend_from_slice(&[2, 4, a, b, 4, 2, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8, 3, 3, 7]);
    while o.len() % 4 != 0 {
        o.push(1);
    }
    o
}

#[test]
fn mss_clamp_full_and_partial_aligned_and_odd() {
    for odd in [false, true] {
        let spec = syn_spec(syn_opts(1460, odd));
        let want = syn_spec(syn_opts(1400, odd)).build();
        let mut frame = spec.build();
        let pkt = parse(&frame).unwrap();
        assert!(mss_clamp(&mut frame, &pkt, Csum::Full, 1400));
        assert_frames_eq(&frame, &want, "mss full");
        assert_checksums_valid(&frame);

        let mut frame = spec.build();
        let (start, off) = make_partial(&mut frame);
        let before = l4_csum(&frame);
        assert!(mss_clamp(&mut frame, &pkt, Csum::Partial, 1400));
        assert_eq!(l4_csum(&frame), before, "partial sum untouched");
        assert!(complete_partial(&mut frame, start, off));
        assert_frames_eq(&frame, &want, "mss partial completed");
    }
}

#[test]
fn mss_clamp_leaves_other_segments_alone() {
    // MSS already small enough
    let mut frame = syn_spec(syn_opts(1200, true)).build();
    let orig = frame.clone();
    let pkt = parse(&frame).unwrap();
    assert!(!mss_clamp(&mut frame, &pkt, Csum::Full, 1400));
    assert_eq!(frame, orig);
    // not a SYN (the fixture carries an MSS option anyway)
    let mut spec = Spec::tcp_request(5);
    spec.ip_opts.clear();
    let mut frame = spec.build();
    let orig = frame.clone();
    let pkt = parse(&frame).unwrap();
    assert!(!mss_clamp(&mut frame, &pkt, Csum::Full, 536));
    assert_eq!(frame, orig);
    // SYN without MSS option, and UDP
    let mut frame = syn_spec(vec![1, 1, 1, 0]).build();
    let pkt = parse(&frame).unwrap();
    assert!(!mss_clamp(&mut frame, &pkt, Csum::Full, 536));
    let mut frame = Spec::udp_request(10).build();
    let pkt = parse(&frame).unwrap();
    assert!(!mss_clamp(&mut frame, &pkt, Csum::Full, 536));
}

/// TCP flags used by the GSO fixtures.
#[derive(Clone, Copy, Debug)]
struct Flags {
    fin: bool,
    psh: bool,
    cwr: bool,
    ece: bool,
}

/// A TCP/IPv4 frame built by etherparse (ACK always set).
fn tcp_frame(
    ident: u16,
    ip_opts: &[u8],
    tcp_opts: &[u8],
    seq: u32,
    f: Flags,
    payload: &[u8],
) -> Vec<u8> {
    let ip = Ipv4Header {
        source: CLIENT.octets(),
        destination: VIP.octets(),
        time_to_live: 64,
        identification: ident,
        dont_fragment: true,
        options: ip_opts.try_into().unwrap(),
        ..Default::default()
    };
    let mut t = PacketBuilder::ethernet2(CLIENT_MAC, LB_MAC)
        .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()))
        .tcp(40001, 80, seq, 502)
        .ack(0x1234_5678);
    if f.fin {
        t = t.fin();
    }
    if f.psh {
        t = t.psh();
    }
    if f.cwr {
        t = t.cwr();
    }
    if f.ece {
        t = t.ece();
    }
    let mut out = Vec::new();
    t.options_raw(tcp_opts)
        .unwrap()
        .write(&mut out, payload)
        .unwrap();
    out
}

fn gso_hdr(frame: &[u8], mss: u16) -> VnetHdr {
    let l4 = l4_off(frame);
    let thl = usize::from(frame[l4 + 12] >> 4) * 4;
    VnetHdr {
        flags: vnet::NEEDS_CSUM,
        gso_type: vnet::GSO_TCPV4,
        hdr_len: (l4 + thl) as u16,
        gso_size: mss,
        csum_start: l4 as u16,
        csum_offset: 16,
        num_buffers: 0,
    }
}

/// Segments `frame` and checks every segment against etherparse; returns
/// the number of segments.
#[allow(clippy::too_many_arguments)]
fn check_segmentation(
    ident: u16,
    ip_opts: &[u8],
    tcp_opts: &[u8],
    seq: u32,
    f: Flags,
    payload: &[u8],
    mss: u16,
    partial: bool,
) -> usize {
    let mut frame = tcp_frame(ident, ip_opts, tcp_opts, seq, f, payload);
    let hdr = gso_hdr(&frame, mss);
    if partial {
        make_partial(&mut frame);
    }
    let pkt = parse(&frame).unwrap();
    let hl = 14 + 20 + ip_opts.len() + 20 + tcp_opts.len();
    let mut out = vec![0u8; hl + usize::from(mss)];
    let mut segs: Vec<Vec<u8>> = Vec::new();
    let n = segment_tcp4(&frame, &hdr, &pkt, &mut out, |s| segs.push(s.to_vec())).unwrap();
    assert_eq!(n, segs.len());
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![&[]]
    } else {
        payload.chunks(usize::from(mss)).collect()
    };
    assert_eq!(segs.len(), chunks.len());
    let mut joined = Vec::new();
    let mut off = 0u32;
    for (i, (seg, chunk)) in segs.iter().zip(&chunks).enumerate() {
        let last = i + 1 == chunks.len();
        let sf = Flags {
            fin: f.fin && last,
            psh: f.psh && last,
            cwr: f.cwr && i == 0,
            ece: f.ece,
        };
        let want = tcp_frame(
            ident.wrapping_add(i as u16),
            ip_opts,
            tcp_opts,
            seq.wrapping_add(off),
            sf,
            chunk,
        );
        assert_frames_eq(seg, &want, &format!("segment {i}"));
        assert_checksums_valid(seg);
        let p = SlicedPacket::from_ethernet(seg).unwrap();
        let Some(TransportSlice::Tcp(t)) = &p.transport else {
            panic!()
        };
        joined.extend_from_slice(t.payload());
        off += chunk.len() as u32;
    }
    assert_eq!(joined, payload, "reassembly");
    n
}

const NO_FLAGS: Flags = Flags {
    fin: false,
    psh: false,
    cwr: false,
    ece: false,
};

#[test]
fn segment_super_frame_with_options_and_flags() {
    let f = Flags {
        fin: true,
        psh: true,
        cwr: true,
        ece: true,
    };
    let payload = pattern(10_000);
    let n = check_segmentation(
        0xfffe,
        &IP_OPTS_8,
        &[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2],
        0xffff_f000,
        f,
        &payload,
        1448,
        true,
    );
    assert_eq!(n, 7);
    // exact multiple of the MSS, no options, full checksum in the input
    assert_eq!(
        check_segmentation(1, &[], &[], 5, NO_FLAGS, &pattern(3000), 1000, false),
        3
    );
}

#[test]
fn segment_non_gso_and_empty_payload_emit_one_segment() {
    let payload = pattern(100);
    let mut frame = tcp_frame(9, &[], &[], 1, NO_FLAGS, &payload);
    make_partial(&mut frame);
    let pkt = parse(&frame).unwrap();
    let hdr = VnetHdr::default();
    let mut out = vec![0u8; 200];
    let mut segs = Vec::new();
    assert_eq!(
        segment_tcp4(&frame, &hdr, &pkt, &mut out, |s| segs.push(s.to_vec())),
        Some(1)
    );
    assert_frames_eq(
        &segs[0],
        &tcp_frame(9, &[], &[], 1, NO_FLAGS, &payload),
        "non-GSO",
    );
    assert_eq!(
        check_segmentation(3, &[], &[], 1, NO_FLAGS, &[], 1448, true),
        1
    );
}

#[test]
fn segment_refusals_emit_nothing() {
    let frame = tcp_frame(1, &[], &[], 1, NO_FLAGS, &pattern(3000));
    let pkt = parse(&frame).unwrap();
    let mut hdr = gso_hdr(&frame, 1000);
    let mut calls = 0;
    // out too small for one full segment
    let mut out = vec![0u8; 54 + 999];
    assert_eq!(
        segment_tcp4(&frame, &hdr, &pkt, &mut out, |_| calls += 1),
        None
    );
    let mut out = vec![0u8; 54 + 1000];
    // gso_size 0, wrong GSO type
    hdr.gso_size = 0;
    assert_eq!(
        segment_tcp4(&frame, &hdr, &pkt, &mut out, |_| calls += 1),
        None
    );
    hdr.gso_size = 1000;
    hdr.gso_type = vnet::GSO_UDP_L4;
    assert_eq!(
        segment_tcp4(&frame, &hdr, &pkt, &mut out, |_| calls += 1),
        None
    );
    // ECN bit is fine
    hdr.gso_type = vnet::GSO_TCPV4 | vnet::GSO_ECN;
    assert_eq!(
        segment_tcp4(&frame, &hdr, &pkt, &mut out, |_| calls += 1),
        Some(3)
    );
    assert_eq!(calls, 3);
    // UDP, and a truncated frame
    let udp = Spec::udp_request(10).build();
    let upkt = parse(&udp).unwrap();
    assert_eq!(segment_tcp4(&udp, &hdr, &upkt, &mut out, |_| ()), None);
    assert_eq!(
        segment_tcp4(&frame[..100], &hdr, &pkt, &mut out, |_| ()),
        None
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn segment_tcp4_reassembles_exactly(
        len in prop_oneof![4 => 0usize..5000, 1 => 20_000usize..65_000],
        mss in prop_oneof![1u16..64, 500u16..1500, Just(1448u16), Just(9000u16)],
        ip_words in 0usize..3, tcp_words in 0usize..5,
        (fin, psh, cwr, ece) in any::<(bool, bool, bool, bool)>(),
        ident: u16, seq: u32, partial: bool, seed: u64,
    ) {
        // Keep the segment count (and the test time) bounded.
        let mss = mss.max((len / 2000) as u16);
        let ip_opts = vec![1u8; ip_words * 4];
        let tcp_opts = vec![1u8; tcp_words * 4];
        let max_len = 65_535 - 20 - ip_opts.len() - 20 - tcp_opts.len();
        let mut payload = pattern(len.min(max_len));
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= (seed >> (i % 57)) as u8;
        }
        let f = Flags { fin, psh, cwr, ece };
        check_segmentation(ident, &ip_opts, &tcp_opts, seq, f, &payload, mss, partial);
    }

    #[test]
    fn mss_clamp_equals_rebuild(mss: u16, max: u16, odd: bool) {
        let mut frame = syn_spec(syn_opts(mss, odd)).build();
        let pkt = parse(&frame).unwrap();
        let changed = mss_clamp(&mut frame, &pkt, Csum::Full, max);
        prop_assert_eq!(changed, mss > max);
        let want = syn_spec(syn_opts(mss.min(max), odd)).build();
        prop_assert!(frame == want);
    }

    #[test]
    fn decapsulate_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..120)) {
        if let Some((off, len)) = decapsulate(&bytes) {
            prop_assert!(off + len <= bytes.len());
        }
    }
}

#[test]
fn etherparse_ether_type_is_ipv4_after_encapsulation() {
    let frame = Spec::echo_request(8).build();
    let (buf, n) = encap(&frame, OVERHEAD);
    let n = n.unwrap();
    let (eth, _) = Ethernet2Header::from_slice(&buf[..n]).unwrap();
    assert_eq!(eth.ether_type, EtherType::IPV4);
    check_ipip_with_etherparse(&buf[..n], &frame[14..]);
}
