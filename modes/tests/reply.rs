//! The slow-path reply builders: each output is compared byte for byte
//! with a frame built by etherparse and its checksums re-verified; the
//! must-not-answer cases return None.

mod common;

use common::*;
use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, IpDscp, IpHeaders, Ipv4Header, PacketBuilder,
};
use modes::nat::Csum;
use modes::packet::parse;
use modes::reply::*;
use modes::wire::icmpv4;
use modes::EthernetAddress;
use std::net::Ipv4Addr;

const OUR_MAC: EthernetAddress = EthernetAddress(LB_MAC);

fn ep_arp(
    eth_src: [u8; 6],
    eth_dst: [u8; 6],
    op: ArpOperation,
    sha: [u8; 6],
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let a = ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        op,
        &sha,
        &spa.octets(),
        &tha,
        &tpa.octets(),
    )
    .unwrap();
    let mut out = Vec::new();
    PacketBuilder::ethernet2(eth_src, eth_dst)
        .arp(a)
        .write(&mut out)
        .unwrap();
    out
}

fn who_has(target: Ipv4Addr) -> Vec<u8> {
    let mut f = ep_arp(
        CLIENT_MAC,
        [0xff; 6],
        ArpOperation::REQUEST,
        CLIENT_MAC,
        CLIENT,
        [0; 6],
        target,
    );
    f.resize(60, 0); // as received from the wire: padded
    f
}

#[test]
fn arp_reply_golden() {
    let mut out = [0u8; 128];
    let n = arp_reply(&mut out, &who_has(VIP), OUR_MAC, VIP).unwrap();
    let want = ep_arp(
        LB_MAC,
        CLIENT_MAC,
        ArpOperation::REPLY,
        LB_MAC,
        VIP,
        CLIENT_MAC,
        CLIENT,
    );
    assert_frames_eq(&out[..n], &want, "arp reply");
    assert_eq!(n, 42);
}

#[test]
fn arp_reply_to_dad_probe() {
    let probe = ep_arp(
        CLIENT_MAC,
        [0xff; 6],
        ArpOperation::REQUEST,
        CLIENT_MAC,
        Ipv4Addr::UNSPECIFIED,
        [0; 6],
        VIP,
    );
    let mut out = [0u8; 42];
    let n = arp_reply(&mut out, &probe, OUR_MAC, VIP).unwrap();
    let want = ep_arp(
        LB_MAC,
        CLIENT_MAC,
        ArpOperation::REPLY,
        LB_MAC,
        VIP,
        CLIENT_MAC,
        Ipv4Addr::UNSPECIFIED,
    );
    assert_frames_eq(&out[..n], &want, "dad reply");
}

#[test]
fn arp_reply_refusals() {
    let mut out = [0u8; 128];
    assert_eq!(
        arp_reply(&mut out, &who_has(RIP), OUR_MAC, VIP),
        None,
        "not our IP"
    );
    let reply = ep_arp(
        CLIENT_MAC,
        LB_MAC,
        ArpOperation::REPLY,
        CLIENT_MAC,
        CLIENT,
        LB_MAC,
        VIP,
    );
    assert_eq!(arp_reply(&mut out, &reply, OUR_MAC, VIP), None, "a reply");
    let mcast = ep_arp(
        CLIENT_MAC,
        [0xff; 6],
        ArpOperation::REQUEST,
        [0x01, 0, 0x5e, 0, 0, 1],
        CLIENT,
        [0; 6],
        VIP,
    );
    assert_eq!(
        arp_reply(&mut out, &mcast, OUR_MAC, VIP),
        None,
        "multicast sender"
    );
    assert_eq!(
        arp_reply(&mut out[..41], &who_has(VIP), OUR_MAC, VIP),
        None,
        "small out"
    );
    assert_eq!(
        arp_reply(&mut out, &who_has(VIP)[..41], OUR_MAC, VIP),
        None,
        "truncated"
    );
    let ip = Spec::udp_request(20).build();
    assert_eq!(arp_reply(&mut out, &ip, OUR_MAC, VIP), None, "not ARP");
    let mut bad = who_has(VIP);
    bad[18] = 8; // hlen
    assert_eq!(arp_reply(&mut out, &bad, OUR_MAC, VIP), None, "bad hlen");
    assert_eq!(out, [0u8; 128], "nothing written on refusal");
}

#[test]
fn arp_request_and_gratuitous_golden() {
    let mut out = [0u8; 64];
    let n = arp_request(&mut out, OUR_MAC, VIP, RIP).unwrap();
    let want = ep_arp(
        LB_MAC,
        [0xff; 6],
        ArpOperation::REQUEST,
        LB_MAC,
        VIP,
        [0; 6],
        RIP,
    );
    assert_frames_eq(&out[..n], &want, "arp request");

    let n = gratuitous_arp(&mut out, OUR_MAC, VIP).unwrap();
    let want = ep_arp(
        LB_MAC,
        [0xff; 6],
        ArpOperation::REQUEST,
        LB_MAC,
        VIP,
        [0; 6],
        VIP,
    );
    assert_frames_eq(&out[..n], &want, "gratuitous arp");
    assert!(modes::parse(&out[..n]).is_ok());

    assert_eq!(arp_request(&mut out[..41], OUR_MAC, VIP, RIP), None);
    assert_eq!(gratuitous_arp(&mut out[..10], OUR_MAC, VIP), None);
}

fn ip_hdr(src: Ipv4Addr, dst: Ipv4Addr, ident: u16, df: bool, tos: u8) -> Ipv4Header {
    Ipv4Header {
        source: src.octets(),
        destination: dst.octets(),
        time_to_live: 64,
        identification: ident,
        dont_fragment: df,
        dscp: IpDscp::try_new(tos >> 2).unwrap(),
        ..Default::default()
    }
}

#[test]
fn icmp_echo_reply_golden() {
    for ip_opts in [vec![], IP_OPTS_8.to_vec()] {
        let mut req = Spec::echo_request(56);
        req.ip_opts = ip_opts;
        let frame = req.build();
        let pkt = parse(&frame).unwrap();
        let mut out = vec![0u8; 2048];
        let n = icmp_echo_reply(&mut out, &frame, &pkt, OUR_MAC).unwrap();

        let mut want = Vec::new();
        PacketBuilder::ethernet2(LB_MAC, CLIENT_MAC)
            .ip(IpHeaders::Ipv4(
                ip_hdr(VIP, CLIENT, req.ident, false, 0),
                Default::default(),
            ))
            .icmpv4_echo_reply(0x77, 3)
            .write(&mut want, &req.payload)
            .unwrap();
        assert_frames_eq(&out[..n], &want, "echo reply");
        assert_checksums_valid(&out[..n]);
    }
}

#[test]
fn icmp_echo_reply_ignores_a_partial_request_checksum() {
    let req = Spec::echo_request(100);
    let mut frame = req.build();
    let l4 = l4_off(&frame);
    frame[l4 + 2] ^= 0x5a; // not a valid checksum (e.g. partial)
    let pkt = parse(&frame).unwrap();
    let mut out = vec![0u8; 256];
    let n = icmp_echo_reply(&mut out, &frame, &pkt, OUR_MAC).unwrap();
    assert_checksums_valid(&out[..n]);
}

#[test]
fn icmp_echo_reply_refusals() {
    let mut out = vec![0u8; 2048];
    let frame = Spec::echo_request(8).build();
    let pkt = parse(&frame).unwrap();
    assert_eq!(
        icmp_echo_reply(&mut out[..14 + 20 + 15], &frame, &pkt, OUR_MAC),
        None,
        "small out"
    );
    assert!(icmp_echo_reply(&mut out[..14 + 20 + 16], &frame, &pkt, OUR_MAC).is_some());

    let mut reply = Spec::echo_request(8);
    reply.l4 = L4::IcmpEcho {
        request: false,
        id: 1,
        seq: 1,
    };
    let f = reply.build();
    assert_eq!(
        icmp_echo_reply(&mut out, &f, &parse(&f).unwrap(), OUR_MAC),
        None,
        "echo reply"
    );

    let mut bcast = Spec::echo_request(8);
    bcast.dst = Ipv4Addr::BROADCAST;
    let f = bcast.build();
    assert_eq!(
        icmp_echo_reply(&mut out, &f, &parse(&f).unwrap(), OUR_MAC),
        None,
        "to broadcast"
    );

    let mut mcast = Spec::echo_request(8);
    mcast.dmac = [0x01, 0x00, 0x5e, 0, 0, 1];
    let f = mcast.build();
    assert_eq!(
        icmp_echo_reply(&mut out, &f, &parse(&f).unwrap(), OUR_MAC),
        None,
        "to multicast MAC"
    );

    let f = Spec::udp_request(8).build();
    assert_eq!(
        icmp_echo_reply(&mut out, &f, &parse(&f).unwrap(), OUR_MAC),
        None,
        "UDP"
    );
}

fn tcp_trigger(
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    fin: bool,
    rst: bool,
    payload: usize,
) -> Spec {
    let mut s = Spec::tcp_request(payload);
    s.l4 = L4::Tcp {
        sport: 40001,
        dport: 81,
        seq,
        ack,
        syn,
        fin,
        rst,
        opts: TCP_OPTS_40.to_vec(),
    };
    s
}

fn ep_rst(seq: u32, ack: Option<u32>) -> Vec<u8> {
    let mut want = Vec::new();
    let t = PacketBuilder::ethernet2(LB_MAC, CLIENT_MAC)
        .ip(IpHeaders::Ipv4(
            ip_hdr(VIP, CLIENT, 0, true, 0),
            Default::default(),
        ))
        .tcp(81, 40001, seq, 0)
        .rst();
    match ack {
        Some(a) => t.ack(a).write(&mut want, &[]).unwrap(),
        None => t.write(&mut want, &[]).unwrap(),
    }
    want
}

#[test]
fn tcp_rst_for_segment_with_ack() {
    let trig = tcp_trigger(1000, Some(0xdead_beef), false, false, false, 500);
    let frame = trig.build();
    let pkt = parse(&frame).unwrap();
    let mut out = [0u8; 64];
    let n = tcp_rst(&mut out, &frame, &pkt, OUR_MAC).unwrap();
    assert_eq!(n, 54);
    assert_frames_eq(&out[..n], &ep_rst(0xdead_beef, None), "rst (ack)");
    assert_checksums_valid(&out[..n]);
}

#[test]
fn tcp_rst_for_segment_without_ack() {
    let mut out = [0u8; 64];
    for (seq, syn, fin, payload, want_ack) in [
        (1000u32, true, false, 0usize, 1001u32),
        (1000, false, false, 10, 1010),
        (1000, true, true, 10, 1012),
        (1000, false, true, 0, 1001),
        (u32::MAX, true, false, 0, 0),
        (u32::MAX - 1, false, false, 5, 3),
    ] {
        let frame = tcp_trigger(seq, None, syn, fin, false, payload).build();
        let pkt = parse(&frame).unwrap();
        let n = tcp_rst(&mut out, &frame, &pkt, OUR_MAC).unwrap();
        assert_frames_eq(&out[..n], &ep_rst(0, Some(want_ack)), "rst (no ack)");
        assert_checksums_valid(&out[..n]);
    }
}

#[test]
fn tcp_rst_refusals() {
    let mut out = [0u8; 64];
    for ack in [None, Some(5)] {
        let f = tcp_trigger(1, ack, false, false, true, 0).build();
        assert_eq!(
            tcp_rst(&mut out, &f, &parse(&f).unwrap(), OUR_MAC),
            None,
            "RST"
        );
    }
    let f = tcp_trigger(1, None, true, false, false, 0).build();
    let pkt = parse(&f).unwrap();
    assert_eq!(
        tcp_rst(&mut out[..53], &f, &pkt, OUR_MAC),
        None,
        "small out"
    );

    let mut s = tcp_trigger(1, None, true, false, false, 0);
    s.dst = Ipv4Addr::new(224, 0, 0, 5);
    let f = s.build();
    assert_eq!(
        tcp_rst(&mut out, &f, &parse(&f).unwrap(), OUR_MAC),
        None,
        "to multicast"
    );
    let mut s = tcp_trigger(1, None, true, false, false, 0);
    s.src = Ipv4Addr::BROADCAST;
    let f = s.build();
    assert_eq!(
        tcp_rst(&mut out, &f, &parse(&f).unwrap(), OUR_MAC),
        None,
        "from broadcast"
    );
    let mut s = tcp_trigger(1, None, true, false, false, 0);
    s.dmac = [0xff; 6];
    let f = s.build();
    assert_eq!(
        tcp_rst(&mut out, &f, &parse(&f).unwrap(), OUR_MAC),
        None,
        "to broadcast MAC"
    );
    let f = Spec::udp_request(3).build();
    assert_eq!(
        tcp_rst(&mut out, &f, &parse(&f).unwrap(), OUR_MAC),
        None,
        "UDP"
    );
}

fn ep_icmp_error(orig: &[u8], ident: u16, t: u8, code: u8, rest: [u8; 4]) -> Vec<u8> {
    let quote = &orig[14..orig.len().min(14 + 548)];
    let mut want = Vec::new();
    PacketBuilder::ethernet2(LB_MAC, CLIENT_MAC)
        .ip(IpHeaders::Ipv4(
            ip_hdr(VIP, CLIENT, ident, false, 0xc0),
            Default::default(),
        ))
        .icmpv4_raw(t, code, rest)
        .write(&mut want, quote)
        .unwrap();
    want
}

#[test]
fn icmp_port_unreachable_golden() {
    let req = Spec::udp_request(30);
    let frame = req.build();
    let pkt = parse(&frame).unwrap();
    let mut out = [0u8; 1500];
    let n = icmp_unreachable(
        &mut out,
        &frame,
        &pkt,
        Csum::Full,
        OUR_MAC,
        VIP,
        icmpv4::CODE_PORT_UNREACHABLE,
    )
    .unwrap();
    let want = ep_icmp_error(&frame, req.ident, 3, 3, [0; 4]);
    assert_frames_eq(&out[..n], &want, "port unreachable");
    assert_eq!(n, 14 + 20 + 8 + 20 + 8 + 30);
    assert_checksums_valid(&out[..n]);
}

#[test]
fn icmp_frag_needed_and_time_exceeded_quote_at_most_576_bytes() {
    let req = Spec::tcp_request(1400);
    let frame = req.build();
    let pkt = parse(&frame).unwrap();
    let mut out = [0u8; 1500];

    let n = icmp_frag_needed(&mut out, &frame, &pkt, Csum::Full, OUR_MAC, VIP, 1400).unwrap();
    assert_eq!(n - 14, 576);
    let want = ep_icmp_error(&frame, req.ident, 3, 4, [0, 0, 0x05, 0x78]);
    assert_frames_eq(&out[..n], &want, "frag needed");
    assert_checksums_valid(&out[..n]);

    let n = icmp_time_exceeded(&mut out, &frame, &pkt, Csum::Full, OUR_MAC, VIP).unwrap();
    let want = ep_icmp_error(&frame, req.ident, 11, 0, [0; 4]);
    assert_frames_eq(&out[..n], &want, "time exceeded");

    assert_eq!(
        icmp_time_exceeded(&mut out[..14 + 575], &frame, &pkt, Csum::Full, OUR_MAC, VIP),
        None
    );
}

#[test]
fn icmp_error_completes_a_partial_checksum_in_the_quote() {
    for spec in [Spec::tcp_request(100), Spec::udp_request(100)] {
        let full = spec.build();
        let mut frame = full.clone();
        make_partial(&mut frame);
        assert_ne!(frame, full);
        let pkt = parse(&frame).unwrap();
        let mut out = [0u8; 1500];
        let n = icmp_unreachable(&mut out, &frame, &pkt, Csum::Partial, OUR_MAC, VIP, 3).unwrap();
        // The quote is the packet as the sender would have put it on the wire.
        let want = ep_icmp_error(&full, spec.ident, 3, 3, [0; 4]);
        assert_frames_eq(&out[..n], &want, "quote with completed checksum");
        // With Csum::Full the partial value is quoted as is.
        let n = icmp_unreachable(&mut out, &frame, &pkt, Csum::Full, OUR_MAC, VIP, 3).unwrap();
        let want = ep_icmp_error(&frame, spec.ident, 3, 3, [0; 4]);
        assert_frames_eq(&out[..n], &want, "quote as is");
    }
}

#[test]
fn icmp_error_refusals() {
    let mut out = [0u8; 1500];
    let no = |out: &mut [u8], f: &[u8], what: &str| {
        let pkt = parse(f).unwrap();
        assert_eq!(
            icmp_unreachable(out, f, &pkt, Csum::Full, OUR_MAC, VIP, 3),
            None,
            "{what}"
        );
    };
    for t in [3u8, 4, 5, 11, 12, 9, 10, 1, 200] {
        let mut s = Spec::echo_request(28);
        s.l4 = L4::IcmpRaw {
            t,
            code: 0,
            rest: [0; 4],
        };
        no(&mut out, &s.build(), "ICMP error/unknown trigger");
    }
    for t in [0u8, 8, 13, 14] {
        let mut s = Spec::echo_request(28);
        s.l4 = L4::IcmpRaw {
            t,
            code: 0,
            rest: [0; 4],
        };
        let f = s.build();
        let pkt = parse(&f).unwrap();
        assert!(
            icmp_unreachable(&mut out, &f, &pkt, Csum::Full, OUR_MAC, VIP, 3).is_some(),
            "query {t}"
        );
    }
    let mut s = Spec::udp_request(8);
    s.dmac = [0xff; 6];
    no(&mut out, &s.build(), "Ethernet broadcast");
    let mut s = Spec::udp_request(8);
    s.dmac = [0x33, 0x33, 0, 0, 0, 1];
    no(&mut out, &s.build(), "Ethernet multicast");
    let mut s = Spec::udp_request(8);
    s.dst = Ipv4Addr::BROADCAST;
    no(&mut out, &s.build(), "IP broadcast");
    let mut s = Spec::udp_request(8);
    s.dst = Ipv4Addr::new(239, 1, 1, 1);
    no(&mut out, &s.build(), "IP multicast");
    let mut s = Spec::udp_request(8);
    s.src = Ipv4Addr::UNSPECIFIED;
    no(&mut out, &s.build(), "from 0.0.0.0");

    // A non-first fragment (parse drops fragments; the builder re-checks
    // the frame itself).
    let f = Spec::udp_request(8).build();
    let pkt = parse(&f).unwrap();
    let mut frag = f.clone();
    frag[20..22].copy_from_slice(&0x0010u16.to_be_bytes());
    assert_eq!(
        icmp_unreachable(&mut out, &frag, &pkt, Csum::Full, OUR_MAC, VIP, 3),
        None,
        "fragment"
    );
    // ARP
    let arp = who_has(VIP);
    let pkt = parse(&arp).unwrap();
    assert_eq!(
        icmp_unreachable(&mut out, &arp, &pkt, Csum::Full, OUR_MAC, VIP, 3),
        None,
        "ARP"
    );
}

/// The output buffer is reused between answers (the data path has one per worker): every
/// builder must write each byte of its frame, whatever the buffer held before.
#[test]
fn builders_overwrite_a_dirty_buffer() {
    let build = |out: &mut [u8]| {
        let mut frames = Vec::new();
        let syn = tcp_trigger(1000, None, true, false, false, 0).build();
        let ack = tcp_trigger(1000, Some(77), false, false, false, 10).build();
        for f in [&syn, &ack] {
            let n = tcp_rst(out, f, &parse(f).unwrap(), OUR_MAC).unwrap();
            frames.push(out[..n].to_vec());
        }
        let echo = Spec::echo_request(56).build();
        let n = icmp_echo_reply(out, &echo, &parse(&echo).unwrap(), OUR_MAC).unwrap();
        frames.push(out[..n].to_vec());
        let udp = Spec::udp_request(30).build();
        let pkt = parse(&udp).unwrap();
        let n = icmp_time_exceeded(out, &udp, &pkt, Csum::Full, OUR_MAC, VIP).unwrap();
        frames.push(out[..n].to_vec());
        let n = arp_reply(out, &who_has(VIP), OUR_MAC, VIP).unwrap();
        frames.push(out[..n].to_vec());
        frames
    };
    let clean = build(&mut [0u8; 2048]);
    let dirty = build(&mut [0xffu8; 2048]);
    for (c, d) in clean.iter().zip(&dirty) {
        assert_frames_eq(d, c, "built over 0xff");
    }
}
