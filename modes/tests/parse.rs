//! `packet::parse`: accepted shapes with their fields, and one crafted
//! frame per `DropReason`.

mod common;

use common::*;
use modes::packet::{parse, DropReason, Kind, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use std::net::Ipv4Addr;

/// Rewrites the IPv4 header checksum after a test mutated the header.
fn fix_ip_csum(f: &mut [u8]) {
    let hl = usize::from(f[14] & 0x0f) * 4;
    f[24] = 0;
    f[25] = 0;
    let hdr = f.get(14..14 + hl).unwrap_or(&[]).to_vec();
    let c = modes::checksum::checksum(&hdr);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn tcp_with_options_everywhere() {
    let spec = Spec::tcp_request(1000);
    let f = spec.build();
    let p = parse(&f).unwrap();
    assert_eq!(p.kind, Kind::Ipv4);
    assert_eq!((p.l3, p.l4), (14, 14 + 28));
    assert_eq!(p.proto, PROTO_TCP);
    assert_eq!((p.src4(), p.dst4()), (CLIENT, VIP));
    assert_eq!((p.sport, p.dport), (40001, 80));
    assert_eq!(p.tcp_flags, 0x18, "ACK|PSH");
    assert_eq!(p.ttl, 61);
    assert_eq!(p.ip_total_len as usize, 28 + 60 + 1000);
    assert_eq!(p.l4_len as usize, 60 + 1000);
    assert_eq!(p.payload_len, 1000);
    assert_eq!(p.l4_header_len(), 60);
    assert_eq!(p.payload_offset(), 14 + 28 + 60);
    assert_eq!(p.ip_end(), f.len());
    assert!(p.is_tcp() && !p.is_udp() && !p.is_icmp());
    assert_eq!(&f[p.payload_offset()..p.ip_end()], &spec.payload[..]);
}

#[test]
fn udp_icmp_other_and_padding() {
    let mut f = Spec::udp_request(3).build();
    f.resize(60, 0);
    let p = parse(&f).unwrap();
    assert_eq!((p.proto, p.sport, p.dport), (PROTO_UDP, 5353, 53));
    assert_eq!((p.l4_len, p.payload_len, p.tcp_flags), (11, 3, 0));
    assert_eq!(p.ip_end(), 14 + 31);

    let p = parse(&Spec::echo_request(56).build()).unwrap();
    assert_eq!((p.proto, p.sport, p.dport), (PROTO_ICMP, 0, 0));
    assert_eq!((p.l4_len, p.payload_len), (64, 56));
    assert!(p.is_icmp());

    // protocol 47 (GRE): no L4 header known, payload = IP payload
    let mut f = Spec::udp_request(10).build();
    f[23] = 47;
    fix_ip_csum(&mut f);
    let p = parse(&f).unwrap();
    assert_eq!(
        (p.proto, p.sport, p.dport, p.l4_len, p.payload_len),
        (47, 0, 0, 18, 18)
    );
    assert_eq!(p.l4_header_len(), 0);
}

#[test]
fn arp() {
    use etherparse::{ArpHardwareId, ArpOperation, ArpPacket, EtherType, PacketBuilder};
    let a = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation::REQUEST,
        &CLIENT_MAC,
        &CLIENT.octets(),
        &[0; 6],
        &VIP.octets(),
    )
    .unwrap();
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, [0xff; 6])
        .arp(a)
        .write(&mut f)
        .unwrap();
    let p = parse(&f).unwrap();
    assert_eq!(p.kind, Kind::Arp);
    assert_eq!((p.src4(), p.dst4(), p.l3, p.l4), (CLIENT, VIP, 14, 14));
    assert_eq!((p.proto, p.ip_total_len, p.l4_len), (0, 0, 0));
    f.resize(60, 0); // padded
    assert!(parse(&f).is_ok());

    assert_eq!(parse(&f[..14 + 27]), Err(DropReason::BadArp));
    for (off, val) in [(14, 9u8), (17, 0xdd), (18, 8), (19, 16)] {
        let mut g = f.clone();
        g[off] = val;
        assert_eq!(parse(&g), Err(DropReason::BadArp), "byte {off}");
    }
}

#[test]
fn gso_super_frame_parses() {
    let mut spec = Spec::tcp_request(65535 - 28 - 60);
    spec.ip_opts = IP_OPTS_8.to_vec();
    let f = spec.build();
    let p = parse(&f).unwrap();
    assert_eq!(p.ip_total_len, 65535);
    assert_eq!(p.l4_len, 65535 - 28);
    assert_eq!(p.payload_len as usize, 65535 - 28 - 60);
    assert_eq!(p.ip_end(), f.len());
}

#[test]
fn every_drop_reason() {
    let tcp = Spec::tcp_request(10).build();
    let udp = Spec::udp_request(10).build();
    let icmp = Spec::echo_request(0).build();
    let mut seen = std::collections::HashSet::new();
    let mut check = |f: &[u8], want: DropReason| {
        assert_eq!(parse(f), Err(want));
        seen.insert(want);
    };

    check(&tcp[..13], DropReason::TruncatedEthernet);
    check(&[], DropReason::TruncatedEthernet);

    let mut vlan = tcp.clone();
    vlan[12..14].copy_from_slice(&[0x81, 0x00]);
    check(&vlan, DropReason::UnknownEthertype);
    // An IPv4 packet under the IPv6 ethertype.
    let mut v6 = tcp.clone();
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    check(&v6, DropReason::Ipv6BadVersion);
    let good6 = v6_frame(6, &v6_tcp_syn());
    assert!(parse(&good6).is_ok());
    check(&good6[..14 + 39], DropReason::Ipv6Truncated);
    let mut f = good6.clone();
    f[18..20].copy_from_slice(&100u16.to_be_bytes());
    check(&f, DropReason::Ipv6BadPayloadLen);
    check(
        &v6_frame(44, &[6, 0, 0, 1, 0, 0, 0, 7]),
        DropReason::Ipv6Fragment,
    );
    let nine: Vec<u8> = (0..9).flat_map(|_| [60, 0, 1, 4, 0, 0, 0, 0]).collect();
    check(&v6_frame(60, &nine), DropReason::Ipv6ExtChainTooLong);
    check(&v6_frame(59, &[0; 8]), DropReason::Ipv6BogusNextHeader);

    check(&tcp[..14 + 19], DropReason::TruncatedIpv4);

    let mut f = tcp.clone();
    f[14] = 0x67;
    check(&f, DropReason::BadIpVersion);

    let mut f = udp.clone();
    f[14] = 0x44;
    check(&f, DropReason::BadIhl);
    let mut f = udp.clone();
    f[14] = 0x4f; // a 60-byte header, but only 38 bytes after Ethernet
    check(&f, DropReason::BadIhl);

    let mut f = udp.clone();
    f[16..18].copy_from_slice(&19u16.to_be_bytes());
    fix_ip_csum(&mut f);
    check(&f, DropReason::BadIpLength);
    let mut f = udp.clone();
    let too_long = (f.len() - 14 + 1) as u16;
    f[16..18].copy_from_slice(&too_long.to_be_bytes());
    fix_ip_csum(&mut f);
    check(&f, DropReason::BadIpLength);

    let mut f = udp.clone();
    f[24] ^= 0x01;
    check(&f, DropReason::BadIpChecksum);
    let mut f = udp.clone();
    f[22] = f[22].wrapping_sub(1); // TTL change without checksum fix
    check(&f, DropReason::BadIpChecksum);

    for flags_frag in [0x2000u16, 0x0001, 0x4001, 0x3fff] {
        let mut f = udp.clone();
        f[20..22].copy_from_slice(&flags_frag.to_be_bytes());
        fix_ip_csum(&mut f);
        check(&f, DropReason::Fragment);
    }

    // TCP: IP payload shorter than 20
    let mut f = tcp.clone();
    let hl = 28;
    let total = (hl + 19) as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    fix_ip_csum(&mut f);
    check(&f, DropReason::TruncatedTcp);
    // data offset 4
    let mut f = tcp.clone();
    f[14 + hl + 12] = 4 << 4;
    check(&f, DropReason::BadTcpOffset);
    // data offset beyond the IP payload (options 40 + 10 bytes payload; cut)
    let mut f = tcp.clone();
    let total = (hl + 40) as u16; // < 60-byte TCP header
    f[16..18].copy_from_slice(&total.to_be_bytes());
    fix_ip_csum(&mut f);
    check(&f, DropReason::BadTcpOffset);

    let mut f = udp.clone();
    f[16..18].copy_from_slice(&27u16.to_be_bytes());
    fix_ip_csum(&mut f);
    check(&f, DropReason::TruncatedUdp);
    for ulen in [0u16, 7, 17, 19, 0xffff] {
        let mut f = udp.clone();
        f[38..40].copy_from_slice(&ulen.to_be_bytes());
        check(&f, DropReason::BadUdpLength);
    }

    let mut f = icmp.clone();
    f[16..18].copy_from_slice(&27u16.to_be_bytes());
    fix_ip_csum(&mut f);
    check(&f, DropReason::TruncatedIcmp);

    let mut arp = vec![0u8; 14 + 28];
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    check(&arp, DropReason::BadArp);

    assert_eq!(seen.len(), DropReason::COUNT, "every reason exercised");
}

#[test]
fn drop_reason_names() {
    let names: Vec<&str> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        names,
        [
            "truncated_ethernet",
            "unknown_ethertype",
            "truncated_ipv4",
            "bad_ip_version",
            "bad_ihl",
            "bad_ip_length",
            "bad_ip_checksum",
            "fragment",
            "truncated_tcp",
            "bad_tcp_offset",
            "truncated_udp",
            "bad_udp_length",
            "truncated_icmp",
            "bad_arp",
            "ipv6_truncated",
            "ipv6_bad_version",
            "ipv6_bad_payload_len",
            "ipv6_fragment",
            "ipv6_ext_chain_too_long",
            "ipv6_bogus_next_header",
        ]
    );
}

/// An Ethernet/IPv6 frame 2001:db8:c::2 → 2001:db8:f::80 with next header `nh`.
fn v6_frame(nh: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![
        2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd, 0x60, 0, 0, 0,
    ];
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.extend_from_slice(&[nh, 64]);
    f.extend_from_slice(
        &"2001:db8:c::2"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    f.extend_from_slice(
        &"2001:db8:f::80"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    f.extend_from_slice(payload);
    f
}

/// A bare TCP SYN header, 40000 → 80 (checksum not filled: parse does not check it).
fn v6_tcp_syn() -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&80u16.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02;
    t
}

#[test]
fn ipv6_tcp_behind_extension_headers() {
    // Hop-by-Hop (8 bytes of padding) then Destination Options, then TCP.
    let mut payload = vec![60, 0, 1, 4, 0, 0, 0, 0, 6, 0, 1, 4, 0, 0, 0, 0];
    payload.extend_from_slice(&v6_tcp_syn());
    payload.extend_from_slice(b"hello");
    let f = v6_frame(0, &payload);
    let p = parse(&f).unwrap();
    assert_eq!(p.kind, Kind::Ipv6);
    assert!(p.is_tcp() && p.is_v6() && !p.is_icmp());
    assert_eq!(
        (p.src, p.dst),
        (
            "2001:db8:c::2".parse::<std::net::IpAddr>().unwrap(),
            "2001:db8:f::80".parse::<std::net::IpAddr>().unwrap()
        )
    );
    assert_eq!(
        (p.sport, p.dport, p.tcp_flags, p.ttl),
        (40000, 80, 0x02, 64)
    );
    assert_eq!((p.l3, p.l4), (14, 14 + 40 + 16));
    assert_eq!((p.l4_len, p.payload_len), (25, 5));
    assert_eq!(p.ip_total_len, 40 + 16 + 25);
    assert_eq!(p.ip_end(), f.len());
    // ICMPv6 needs its 8-byte header.
    assert_eq!(
        parse(&v6_frame(58, &[128, 0, 0, 0, 0, 1])),
        Err(DropReason::TruncatedIcmp)
    );
    assert!(parse(&v6_frame(58, &[128, 0, 0, 0, 0, 1, 0, 1]))
        .unwrap()
        .is_icmpv6());
}

#[test]
fn addresses_are_read_from_the_frame() {
    let mut spec = Spec::udp_request(0);
    spec.src = Ipv4Addr::new(1, 2, 3, 4);
    spec.dst = Ipv4Addr::new(255, 254, 253, 252);
    let p = parse(&spec.build()).unwrap();
    assert_eq!((p.src4(), p.dst4()), (spec.src, spec.dst));
    assert_eq!(p.payload_len, 0);
}
