//! FullNAT and TOA: every rewritten frame is compared byte for byte with a
//! frame built independently by etherparse and re-verified by etherparse;
//! partial (NEEDS_CSUM) checksums, GSO super-frames included, are completed
//! in software and compared with etherparse's full checksum.

mod common;

use common::*;
use etherparse::{SlicedPacket, TransportSlice};
use modes::fullnat::{fnat_in, fnat_out};
use modes::gso::segment_tcp4;
use modes::nat::Csum;
use modes::offload::complete_partial;
use modes::packet::parse;
use modes::toa::{insert_toa, insert_toa_with, parse_toa, toa_option, ToaError};
use modes::wire::vnet::{self, VnetHdr};
use proptest::prelude::*;
use std::net::Ipv4Addr;

const LIP: Ipv4Addr = Ipv4Addr::new(10, 20, 0, 1);
const LPORT: u16 = 61_000;

fn fnat_in_expected(spec: &Spec, rport: u16) -> Spec {
    let mut e = spec.clone();
    e.src = LIP;
    e.dst = RIP;
    e.set_ports(LPORT, rport);
    e
}

#[test]
fn fnat_in_tcp_udp_icmp_golden() {
    for spec in [
        Spec::tcp_request(1000),
        Spec::tcp_request(0),
        Spec::udp_request(77),
        Spec::echo_request(16),
    ] {
        let mut frame = spec.build();
        let pkt = parse(&frame).unwrap();
        fnat_in(&mut frame, &pkt, Csum::Full, LIP, LPORT, RIP, 8080);
        let want = fnat_in_expected(&spec, 8080).build();
        assert_frames_eq(&frame, &want, "fnat_in");
        assert_checksums_valid(&frame);
    }
}

#[test]
fn fnat_out_reply_golden() {
    for mut spec in [Spec::tcp_request(333), Spec::udp_request(12)] {
        spec.src = RIP;
        spec.dst = LIP;
        spec.set_ports(8080, LPORT);
        let mut frame = spec.build();
        let pkt = parse(&frame).unwrap();
        fnat_out(&mut frame, &pkt, Csum::Full, VIP, 80, CLIENT, 40001);
        let mut e = spec.clone();
        e.src = VIP;
        e.dst = CLIENT;
        e.set_ports(80, 40001);
        assert_frames_eq(&frame, &e.build(), "fnat_out");
        assert_checksums_valid(&frame);
    }
}

#[test]
fn fnat_udp_zero_checksum_stays_zero() {
    let spec = Spec::udp_request(20);
    let mut frame = spec.build();
    let l4 = l4_off(&frame);
    frame[l4 + 6] = 0;
    frame[l4 + 7] = 0;
    let pkt = parse(&frame).unwrap();
    fnat_in(&mut frame, &pkt, Csum::Full, LIP, LPORT, RIP, 5300);
    assert_eq!(l4_csum(&frame), 0);
    let mut want = fnat_in_expected(&spec, 5300).build();
    want[l4 + 6] = 0;
    want[l4 + 7] = 0;
    assert_frames_eq(&frame, &want, "udp no checksum");
}

#[test]
fn fnat_partial_gso_super_frame() {
    let spec = Spec::tcp_request(40_000);
    let mut frame = spec.build();
    let (start, off) = make_partial(&mut frame);
    let pkt = parse(&frame).unwrap();
    fnat_in(&mut frame, &pkt, Csum::Partial, LIP, LPORT, RIP, 8080);
    let mut want = fnat_in_expected(&spec, 8080).build();
    let full = l4_csum(&want);
    make_partial(&mut want);
    assert_frames_eq(&frame, &want, "partial field = new pseudo-header sum");
    assert!(complete_partial(&mut frame, start, off));
    assert_eq!(norm(l4_csum(&frame)), norm(full));
}

#[test]
fn fnat_short_frame_is_left_alone() {
    let frame = Spec::tcp_request(0).build();
    let pkt = parse(&frame).unwrap();
    let mut short = frame[..pkt.l4 + 10].to_vec();
    let orig = short.clone();
    fnat_in(&mut short, &pkt, Csum::Full, LIP, LPORT, RIP, 1);
    assert_eq!(short, orig);
}

// ---------------------------------------------------------------- TOA

fn with_tcp_opts(spec: &Spec, new_opts: Vec<u8>) -> Spec {
    let mut e = spec.clone();
    if let L4::Tcp { opts, .. } = &mut e.l4 {
        *opts = new_opts;
    }
    e
}

fn tcp_opts_of(spec: &Spec) -> Vec<u8> {
    match &spec.l4 {
        L4::Tcp { opts, .. } => opts.clone(),
        _ => vec![],
    }
}

/// The spec with TOA(CLIENT:40001) first in its option list.
fn toa_expected(spec: &Spec) -> Spec {
    let mut o = toa_option(CLIENT, 40001).to_vec();
    o.extend(tcp_opts_of(spec));
    with_tcp_opts(spec, o)
}

fn insert(spec: &Spec, room: usize) -> (Vec<u8>, Result<usize, ToaError>) {
    let frame = spec.build();
    let pkt = parse(&frame).unwrap();
    let mut buf = frame.clone();
    buf.resize(frame.len() + room, 0);
    let r = insert_toa(&mut buf, frame.len(), &pkt, None, CLIENT, 40001);
    (buf, r)
}

#[test]
fn toa_wire_format() {
    assert_eq!(
        toa_option(Ipv4Addr::new(192, 0, 2, 33), 0x1f90),
        [0xfe, 0x08, 0x1f, 0x90, 192, 0, 2, 33]
    );
}

#[test]
fn toa_on_ack_with_data_golden() {
    let mut spec = with_tcp_opts(&Spec::tcp_request(200), vec![]);
    spec.ip_opts.clear();
    let (buf, r) = insert(&spec, 8);
    let n = r.unwrap();
    let want = toa_expected(&spec).build();
    assert_eq!(n, want.len());
    assert_frames_eq(&buf[..n], &want, "toa golden");
    assert_checksums_valid(&buf[..n]);
    let p = SlicedPacket::from_ethernet(&buf[..n]).unwrap();
    let Some(TransportSlice::Tcp(t)) = &p.transport else {
        panic!()
    };
    assert_eq!(parse_toa(t.options()), Some((CLIENT.into(), 40001)));
    assert_eq!(t.payload(), &spec.payload[..]);
}

#[test]
fn toa_on_syn_with_mss_sack_ts_ws_and_ip_options() {
    let opts = vec![
        2, 4, 0x05, 0xb4, // MSS
        4, 2, // SACK permitted
        8, 10, 1, 2, 3, 4, 0, 0, 0, 0, // timestamps
        1, 3, 3, 7, // NOP, WS
    ];
    let mut spec = Spec::tcp_request(0);
    spec.l4 = L4::Tcp {
        sport: 40001,
        dport: 80,
        seq: 12345,
        ack: None,
        syn: true,
        fin: false,
        rst: false,
        opts,
    };
    let (buf, r) = insert(&spec, 100);
    let n = r.unwrap();
    assert_frames_eq(&buf[..n], &toa_expected(&spec).build(), "toa syn");
    assert_checksums_valid(&buf[..n]);
    assert_eq!(parse(&buf[..n]).unwrap().l4_header_len(), 48);
}

#[test]
fn toa_with_32_bytes_of_options_fits_exactly() {
    let spec = with_tcp_opts(&Spec::tcp_request(50), TCP_OPTS_40[..32].to_vec());
    let (buf, r) = insert(&spec, 8);
    let n = r.unwrap();
    assert_frames_eq(&buf[..n], &toa_expected(&spec).build(), "toa 32+8");
    assert_eq!(parse(&buf[..n]).unwrap().l4_header_len(), 60);
}

#[test]
fn toa_refusals_change_nothing() {
    // 40 and 36 bytes of options: no room
    for len in [40, 36] {
        let spec = with_tcp_opts(&Spec::tcp_request(10), TCP_OPTS_40[..len].to_vec());
        let (buf, r) = insert(&spec, 100);
        assert_eq!(r, Err(ToaError::NoRoom));
        assert_eq!(&buf[..spec.build().len()], &spec.build()[..]);
    }
    // buffer without room
    let spec = with_tcp_opts(&Spec::tcp_request(10), vec![]);
    let (buf, r) = insert(&spec, 7);
    assert_eq!(r, Err(ToaError::TooBig));
    assert_eq!(&buf[..spec.build().len()], &spec.build()[..]);
    // IP total length would exceed 65535
    let mut spec = with_tcp_opts(&Spec::tcp_request(65_535 - 28 - 20 - 4), vec![]);
    spec.ip_opts = IP_OPTS_8.to_vec();
    let (_, r) = insert(&spec, 100);
    assert_eq!(r, Err(ToaError::TooBig));
    // not TCP
    let (_, r) = insert(&Spec::udp_request(10), 100);
    assert_eq!(r, Err(ToaError::NotTcp));
    // frame_len beyond the buffer / pkt not from this frame
    let frame = with_tcp_opts(&Spec::tcp_request(10), vec![]).build();
    let pkt = parse(&frame).unwrap();
    let mut b = frame.clone();
    assert_eq!(
        insert_toa(&mut b, frame.len() + 1, &pkt, None, CLIENT, 1),
        Err(ToaError::NotTcp)
    );
    let mut short = frame[..frame.len() - 1].to_vec();
    let n = short.len();
    assert_eq!(
        insert_toa(&mut short, n, &pkt, None, CLIENT, 1),
        Err(ToaError::NotTcp)
    );
}

#[test]
fn toa_drops_ethernet_padding() {
    let mut spec = with_tcp_opts(&Spec::tcp_request(0), vec![]);
    spec.ip_opts.clear();
    let mut frame = spec.build();
    assert_eq!(frame.len(), 54);
    frame.resize(60, 0);
    let pkt = parse(&frame).unwrap();
    frame.resize(80, 0);
    let n = insert_toa(&mut frame, 60, &pkt, None, CLIENT, 40001).unwrap();
    assert_eq!(n, 62);
    assert_frames_eq(&frame[..n], &toa_expected(&spec).build(), "padding");
}

#[test]
fn toa_on_partial_gso_super_frame() {
    let mut spec = with_tcp_opts(&Spec::tcp_request(30_000), TCP_OPTS_40[..12].to_vec());
    spec.ip_opts.clear();
    let mut frame = spec.build();
    let (start, off) = make_partial(&mut frame);
    let pkt = parse(&frame).unwrap();
    let mut hdr = VnetHdr {
        flags: vnet::NEEDS_CSUM,
        gso_type: vnet::GSO_TCPV4,
        hdr_len: (start + 32) as u16,
        gso_size: 1448,
        csum_start: start as u16,
        csum_offset: off as u16,
        num_buffers: 0,
    };
    let len = frame.len();
    frame.resize(len + 8, 0);
    let n = insert_toa(&mut frame, len, &pkt, Some(&mut hdr), CLIENT, 40001).unwrap();
    frame.truncate(n);
    assert_eq!(hdr.hdr_len, (start + 40) as u16);
    assert_eq!(hdr.gso_size, 1440);
    assert_eq!(
        (usize::from(hdr.csum_start), usize::from(hdr.csum_offset)),
        (start, off)
    );
    let mut want = toa_expected(&spec).build();
    let full = l4_csum(&want);
    make_partial(&mut want);
    assert_frames_eq(&frame, &want, "partial sum for the new length");
    // Segment the super-frame: every segment carries TOA and fits the old
    // segment size on the wire.
    let spkt = parse(&frame).unwrap();
    let mut out = vec![0u8; 2000];
    let mut count = 0;
    segment_tcp4(&frame, &hdr, &spkt, &mut out, |s| {
        assert_checksums_valid(s);
        assert!(s.len() <= 14 + 20 + 40 + 1448);
        let p = SlicedPacket::from_ethernet(s).unwrap();
        let Some(TransportSlice::Tcp(t)) = &p.transport else {
            panic!()
        };
        assert_eq!(parse_toa(t.options()), Some((CLIENT.into(), 40001)));
        count += 1;
    })
    .unwrap();
    assert_eq!(count, 30_000usize.div_ceil(1440));
    // and the completed checksum of the super-frame is etherparse's
    assert!(complete_partial(&mut frame, start, off));
    assert_eq!(norm(l4_csum(&frame)), norm(full));
}

#[test]
fn toa_non_gso_vnet_header_keeps_gso_size() {
    let spec = with_tcp_opts(&Spec::tcp_request(100), vec![]);
    let frame = spec.build();
    let pkt = parse(&frame).unwrap();
    let mut hdr = VnetHdr {
        hdr_len: 0,
        ..VnetHdr::default()
    };
    let mut buf = frame.clone();
    buf.resize(frame.len() + 8, 0);
    let n = insert_toa(&mut buf, frame.len(), &pkt, Some(&mut hdr), CLIENT, 40001).unwrap();
    assert_eq!(hdr, VnetHdr::default());
    assert_frames_eq(&buf[..n], &toa_expected(&spec).build(), "full via hdr");
    // a GSO header whose gso_size cannot shrink by 8
    let mut hdr = VnetHdr {
        gso_type: vnet::GSO_TCPV4,
        gso_size: 8,
        ..VnetHdr::default()
    };
    let mut buf = frame.clone();
    buf.resize(frame.len() + 8, 0);
    assert_eq!(
        insert_toa(&mut buf, frame.len(), &pkt, Some(&mut hdr), CLIENT, 1),
        Err(ToaError::NoRoom)
    );
    assert_eq!(hdr.gso_size, 8);
}

#[test]
fn parse_toa_cases() {
    assert_eq!(
        parse_toa(&[1, 1, 0xfe, 8, 0, 80, 10, 0, 0, 1]),
        Some((Ipv4Addr::new(10, 0, 0, 1).into(), 80))
    );
    assert_eq!(parse_toa(&[0xfe, 20, 0, 80, 10, 0, 0, 1]), None);
    assert_eq!(parse_toa(&[0xfe, 8, 0, 80, 10, 0, 0]), None);
    assert_eq!(parse_toa(&TCP_OPTS_40), None);
    assert_eq!(parse_toa(&[]), None);
}

fn arb_addr() -> impl Strategy<Value = Ipv4Addr> {
    any::<[u8; 4]>().prop_map(Ipv4Addr::from)
}

fn arb_spec(tcp_only: bool) -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        arb_addr(),
        arb_addr(),
        any::<(u16, u16, u32)>(),
        0usize..9,
        0usize..3,
        prop_oneof![4 => 0usize..1500, 1 => 10_000usize..20_000],
        any::<(bool, bool)>(),
    )
        .prop_map(
            move |(udp, src, dst, (sport, dport, seq), opt_words, ip_words, len, (syn, fin))| {
                let mut s = if udp && !tcp_only {
                    Spec::udp_request(len)
                } else {
                    Spec::tcp_request(len)
                };
                s.src = src;
                s.dst = dst;
                s.ip_opts = vec![1; ip_words * 4];
                if let L4::Tcp {
                    opts,
                    seq: q,
                    syn: sy,
                    fin: fi,
                    ..
                } = &mut s.l4
                {
                    *opts = TCP_OPTS_40[..opt_words * 4].to_vec();
                    *q = seq;
                    *sy = syn;
                    *fi = fin;
                }
                s.set_ports(sport, dport);
                s
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn fnat_incremental_equals_recompute(
        spec in arb_spec(false), lip in arb_addr(), rip in arb_addr(),
        lport: u16, rport: u16, inbound: bool, partial: bool,
    ) {
        let mut frame = spec.build();
        let pkt = parse(&frame).unwrap();
        let (start, off) = if partial { make_partial(&mut frame) } else { (0, 0) };
        let csum = if partial { Csum::Partial } else { Csum::Full };
        if inbound {
            fnat_in(&mut frame, &pkt, csum, lip, lport, rip, rport);
        } else {
            fnat_out(&mut frame, &pkt, csum, lip, lport, rip, rport);
        }
        let mut e = spec.clone();
        e.src = lip;
        e.dst = rip;
        e.set_ports(lport, rport);
        let mut want = e.build();
        if partial {
            let full = l4_csum(&want);
            make_partial(&mut want);
            prop_assert!(frame == want, "partial sum differs");
            prop_assert!(complete_partial(&mut frame, start, off));
            prop_assert_eq!(norm(l4_csum(&frame)), norm(full));
        } else {
            prop_assert!(frame == want, "full rewrite differs");
            assert_checksums_valid(&frame);
        }
    }

    #[test]
    fn toa_equals_rebuild(spec in arb_spec(true), client in arb_addr(), cport: u16, partial: bool) {
        let frame = spec.build();
        let pkt = parse(&frame).unwrap();
        let mut buf = frame.clone();
        let (start, off) = if partial { make_partial(&mut buf) } else { (0, 0) };
        buf.resize(frame.len() + 8, 0);
        let csum = if partial { Csum::Partial } else { Csum::Full };
        let r = insert_toa_with(&mut buf, frame.len(), &pkt, csum, None, client, cport);
        let opts = tcp_opts_of(&spec);
        if opts.len() > 32 {
            prop_assert_eq!(r, Err(ToaError::NoRoom));
            return Ok(());
        }
        let n = r.unwrap();
        let mut o = toa_option(client, cport).to_vec();
        o.extend(opts);
        let mut want = with_tcp_opts(&spec, o).build();
        prop_assert_eq!(n, want.len());
        let full = l4_csum(&want);
        if partial {
            make_partial(&mut want);
        }
        prop_assert!(buf[..n] == want[..], "TOA frame differs");
        if partial {
            prop_assert!(complete_partial(&mut buf[..n], start, off));
            prop_assert_eq!(norm(l4_csum(&buf[..n])), norm(full));
        }
    }
}

fn arb_packet() -> impl Strategy<Value = modes::Packet> {
    let off = prop_oneof![0usize..200, Just(usize::MAX), Just(usize::MAX - 20)];
    (
        off.clone(),
        off,
        prop_oneof![Just(6u8), Just(17), Just(1), any::<u8>()],
        any::<(u16, u16, u16, u8)>(),
    )
        .prop_map(
            |(l3, l4, proto, (total, l4_len, payload_len, flags))| modes::Packet {
                kind: modes::Kind::Ipv4,
                l3,
                l4,
                proto,
                src: std::net::IpAddr::V4(CLIENT),
                dst: std::net::IpAddr::V4(VIP),
                sport: 1,
                dport: 2,
                tcp_flags: flags,
                ttl: 64,
                ip_total_len: u32::from(total),
                l4_len,
                payload_len,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Every new rewrite survives a `Packet` that does not describe the
    /// buffer (fabricated offsets, lengths, protocol) and any buffer.
    #[test]
    fn new_rewrites_never_panic_on_inconsistent_input(
        pkt in arb_packet(),
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        frame_len in prop_oneof![0usize..300, Just(usize::MAX)],
        gso: bool, gso_size: u16, csum_partial: bool,
    ) {
        use modes::{gso, icmp_nat, toa, tun};
        let csum = if csum_partial { Csum::Partial } else { Csum::Full };
        let mut b = bytes.clone();
        fnat_in(&mut b, &pkt, csum, LIP, 1, RIP, 2);
        fnat_out(&mut b, &pkt, csum, VIP, 1, CLIENT, 2);
        let mut b = bytes.clone();
        let _ = tun::encapsulate(&mut b, frame_len, &pkt, LIP, RIP, 64);
        let mut b = bytes.clone();
        let _ = tun::mss_clamp(&mut b, &pkt, csum, 536);
        let _ = tun::dont_fragment(&bytes, &pkt);
        let _ = tun::decapsulate(&bytes);
        let mut hdr = VnetHdr {
            gso_type: if gso { vnet::GSO_TCPV4 } else { 0 },
            gso_size,
            ..VnetHdr::default()
        };
        let mut out = vec![0u8; 300];
        let _ = gso::segment_tcp4(&bytes, &hdr, &pkt, &mut out, |_| ());
        let mut b = bytes.clone();
        let _ = toa::insert_toa(&mut b, frame_len, &pkt, Some(&mut hdr), CLIENT, 1);
        let _ = toa::parse_toa(&bytes);
        let _ = icmp_nat::inner_tuple(&bytes, &pkt);
        let mut b = bytes.clone();
        let _ = icmp_nat::nat_out(&mut b, &pkt, VIP, 1);
        let _ = icmp_nat::nat_in(&mut b, &pkt, RIP, 1);
        let _ = icmp_nat::set_outer_addrs(&mut b, &pkt, VIP, RIP);
    }
}
