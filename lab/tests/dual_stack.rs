//! The dual-stack lab topology (`Topology::build_dual`) on its own, without an appliance: the
//! client and real servers stay silent after set-up (no router solicitation, DAD or MLD frame
//! reaches the director's bridges), the IPv6 plan's addresses and routes are in place, and IPv6
//! traffic (UDP, HTTP, a SHA-256-checked bulk transfer) flows between the hosts over both
//! bridges, with servers bound to `[::]` answering IPv4 too. Needs root; see `precheck`.

use std::net::SocketAddr;
use std::time::Duration;

use tapvs_lab::netns::{precheck, Netns};
use tapvs_lab::topology::{
    self, extra_client_addr6, real_addr, real_addr6, real_client_leg6, Topology, CLIENT6, EXT6,
    INT6, VIP6,
};
use tapvs_lab::traffic::{bulk_send, http_get, udp_request, BulkSink, HttpServer, UdpEcho};

/// Bound of every network operation here.
const T: Duration = Duration::from_secs(10);

/// Frames the director's end of `link` has received since it was created.
fn rx_packets(director: &Netns, link: &str) -> u64 {
    let out = director
        .exec(&[
            "cat",
            &format!("/sys/class/net/{link}/statistics/rx_packets"),
        ])
        .unwrap_or_else(|e| panic!("rx_packets of {link}: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("rx_packets of {link}: {e}"))
}

#[test]
fn dual_topology_is_silent_and_carries_ipv6_between_hosts() {
    if !precheck() {
        return;
    }
    let mut t = Topology::build_dual(2).expect("build_dual");
    assert!(t.is_dual());
    t.reals_on_client_segment().expect("client-segment legs");
    t.add_clients(1).expect("extra client");

    // Nothing was sent yet, so every director-side port has received nothing. Router
    // solicitations (1 s delay) and MLDv2 unsolicited reports (within 1 s) would have arrived
    // in this window: it is an observation period, not a wait for readiness.
    std::thread::sleep(Duration::from_millis(1500));
    for link in ["cx", "r0", "r1", "s0", "s1", "c0"] {
        assert_eq!(
            rx_packets(&t.director, link),
            0,
            "frames from {link}'s host"
        );
    }

    // The plan's addresses and routes.
    let route = t
        .client
        .ip(&["-6", "route", "get", &VIP6.to_string()])
        .expect("route get VIP6");
    assert!(route.contains(&format!("via {EXT6}")), "{route}");
    let addrs = t.client.ip(&["-6", "addr", "show", "dev", "eth0"]).unwrap();
    assert!(addrs.contains(&format!("{CLIENT6}/64")), "{addrs}");
    let route = t.reals[1]
        .ip(&["-6", "route", "show", "default"])
        .expect("rs1 default route");
    assert!(route.contains(&format!("via {INT6}")), "{route}");
    let addrs = t.clients[0].ip(&["-6", "addr", "show"]).unwrap();
    assert!(
        addrs.contains(&format!("{}/64", extra_client_addr6(0))),
        "{addrs}"
    );
    // The director's kernel still takes no part.
    let d = t.director.ip(&["-6", "addr", "show"]).unwrap();
    assert!(d.trim().is_empty(), "director has IPv6 addresses: {d}");

    // Servers on rs1 bound to [::] (dual-stack sockets).
    let any = |port| SocketAddr::from(([0u16; 8], port));
    let (echo, http) = t.reals[1].run(|| {
        (
            UdpEcho::start(any(7000), "rs1").expect("udp echo"),
            HttpServer::start(any(8080), "rs1").expect("http"),
        )
    });
    let sink = t.reals[0].run(|| BulkSink::start(any(9000)).expect("bulk sink"));

    // Server segment, rs0 -> rs1: IPv6 UDP and HTTP, and IPv4 to the same sockets.
    let rs1 = SocketAddr::from((real_addr6(1), 7000));
    let (udp6, http6, udp4) = t.reals[0].run(|| {
        (
            udp_request(rs1, "over v6", T).expect("udp v6"),
            http_get(SocketAddr::from((real_addr6(1), 8080)), "/", T).expect("http v6"),
            udp_request(SocketAddr::from((real_addr(1), 7000)), "over v4", T).expect("udp v4"),
        )
    });
    assert_eq!(udp6, "rs1:over v6");
    assert_eq!(http6, (200, "rs1".to_string()));
    assert_eq!(udp4, "rs1:over v4");

    // Client segment: the client and the extra client reach rs1's leg there.
    let leg = SocketAddr::from((real_client_leg6(1), 7000));
    let a = t
        .client
        .run(|| udp_request(leg, "client", T).expect("client udp"));
    let b = t.clients[0].run(|| udp_request(leg, "client1", T).expect("client1 udp"));
    assert_eq!((a.as_str(), b.as_str()), ("rs1:client", "rs1:client1"));
    assert_eq!(echo.served(), 4);
    assert_eq!(http.served(), 1);

    // A bulk transfer client -> rs0's leg, checked end to end.
    let bytes = 4 << 20;
    let sent = t.client.run(|| {
        bulk_send(SocketAddr::from((real_client_leg6(0), 9000)), bytes, 6, T)
            .expect("bulk send over v6")
    });
    assert_eq!(sink.wait(T).expect("bulk sink result"), (bytes, sent));
    drop((echo, http, sink));

    // The constants the other tests build on.
    assert_eq!(topology::vip6(80).to_string(), "[2001:db8:f::80]:80");
    assert_eq!(real_addr6(0).to_string(), "2001:db8:5::2");
    assert_eq!(topology::local_addr6(0).to_string(), "2001:db8:5::100");
}

#[test]
fn ipv4_topology_still_has_no_ipv6() {
    if !precheck() {
        return;
    }
    let t = Topology::build(1).expect("build");
    assert!(!t.is_dual());
    for ns in [&t.client, &t.reals[0]] {
        let a = ns.ip(&["-6", "addr", "show"]).unwrap();
        assert!(a.trim().is_empty(), "IPv6 in the IPv4 lab: {a}");
    }
}
