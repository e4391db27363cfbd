//! NAT of ICMP errors: frames rewritten by `icmp_nat` are compared byte for
//! byte with ICMP errors built by etherparse around a quote of the packet
//! as it looks on the other side of the appliance (also built by
//! etherparse), and their checksums are verified by etherparse.

mod common;

use common::*;
use modes::icmp_nat::{inner_tuple, nat_in, nat_out, rewrite_inner, set_outer_addrs};
use modes::packet::parse;
use proptest::prelude::*;
use std::net::Ipv4Addr;

const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);

/// An ICMP error `src → dst` (type 3 code 4, MTU 1400) quoting the first
/// `quote_len` bytes of `orig`'s IP packet.
fn icmp_error(src: Ipv4Addr, dst: Ipv4Addr, orig: &Spec, quote_len: usize) -> Spec {
    let o = orig.build();
    let ip = &o[14..];
    Spec {
        smac: RS_MAC,
        dmac: LB_MAC,
        src,
        dst,
        ttl: 64,
        ident: 0x1111,
        df: false,
        ip_opts: vec![],
        l4: L4::IcmpRaw {
            t: 3,
            code: 4,
            rest: [0, 0, 0x05, 0x78],
        },
        payload: ip[..quote_len.min(ip.len())].to_vec(),
    }
}

/// A request after DNAT (CIP:cport → RIP:rport) and before (→ VIP:vport).
fn request(udp: bool, ip_opts: bool) -> (Spec, Spec) {
    let mut before = if udp {
        Spec::udp_request(40)
    } else {
        Spec::tcp_request(40)
    };
    if !ip_opts {
        before.ip_opts.clear();
    }
    before.set_ports(40001, 80);
    let mut after = before.clone();
    after.dst = RIP;
    after.set_ports(40001, 8080);
    (before, after)
}

#[test]
fn nat_out_golden_full_and_truncated_quotes() {
    for udp in [false, true] {
        for ip_opts in [false, true] {
            for quote in [usize::MAX, 28 + 8, 20 + 8 + 8, 20 + 4] {
                let (before, after) = request(udp, ip_opts);
                let q = if quote == 20 + 4 && ip_opts {
                    28 + 4
                } else {
                    quote
                };
                let mut frame = icmp_error(RIP, CLIENT, &after, q).build();
                let pkt = parse(&frame).unwrap();
                let proto = if udp { 17 } else { 6 };
                assert_eq!(
                    inner_tuple(&frame, &pkt),
                    Some((proto, CLIENT, 40001, RIP, 8080))
                );
                assert!(nat_out(&mut frame, &pkt, VIP, 80));
                let want = icmp_error(VIP, CLIENT, &before, q).build();
                assert_frames_eq(&frame, &want, &format!("udp {udp} opts {ip_opts} q {q}"));
                assert_checksums_valid(&frame);
            }
        }
    }
}

#[test]
fn nat_in_golden_from_a_router() {
    for udp in [false, true] {
        // reply after SNAT: VIP:80 → CIP:40001; before SNAT: RIP:8080 → …
        let (req_before, req_after) = request(udp, false);
        let mut reply_vip = req_before.clone();
        reply_vip.src = VIP;
        reply_vip.dst = CLIENT;
        reply_vip.set_ports(80, 40001);
        let mut reply_rip = req_after.clone();
        reply_rip.src = RIP;
        reply_rip.dst = CLIENT;
        reply_rip.set_ports(8080, 40001);
        let mut frame = icmp_error(ROUTER, VIP, &reply_vip, usize::MAX).build();
        let pkt = parse(&frame).unwrap();
        assert!(nat_in(&mut frame, &pkt, RIP, 8080));
        let want = icmp_error(ROUTER, RIP, &reply_rip, usize::MAX).build();
        assert_frames_eq(&frame, &want, "nat_in");
        assert_checksums_valid(&frame);
    }
}

#[test]
fn fullnat_style_both_ends() {
    // Error from the RS side about LIP:lport → RIP:rport; the client must
    // see it about CIP:cport → VIP:vport, coming from the VIP.
    let lip = Ipv4Addr::new(10, 20, 0, 1);
    let (before, mut after) = request(false, true);
    after.src = lip;
    after.set_ports(61000, 8080);
    let mut frame = icmp_error(RIP, lip, &after, usize::MAX).build();
    let pkt = parse(&frame).unwrap();
    assert!(rewrite_inner(&mut frame, &pkt, CLIENT, 40001, VIP, 80));
    assert!(set_outer_addrs(&mut frame, &pkt, VIP, CLIENT));
    let want = icmp_error(VIP, CLIENT, &before, usize::MAX).build();
    assert_frames_eq(&frame, &want, "fullnat icmp");
    assert_checksums_valid(&frame);
}

#[test]
fn udp_quote_without_checksum_keeps_zero() {
    let (before, after) = request(true, false);
    let zero = |s: &Spec| {
        let mut e = icmp_error(RIP, CLIENT, s, usize::MAX);
        e.payload[26] = 0;
        e.payload[27] = 0;
        e
    };
    let mut frame = zero(&after).build();
    let pkt = parse(&frame).unwrap();
    assert!(nat_out(&mut frame, &pkt, VIP, 80));
    let mut want = zero(&before);
    want.src = VIP;
    assert_frames_eq(&frame, &want.build(), "udp zero");
}

#[test]
fn not_rewritable_is_left_alone() {
    let (_, after) = request(false, false);
    let cases: Vec<Vec<u8>> = vec![
        // an echo request is no error
        Spec::echo_request(30).build(),
        // quote too short for the ports
        icmp_error(RIP, CLIENT, &after, 20 + 3).build(),
        // quote shorter than the IP header
        icmp_error(RIP, CLIENT, &after, 12).build(),
        // TCP, not ICMP
        after.build(),
        // an error about an ICMP packet
        icmp_error(RIP, CLIENT, &Spec::echo_request(8), usize::MAX).build(),
    ];
    for (i, mut frame) in cases.into_iter().enumerate() {
        let pkt = parse(&frame).unwrap();
        let orig = frame.clone();
        assert_eq!(inner_tuple(&frame, &pkt), None, "case {i}");
        assert!(!nat_out(&mut frame, &pkt, VIP, 80), "case {i}");
        assert!(!nat_in(&mut frame, &pkt, RIP, 1), "case {i}");
        assert!(!rewrite_inner(&mut frame, &pkt, VIP, 1, VIP, 1), "case {i}");
        assert_eq!(frame, orig, "case {i}");
    }
    // a quoted non-first fragment
    let mut e = icmp_error(RIP, CLIENT, &after, usize::MAX);
    e.payload[6] = 0x00;
    e.payload[7] = 0x10;
    let frame = e.build();
    let pkt = parse(&frame).unwrap();
    assert_eq!(inner_tuple(&frame, &pkt), None);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn rewrite_equals_rebuild(
        udp: bool, q in 24usize..200, s: [u8; 4], d: [u8; 4], sp: u16, dp: u16,
        os: [u8; 4], od: [u8; 4],
    ) {
        let (_, after) = request(udp, false);
        // A quote that ends inside the L4 checksum cannot be compared
        // byte for byte (half a checksum is left as it was).
        let q = if q == 20 + if udp { 7 } else { 17 } { q + 1 } else { q };
        let mut target = after.clone();
        target.src = Ipv4Addr::from(s);
        target.dst = Ipv4Addr::from(d);
        target.set_ports(sp, dp);
        let mut frame = icmp_error(RIP, CLIENT, &after, q).build();
        let pkt = parse(&frame).unwrap();
        prop_assert!(rewrite_inner(&mut frame, &pkt, target.src, sp, target.dst, dp));
        prop_assert!(set_outer_addrs(&mut frame, &pkt, Ipv4Addr::from(os), Ipv4Addr::from(od)));
        let want = icmp_error(Ipv4Addr::from(os), Ipv4Addr::from(od), &target, q).build();
        prop_assert!(frame == want, "differs from etherparse");
        assert_checksums_valid(&frame);
    }

    #[test]
    fn never_panics_on_mutated_errors(
        muts in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let (_, after) = request(false, true);
        let mut frame = icmp_error(RIP, CLIENT, &after, usize::MAX).build();
        for (i, x) in &muts {
            let i = 34 + i.index(frame.len() - 34);
            frame[i] ^= x;
        }
        let n = cut.index(frame.len() + 1);
        let Ok(pkt) = parse(&frame) else { return Ok(()); };
        let mut f = frame[..n].to_vec();
        let _ = inner_tuple(&f, &pkt);
        let _ = nat_out(&mut f, &pkt, VIP, 80);
        let mut f = frame.clone();
        if nat_in(&mut f, &pkt, RIP, 8080) {
            assert_checksums_valid(&f);
        }
    }
}
