//! Property tests: incremental checksum updates equal full recomputation
//! (etherparse) for full and partial checksums; `parse` never panics and is
//! consistent with etherparse on whatever it accepts; reply builders never
//! panic and only emit frames etherparse accepts with valid checksums.

mod common;

use common::*;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use modes::checksum;
use modes::nat::{decrement_ttl, dnat, snat, Csum};
use modes::offload::complete_partial;
use modes::packet::{parse, Kind};
use modes::reply;
use modes::wire::{Ipv4Packet, TcpPacket, UdpPacket};
use modes::EthernetAddress;
use proptest::prelude::*;
use std::net::Ipv4Addr;

fn fill(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn words(max: usize) -> impl Strategy<Value = Vec<u8>> {
    (0..=max).prop_flat_map(|n| prop::collection::vec(any::<u8>(), n * 4))
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![6 => 0usize..200, 3 => 200usize..1500, 1 => 15_000usize..20_000],
        any::<u64>(),
    )
        .prop_map(|(len, seed)| fill(len, seed | 1))
}

fn arb_l4() -> impl Strategy<Value = L4> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            any::<Option<u32>>(),
            any::<(bool, bool, bool)>(),
            words(10)
        )
            .prop_map(|(sport, dport, seq, ack, (syn, fin, rst), opts)| L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                syn,
                fin,
                rst,
                opts
            }),
        (any::<u16>(), any::<u16>()).prop_map(|(sport, dport)| L4::Udp { sport, dport }),
        (any::<bool>(), any::<u16>(), any::<u16>()).prop_map(|(request, id, seq)| L4::IcmpEcho {
            request,
            id,
            seq
        }),
        (any::<u8>(), any::<u8>(), any::<[u8; 4]>()).prop_map(|(t, code, rest)| L4::IcmpRaw {
            t,
            code,
            rest
        }),
    ]
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    (
        any::<([u8; 6], [u8; 6])>(),
        any::<([u8; 4], [u8; 4])>(),
        any::<(u8, u16, bool)>(),
        words(10),
        arb_l4(),
        payload(),
    )
        .prop_map(
            |((smac, dmac), (s, d), (ttl, ident, df), ip_opts, l4, payload)| Spec {
                smac,
                dmac,
                src: Ipv4Addr::from(s),
                dst: Ipv4Addr::from(d),
                ttl,
                ident,
                df,
                ip_opts,
                l4,
                payload,
            },
        )
}

fn arb_tcp_udp_spec() -> impl Strategy<Value = Spec> {
    arb_spec().prop_filter("TCP or UDP", |s| {
        matches!(s.l4, L4::Tcp { .. } | L4::Udp { .. })
    })
}

fn arb_addr() -> impl Strategy<Value = Ipv4Addr> {
    any::<[u8; 4]>().prop_map(Ipv4Addr::from)
}

/// The spec after the rewrite `dnat` (or `snat`) should have made.
fn rewritten(spec: &Spec, is_dnat: bool, addr: Ipv4Addr, port: u16) -> Spec {
    let mut exp = spec.clone();
    let (s, d) = exp.ports();
    if is_dnat {
        exp.dst = addr;
        exp.set_ports(s, port);
    } else {
        exp.src = addr;
        exp.set_ports(port, d);
    }
    exp
}

fn apply(frame: &mut [u8], csum: Csum, is_dnat: bool, addr: Ipv4Addr, port: u16) {
    let pkt = parse(frame).expect("fixture must parse");
    if is_dnat {
        dnat(frame, &pkt, csum, addr, port);
    } else {
        snat(frame, &pkt, csum, addr, port);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn incremental_full_equals_recompute(
        spec in arb_spec(), is_dnat: bool, addr in arb_addr(), port: u16,
    ) {
        let mut frame = spec.build();
        apply(&mut frame, Csum::Full, is_dnat, addr, port);
        let expected = rewritten(&spec, is_dnat, addr, port).build();
        prop_assert!(frame == expected, "rewrite differs from etherparse's frame");
        assert_checksums_valid(&frame);
    }

    #[test]
    fn incremental_partial_equals_recompute(
        spec in arb_tcp_udp_spec(), is_dnat: bool, addr in arb_addr(), port: u16,
    ) {
        let mut frame = spec.build();
        let (start, off) = make_partial(&mut frame);
        apply(&mut frame, Csum::Partial, is_dnat, addr, port);
        let mut expected = rewritten(&spec, is_dnat, addr, port).build();
        let full = l4_csum(&expected);
        make_partial(&mut expected);
        prop_assert!(frame == expected, "partial field differs from the new pseudo-header sum");
        prop_assert!(complete_partial(&mut frame, start, off));
        prop_assert_eq!(norm(l4_csum(&frame)), norm(full));
    }

    #[test]
    fn checksum_update_functions_match_recompute(
        data in prop::collection::vec(any::<u8>(), 4..64), at in any::<prop::sample::Index>(),
        new16: u16, new32: u32,
    ) {
        // 16-bit and 32-bit field changes at an even offset of random data.
        let words = data.len() / 2;
        let i = at.index(words - 1) * 2;
        let c = checksum::checksum(&data);
        let mut d2 = data.clone();
        let old16 = u16::from_be_bytes([d2[i], d2[i + 1]]);
        d2[i..i + 2].copy_from_slice(&new16.to_be_bytes());
        prop_assert_eq!(norm(checksum::update16(c, old16, new16)), norm(checksum::checksum(&d2)));
        if i + 4 <= data.len() {
            let mut d3 = data.clone();
            let old32 = u32::from_be_bytes([d3[i], d3[i + 1], d3[i + 2], d3[i + 3]]);
            d3[i..i + 4].copy_from_slice(&new32.to_be_bytes());
            prop_assert_eq!(norm(checksum::update32(c, old32, new32)), norm(checksum::checksum(&d3)));
            let p = checksum::sum(&data);
            prop_assert_eq!(norm(checksum::update32_partial(p, old32, new32)), norm(checksum::sum(&d3)));
        }
    }

    #[test]
    fn decrement_ttl_equals_recompute(spec in arb_spec()) {
        let mut frame = spec.build();
        let pkt = parse(&frame).unwrap();
        let ok = decrement_ttl(&mut frame, &pkt);
        if spec.ttl <= 1 {
            prop_assert!(!ok);
            prop_assert!(frame == spec.build());
        } else {
            prop_assert!(ok);
            let mut exp = spec.clone();
            exp.ttl -= 1;
            prop_assert!(frame == exp.build());
        }
    }

    #[test]
    fn views_agree_with_etherparse(spec in arb_spec()) {
        let frame = spec.build();
        let ep = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(NetSlice::Ipv4(ip)) = &ep.net else { panic!() };
        let h = ip.header();
        let v = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        prop_assert_eq!(v.ihl(), h.ihl());
        prop_assert_eq!(v.total_len(), h.total_len());
        prop_assert_eq!(v.ident(), h.identification());
        prop_assert_eq!(v.dont_frag(), h.dont_fragment());
        prop_assert_eq!(v.ttl(), h.ttl());
        prop_assert_eq!(v.protocol(), h.protocol().0);
        prop_assert_eq!(v.checksum(), h.header_checksum());
        prop_assert_eq!(v.src_addr(), h.source_addr());
        prop_assert_eq!(v.dst_addr(), h.destination_addr());
        prop_assert_eq!(v.options(), h.options());
        prop_assert!(v.verify_checksum());
        match &ep.transport {
            Some(TransportSlice::Tcp(t)) => {
                let tv = TcpPacket::new_checked(v.payload()).unwrap();
                prop_assert_eq!(tv.src_port(), t.source_port());
                prop_assert_eq!(tv.dst_port(), t.destination_port());
                prop_assert_eq!(tv.seq_number(), t.sequence_number());
                prop_assert_eq!(tv.ack_number(), t.acknowledgment_number());
                prop_assert_eq!(tv.data_offset(), t.data_offset());
                prop_assert_eq!(tv.syn(), t.syn());
                prop_assert_eq!(tv.ack(), t.ack());
                prop_assert_eq!(tv.fin(), t.fin());
                prop_assert_eq!(tv.rst(), t.rst());
                prop_assert_eq!(tv.window_len(), t.window_size());
                prop_assert_eq!(tv.options(), t.options());
                prop_assert_eq!(tv.payload(), t.payload());
                prop_assert!(tv.verify_checksum(v.src_addr(), v.dst_addr()));
            }
            Some(TransportSlice::Udp(u)) => {
                let uv = UdpPacket::new_checked(v.payload()).unwrap();
                prop_assert_eq!(uv.src_port(), u.source_port());
                prop_assert_eq!(uv.dst_port(), u.destination_port());
                prop_assert_eq!(uv.len(), u.length());
                prop_assert_eq!(uv.checksum(), u.checksum());
                prop_assert_eq!(uv.payload(), u.payload());
                prop_assert!(uv.verify_checksum(v.src_addr(), v.dst_addr()));
            }
            Some(TransportSlice::Icmpv4(_)) => {
                let iv = modes::wire::Icmpv4Packet::new_checked(v.payload()).unwrap();
                prop_assert!(iv.verify_checksum());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..160)) {
        if let Ok(p) = parse(&bytes) {
            check_accepted(&bytes, &p)?;
        }
    }

    #[test]
    fn parse_never_panics_on_ipv4_looking_bytes(
        mut bytes in prop::collection::vec(any::<u8>(), 14..200), ihl in 0u8..16, proto in prop_oneof![Just(1u8), Just(6), Just(17), any::<u8>()],
    ) {
        bytes[12] = 0x08;
        bytes[13] = 0x00;
        if bytes.len() > 14 {
            bytes[14] = 0x40 | ihl;
        }
        if bytes.len() > 23 {
            bytes[23] = proto;
        }
        if bytes.len() > 17 {
            let tl = (bytes.len() - 14) as u16;
            bytes[16..18].copy_from_slice(&tl.to_be_bytes());
        }
        if bytes.len() >= 14 + usize::from(ihl) * 4 && ihl >= 5 {
            // sometimes make the checksum valid so deeper checks run
            bytes[24] = 0;
            bytes[25] = 0;
            let c = checksum::checksum(&bytes[14..14 + usize::from(ihl) * 4]);
            bytes[24..26].copy_from_slice(&c.to_be_bytes());
        }
        if let Ok(p) = parse(&bytes) {
            check_accepted(&bytes, &p)?;
        }
    }

    #[test]
    fn parse_mutated_and_truncated_valid_frames(
        spec in arb_spec(),
        muts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(), do_cut: bool, pad in 0usize..20,
        fix_csum: bool,
    ) {
        let mut frame = spec.build();
        let p = parse(&frame).unwrap();
        check_accepted(&frame, &p)?;
        // mutations concentrated in the headers
        let hdr_end = frame.len().min(14 + 60 + 60 + 8);
        for (i, x) in &muts {
            let i = i.index(hdr_end);
            frame[i] ^= x;
        }
        if fix_csum && frame.len() >= 34 {
            let hl = usize::from(frame[14] & 0x0f) * 4;
            if hl >= 20 && 14 + hl <= frame.len() {
                frame[24] = 0;
                frame[25] = 0;
                let c = checksum::checksum(&frame[14..14 + hl]);
                frame[24..26].copy_from_slice(&c.to_be_bytes());
            }
        }
        if do_cut {
            let n = cut.index(frame.len() + 1);
            frame.truncate(n);
        }
        frame.extend(std::iter::repeat_n(0u8, pad));
        if let Ok(p) = parse(&frame) {
            check_accepted(&frame, &p)?;
        }
    }

    /// NAT64's ICMPv4 → ICMPv6 translation never panics on ICMP errors with mutated or cut
    /// quotes, and what it emits parses as IPv6 ICMPv6 within 1280 bytes.
    #[test]
    fn nat64_icmp_translation_never_panics(
        kind in prop_oneof![Just(3u8), Just(11u8), any::<u8>()],
        code in 0u8..16,
        quote in prop::collection::vec(any::<u8>(), 0..1500),
        tcp_quote: bool,
        muts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        room in prop_oneof![Just(2048usize), 0usize..200],
    ) {
        // A plausible quote (IPv4 + TCP/UDP ports) the mutations then damage.
        let mut q = quote;
        if q.len() >= 28 {
            q[0] = 0x45;
            q[9] = if tcp_quote { 6 } else { 17 };
        }
        for (i, x) in &muts {
            if !q.is_empty() {
                let i = i.index(q.len());
                q[i] ^= x;
            }
        }
        let mut frame = Vec::new();
        etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 0, 1])
            .ipv4([172, 16, 0, 254], [172, 16, 0, 100], 64)
            .icmpv4_raw(kind, code, [0, 0, 5, 0x78])
            .write(&mut frame, &q)
            .unwrap();
        let Ok(p) = parse(&frame) else {
            return Ok(());
        };
        let mut buf = frame.clone();
        buf.resize(frame.len().max(room), 0);
        let c6: std::net::Ipv6Addr = "2001:db8:c::2".parse().unwrap();
        let v6: std::net::Ipv6Addr = "2001:db8:f::80".parse().unwrap();
        if let Some(n) = modes::nat64::icmp_to_v6(&mut buf, frame.len(), &p, None, (c6, 1), (v6, 2)) {
            prop_assert!(n <= 14 + 1280);
            let out = parse(&buf[..n]);
            prop_assert!(out.is_ok_and(|o| o.is_icmpv6()), "{:?}", parse(&buf[..n]));
            prop_assert_eq!(checksum::l4_checksum_v6(v6, c6, 58, &buf[54..n]), 0);
        }
    }

    #[test]
    fn reply_builders_never_panic_and_emit_valid_frames(
        spec in arb_spec(),
        muts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        out_len in prop_oneof![Just(2048usize), 0usize..100],
        partial: bool,
    ) {
        let mut frame = spec.build();
        for (i, x) in &muts {
            let i = i.index(frame.len().min(100));
            frame[i] ^= x;
        }
        let Ok(pkt) = parse(&frame) else { return Ok(()); };
        let mut out = vec![0u8; out_len];
        let mac = EthernetAddress(LB_MAC);
        let src = Ipv4Addr::new(192, 0, 2, 1);
        let csum = if partial && (pkt.is_tcp() || pkt.is_udp()) {
            make_partial(&mut frame);
            Csum::Partial
        } else {
            Csum::Full
        };
        if let Some(n) = reply::tcp_rst(&mut out, &frame, &pkt, mac) {
            prop_assert_eq!(n, 54);
            assert_checksums_valid(&out[..n]);
            prop_assert!(parse(&out[..n]).is_ok());
        }
        if let Some(n) = reply::icmp_echo_reply(&mut out, &frame, &pkt, mac) {
            assert_checksums_valid(&out[..n]);
            prop_assert!(parse(&out[..n]).is_ok());
        }
        if let Some(n) = reply::icmp_unreachable(&mut out, &frame, &pkt, csum, mac, src, 3) {
            prop_assert!(n - 14 <= 576);
            assert_checksums_valid(&out[..n]);
            let r = parse(&out[..n]).unwrap();
            prop_assert!(r.is_icmp());
            // never an error about an error
            if pkt.is_icmp() {
                prop_assert!(modes::wire::icmpv4::is_query_type(frame[pkt.l4]));
            }
        }
        let _ = reply::arp_reply(&mut out, &frame, mac, src);
    }
}

/// Invariants of any accepted frame, and agreement with etherparse.
fn check_accepted(frame: &[u8], p: &modes::Packet) -> Result<(), TestCaseError> {
    prop_assert_eq!(p.l3, 14);
    match p.kind {
        Kind::Arp => {
            prop_assert!(frame.len() >= 42);
            prop_assert_eq!(p.l4, 14);
            prop_assert_eq!(&frame[12..14], &[0x08, 0x06]);
        }
        Kind::Ipv6 => {
            prop_assert_eq!(&frame[12..14], &[0x86, 0xdd]);
            prop_assert!(p.l4 >= 14 + 40);
            prop_assert!(p.ip_end() <= frame.len());
            prop_assert_eq!(p.l4 + usize::from(p.l4_len), p.ip_end());
            prop_assert!(p.payload_len <= p.l4_len);
        }
        Kind::Ipv4 => {
            let hl = usize::from(frame[14] & 0x0f) * 4;
            prop_assert!(hl >= 20);
            prop_assert_eq!(p.l4, 14 + hl);
            prop_assert!(p.l4 <= p.ip_end());
            prop_assert!(p.ip_end() <= frame.len());
            prop_assert_eq!(p.l4 + usize::from(p.l4_len), p.ip_end());
            prop_assert!(p.payload_len <= p.l4_len);
            prop_assert!(p.payload_offset() <= p.ip_end());
            prop_assert_eq!(checksum::sum(&frame[14..14 + hl]), 0xffff);
            if matches!(p.proto, 1 | 6 | 17) {
                let ep = SlicedPacket::from_ethernet(frame);
                prop_assert!(
                    ep.is_ok(),
                    "etherparse rejects what parse accepted: {:?}",
                    ep.err()
                );
                let ep = ep.unwrap();
                let Some(NetSlice::Ipv4(ip)) = &ep.net else {
                    panic!("not ipv4")
                };
                prop_assert_eq!(ip.header().source_addr(), p.src4());
                prop_assert_eq!(ip.header().destination_addr(), p.dst4());
                prop_assert_eq!(ip.header().ttl(), p.ttl);
                match (&ep.transport, p.proto) {
                    (Some(TransportSlice::Tcp(t)), 6) => {
                        prop_assert_eq!(
                            (t.source_port(), t.destination_port()),
                            (p.sport, p.dport)
                        );
                        prop_assert_eq!(t.payload().len(), usize::from(p.payload_len));
                        prop_assert_eq!(t.slice()[13], p.tcp_flags);
                    }
                    (Some(TransportSlice::Udp(u)), 17) => {
                        prop_assert_eq!(
                            (u.source_port(), u.destination_port()),
                            (p.sport, p.dport)
                        );
                        prop_assert_eq!(u.payload().len(), usize::from(p.payload_len));
                    }
                    (Some(TransportSlice::Icmpv4(i)), 1) => {
                        prop_assert_eq!(i.slice().len(), usize::from(p.l4_len));
                    }
                    (t, proto) => {
                        prop_assert!(false, "etherparse sees {:?} for proto {}", t, proto)
                    }
                }
            }
        }
    }
    Ok(())
}
