//! Scheduling end to end in network namespaces: persistence keeps a client on one real server
//! while other clients spread, lc follows active connections, a service with no usable real
//! server refuses like a host, and one-packet scheduling balances every UDP datagram.

mod common;

use std::collections::BTreeSet;
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use common::lab::{self, Lab};
use common::{any, http_servers, wait_stats};
use tapvs_lab::netns::{precheck, wait_until};
use tapvs_lab::traffic::{self, UdpEcho};

fn service(extra: &str, body: &str) -> String {
    // Inserts `extra` lines right after the service's scheduler line.
    body.replacen(
        "\"\n\n[[service.real]]",
        &format!("\"\n{extra}\n\n[[service.real]]"),
        1,
    )
}

fn started(lab: &mut Lab, services: &str) {
    lab.start(&format!("{}{}", lab::base_config(2), services))
        .expect("start tapvs");
}

#[test]
fn persistence_keeps_a_client_on_one_server_while_others_spread() {
    if !precheck() {
        return;
    }
    let mut lab = Lab::build(2).unwrap();
    lab.add_clients(4).unwrap();
    let svc = service(
        "persistent = 300",
        &lab::nat_service("tcp", 80, "rr", &[(0, 80, 1), (1, 80, 1)]),
    );
    started(&mut lab, &svc);
    let _servers = http_servers(&lab, 80);
    let t = Duration::from_secs(5);
    let main = lab
        .client
        .run(|| traffic::http_split(lab::vip(80), 20, t))
        .unwrap();
    assert_eq!(
        main.len(),
        1,
        "one client's 20 connections on one server: {main:?}"
    );
    assert_eq!(main.values().sum::<u64>(), 20);
    let mut used = BTreeSet::new();
    for c in &lab.clients {
        let split = c.run(|| traffic::http_split(lab::vip(80), 3, t)).unwrap();
        assert_eq!(
            split.len(),
            1,
            "each client sticks to one server: {split:?}"
        );
        used.extend(split.into_keys());
    }
    used.extend(main.into_keys());
    assert_eq!(used.len(), 2, "clients spread over both servers: {used:?}");
    let snap = lab.daemon().snapshot();
    let templates: u32 = snap
        .services()
        .next()
        .unwrap()
        .dests
        .iter()
        .map(|d| d.persist_conns())
        .sum();
    assert_eq!(templates, 5, "one template per client");
}

#[test]
fn lc_sends_new_connections_to_the_least_loaded_server() {
    if !precheck() {
        return;
    }
    let mut lab = Lab::build(2).unwrap();
    started(
        &mut lab,
        &lab::nat_service("tcp", 80, "lc", &[(0, 80, 1), (1, 80, 1)]),
    );
    let _servers = http_servers(&lab, 80);
    let snap = lab.daemon().snapshot();
    let dests = &snap.services().next().unwrap().dests;
    let counts = || {
        dests
            .iter()
            .map(|d| (d.active_conns(), d.inactive_conns()))
            .collect::<Vec<_>>()
    };
    let t = Duration::from_secs(5);
    let hold = || TcpStream::connect_timeout(&lab::vip(80), t).expect("connect");
    let get = || traffic::http_get(lab::vip(80), "/", t).expect("request").1;
    // Both idle: the tie goes to the first server.
    let _a = lab.client.run(hold);
    assert!(
        wait_until(t, Duration::from_millis(10), || counts()[0] == (1, 0)),
        "{:?}",
        counts()
    );
    // rs1 has an active connection: the next one goes to rs2.
    assert_eq!(lab.client.run(get), "rs2");
    // rs2 now has one inactive (closed) connection, overhead 1 against rs1's 256.
    let _b = lab.client.run(hold);
    assert!(
        wait_until(t, Duration::from_millis(10), || counts()[1].0 == 1),
        "{:?}",
        counts()
    );
    // Overheads: rs1 256, rs2 256 + 1: rs1 is the least loaded.
    assert_eq!(lab.client.run(get), "rs1");
}

#[test]
fn no_usable_real_server_refuses_and_counts() {
    if !precheck() {
        return;
    }
    let mut lab = Lab::build(1).unwrap();
    let svcs = format!(
        "{}{}",
        lab::nat_service("tcp", 80, "wlc", &[(0, 80, 0)]),
        lab::nat_service("udp", 53, "wlc", &[(0, 53, 0)])
    );
    started(&mut lab, &svcs);
    lab.client.run(|| {
        let e = TcpStream::connect_timeout(&lab::vip(80), Duration::from_secs(3)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
        let s = UdpSocket::bind(any(0)).unwrap();
        s.connect(lab::vip(53)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send(b"q").unwrap();
        let e = s.recv(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    });
    let stats = wait_stats(&lab, |s| s.dropped("no_real_server") >= 2);
    assert_eq!(stats.dropped("no_real_server"), 2, "{stats:?}");
    assert_eq!(stats.conns_created, 0);
}

#[test]
fn one_packet_scheduling_balances_every_datagram() {
    if !precheck() {
        return;
    }
    let mut lab = Lab::build(2).unwrap();
    let svc = service(
        "ops = true",
        &lab::nat_service("udp", 53, "rr", &[(0, 5353, 1), (1, 5353, 1)]),
    );
    started(&mut lab, &svc);
    let _echo: Vec<UdpEcho> = lab
        .reals
        .iter()
        .enumerate()
        .map(|(i, rs)| {
            let name = format!("rs{}", i + 1);
            rs.run(move || UdpEcho::start(any(5353), &name)).unwrap()
        })
        .collect();
    // One socket, one source port: without -o every datagram would follow one connection.
    let replies: Vec<String> = lab.client.run(|| {
        let s = UdpSocket::bind(any(0)).unwrap();
        s.connect(lab::vip(53)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        (0..10)
            .map(|i| {
                s.send(format!("q{i}").as_bytes()).unwrap();
                let mut buf = [0u8; 64];
                let n = s.recv(&mut buf).expect("reply");
                String::from_utf8_lossy(&buf[..n]).into_owned()
            })
            .collect()
    });
    let rs1 = replies.iter().filter(|r| r.starts_with("rs1:")).count();
    assert_eq!((rs1, replies.len() - rs1), (5, 5), "{replies:?}");
}
