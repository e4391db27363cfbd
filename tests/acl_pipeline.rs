//! Access control and ICMP error limits at the pipeline (issue 20, items 3 and 4), without root:
//! frames built with etherparse go into `Pipeline::process` with a service per setting (deny
//! and allow lists, `conn_limit`, `conn_rate` per client prefix) and `[defence]` limits; each
//! refusal must be counted by its reason and answered (RST for TCP, ICMP port unreachable for
//! UDP), established connections must not be touched, and ICMP errors (port unreachable,
//! time exceeded) must follow the per-host and global buckets while echo replies do not.

use std::net::Ipv4Addr;

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use rig::{Rig, EXT, EXT_MAC, INT};
use tapvs::control::table::Table;
use tapvs::datapath::pipeline::Verdict;
use tapvs::datapath::service::Snapshot;
use tapvs::datapath::stats::Drop;

#[path = "common/rig.rs"]
mod rig;

const CLIENT_MAC: [u8; 6] = [2, 0x5e, 10, 0, 0, 2];
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const RS: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 2);

fn client(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

/// The world's config: two ports, then `services` and `defence` as given.
fn config(services: &str, defence: &str) -> String {
    rig::config(&format!("\n[defence]\n{defence}\n{services}"))
}

/// A TCP service on VIP:`vport` (NAT to RS:8080) with `settings`.
fn service(proto: &str, vport: u16, settings: &str) -> String {
    format!(
        "\n[[service]]\nprotocol = \"{proto}\"\naddress = \"{VIP}:{vport}\"\n{settings}\n\
         [[service.real]]\naddress = \"{RS}:8080\"\n"
    )
}

/// The rig with `services` and `defence`, knowing the real server and clients .2 to .40.
fn acl_rig(services: &str, defence: &str) -> Rig {
    let mut neighbours = vec![(RS, [2, 0x5e, 172, 16, 0, 2], INT)];
    neighbours.extend((2..=40).map(|i| (client(i), CLIENT_MAC, EXT)));
    Rig::new(&config(services, defence), 4096, &neighbours)
}

/// A client's TCP segment to VIP:`vport`: `flags` "S" (SYN), "A" (ACK), "R" (RST + ACK).
fn tcp(src: Ipv4Addr, sport: u16, vport: u16, flags: &str, ttl: u8) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, EXT_MAC)
        .ipv4(src.octets(), VIP.octets(), ttl)
        .tcp(sport, vport, 1000, 64240);
    let b = match flags {
        "S" => b.syn(),
        "A" => b.ack(1),
        "R" => b.rst().ack(1),
        _ => unreachable!(),
    };
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

fn udp(src: Ipv4Addr, sport: u16, vport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, EXT_MAC)
        .ipv4(src.octets(), VIP.octets(), 64)
        .udp(sport, vport);
    let mut out = Vec::new();
    b.write(&mut out, b"query").unwrap();
    out
}

fn echo(src: Ipv4Addr, seq: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, EXT_MAC)
        .ipv4(src.octets(), VIP.octets(), 64)
        .icmpv4_echo_request(7, seq);
    let mut out = Vec::new();
    b.write(&mut out, b"ping").unwrap();
    out
}

/// What an emitted frame is: (destination, "RST" / "ICMP t/c" / "ECHO" / "FWD").
fn kind(frame: &[u8]) -> (Ipv4Addr, String) {
    let p = SlicedPacket::from_ethernet(frame).expect("parse");
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    let dst = ip.header().destination_addr();
    let what = match &p.transport {
        Some(TransportSlice::Tcp(t)) if t.rst() => "RST".to_string(),
        Some(TransportSlice::Icmpv4(i)) => match i.icmp_type() {
            etherparse::Icmpv4Type::EchoReply(_) => "ECHO".to_string(),
            _ => format!("ICMP {}/{}", i.type_u8(), i.code_u8()),
        },
        _ => "FWD".to_string(),
    };
    (dst, what)
}

/// Asserts that exactly one frame went back to `to` on the client port, of kind `what`.
#[track_caller]
fn answered(rig: &mut Rig, to: Ipv4Addr, what: &str) {
    let sent = rig.sent();
    assert_eq!(sent.len(), 1, "one answer");
    assert_eq!(sent[0].0, EXT);
    assert_eq!(kind(&sent[0].1), (to, what.to_string()));
}

#[test]
fn deny_is_checked_first_and_refused_with_rst() {
    let svc = service(
        "tcp",
        80,
        "allow = [\"10.0.0.0/24\"]\ndeny = [\"10.0.0.0/29\", \"198.51.100.0/24\"]",
    );
    let mut rig = acl_rig(&svc, "");
    // In both lists: deny wins.
    let v = rig.feed(EXT, &tcp(client(2), 40000, 80, "S", 64));
    assert_eq!(v, Verdict::Drop(Drop::AclDenied));
    answered(&mut rig, client(2), "RST");
    assert!(rig.pipe.table().is_empty(), "no connection made");
    // Allowed and not denied: forwarded.
    let v = rig.feed(EXT, &tcp(client(20), 40000, 80, "S", 64));
    assert!(matches!(v, Verdict::Transmit { port: INT, .. }), "{v:?}");
    assert_eq!(kind(&rig.sent()[0].1), (RS, "FWD".to_string()));
    assert_eq!(rig.drops(Drop::AclDenied), 1);
    assert_eq!(rig.pipe.counters().rst_sent, 1);
}

/// With SYNPROXY the lists refuse the SYN itself: a denied client gets a RST, not a cookie,
/// and an allowed one its SYN/ACK from the director (nothing to the real server yet).
#[test]
fn synproxy_service_refuses_a_denied_syn_before_any_cookie() {
    let svc = service("tcp", 80, "synproxy = true\ndeny = [\"10.0.0.0/29\"]");
    let mut rig = acl_rig(&svc, "");
    let v = rig.feed(EXT, &tcp(client(2), 40000, 80, "S", 64));
    assert_eq!(v, Verdict::Drop(Drop::AclDenied));
    answered(&mut rig, client(2), "RST");
    assert_eq!(rig.pipe.counters().synproxy_syn_cookies_sent, 0);
    let v = rig.feed(EXT, &tcp(client(20), 40000, 80, "S", 64));
    assert_eq!(v, Verdict::Answer);
    answered(&mut rig, client(20), "FWD");
    assert_eq!(rig.pipe.counters().synproxy_syn_cookies_sent, 1);
    assert!(rig.pipe.table().is_empty(), "a SYN makes no connection");
}

#[test]
fn allow_list_refuses_everyone_else() {
    let svc = service("tcp", 81, "allow = [\"10.0.0.16/28\"]")
        + &service("udp", 53, "allow = [\"10.0.0.16/28\"]");
    let mut rig = acl_rig(&svc, "");
    let v = rig.feed(EXT, &tcp(client(2), 40000, 81, "S", 64));
    assert_eq!(v, Verdict::Drop(Drop::AclNotAllowed));
    answered(&mut rig, client(2), "RST");
    // UDP: ICMP port unreachable.
    let v = rig.feed(EXT, &udp(client(2), 40000, 53));
    assert_eq!(v, Verdict::Drop(Drop::AclNotAllowed));
    answered(&mut rig, client(2), "ICMP 3/3");
    for (last, proto) in [(17, "tcp"), (31, "udp")] {
        let v = if proto == "tcp" {
            rig.feed(EXT, &tcp(client(last), 40000, 81, "S", 64))
        } else {
            rig.feed(EXT, &udp(client(last), 40000, 53))
        };
        assert!(matches!(v, Verdict::Transmit { port: INT, .. }), "{v:?}");
        rig.sent();
    }
    assert_eq!(rig.drops(Drop::AclNotAllowed), 2);
}

#[test]
fn conn_limit_counts_open_connections_only() {
    let mut rig = acl_rig(&service("tcp", 82, "conn_limit = 2"), "");
    for port in [40000, 40001] {
        let v = rig.feed(EXT, &tcp(client(2), port, 82, "S", 64));
        assert!(matches!(v, Verdict::Transmit { .. }), "{v:?}");
    }
    rig.sent();
    let v = rig.feed(EXT, &tcp(client(3), 40002, 82, "S", 64));
    assert_eq!(v, Verdict::Drop(Drop::ConnLimit));
    answered(&mut rig, client(3), "RST");
    // Packets of the connections that exist are not new connections: forwarded.
    for port in [40000, 40001] {
        let v = rig.feed(EXT, &tcp(client(2), port, 82, "A", 64));
        assert!(matches!(v, Verdict::Transmit { .. }), "{v:?}");
    }
    rig.sent();
    // One closes (ESTABLISHED + RST: CLOSE, in the table for its timeout): its place is free.
    let v = rig.feed(EXT, &tcp(client(2), 40001, 82, "R", 64));
    assert!(matches!(v, Verdict::Transmit { .. }), "{v:?}");
    assert_eq!(rig.pipe.table().len(), 2, "the closed entry lingers");
    let v = rig.feed(EXT, &tcp(client(3), 40003, 82, "S", 64));
    assert!(matches!(v, Verdict::Transmit { .. }), "{v:?}");
    let v = rig.feed(EXT, &tcp(client(3), 40004, 82, "S", 64));
    assert_eq!(v, Verdict::Drop(Drop::ConnLimit));
    assert_eq!(rig.drops(Drop::ConnLimit), 2);
    let open: u32 = rig
        .snap
        .service(6, VIP, 82)
        .unwrap()
        .dests
        .iter()
        .map(|d| d.open_conns())
        .sum();
    assert_eq!(open, 2);
    // Expiry frees the rest; the counters go back to zero.
    rig.pipe.table_mut().clear();
    let d = &rig.snap.service(6, VIP, 82).unwrap().dests[0];
    assert_eq!(
        (d.open_conns(), d.active_conns(), d.inactive_conns()),
        (0, 0, 0)
    );
}

#[test]
fn conn_rate_is_per_client_prefix_and_refills() {
    let svc = service("tcp", 83, "conn_rate = 2\nconn_rate_prefix = 28")
        + &service("udp", 54, "conn_rate = 1");
    let mut rig = acl_rig(&svc, "");
    // 10.0.0.2 and 10.0.0.3 share 10.0.0.0/28: two per second between them.
    for (last, port) in [(2, 40000), (3, 40000)] {
        let v = rig.feed(EXT, &tcp(client(last), port, 83, "S", 64));
        assert!(matches!(v, Verdict::Transmit { .. }), "{v:?}");
    }
    rig.sent();
    let v = rig.feed(EXT, &tcp(client(4), 40000, 83, "S", 64));
    assert_eq!(v, Verdict::Drop(Drop::RateLimited));
    answered(&mut rig, client(4), "RST");
    // Another /28 has its own bucket.
    let v = rig.feed(EXT, &tcp(client(20), 40000, 83, "S", 64));
    assert!(matches!(v, Verdict::Transmit { .. }), "{v:?}");
    rig.sent();
    // Half a second later: one more (2 per second).
    rig.now_ms += 499;
    let v = rig.feed(EXT, &tcp(client(5), 40000, 83, "S", 64));
    assert_eq!(v, Verdict::Drop(Drop::RateLimited));
    rig.now_ms += 1;
    let v = rig.feed(EXT, &tcp(client(5), 40001, 83, "S", 64));
    assert!(matches!(v, Verdict::Transmit { .. }), "{v:?}");
    // UDP: the second new flow within the second gets port unreachable; the first flow's
    // datagrams go on.
    rig.sent();
    assert!(matches!(
        rig.feed(EXT, &udp(client(2), 5000, 54)),
        Verdict::Transmit { .. }
    ));
    assert_eq!(
        rig.feed(EXT, &udp(client(2), 5001, 54)),
        Verdict::Drop(Drop::RateLimited)
    );
    assert!(matches!(
        rig.feed(EXT, &udp(client(2), 5000, 54)),
        Verdict::Transmit { .. }
    ));
    assert_eq!(rig.drops(Drop::RateLimited), 3);
}

#[test]
fn icmp_errors_per_host_burst_then_one_per_interval() {
    // No global limit here: only the per-host bucket (1000 ms, burst 6).
    let mut rig = acl_rig(&service("tcp", 80, ""), "icmp_msgs_per_sec = 0");
    for i in 0..100 {
        assert_eq!(
            rig.feed(EXT, &udp(client(2), 1000 + i, 9999)),
            Verdict::Drop(Drop::NoService)
        );
    }
    let sent = rig.sent();
    assert_eq!(sent.len(), 6, "the burst");
    assert!(sent
        .iter()
        .all(|(p, f)| *p == EXT && kind(f) == (client(2), "ICMP 3/3".to_string())));
    // Time exceeded counts against the same host's bucket.
    assert_eq!(
        rig.feed(EXT, &tcp(client(2), 2000, 80, "S", 1)),
        Verdict::Drop(Drop::TtlExceeded)
    );
    assert!(rig.sent().is_empty());
    // Another host is not held back.
    rig.feed(EXT, &tcp(client(3), 2000, 80, "S", 1));
    answered(&mut rig, client(3), "ICMP 11/0");
    // One interval later: one more.
    rig.now_ms += 1000;
    rig.feed(EXT, &udp(client(2), 999, 9999));
    rig.feed(EXT, &udp(client(2), 998, 9999));
    answered(&mut rig, client(2), "ICMP 3/3");
    let k = *rig.pipe.counters();
    assert_eq!(k.icmp_errors_sent, 8);
    assert_eq!(k.icmp_ratelimited, 94 + 1 + 1);
    assert_eq!(
        rig.drops(Drop::NoService),
        102,
        "every datagram still counted"
    );
    // Echo replies are not limited.
    for seq in 0..50 {
        assert_eq!(rig.feed(EXT, &echo(client(2), seq)), Verdict::Answer);
    }
    assert_eq!(rig.sent().len(), 50);
}

#[test]
fn icmp_errors_global_burst_then_rate() {
    let mut rig = acl_rig(
        &service("tcp", 80, ""),
        "icmp_ratelimit_ms = 0\nicmp_msgs_per_sec = 10\nicmp_msgs_burst = 4",
    );
    // 30 hosts, one datagram each: the global burst only.
    for last in 2..32 {
        rig.feed(EXT, &udp(client(last), 1000, 9999));
    }
    assert_eq!(rig.sent().len(), 4);
    // 10 per second: one per 100 ms.
    let mut sent = 0;
    for _ in 0..10 {
        rig.now_ms += 50;
        for last in 2..6 {
            rig.feed(EXT, &udp(client(last), 1001, 9999));
        }
        sent += rig.sent().len();
    }
    assert_eq!(sent, 5, "500 ms at 10 per second");
    let k = *rig.pipe.counters();
    assert_eq!((k.icmp_errors_sent, k.icmp_ratelimited), (9, 26 + 35));
}

#[test]
fn limits_off_send_every_error() {
    let mut rig = acl_rig(
        &service("tcp", 80, ""),
        "icmp_ratelimit_ms = 0\nicmp_msgs_per_sec = 0",
    );
    for i in 0..200 {
        rig.feed(EXT, &udp(client(2), 1000 + i, 9999));
    }
    assert_eq!(rig.sent().len(), 200);
    assert_eq!(rig.pipe.counters().icmp_ratelimited, 0);
}

#[test]
fn bad_settings_name_file_field_and_problem() {
    let cases = [
        (
            service("tcp", 80, "deny = [\"10.0.0.1/24\"]"),
            "service[0].deny[0]",
            "host bits set",
        ),
        (
            service("tcp", 80, "allow = [\"10.0.0.0/33\"]"),
            "service[0].allow[0]",
            "0..=32",
        ),
        (
            service("tcp", 80, "allow = [\"10.0.0.0/8\", \"nonsense\"]"),
            "service[0].allow[1]",
            "not an IPv4",
        ),
        (
            service("tcp", 80, "conn_rate = 5\nconn_rate_prefix = 40"),
            "service[0].conn_rate_prefix",
            "0..=32",
        ),
        (
            service("tcp", 80, "conn_rate_prefix = 24"),
            "service[0].conn_rate_prefix",
            "only applies with a conn_rate",
        ),
        (
            service("tcp", 80, "conn_limit = -1"),
            "service[0].conn_limit",
            "",
        ),
    ];
    for (svc, field, problem) in cases {
        let e = tapvs::config::parse(&config(&svc, ""), std::path::Path::new("acl.toml"))
            .expect_err(&svc);
        let text = e.to_string();
        assert!(text.contains("acl.toml"), "{text}");
        assert!(text.contains(field), "{text}");
        assert!(text.contains(problem), "{text}");
    }
    let bad_defence = [
        ("icmp_msgs_burst = 0", "defence.icmp_msgs_burst"),
        ("icmp_ratelimit_ms = 4000000", "defence.icmp_ratelimit_ms"),
        ("icmp_nonsense = 1", "defence"),
    ];
    for (d, field) in bad_defence {
        let e = tapvs::config::parse(&config("", d), std::path::Path::new("acl.toml"))
            .expect_err(d)
            .to_string();
        assert!(e.contains(field) && e.contains("acl.toml"), "{e}");
    }
}

#[test]
fn access_settings_survive_tapvsadm_edits_and_follow_the_config() {
    let text = config(&service("tcp", 80, "deny = [\"10.0.0.0/24\"]"), "");
    let cfg = tapvs::config::parse(&text, std::path::Path::new("t.toml")).unwrap();
    let (mut table, snap) = Table::from_config(&cfg).unwrap();
    let denied = |s: &Snapshot| {
        s.service(6, VIP, 80)
            .unwrap()
            .access
            .check_lists(client(2))
            .is_err()
    };
    assert!(denied(&snap));
    let args: Vec<String> = "-E -t 192.0.2.1:80 -s wrr"
        .split_whitespace()
        .map(String::from)
        .collect();
    let snap = table
        .apply(&tapvs_adm::parse(&args).unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(snap.service(6, VIP, 80).unwrap().sched.name(), "wrr");
    assert!(denied(&snap), "kept across an ipvsadm edit");
    // A reload's new settings: set, then the service rebuilt.
    let text = config(&service("tcp", 80, "conn_limit = 7"), "icmp_msgs_burst = 9");
    let cfg = tapvs::config::parse(&text, std::path::Path::new("t.toml")).unwrap();
    let key = (cfg.services[0].proto, cfg.services[0].vip);
    assert!(table.set_extras(key, &cfg.services[0]));
    table.refresh(key).unwrap();
    assert!(table.set_defence(&cfg.defence));
    let snap = table.snapshot();
    let svc = snap.service(6, VIP, 80).unwrap();
    assert!(!denied(&snap));
    assert_eq!(svc.access.conn_limit, 7);
    assert_eq!(snap.icmp_limits.msgs_burst, 9);
}
