//! Golden tests for the NAT and DR rewrites: every output frame is compared
//! byte for byte with a frame built independently by etherparse, and its
//! checksums are re-verified by etherparse. Partial (NEEDS_CSUM) checksums,
//! GSO super-frames included, are completed in software and compared with
//! etherparse's full checksum.

mod common;

use common::*;
use modes::nat::{decrement_ttl, dnat, set_macs, snat, Csum};
use modes::offload::complete_partial;
use modes::packet::parse;
use modes::wire::vnet::{self, VnetHdr};
use modes::{dr, EthernetAddress};
use std::net::Ipv4Addr;

fn dnat_full(spec: &Spec, new_dst: Ipv4Addr, new_dport: u16) -> (Vec<u8>, Vec<u8>) {
    let mut frame = spec.build();
    let pkt = parse(&frame).unwrap();
    dnat(&mut frame, &pkt, Csum::Full, new_dst, new_dport);
    let mut exp = spec.clone();
    exp.dst = new_dst;
    let (s, _) = exp.ports();
    exp.set_ports(s, new_dport);
    (frame, exp.build())
}

/// `snat` to `new_src`:`new_sport` with full checksums: (rewritten frame, the spec's frame with
/// that source built from scratch).
fn snat_full(spec: &Spec, new_src: Ipv4Addr, new_sport: u16) -> (Vec<u8>, Vec<u8>) {
    let mut frame = spec.build();
    let pkt = parse(&frame).unwrap();
    snat(&mut frame, &pkt, Csum::Full, new_src, new_sport);
    let mut exp = spec.clone();
    exp.src = new_src;
    let (_, d) = exp.ports();
    exp.set_ports(new_sport, d);
    (frame, exp.build())
}

#[test]
fn dnat_tcp_with_ip_options_and_40_bytes_of_tcp_options() {
    let spec = Spec::tcp_request(1000);
    let input = spec.build();
    assert_eq!(l4_off(&input), 14 + 28, "IHL 7 fixture");
    assert_eq!(
        input[l4_off(&input) + 12] >> 4,
        15,
        "data offset 15 fixture"
    );
    let (out, expected) = dnat_full(&spec, RIP, 8080);
    assert_ne!(out, input);
    assert_frames_eq(&out, &expected, "golden");
    assert_checksums_valid(&out);
}

#[test]
fn snat_tcp_reply_direction() {
    let mut spec = Spec::tcp_request(333);
    spec.src = RIP;
    spec.dst = CLIENT;
    spec.set_ports(8080, 40001);
    let (frame, expected) = snat_full(&spec, VIP, 80);
    assert_frames_eq(&frame, &expected, "golden");
    assert_checksums_valid(&frame);
}

#[test]
fn fullnat_snat_then_dnat() {
    let spec = Spec::tcp_request(10);
    let mut frame = spec.build();
    let pkt = parse(&frame).unwrap();
    let local = Ipv4Addr::new(10, 20, 0, 1);
    snat(&mut frame, &pkt, Csum::Full, local, 61000);
    dnat(&mut frame, &pkt, Csum::Full, RIP, 8080);
    let mut exp = spec.clone();
    exp.src = local;
    exp.dst = RIP;
    exp.set_ports(61000, 8080);
    assert_frames_eq(&frame, &exp.build(), "golden");
    assert_checksums_valid(&frame);
}

#[test]
fn dnat_tcp_syn_without_payload_and_without_options() {
    let mut spec = Spec::tcp_request(0);
    spec.ip_opts.clear();
    spec.l4 = L4::Tcp {
        sport: 1,
        dport: 443,
        seq: 99,
        ack: None,
        syn: true,
        fin: false,
        rst: false,
        opts: vec![],
    };
    let (out, expected) = dnat_full(&spec, Ipv4Addr::new(192, 168, 255, 254), 65535);
    assert_frames_eq(&out, &expected, "golden");
    assert_checksums_valid(&out);
}

#[test]
fn dnat_and_snat_udp() {
    let spec = Spec::udp_request(77);
    let (out, expected) = dnat_full(&spec, RIP, 5300);
    assert_frames_eq(&out, &expected, "golden");
    assert_checksums_valid(&out);

    let mut reply = Spec::udp_request(12);
    reply.src = RIP;
    reply.dst = CLIENT;
    reply.set_ports(5300, 5353);
    let (frame, expected) = snat_full(&reply, VIP, 53);
    assert_frames_eq(&frame, &expected, "golden");
    assert_checksums_valid(&frame);
}

#[test]
fn udp_without_checksum_stays_without_checksum() {
    let spec = Spec::udp_request(20);
    let mut frame = spec.build();
    let l4 = l4_off(&frame);
    frame[l4 + 6..l4 + 8].fill(0);
    let pkt = parse(&frame).unwrap();
    dnat(&mut frame, &pkt, Csum::Full, RIP, 5300);
    let mut exp = spec.clone();
    exp.dst = RIP;
    exp.set_ports(5353, 5300);
    let mut expected = exp.build();
    expected[l4 + 6..l4 + 8].fill(0);
    assert_frames_eq(&frame, &expected, "golden");
    assert_checksums_valid(&frame);
}

#[test]
fn udp_checksum_that_updates_to_zero_is_sent_as_ffff() {
    // Search a destination port for which the correct UDP checksum is
    // 0xffff (the transmitted form of a computed 0); the incremental update
    // must land on 0xffff, never on 0 ("no checksum").
    let spec = Spec::udp_request(4);
    let mut found = false;
    for port in 1..=u16::MAX {
        let mut exp = spec.clone();
        exp.dst = RIP;
        exp.set_ports(5353, port);
        let expected = exp.build();
        if l4_csum(&expected) != 0xffff {
            continue;
        }
        let mut frame = spec.build();
        let pkt = parse(&frame).unwrap();
        dnat(&mut frame, &pkt, Csum::Full, RIP, port);
        assert_eq!(l4_csum(&frame), 0xffff);
        assert_frames_eq(&frame, &expected, "golden");
        found = true;
        break;
    }
    assert!(found, "no port gives a zero checksum");
}

#[test]
fn dnat_icmp_changes_only_the_ip_header() {
    let spec = Spec::echo_request(56);
    let mut frame = spec.build();
    let pkt = parse(&frame).unwrap();
    dnat(&mut frame, &pkt, Csum::Full, RIP, 1234);
    let mut exp = spec.clone();
    exp.dst = RIP;
    assert_frames_eq(&frame, &exp.build(), "golden");
    assert_checksums_valid(&frame);
}

#[test]
fn nat_keeps_ethernet_padding() {
    let spec = Spec::udp_request(1);
    let mut frame = spec.build();
    assert!(frame.len() < 60);
    frame.resize(60, 0xee);
    let pkt = parse(&frame).unwrap();
    dnat(&mut frame, &pkt, Csum::Full, RIP, 9);
    let mut exp = spec.clone();
    exp.dst = RIP;
    exp.set_ports(5353, 9);
    let mut expected = exp.build();
    expected.resize(60, 0xee);
    assert_frames_eq(&frame, &expected, "golden");
}

#[test]
fn decrement_ttl_golden_and_limits() {
    let spec = Spec::tcp_request(64);
    let mut frame = spec.build();
    let pkt = parse(&frame).unwrap();
    assert!(decrement_ttl(&mut frame, &pkt));
    let mut exp = spec.clone();
    exp.ttl -= 1;
    assert_frames_eq(&frame, &exp.build(), "golden");
    assert_checksums_valid(&frame);

    for ttl in [0u8, 1] {
        let mut s = spec.clone();
        s.ttl = ttl;
        let mut frame = s.build();
        let before = frame.clone();
        let pkt = parse(&frame).unwrap();
        assert!(!decrement_ttl(&mut frame, &pkt));
        assert_frames_eq(&frame, &before, "golden");
    }
    let mut s = spec.clone();
    s.ttl = 2;
    let mut frame = s.build();
    let pkt = parse(&frame).unwrap();
    assert!(decrement_ttl(&mut frame, &pkt));
    s.ttl = 1;
    assert_frames_eq(&frame, &s.build(), "golden");
}

#[test]
fn set_macs_and_dr_forward_golden() {
    let spec = Spec::tcp_request(100);
    let mut exp = spec.clone();
    exp.smac = LB_MAC;
    exp.dmac = RS_MAC;
    let expected = exp.build();

    let mut frame = spec.build();
    dr::forward(&mut frame, EthernetAddress(LB_MAC), EthernetAddress(RS_MAC));
    assert_frames_eq(&frame, &expected, "golden");

    let mut frame = spec.build();
    set_macs(&mut frame, EthernetAddress(LB_MAC), EthernetAddress(RS_MAC));
    assert_frames_eq(&frame, &expected, "golden");

    let mut short = [1u8; 13];
    dr::forward(&mut short, EthernetAddress(LB_MAC), EthernetAddress(RS_MAC));
    assert_eq!(short, [1u8; 13]);
}

/// Builds `spec` with a partial checksum, rewrites it, checks the partial
/// field tracks the new pseudo-header, completes it and compares everything
/// with etherparse's frame for the rewritten packet.
fn check_partial(
    spec: &Spec,
    vnet: Option<VnetHdr>,
    f: impl Fn(&mut Vec<u8>, &modes::Packet, Csum),
    exp: &Spec,
) {
    let mut frame = spec.build();
    let (start, off) = make_partial(&mut frame);
    let pkt = parse(&frame).unwrap();
    let hdr = vnet.unwrap_or(VnetHdr {
        flags: vnet::NEEDS_CSUM,
        csum_start: start as u16,
        csum_offset: off as u16,
        ..Default::default()
    });
    let csum = Csum::from_vnet(&hdr, &pkt);
    assert_eq!(csum, Csum::Partial);
    f(&mut frame, &pkt, csum);

    let mut expected = exp.build();
    let full = l4_csum(&expected);
    assert_eq!(full, ep_full_l4_csum(&expected));
    let (s2, o2) = make_partial(&mut expected);
    assert_eq!((s2, o2), (start, off));
    // Before completion the rewritten frame holds the new pseudo-header sum.
    assert_frames_eq(
        &frame,
        &expected,
        "partial field must equal the new pseudo-header sum",
    );
    assert!(complete_partial(&mut frame, start, off));
    assert_eq!(norm(l4_csum(&frame)), norm(full));
    assert_checksums_valid(&frame);
}

#[test]
fn partial_checksum_dnat_and_snat_tcp() {
    let spec = Spec::tcp_request(700);
    let mut exp = spec.clone();
    exp.dst = RIP;
    exp.set_ports(40001, 8080);
    check_partial(&spec, None, |f, p, c| dnat(f, p, c, RIP, 8080), &exp);

    let mut reply = spec.clone();
    reply.src = RIP;
    reply.dst = CLIENT;
    reply.set_ports(8080, 40001);
    let mut exp = reply.clone();
    exp.src = VIP;
    exp.set_ports(80, 40001);
    check_partial(&reply, None, |f, p, c| snat(f, p, c, VIP, 80), &exp);
}

#[test]
fn partial_checksum_udp() {
    let spec = Spec::udp_request(300);
    let mut exp = spec.clone();
    exp.dst = RIP;
    exp.set_ports(5353, 5300);
    check_partial(&spec, None, |f, p, c| dnat(f, p, c, RIP, 5300), &exp);
}

#[test]
fn partial_checksum_gso_super_frame() {
    // A 20,000-byte TSO super-frame as a guest hands it over: gso TCPV4,
    // gso_size 1448, NEEDS_CSUM with the pseudo-header sum (over the whole
    // super-frame length) in the TCP checksum field.
    let mut spec = Spec::tcp_request(20_000);
    spec.ip_opts.clear();
    let frame = spec.build();
    assert_eq!(frame.len(), 14 + 20 + 60 + 20_000);
    let hdr = VnetHdr {
        flags: vnet::NEEDS_CSUM,
        gso_type: vnet::GSO_TCPV4,
        hdr_len: 14 + 20 + 60,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    let pkt = parse(&frame).unwrap();
    assert_eq!(pkt.ip_total_len, 20 + 60 + 20_000);
    assert_eq!(pkt.payload_len, 20_000);

    let mut exp = spec.clone();
    exp.dst = RIP;
    exp.set_ports(40001, 8080);
    check_partial(&spec, Some(hdr), |f, p, c| dnat(f, p, c, RIP, 8080), &exp);

    let mut reply = spec.clone();
    reply.src = RIP;
    reply.dst = CLIENT;
    reply.set_ports(8080, 40001);
    let mut exp = reply.clone();
    exp.src = VIP;
    exp.set_ports(80, 40001);
    check_partial(&reply, Some(hdr), |f, p, c| snat(f, p, c, VIP, 80), &exp);
}

#[test]
fn partial_checksum_near_max_ip_length() {
    let mut spec = Spec::tcp_request(65535 - 28 - 60);
    spec.ip_opts = IP_OPTS_8.to_vec();
    let mut exp = spec.clone();
    exp.dst = RIP;
    exp.set_ports(40001, 8080);
    check_partial(&spec, None, |f, p, c| dnat(f, p, c, RIP, 8080), &exp);
}

#[test]
fn ports_only_rewrite_leaves_partial_field_unchanged() {
    for spec in [Spec::tcp_request(100), Spec::udp_request(100)] {
        let mut frame = spec.build();
        let (start, off) = make_partial(&mut frame);
        let before = l4_csum(&frame);
        let pkt = parse(&frame).unwrap();
        dnat(&mut frame, &pkt, Csum::Partial, VIP, 8080);
        assert_eq!(l4_csum(&frame), before);
        let pkt = parse(&frame).unwrap();
        assert_eq!(pkt.dport, 8080);
        snat(&mut frame, &pkt, Csum::Partial, CLIENT, 1);
        assert_eq!(l4_csum(&frame), before);
        // and it still completes to the right full checksum
        let mut exp = spec.clone();
        exp.set_ports(1, 8080);
        let expected = exp.build();
        assert!(complete_partial(&mut frame, start, off));
        assert_eq!(norm(l4_csum(&frame)), norm(l4_csum(&expected)));
    }
}

#[test]
fn csum_from_vnet() {
    let tcp = parse(&Spec::tcp_request(1).build()).unwrap(); // l4 = 42
    let udp = parse(&Spec::udp_request(1).build()).unwrap(); // l4 = 34
    let icmp = parse(&Spec::echo_request(1).build()).unwrap();
    let h = |flags, start, off| VnetHdr {
        flags,
        csum_start: start,
        csum_offset: off,
        ..Default::default()
    };
    assert_eq!(
        Csum::from_vnet(&h(vnet::NEEDS_CSUM, 42, 16), &tcp),
        Csum::Partial
    );
    assert_eq!(
        Csum::from_vnet(&h(vnet::NEEDS_CSUM, 34, 16), &tcp),
        Csum::Full
    );
    assert_eq!(
        Csum::from_vnet(&h(vnet::NEEDS_CSUM, 42, 6), &tcp),
        Csum::Full
    );
    assert_eq!(
        Csum::from_vnet(&h(vnet::DATA_VALID, 42, 16), &tcp),
        Csum::Full
    );
    assert_eq!(Csum::from_vnet(&h(0, 0, 0), &tcp), Csum::Full);
    assert_eq!(
        Csum::from_vnet(&h(vnet::NEEDS_CSUM, 34, 6), &udp),
        Csum::Partial
    );
    assert_eq!(
        Csum::from_vnet(&h(vnet::NEEDS_CSUM, 34, 2), &icmp),
        Csum::Partial
    );
    assert_eq!(Csum::default(), Csum::Full);
}

#[test]
fn rewrites_ignore_arp_and_short_frames() {
    let arp = parse(&arp_request_frame()).unwrap();
    let mut f = arp_request_frame();
    dnat(&mut f, &arp, Csum::Full, RIP, 1);
    snat(&mut f, &arp, Csum::Full, RIP, 1);
    assert!(!decrement_ttl(&mut f, &arp));
    assert_frames_eq(&f, &arp_request_frame(), "golden");

    let frame = Spec::tcp_request(10).build();
    let pkt = parse(&frame).unwrap();
    let mut short = frame[..pkt.l4 + 17].to_vec();
    let before = short.clone();
    dnat(&mut short, &pkt, Csum::Full, RIP, 1);
    assert_frames_eq(&short, &before, "golden");
}

fn arp_request_frame() -> Vec<u8> {
    use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder};
    let arp = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &CLIENT_MAC,
        &CLIENT.octets(),
        &[0; 6],
        &VIP.octets(),
    )
    .unwrap();
    let mut out = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, [0xff; 6])
        .arp(arp)
        .write(&mut out)
        .unwrap();
    out
}

#[test]
fn bogus_packet_offsets_do_not_panic() {
    let frame = Spec::tcp_request(10).build();
    let good = parse(&frame).unwrap();
    for (l3, l4) in [
        (usize::MAX, usize::MAX),
        (14, usize::MAX),
        (usize::MAX - 3, 42),
        (0, 0),
        (14, 20),
    ] {
        let pkt = modes::Packet { l3, l4, ..good };
        let mut f = frame.clone();
        dnat(&mut f, &pkt, Csum::Full, RIP, 1);
        snat(&mut f, &pkt, Csum::Partial, RIP, 1);
        let _ = decrement_ttl(&mut f, &pkt);
        let _ = pkt.payload_offset();
        let _ = pkt.ip_end();
        let mut out = [0u8; 1600];
        let mac = EthernetAddress(LB_MAC);
        let _ = modes::reply::tcp_rst(&mut out, &f, &pkt, mac);
        let _ = modes::reply::icmp_echo_reply(&mut out, &f, &pkt, mac);
        let _ = modes::reply::icmp_unreachable(&mut out, &f, &pkt, Csum::Partial, mac, VIP, 3);
    }
}
