//! SYNPROXY in the frame pipeline, driven directly (no root, no TAP): client SYNs answered
//! with syncookies and no state, bad ACKs refused and counted, a good ACK opening the real
//! server's handshake with the client's ISN and options, the server's SYN/ACK releasing the
//! stored ACK (not forwarded to the client), data, SACK and timestamps shifted both ways,
//! a server RST during the handshake, SYN retransmission and giving up, the duplicate-ACK
//! guard, FullNAT with TOA on the released ACK, connection reuse from TIME_WAIT, and the
//! config refusing DR/TUN real servers.

use std::net::Ipv4Addr;

use etherparse::{PacketBuilder, TcpOptionElement};
use modes::packet::{parse, Packet};
use modes::synproxy::options;
use rig::{Rig, EXT, EXT_MAC, INT, INT_MAC};
use tapvs::datapath::conn::FlowKey;
use tapvs::datapath::pipeline::{Verdict, SYNPROXY_DUP_ACKS, SYNPROXY_SYN_RETRIES};
use tapvs::datapath::stats::Drop;
use tapvs::datapath::tcp_state::State;
use tapvs::sys::tap::VNET_HDR_LEN;

#[path = "common/rig.rs"]
mod rig;

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const CLIENT_MAC: [u8; 6] = [2, 0x5e, 10, 0, 0, 2];
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const RS: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 2);
const RS_MAC: [u8; 6] = [2, 0x5e, 172, 16, 0, 2];
const LIP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 100);
const V_NAT: u16 = 80;
const V_FNAT: u16 = 83;
const CPORT: u16 = 40000;
const ISN: u32 = 1_000_000;
const CLIENT_TS: u32 = 5555;

fn config(extra: &str) -> String {
    rig::config(&format!(
        r#"
[[service]]
protocol = "tcp"
address = "{VIP}:{V_NAT}"
synproxy = true
[[service.real]]
address = "{RS}:8080"
forward = "nat"

[[service]]
protocol = "tcp"
address = "{VIP}:{V_FNAT}"
synproxy = true
local_addresses = ["{LIP}"]
[[service.real]]
address = "{RS}:8083"
forward = "fullnat"
{extra}
"#
    ))
}

/// The rig with the SYNPROXY services, knowing the client and the real server.
fn synproxy_rig() -> Rig {
    Rig::new(
        &config(""),
        1024,
        &[(CLIENT, CLIENT_MAC, EXT), (RS, RS_MAC, INT)],
    )
}

impl Rig {
    /// The client's connection to VIP:`vport`, if any.
    fn conn(&self, vport: u16) -> Option<tapvs::datapath::conn::Conn> {
        let t = self.pipe.table();
        t.lookup(&FlowKey::new(6, CLIENT, CPORT, VIP, vport))
            .map(|f| t.get(f.slot).clone())
    }
}

/// A TCP segment; `ack` None = no ACK flag.
#[allow(clippy::too_many_arguments)]
fn tcp(
    (src, sport, smac): (Ipv4Addr, u16, [u8; 6]),
    (dst, dport, dmac): (Ipv4Addr, u16, [u8; 6]),
    syn: bool,
    seq: u32,
    ack: Option<u32>,
    rst: bool,
    opts: &[TcpOptionElement],
    data: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(smac, dmac)
        .ipv4(src.octets(), dst.octets(), 64)
        .tcp(sport, dport, seq, 1000);
    let mut b = b.options(opts).unwrap();
    if syn {
        b = b.syn();
    }
    if let Some(a) = ack {
        b = b.ack(a);
    }
    if rst {
        b = b.rst();
    }
    let mut v = Vec::new();
    b.write(&mut v, data).unwrap();
    v
}

fn client(_vport: u16) -> (Ipv4Addr, u16, [u8; 6]) {
    (CLIENT, CPORT, CLIENT_MAC)
}

fn vip(vport: u16) -> (Ipv4Addr, u16, [u8; 6]) {
    (VIP, vport, EXT_MAC)
}

fn syn_opts() -> Vec<TcpOptionElement> {
    vec![
        TcpOptionElement::MaximumSegmentSize(1460),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOptionElement::Timestamp(CLIENT_TS, 0),
        TcpOptionElement::Noop,
        TcpOptionElement::WindowScale(9),
    ]
}

/// The client's SYN to VIP:`vport`, with [`syn_opts`].
fn client_syn(vport: u16) -> Vec<u8> {
    tcp(
        client(vport),
        vip(vport),
        true,
        ISN,
        None,
        false,
        &syn_opts(),
        &[],
    )
}

/// NOP, NOP and the timestamps `(tsval, tsecr)`: the options of a segment after the handshake.
fn ts_opts(tsval: u32, tsecr: u32) -> [TcpOptionElement; 3] {
    [
        TcpOptionElement::Noop,
        TcpOptionElement::Noop,
        TcpOptionElement::Timestamp(tsval, tsecr),
    ]
}

/// The client's segment to VIP:`vport` with the ACK flag.
fn from_client(vport: u16, seq: u32, ack: u32, opts: &[TcpOptionElement], data: &[u8]) -> Vec<u8> {
    tcp(
        client(vport),
        vip(vport),
        false,
        seq,
        Some(ack),
        false,
        opts,
        data,
    )
}

/// The real server's segment from RS:`rport` to `to`, with the ACK flag.
fn from_server(
    rport: u16,
    to: (Ipv4Addr, u16),
    seq: u32,
    ack: u32,
    opts: &[TcpOptionElement],
    data: &[u8],
) -> Vec<u8> {
    tcp(
        (RS, rport, RS_MAC),
        (to.0, to.1, INT_MAC),
        false,
        seq,
        Some(ack),
        false,
        opts,
        data,
    )
}

/// `f` with the FIN flag set and its TCP checksum computed again.
fn with_fin(mut f: Vec<u8>) -> Vec<u8> {
    let p = parse(&f).unwrap();
    f[p.l4 + 13] |= 0x01;
    f[p.l4 + 16..p.l4 + 18].fill(0);
    let c = modes::checksum::l4_checksum_v4(p.src4(), p.dst4(), 6, &f[p.l4..p.ip_end()]);
    f[p.l4 + 16..p.l4 + 18].copy_from_slice(&c.to_be_bytes());
    f
}

fn u32_at(f: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]])
}

fn seq_of(f: &[u8]) -> u32 {
    let p = parse(f).unwrap();
    u32_at(f, p.l4 + 4)
}

fn ack_of(f: &[u8]) -> u32 {
    let p = parse(f).unwrap();
    u32_at(f, p.l4 + 8)
}

fn opts_of(f: &[u8]) -> modes::synproxy::Opts {
    let p = parse(f).unwrap();
    options(&f[p.l4 + 20..p.payload_offset()])
}

/// The IPv4 and TCP checksums of `f` verify.
#[track_caller]
fn assert_checksums(f: &[u8]) -> Packet {
    let p = parse(f).expect("parses (IPv4 checksum included)");
    let seg = &f[p.l4..p.ip_end()];
    assert_eq!(
        modes::checksum::l4_checksum_v4(p.src4(), p.dst4(), 6, seg),
        0,
        "TCP checksum"
    );
    p
}

/// Asserts that the first frame of `sent` goes from VIP:`vport` to the client with good
/// checksums and the sequence number the client knows (after `cookie`); returns it.
#[track_caller]
fn assert_to_client(sent: &[(usize, Vec<u8>)], vport: u16, cookie: u32) -> &[u8] {
    let f = &sent[0].1;
    let p = assert_checksums(f);
    assert_eq!(
        (p.src4(), p.sport, p.dst4(), p.dport),
        (VIP, vport, CLIENT, CPORT)
    );
    assert_eq!(seq_of(f), cookie.wrapping_add(1));
    f
}

/// The client's SYN to `vport`; returns the SYN/ACK's cookie and TSval.
fn handshake_cookie(rig: &mut Rig, vport: u16) -> (u32, u32) {
    let syn = client_syn(vport);
    assert_eq!(rig.feed(EXT, &syn), Verdict::Answer);
    let sent = rig.sent();
    assert_eq!(sent.len(), 1, "one SYN/ACK");
    let (port, sa) = &sent[0];
    assert_eq!(*port, EXT);
    let p = assert_checksums(sa);
    assert_eq!(
        (p.src4(), p.sport, p.dst4(), p.dport),
        (VIP, vport, CLIENT, CPORT)
    );
    assert_eq!(p.tcp_flags, 0x12);
    assert_eq!(&sa[0..6], &CLIENT_MAC);
    assert_eq!(&sa[6..12], &EXT_MAC);
    assert_eq!(ack_of(sa), ISN + 1);
    let (tsval, tsecr, _) = opts_of(sa).ts.expect("timestamps");
    assert_eq!(tsecr, CLIENT_TS);
    (seq_of(sa), tsval)
}

/// The client's ACK completing the cookie handshake.
fn client_ack(vport: u16, cookie: u32, tsval: u32) -> Vec<u8> {
    from_client(
        vport,
        ISN + 1,
        cookie.wrapping_add(1),
        &ts_opts(CLIENT_TS + 1, tsval),
        &[],
    )
}

const SRV_ISN: u32 = 0x9000_0000;
const SRV_TS: u32 = 777_777;

/// The real server's SYN/ACK to `to` (the client, or the local address in FullNAT).
fn server_syn_ack(rport: u16, to: (Ipv4Addr, u16)) -> Vec<u8> {
    tcp(
        (RS, rport, RS_MAC),
        (to.0, to.1, INT_MAC),
        true,
        SRV_ISN,
        Some(ISN + 1),
        false,
        &[
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::SelectiveAcknowledgementPermitted,
            TcpOptionElement::Timestamp(SRV_TS, CLIENT_TS + 1),
            TcpOptionElement::Noop,
            TcpOptionElement::WindowScale(7),
        ],
        &[],
    )
}

/// SYN, cookie, good ACK: returns (cookie, our TSval, the SYN sent to the server).
fn open(rig: &mut Rig, vport: u16) -> (u32, u32, Vec<u8>) {
    let (cookie, tsval) = handshake_cookie(rig, vport);
    let v = rig.feed(EXT, &client_ack(vport, cookie, tsval));
    assert!(matches!(v, Verdict::Transmit { port: INT, .. }), "{v:?}");
    let mut sent = rig.sent();
    assert_eq!(sent.len(), 1, "one SYN to the real server");
    let (port, syn) = sent.remove(0);
    assert_eq!(port, INT);
    (cookie, tsval, syn)
}

#[test]
fn a_syn_gets_a_cookie_and_creates_nothing() {
    let mut rig = synproxy_rig();
    let (cookie, tsval) = handshake_cookie(&mut rig, V_NAT);
    assert_eq!(rig.pipe.table().len(), 0, "no connection for a SYN");
    assert_eq!(rig.pipe.synproxy_pending(), 0);
    assert_eq!(rig.pipe.counters().synproxy_syn_cookies_sent, 1);
    // Options: the port's MSS, SACK, window scale, and the client's wscale/SACK in TSval.
    let o = {
        let syn = client_syn(V_NAT);
        rig.feed(EXT, &syn);
        let s = rig.sent();
        opts_of(&s[0].1)
    };
    assert_eq!(o.mss, Some(1460));
    assert!(o.sack_perm);
    assert!(o.wscale.is_some());
    assert_eq!(tsval & 0x3f, 9 | 0x10);
    assert_ne!(cookie, 0);
}

#[test]
fn a_bad_ack_is_refused_and_counted() {
    let mut rig = synproxy_rig();
    let (cookie, tsval) = handshake_cookie(&mut rig, V_NAT);
    let bad = client_ack(V_NAT, cookie ^ 0x100, tsval);
    assert_eq!(rig.feed(EXT, &bad), Verdict::Drop(Drop::SynproxyAckBad));
    assert_eq!(rig.drops(Drop::SynproxyAckBad), 1);
    let sent = rig.sent();
    assert_eq!(sent.len(), 1, "a RST");
    let p = parse(&sent[0].1).unwrap();
    assert_eq!(p.tcp_flags & 0x04, 0x04);
    assert_eq!(rig.pipe.table().len(), 0);
    // A wrong sequence number (not the ISN the cookie was made for) fails too.
    let mut bad = client_ack(V_NAT, cookie, tsval);
    let p = parse(&bad).unwrap();
    bad[p.l4 + 7] ^= 1;
    assert_eq!(rig.feed(EXT, &bad), Verdict::Drop(Drop::SynproxyAckBad));
    assert_eq!(rig.pipe.table().len(), 0);
}

#[test]
fn a_good_ack_opens_the_server_handshake_with_the_clients_isn_and_options() {
    let mut rig = synproxy_rig();
    let (_, _, syn) = open(&mut rig, V_NAT);
    let p = assert_checksums(&syn);
    assert_eq!(
        (p.src4(), p.sport, p.dst4(), p.dport),
        (CLIENT, CPORT, RS, 8080)
    );
    assert_eq!(p.tcp_flags, 0x02, "a plain SYN");
    assert_eq!(seq_of(&syn), ISN, "the client's ISN");
    assert_eq!(&syn[0..6], &RS_MAC);
    let o = opts_of(&syn);
    assert_eq!(o.mss, Some(1460));
    assert!(o.sack_perm);
    assert_eq!(
        o.wscale,
        Some(9),
        "the client's window scale, from the cookie"
    );
    assert_eq!(o.ts.map(|t| (t.0, t.1)), Some((CLIENT_TS + 1, 0)));
    let c = rig.conn(V_NAT).expect("connection");
    assert!(c.synproxy());
    assert_eq!(c.state, State::SynRecv);
    assert_eq!(rig.pipe.synproxy_pending(), 1);
    let k = rig.pipe.counters();
    assert_eq!((k.synproxy_ack_valid, k.synproxy_syns_sent), (1, 1));
}

#[test]
fn the_servers_syn_ack_releases_the_stored_ack_and_data_is_shifted_both_ways() {
    let mut rig = synproxy_rig();
    let (cookie, our_ts, _) = open(&mut rig, V_NAT);
    // Early data while the server's handshake is pending: stored.
    let early = from_client(
        V_NAT,
        ISN + 1,
        cookie + 1,
        &ts_opts(CLIENT_TS + 2, our_ts),
        b"GET / HTTP/1.0\r\n\r\n",
    );
    assert!(matches!(rig.feed(EXT, &early), Verdict::Hold { .. }));
    assert!(rig.sent().is_empty());
    // The server's SYN/ACK: nothing to the client, the ACK and the data to the server.
    let v = rig.feed(INT, &server_syn_ack(8080, (CLIENT, CPORT)));
    assert_eq!(v, Verdict::Answer);
    let sent = rig.sent();
    assert_eq!(
        sent.len(),
        2,
        "stored ACK and data released, SYN/ACK not forwarded"
    );
    let delta = SRV_ISN.wrapping_sub(cookie);
    for (port, f) in &sent {
        assert_eq!(*port, INT);
        let p = assert_checksums(f);
        assert_eq!((p.dst4(), p.dport), (RS, 8080));
        assert_eq!(ack_of(f), cookie.wrapping_add(1).wrapping_add(delta));
        assert_eq!(ack_of(f), SRV_ISN + 1);
        assert_eq!(
            opts_of(f).ts.map(|t| t.1),
            Some(SRV_TS),
            "TSecr in the server's clock"
        );
    }
    assert_eq!(
        sent[1].1.len() - parse(&sent[1].1).unwrap().payload_offset(),
        18
    );
    assert_eq!(rig.pipe.synproxy_pending(), 0);
    assert_eq!(rig.conn(V_NAT).unwrap().state, State::Established);
    assert_eq!(rig.pipe.counters().synproxy_established, 1);
    // Server data: seq and TSval back in the client's view, from the VIP.
    let reply = from_server(
        8080,
        (CLIENT, CPORT),
        SRV_ISN + 1,
        ISN + 19,
        &ts_opts(SRV_TS + 10, CLIENT_TS + 2),
        b"HTTP/1.0 200 OK\r\n",
    );
    assert!(matches!(
        rig.feed(INT, &reply),
        Verdict::Transmit { port: EXT, .. }
    ));
    let sent = rig.sent();
    let f = assert_to_client(&sent, V_NAT, cookie);
    assert_eq!(ack_of(f), ISN + 19);
    assert_eq!(opts_of(f).ts.map(|t| t.0), Some(our_ts + 10));
    // Client SACK: blocks moved into the server's sequence space.
    let sack = from_client(
        V_NAT,
        ISN + 19,
        cookie + 1,
        &[
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::SelectiveAcknowledgement(
                (cookie + 100, cookie + 200),
                [None, None, None],
            ),
        ],
        &[],
    );
    rig.feed(EXT, &sack);
    let sent = rig.sent();
    let f = &sent[0].1;
    assert_checksums(f);
    let (at, n) = opts_of(f).sack.expect("SACK");
    assert_eq!(n, 1);
    let p = parse(f).unwrap();
    let base = p.l4 + 20 + at;
    assert_eq!(
        (u32_at(f, base), u32_at(f, base + 4)),
        (SRV_ISN + 100, SRV_ISN + 200)
    );
}

#[test]
fn a_server_rst_during_the_handshake_reaches_the_client_in_its_sequence_space() {
    let mut rig = synproxy_rig();
    let (cookie, _, _) = open(&mut rig, V_NAT);
    let rst = tcp(
        (RS, 8080, RS_MAC),
        (CLIENT, CPORT, INT_MAC),
        false,
        0,
        Some(ISN + 1),
        true,
        &[],
        &[],
    );
    assert!(matches!(
        rig.feed(INT, &rst),
        Verdict::Transmit { port: EXT, .. }
    ));
    let sent = rig.sent();
    assert_eq!(sent.len(), 1);
    let f = &sent[0].1;
    let p = assert_checksums(f);
    assert_eq!(p.tcp_flags & 0x04, 0x04);
    assert_eq!((p.src4(), p.sport), (VIP, V_NAT));
    assert_eq!(seq_of(f), cookie.wrapping_add(1));
    assert_eq!(rig.conn(V_NAT).unwrap().state, State::Close);
    assert_eq!(rig.pipe.synproxy_pending(), 0);
    assert_eq!(rig.pipe.counters().synproxy_server_rst, 1);
}

#[test]
fn the_syn_is_retransmitted_then_the_handshake_given_up() {
    let mut rig = synproxy_rig();
    let (_, _, first) = open(&mut rig, V_NAT);
    rig.now_ms += 500;
    rig.tick();
    assert!(rig.sent().is_empty(), "not yet");
    for i in 0..SYNPROXY_SYN_RETRIES {
        rig.now_ms += 1000;
        rig.tick();
        let sent = rig.sent();
        assert_eq!(sent.len(), 1, "retry {i}");
        assert_eq!(sent[0].1, first, "the same SYN");
    }
    rig.now_ms += 1000;
    rig.tick();
    assert!(rig.sent().is_empty());
    assert!(rig.conn(V_NAT).is_none(), "given up");
    assert_eq!(rig.pipe.synproxy_pending(), 0);
    let k = rig.pipe.counters();
    assert_eq!(k.synproxy_syn_retries, u64::from(SYNPROXY_SYN_RETRIES));
    assert_eq!(k.synproxy_timeouts, 1);
}

#[test]
fn duplicate_acks_while_pending_are_dropped_and_a_storm_counted() {
    let mut rig = synproxy_rig();
    let (cookie, tsval, _) = open(&mut rig, V_NAT);
    let dup = client_ack(V_NAT, cookie, tsval);
    for _ in 0..SYNPROXY_DUP_ACKS + 3 {
        assert!(matches!(rig.feed(EXT, &dup), Verdict::Drop(_)));
    }
    assert!(rig.sent().is_empty());
    assert_eq!(
        rig.drops(Drop::SynproxyPending),
        u64::from(SYNPROXY_DUP_ACKS)
    );
    assert_eq!(rig.drops(Drop::SynproxyAckStorm), 3);
    // The handshake still completes with the one stored ACK.
    rig.feed(INT, &server_syn_ack(8080, (CLIENT, CPORT)));
    assert_eq!(rig.sent().len(), 1);
}

#[test]
fn fullnat_releases_the_ack_with_toa_from_the_local_address() {
    let mut rig = synproxy_rig();
    let (cookie, _, syn) = open(&mut rig, V_FNAT);
    let p = assert_checksums(&syn);
    assert_eq!((p.src4(), p.dst4(), p.dport), (LIP, RS, 8083));
    assert_eq!(seq_of(&syn), ISN);
    assert_eq!(opts_of(&syn).mss, Some(1452), "MSS clamped for TOA");
    let lport = p.sport;
    rig.feed(INT, &server_syn_ack(8083, (LIP, lport)));
    let sent = rig.sent();
    assert_eq!(sent.len(), 1);
    let f = &sent[0].1;
    let p = assert_checksums(f);
    assert_eq!((p.src4(), p.sport, p.dst4()), (LIP, lport, RS));
    assert_eq!(ack_of(f), SRV_ISN + 1);
    let opts = &f[p.l4 + 20..p.payload_offset()];
    let toa = modes::wire::tcp::find_option(opts, 254).expect("TOA on the released ACK");
    assert_eq!(toa.1, 8);
    assert_eq!(&opts[toa.0 + 2..toa.0 + 4], &CPORT.to_be_bytes());
    assert_eq!(&opts[toa.0 + 4..toa.0 + 8], &CLIENT.octets());
    assert_eq!(rig.pipe.counters().toa_added, 1);
    // The server's data goes back from the VIP with the client's sequence numbers.
    let reply = from_server(8083, (LIP, lport), SRV_ISN + 1, ISN + 1, &[], b"hi");
    rig.feed(INT, &reply);
    let sent = rig.sent();
    assert_to_client(&sent, V_FNAT, cookie);
}

#[test]
fn a_valid_cookie_ack_reuses_a_time_wait_connection() {
    let mut rig = synproxy_rig();
    let (cookie, tsval, _) = open(&mut rig, V_NAT);
    rig.feed(INT, &server_syn_ack(8080, (CLIENT, CPORT)));
    rig.sent();
    // Close: client FIN, server FIN, client ACK → TIME_WAIT (as IPVS tracks it).
    let fin = |seq, ack| with_fin(from_client(V_NAT, seq, ack, &[], &[]));
    rig.feed(EXT, &fin(ISN + 1, cookie + 1));
    let sfin = with_fin(from_server(
        8080,
        (CLIENT, CPORT),
        SRV_ISN + 1,
        ISN + 2,
        &[],
        &[],
    ));
    rig.feed(INT, &sfin);
    rig.feed(EXT, &from_client(V_NAT, ISN + 2, cookie + 2, &[], &[]));
    rig.sent();
    let st = rig.conn(V_NAT).unwrap().state;
    assert!(matches!(st, State::TimeWait | State::Close), "{st:?}");
    // A new handshake on the same tuple: the SYN gets a cookie and leaves the closing entry;
    // a stray ACK is the old connection's; the valid-cookie ACK replaces it.
    let (cookie2, tsval2) = handshake_cookie(&mut rig, V_NAT);
    assert_eq!(rig.conn(V_NAT).unwrap().state, st);
    let _ = (cookie, tsval);
    let stray = client_ack(V_NAT, cookie2 ^ 0x100, tsval2);
    assert!(!matches!(
        rig.feed(EXT, &stray),
        Verdict::Drop(Drop::SynproxyAckBad)
    ));
    rig.sent();
    let v = rig.feed(EXT, &client_ack(V_NAT, cookie2, tsval2));
    assert!(matches!(v, Verdict::Transmit { port: INT, .. }), "{v:?}");
    assert_eq!(rig.pipe.synproxy_pending(), 1);
    assert_eq!(rig.conn(V_NAT).unwrap().state, State::SynRecv);
    assert_eq!(rig.pipe.counters().synproxy_reused, 1);
}

/// The error of the config with the SYNPROXY services and `extra`, read as `t.toml`.
fn config_error(extra: &str) -> String {
    tapvs::config::parse(&config(extra), std::path::Path::new("t.toml"))
        .expect_err("refused")
        .to_string()
}

#[test]
fn synproxy_is_refused_for_direct_routing_tunnels_and_udp() {
    for (fwd, extra_port) in [("dr", 90), ("tun", 91)] {
        let extra = format!(
            "[[service]]\nprotocol = \"tcp\"\naddress = \"{VIP}:{extra_port}\"\nsynproxy = true\n[[service.real]]\naddress = \"{RS}:{extra_port}\"\nforward = \"{fwd}\"\n"
        );
        let e = config_error(&extra);
        assert!(e.contains("t.toml"), "{e}");
        assert!(e.contains("service[2].real[0].forward"), "{e}");
        assert!(e.contains("synproxy"), "{e}");
    }
    let extra = format!(
        "[[service]]\nprotocol = \"udp\"\naddress = \"{VIP}:53\"\nsynproxy = true\n[[service.real]]\naddress = \"{RS}:53\"\n"
    );
    let e = config_error(&extra);
    assert!(e.contains("service[2].synproxy"), "{e}");
}

#[test]
fn the_store_is_bounded_and_so_is_the_handshake_pool() {
    let mut rig = synproxy_rig();
    let (cookie, tsval, _) = open(&mut rig, V_NAT);
    let data = |seq: u32| {
        from_client(
            V_NAT,
            seq,
            cookie + 1,
            &ts_opts(CLIENT_TS + 2, tsval),
            &[b'x'; 100],
        )
    };
    // The ACK and two data frames fill the store; the third is dropped.
    assert!(matches!(
        rig.feed(EXT, &data(ISN + 1)),
        Verdict::Hold { .. }
    ));
    assert!(matches!(
        rig.feed(EXT, &data(ISN + 101)),
        Verdict::Hold { .. }
    ));
    assert_eq!(
        rig.feed(EXT, &data(ISN + 201)),
        Verdict::Drop(Drop::SynproxyStoreFull)
    );
    rig.feed(INT, &server_syn_ack(8080, (CLIENT, CPORT)));
    assert_eq!(rig.sent().len(), 3);
    // Every store in use: a further valid ACK is dropped, nothing created for it.
    let mut rig = synproxy_rig();
    let n = tapvs::datapath::pipeline::SYNPROXY_HANDSHAKES;
    let mut last = Verdict::Answer;
    for i in 0..=n {
        let cport = 1024 + i as u16;
        let c = (CLIENT, cport, CLIENT_MAC);
        let syn = tcp(c, vip(V_NAT), true, ISN, None, false, &syn_opts(), &[]);
        rig.feed(EXT, &syn);
        let sa = rig.sent().remove(0).1;
        let ack = tcp(
            c,
            vip(V_NAT),
            false,
            ISN + 1,
            Some(seq_of(&sa) + 1),
            false,
            &[],
            &[],
        );
        last = rig.feed(EXT, &ack);
        rig.sent();
    }
    assert_eq!(last, Verdict::Drop(Drop::SynproxyPoolFull));
    assert_eq!(rig.drops(Drop::SynproxyPoolFull), 1);
    assert_eq!(rig.pipe.synproxy_pending(), n);
    assert_eq!(rig.pipe.table().len(), n);
}

/// Handshake frames with random bytes changed (addresses, ports, flags, sequence numbers,
/// options, lengths), fed in every phase of a handshake: never a panic, and the table stays
/// within its bound.
#[test]
fn mangled_handshake_frames_never_panic() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..2000 {
        let mut rig = synproxy_rig();
        let (cookie, tsval) = handshake_cookie(&mut rig, V_NAT);
        let frames = [
            (EXT, client_syn(V_NAT)),
            (EXT, client_ack(V_NAT, cookie, tsval)),
            (EXT, client_ack(V_NAT, cookie, tsval)),
            (INT, server_syn_ack(8080, (CLIENT, CPORT))),
            (EXT, from_client(V_NAT, ISN + 1, cookie + 1, &[], b"data")),
        ];
        for (i, (port, f)) in frames.iter().enumerate() {
            let mut f = f.clone();
            if (round + i) % 2 == 0 {
                for _ in 0..1 + rnd() % 4 {
                    let at = 14 + (rnd() as usize) % (f.len() - 14);
                    f[at] = rnd() as u8;
                }
                // Mostly a valid IPv4 header again, so the change reaches SYNPROXY.
                if f[14] == 0x45 && rnd() % 4 != 0 {
                    f[24] = 0;
                    f[25] = 0;
                    let c = modes::checksum::checksum(&f[14..34]);
                    f[24..26].copy_from_slice(&c.to_be_bytes());
                }
            }
            rig.feed(*port, &f);
            rig.now_ms += rnd() % 1500;
            rig.tick();
        }
        assert!(rig.pipe.table().len() <= 1);
        rig.sent();
    }
}

/// A GSO super-frame with a partial checksum (the pseudo-header sum in the TCP checksum field):
/// its ack and SACK blocks are shifted and the checksum field changes only by the address
/// rewrite (it still holds the pseudo-header sum, now for client → real server); the virtio
/// header goes out as it came.
#[test]
fn a_partial_checksum_gso_frame_is_shifted_without_touching_its_sum() {
    use modes::checksum::pseudo_header_v4;
    use modes::wire::vnet::{VnetHdr, GSO_TCPV4, NEEDS_CSUM};
    let mut rig = synproxy_rig();
    let (cookie, tsval, _) = open(&mut rig, V_NAT);
    rig.feed(INT, &server_syn_ack(8080, (CLIENT, CPORT)));
    rig.sent();
    let data = vec![7u8; 4000];
    let mut f = from_client(
        V_NAT,
        ISN + 1,
        cookie + 1,
        &[
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::Timestamp(CLIENT_TS + 2, tsval),
            TcpOptionElement::Noop,
            TcpOptionElement::Noop,
            TcpOptionElement::SelectiveAcknowledgement(
                (cookie + 10, cookie + 20),
                [None, None, None],
            ),
        ],
        &data,
    );
    let p = parse(&f).unwrap();
    let seg_len = (p.ip_end() - p.l4) as u16;
    let partial = |src: Ipv4Addr, dst: Ipv4Addr| pseudo_header_v4(src, dst, 6, seg_len);
    f[p.l4 + 16..p.l4 + 18].copy_from_slice(&partial(CLIENT, VIP).to_be_bytes());
    let hdr = VnetHdr {
        flags: NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: p.payload_offset() as u16,
        gso_size: 1400,
        csum_start: p.l4 as u16,
        csum_offset: 16,
        num_buffers: 0,
    };
    let v = rig.feed_vnet(EXT, &hdr, &f);
    assert!(matches!(v, Verdict::Transmit { port: INT, .. }), "{v:?}");
    let sent = rig.sent_vnet();
    assert_eq!(sent.len(), 1);
    let out = &sent[0].1;
    assert_eq!(VnetHdr::parse(&out[..VNET_HDR_LEN]), Some(hdr));
    let g = &out[VNET_HDR_LEN..];
    let q = parse(g).unwrap();
    assert_eq!((q.dst4(), q.dport), (RS, 8080));
    assert_eq!(
        u16::from_be_bytes([g[q.l4 + 16], g[q.l4 + 17]]),
        partial(CLIENT, RS),
        "still the pseudo-header sum"
    );
    assert_eq!(ack_of(g), SRV_ISN + 1);
    let (at, _) = opts_of(g).sack.unwrap();
    let base = q.l4 + 20 + at;
    assert_eq!(
        (u32_at(g, base), u32_at(g, base + 4)),
        (SRV_ISN + 10, SRV_ISN + 20)
    );
    assert_eq!(opts_of(g).ts.map(|t| t.1), Some(SRV_TS));
    assert_eq!(&g[q.payload_offset()..q.ip_end()], &data[..]);
}
