//! Real-server helpers (`tapvs::rs`) in network namespaces: `setup` for DR (VIP on `lo`, ARP
//! and rp_filter sysctls, idempotence, undo), and the user-space IPIP decapsulator end to end: a
//! "director" namespace sends hand-built IPIP packets to a "real server" namespace, whose
//! `decap` feeds the inner UDP datagram to an echo server bound to the VIP, and the reply comes
//! straight back from the VIP. Malformed tunnelled packets are counted and do not stop the loop.
//!
//! IPv6 (the addresses of the lab's IPv6 plan): `setup` puts an IPv6 VIP on `lo` as a /128
//! beside an IPv4 one, and a Neighbour Solicitation for it from the segment reaches the real
//! server and gets no Neighbour Advertisement (while one for the server's own address does);
//! the `tapvs rs-setup` command takes several VIPs and refuses bad ones without changing
//! anything; and one `decap` delivers hand-built IPv6-in-IPv6 and IPIP packets to echo servers
//! on both VIPs, counting malformed inner IPv6 headers by reason.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use etherparse::{IpNumber, Ipv4Header, Ipv6Header, PacketBuilder};
use tapvs::rs::{self, DecapCounters, Malformed6, RsError, RsMode};
use tapvs::sys::PacketSocket;
use tapvs_lab::netns::{precheck, veth, wait_until, Netns};
use tapvs_lab::topology::{real_addr6, INT6, VIP6};
use tapvs_lab::traffic::UdpEcho;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const DIRECTOR: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const REAL: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);
const ECHO_PORT: u16 = 7000;
const WAIT: Duration = Duration::from_secs(5);
const TICK: Duration = Duration::from_millis(10);

/// `sysctl -n key` run inside `ns` (a process, so it sees the namespace's own values).
fn sysctl(ns: &Netns, key: &str) -> String {
    let out = ns.exec(&["sysctl", "-n", key]).expect("sysctl -n");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn lo_addrs(ns: &Netns) -> String {
    ns.ip(&["-4", "addr", "show", "dev", "lo"])
        .expect("ip addr show dev lo")
}

#[test]
fn dr_setup_configures_vip_and_sysctls_and_undo_restores() {
    if !precheck() {
        return;
    }
    let ns = Netns::new("rs-dr").expect("netns");
    // An interface that exists before setup, with rp_filter on everywhere, so setup has to
    // change every level.
    ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        .expect("veth pair");
    for iface in ["all", "default", "lo", "v0"] {
        ns.sysctl(&format!("net.ipv4.conf.{iface}.rp_filter"), "1")
            .expect("rp_filter 1");
    }

    let actions = ns
        .run(|| rs::setup(RsMode::Dr, VIP, false))
        .expect("setup dr");
    assert!(
        actions
            .iter()
            .any(|a| a.contains("added 10.99.0.1/32 to lo")),
        "{actions:?}"
    );
    let lo = lo_addrs(&ns);
    assert!(lo.contains("inet 10.99.0.1/32"), "{lo}");
    assert_eq!(sysctl(&ns, "net.ipv4.conf.all.arp_ignore"), "1");
    assert_eq!(sysctl(&ns, "net.ipv4.conf.all.arp_announce"), "2");
    for iface in ["all", "default", "lo", "v0", "v1"] {
        assert_eq!(
            sysctl(&ns, &format!("net.ipv4.conf.{iface}.rp_filter")),
            "0",
            "rp_filter on {iface}"
        );
    }

    // Idempotent: a second run succeeds and adds nothing.
    let again = ns
        .run(|| rs::setup(RsMode::Dr, VIP, false))
        .expect("setup dr again");
    assert!(
        again.iter().any(|a| a.contains("already on lo")),
        "{again:?}"
    );
    assert_eq!(lo_addrs(&ns).matches("10.99.0.1/").count(), 1);

    let undone = ns.run(|| rs::setup(RsMode::Dr, VIP, true)).expect("undo");
    assert!(
        undone.iter().any(|a| a.contains("removed 10.99.0.1/32")),
        "{undone:?}"
    );
    assert!(!lo_addrs(&ns).contains("10.99.0.1"), "{}", lo_addrs(&ns));
    assert_eq!(sysctl(&ns, "net.ipv4.conf.all.arp_ignore"), "0");
    assert_eq!(sysctl(&ns, "net.ipv4.conf.all.arp_announce"), "0");
    // Undo of an undone host is fine too.
    ns.run(|| rs::setup(RsMode::Dr, VIP, true))
        .expect("undo again");
}

/// `decap` running on a thread of the real server's namespace; stopped and joined on drop.
struct Decapper {
    stop: Arc<AtomicBool>,
    counters: Arc<DecapCounters>,
    thread: Option<JoinHandle<Result<(), RsError>>>,
}

impl Decapper {
    /// Starts `decap` into TUN `tun` in `ns` and waits until the device is up.
    fn start(ns: &Netns, tun: &'static str) -> Decapper {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(DecapCounters::new());
        let thread = {
            let (stop, counters) = (Arc::clone(&stop), Arc::clone(&counters));
            ns.spawn_thread(move || rs::decap(tun, &stop, &counters))
        };
        let mut d = Decapper {
            stop,
            counters,
            thread: Some(thread),
        };
        let up = wait_until(WAIT, TICK, || {
            d.thread.as_ref().is_some_and(JoinHandle::is_finished)
                || ns
                    .ip(&["link", "show", "dev", tun])
                    .is_ok_and(|s| s.contains(",UP") || s.contains("<UP"))
        });
        if d.thread.as_ref().is_some_and(JoinHandle::is_finished) {
            let r = d.thread.take().expect("thread").join();
            panic!("decap ended early: {r:?}");
        }
        assert!(up, "TUN {tun} not up in {}", ns.name());
        d
    }

    fn get(&self, c: &std::sync::atomic::AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the loop and returns its result.
    fn finish(mut self) -> Result<(), RsError> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("thread")
            .join()
            .expect("decap thread panicked")
    }
}

impl Drop for Decapper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Director and real server joined by a veth; the real server set up for TUN mode with the
/// decapsulator and a UDP echo server on VIP:7000. Fields drop in order: threads first, then
/// the namespaces.
struct Topology {
    echo: UdpEcho,
    decap: Decapper,
    director: Netns,
    real: Netns,
}

fn topology() -> Topology {
    let director = Netns::new("rs-director").expect("netns director");
    let real = Netns::new("rs-real").expect("netns real");
    veth((&director, "eth0"), (&real, "eth0")).expect("veth");
    director
        .add_addr("eth0", &format!("{DIRECTOR}/24"))
        .expect("director addr");
    real.add_addr("eth0", &format!("{REAL}/24"))
        .expect("real addr");
    // Replies come from the VIP, which the director has no route to; a new namespace may have
    // inherited the host's rp_filter, which would drop them.
    for iface in ["all", "default", "eth0"] {
        director
            .sysctl(&format!("net.ipv4.conf.{iface}.rp_filter"), "0")
            .expect("director rp_filter");
    }
    let actions = real
        .run(|| rs::setup(RsMode::Tun, VIP, false))
        .expect("setup tun");
    assert!(lo_addrs(&real).contains("inet 10.99.0.1/32"));
    let kernel_tunnel = real.ip(&["link", "show", "dev", "tunl0"]).is_ok();
    if kernel_tunnel {
        eprintln!("note: this kernel has ipip; both it and rs::decap deliver the packets");
    } else {
        assert!(
            actions.iter().any(|a| a.contains("tapvs rs-decap")),
            "{actions:?}"
        );
    }
    let decap = Decapper::start(&real, rs::DEFAULT_DECAP_TUN);
    assert_eq!(
        sysctl(
            &real,
            &format!("net.ipv4.conf.{}.rp_filter", rs::DEFAULT_DECAP_TUN)
        ),
        "0"
    );
    let echo = real
        .run(|| UdpEcho::start(SocketAddr::from((VIP, ECHO_PORT)), "rs"))
        .expect("udp echo on the VIP");
    Topology {
        echo,
        decap,
        director,
        real,
    }
}

/// An IPIP packet director → real server around `inner`.
fn ipip(inner: &[u8]) -> Vec<u8> {
    let len = u16::try_from(inner.len()).expect("inner fits");
    let mut outer = Ipv4Header::new(len, 64, IpNumber::IPV4, DIRECTOR.octets(), REAL.octets())
        .expect("outer header");
    outer.header_checksum = outer.calc_header_checksum();
    let mut pkt = Vec::with_capacity(20 + inner.len());
    outer.write(&mut pkt).expect("write outer header");
    pkt.extend_from_slice(inner);
    pkt
}

/// An inner UDP datagram DIRECTOR:`sport` → VIP:7000 with correct checksums.
fn inner_udp(sport: u16, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ipv4(DIRECTOR.octets(), VIP.octets(), 64).udp(sport, ECHO_PORT);
    let mut pkt = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut pkt, payload).expect("build inner");
    pkt
}

/// Recomputes the header checksum of the option-less IPv4 header at the start of `pkt`.
fn fix_header_checksum(pkt: &mut [u8]) {
    pkt[10..12].fill(0);
    let mut sum: u32 = pkt[..20]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    pkt[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// From the director: sends `payload` tunnelled to the real server (up to 10 attempts) and
/// returns the first reply from VIP:7000 on an unconnected socket bound to DIRECTOR.
fn tunnelled_request(t: &Topology, payload: &[u8]) -> String {
    t.director.run(|| {
        let sock = UdpSocket::bind((DIRECTOR, 0)).expect("bind director socket");
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let sport = sock.local_addr().expect("local addr").port();
        let pkt = ipip(&inner_udp(sport, payload));
        let mut buf = vec![0u8; 65536];
        for _ in 0..10 {
            rs::send_raw_ip(&pkt).expect("send IPIP");
            // Drain replies until the read times out, then send again.
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                if from == SocketAddr::from((VIP, ECHO_PORT)) {
                    return String::from_utf8_lossy(&buf[..n]).into_owned();
                }
            }
        }
        panic!("no reply from {VIP}:{ECHO_PORT}");
    })
}

#[test]
fn decap_delivers_tunnelled_udp_to_the_vip() {
    if !precheck() {
        return;
    }
    let t = topology();
    assert_eq!(tunnelled_request(&t, b"ping"), "rs:ping");
    let d = &t.decap;
    assert!(d.get(&d.counters.decapsulated) >= 1, "{}", d.counters);
    assert!(d.get(&d.counters.received) >= d.get(&d.counters.decapsulated));
    assert_eq!(d.get(&d.counters.malformed), 0, "{}", d.counters);
    assert_eq!(d.get(&d.counters.write_errors), 0, "{}", d.counters);
    assert!(t.echo.served() >= 1);
    // An inner packet larger than the TUN's MTU (1500) is taken whole. Raw sends with the
    // header included are never fragmented, so the veth carries it in one jumbo frame.
    for ns in [&t.director, &t.real] {
        ns.set_mtu("eth0", 9000).expect("jumbo veth");
    }
    let big = "b".repeat(8000);
    assert_eq!(tunnelled_request(&t, big.as_bytes()), format!("rs:{big}"));
    let Topology {
        echo,
        decap,
        director,
        real,
    } = t;
    drop(echo);
    decap.finish().expect("decap ends cleanly");
    // The TUN device goes away with the decapsulator.
    assert!(tun_gone(&real), "the TUN device outlived the decapsulator");
    drop((director, real));
}

#[test]
fn decap_counts_malformed_packets_and_keeps_working() {
    if !precheck() {
        return;
    }
    let t = topology();
    // Garbage where the inner header should be.
    let garbage = ipip(&[0xab; 40]);
    // An inner header with a wrong checksum.
    let mut bad_sum = inner_udp(40000, b"x");
    bad_sum[10] ^= 0xff;
    let bad_sum = ipip(&bad_sum);
    // An inner header claiming more bytes than the outer packet carries.
    let mut too_long = inner_udp(40001, b"y");
    too_long[2..4].copy_from_slice(&1000u16.to_be_bytes());
    fix_header_checksum(&mut too_long);
    let too_long = ipip(&too_long);
    t.director.run(|| {
        for pkt in [&garbage, &bad_sum, &too_long] {
            rs::send_raw_ip(pkt).expect("send malformed IPIP");
        }
    });
    let d = &t.decap;
    assert!(
        wait_until(WAIT, TICK, || d.get(&d.counters.malformed) >= 3),
        "{}",
        d.counters
    );
    assert!(d.running(), "decap stopped after malformed input");
    assert_eq!(d.get(&d.counters.decapsulated), 0, "{}", d.counters);
    assert_eq!(t.echo.served(), 0);
    // The loop still works.
    assert_eq!(tunnelled_request(&t, b"ping"), "rs:ping");
    assert!(d.get(&d.counters.decapsulated) >= 1, "{}", d.counters);
    assert_eq!(d.get(&d.counters.malformed), 3, "{}", d.counters);
}

// ---------------------------------------------------------------------------------------------
// IPv6

const BIN: &str = env!("CARGO_BIN_EXE_tapvs");
/// The real server's IPv6 address (rs0 of the lab plan); the peer plays the director (INT6).
const REAL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 5, 0, 0, 0, 0, 2);

fn lo_addrs6(ns: &Netns) -> String {
    ns.ip(&["-6", "addr", "show", "dev", "lo"])
        .expect("ip -6 addr show dev lo")
}

/// A peer ("director") and a real server joined by a veth `eth0`, with INT6 and REAL6 (and
/// DIRECTOR and REAL for IPv4).
fn pair6(role: &str) -> (Netns, Netns) {
    assert_eq!(REAL6, real_addr6(0));
    let director = Netns::new(&format!("{role}-dir")).expect("netns director");
    let real = Netns::new(&format!("{role}-rs")).expect("netns real");
    veth((&director, "eth0"), (&real, "eth0")).expect("veth");
    director.add_addr("eth0", &format!("{INT6}/64")).unwrap();
    director
        .add_addr("eth0", &format!("{DIRECTOR}/24"))
        .unwrap();
    real.add_addr("eth0", &format!("{REAL6}/64")).unwrap();
    real.add_addr("eth0", &format!("{REAL}/24")).unwrap();
    (director, real)
}

/// ICMPv6 Neighbour Discovery messages in an Ethernet frame: (type, target) of an NS (135) or
/// NA (136) without extension headers.
fn nd_message(frame: &[u8]) -> Option<(u8, Ipv6Addr)> {
    if frame.len() < 14 + 40 + 24 || frame[12..14] != [0x86, 0xdd] || frame[14 + 6] != 58 {
        return None;
    }
    let icmp = &frame[54..];
    if icmp[0] != 135 && icmp[0] != 136 {
        return None;
    }
    let target: [u8; 16] = icmp[8..24].try_into().ok()?;
    Some((icmp[0], Ipv6Addr::from(target)))
}

/// The neighbour entry of `addr` on `eth0` in `ns`, as `ip -6 neigh` shows it.
fn neighbour(ns: &Netns, addr: Ipv6Addr) -> String {
    ns.ip(&["-6", "neigh", "show", &addr.to_string(), "dev", "eth0"])
        .expect("ip -6 neigh")
}

#[test]
fn dr_setup_v6_puts_vip_on_lo_and_solicitations_for_it_get_no_answer() {
    if !precheck() {
        return;
    }
    let (peer, real) = pair6("rs6-nd");
    let vips = [IpAddr::V4(VIP), IpAddr::V6(VIP6)];
    let actions = real
        .run(|| rs::setup_vips(RsMode::Dr, &vips, false))
        .expect("setup dr, both families");
    for want in ["added 10.99.0.1/32 to lo", "added 2001:db8:f::80/128 to lo"] {
        assert!(actions.iter().any(|a| a.contains(want)), "{actions:?}");
    }
    assert!(lo_addrs(&real).contains("inet 10.99.0.1/32"));
    let lo6 = lo_addrs6(&real);
    assert!(lo6.contains("inet6 2001:db8:f::80/128"), "{lo6}");
    assert!(!lo6.contains("tentative"), "{lo6}");
    assert_eq!(sysctl(&real, "net.ipv4.conf.all.arp_ignore"), "1");
    // Idempotent.
    let again = real
        .run(|| rs::setup_vips(RsMode::Dr, &vips, false))
        .unwrap();
    assert_eq!(
        again.iter().filter(|a| a.contains("already on lo")).count(),
        2,
        "{again:?}"
    );
    assert_eq!(lo_addrs6(&real).matches("2001:db8:f::80/").count(), 1);

    // Capture Neighbour Discovery on the real server's eth0, both directions.
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let capture = {
        let stop = Arc::clone(&stop);
        real.spawn_thread(move || {
            let sock = PacketSocket::open("eth0").expect("packet socket");
            tx.send(()).expect("ready");
            let mut seen = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(Some(n)) = sock.recv(&mut buf, 20) {
                    seen.extend(nd_message(&buf[..n]));
                }
            }
            seen
        })
    };
    rx.recv_timeout(WAIT).expect("capture ready");

    // The peer resolves the VIP as if it were on-link (as a DR director would), quickly.
    peer.sysctl("net.ipv6.neigh.eth0.retrans_time_ms", "100")
        .unwrap();
    peer.ip(&["-6", "route", "add", &format!("{VIP6}/128"), "dev", "eth0"])
        .unwrap();
    peer.run(|| {
        let s = UdpSocket::bind("[::]:0").expect("bind");
        s.send_to(b"own address", (REAL6, 9))
            .expect("send to REAL6");
        s.send_to(b"vip", (VIP6, 9)).expect("send to VIP6");
    });
    // The real server's own address is answered; the VIP's solicitations run out (3 of them).
    assert!(
        wait_until(WAIT, TICK, || neighbour(&peer, REAL6).contains("lladdr")),
        "{}",
        neighbour(&peer, REAL6)
    );
    assert!(
        wait_until(WAIT, TICK, || neighbour(&peer, VIP6).contains("FAILED")),
        "{}",
        neighbour(&peer, VIP6)
    );
    stop.store(true, Ordering::Relaxed);
    let seen = capture.join().expect("capture thread");
    let count = |t: u8, a: Ipv6Addr| seen.iter().filter(|&&m| m == (t, a)).count();
    assert!(
        count(135, VIP6) >= 1,
        "no NS for the VIP reached the server: {seen:?}"
    );
    assert_eq!(
        count(136, VIP6),
        0,
        "the server answered for the VIP: {seen:?}"
    );
    assert!(
        count(136, REAL6) >= 1,
        "the capture missed the server's NA: {seen:?}"
    );
    assert!(!neighbour(&peer, VIP6).contains("lladdr"));

    // Undo removes both VIPs.
    let undone = real
        .run(|| rs::setup_vips(RsMode::Dr, &vips, true))
        .unwrap();
    assert!(
        undone
            .iter()
            .any(|a| a.contains("removed 2001:db8:f::80/128")),
        "{undone:?}"
    );
    assert!(!lo_addrs6(&real).contains("2001:db8:f::80"));
    assert!(!lo_addrs(&real).contains("10.99.0.1"));
}

#[test]
fn rs_setup_command_takes_both_families_and_refuses_bad_vips() {
    if !precheck() {
        return;
    }
    let ns = Netns::new("rs6-cli").expect("netns");
    let out = ns
        .exec(&[
            BIN,
            "rs-setup",
            "--mode",
            "dr",
            "--vip",
            "10.99.0.1,2001:db8:f::80",
        ])
        .expect("rs-setup with two VIPs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rs-setup: added 2001:db8:f::80/128 to lo"),
        "{text}"
    );
    assert!(
        text.contains("rs-setup: added 10.99.0.1/32 to lo"),
        "{text}"
    );
    assert!(lo_addrs6(&ns).contains("2001:db8:f::80/128"));
    // Repeating the option works too, and a bad VIP anywhere refuses the whole call.
    let before = (lo_addrs(&ns), lo_addrs6(&ns));
    let bad = std::process::Command::new("ip")
        .args(["netns", "exec", ns.name(), BIN, "rs-setup", "--mode", "tun"])
        .args(["--vip", "10.99.0.2", "--vip", "ff02::1"])
        .output()
        .expect("run rs-setup");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("tapvs rs-setup: VIP ff02::1: a multicast address is not a VIP"),
        "{err}"
    );
    assert_eq!(
        (lo_addrs(&ns), lo_addrs6(&ns)),
        before,
        "a refused call changed lo"
    );
    assert!(
        bad.stdout.is_empty(),
        "a refused call acted: {:?}",
        bad.stdout
    );
    let undo = ns
        .exec(&[
            BIN,
            "rs-setup",
            "--mode",
            "dr",
            "--vip",
            "2001:db8:f::80",
            "--vip",
            "10.99.0.1",
            "--undo",
        ])
        .expect("undo");
    assert!(String::from_utf8_lossy(&undo.stdout).contains("removed 2001:db8:f::80/128 from lo"));
    assert!(!lo_addrs6(&ns).contains("2001:db8:f::80"));
}

/// Director and real server for the IPv6 decapsulation tests: TUN set-up for both VIPs, one
/// decapsulator, UDP echo servers on VIP:7000 and [VIP6]:7000. Drops threads first.
struct Tunnel6 {
    echo4: UdpEcho,
    echo6: UdpEcho,
    decap: Decapper,
    director: Netns,
    real: Netns,
}

fn tunnel6() -> Tunnel6 {
    let (director, real) = pair6("rs6-tun");
    for iface in ["all", "default", "eth0"] {
        director
            .sysctl(&format!("net.ipv4.conf.{iface}.rp_filter"), "0")
            .unwrap();
    }
    let actions = real
        .run(|| rs::setup_vips(RsMode::Tun, &[IpAddr::V4(VIP), IpAddr::V6(VIP6)], false))
        .expect("setup tun, both families");
    assert!(lo_addrs6(&real).contains("inet6 2001:db8:f::80/128"));
    if real
        .ip(&["link", "show", "dev", rs::KERNEL_TUNNEL6])
        .is_err()
    {
        assert!(
            actions
                .iter()
                .any(|a| a.contains("no IPv6-in-IPv6 tunnel support") && a.contains("rs-decap")),
            "{actions:?}"
        );
    }
    // New devices start without IPv6 here (a host that enables it per interface): the
    // decapsulator must turn it on for its TUN device, or the kernel drops the inner packets.
    real.sysctl("net.ipv6.conf.default.disable_ipv6", "1")
        .unwrap();
    let decap = Decapper::start(&real, rs::DEFAULT_DECAP_TUN);
    assert_eq!(
        sysctl(
            &real,
            &format!("net.ipv6.conf.{}.disable_ipv6", rs::DEFAULT_DECAP_TUN)
        ),
        "0"
    );
    let (echo4, echo6) = real.run(|| {
        (
            UdpEcho::start(SocketAddr::from((VIP, ECHO_PORT)), "rs4").expect("echo on VIP"),
            UdpEcho::start(SocketAddr::from((VIP6, ECHO_PORT)), "rs6").expect("echo on VIP6"),
        )
    });
    Tunnel6 {
        echo4,
        echo6,
        decap,
        director,
        real,
    }
}

/// An IPv6-in-IPv6 packet INT6 → REAL6 around `inner` (no extension headers).
fn ip6ip6(inner: &[u8]) -> Vec<u8> {
    let outer = Ipv6Header {
        traffic_class: 0,
        flow_label: Default::default(),
        payload_length: u16::try_from(inner.len()).expect("inner fits"),
        next_header: IpNumber::IPV6,
        hop_limit: 64,
        source: INT6.octets(),
        destination: REAL6.octets(),
    };
    let mut pkt = Vec::with_capacity(40 + inner.len());
    outer.write(&mut pkt).expect("write outer header");
    pkt.extend_from_slice(inner);
    pkt
}

/// An inner UDP datagram [INT6]:`sport` → [VIP6]:7000 with a correct checksum.
fn inner_udp6(sport: u16, payload: &[u8]) -> Vec<u8> {
    let builder = PacketBuilder::ipv6(INT6.octets(), VIP6.octets(), 64).udp(sport, ECHO_PORT);
    let mut pkt = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut pkt, payload).expect("build inner");
    pkt
}

/// From the director: sends `payload` tunnelled in IPv6 to the real server (up to 10 attempts)
/// and returns the first reply from [VIP6]:7000.
fn tunnelled_request6(director: &Netns, payload: &[u8]) -> String {
    director.run(|| {
        let sock = UdpSocket::bind((INT6, 0)).expect("bind director socket");
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let sport = sock.local_addr().expect("local addr").port();
        let pkt = ip6ip6(&inner_udp6(sport, payload));
        let mut buf = vec![0u8; 65536];
        for _ in 0..10 {
            rs::send_raw_ip6(&pkt).expect("send IPv6-in-IPv6");
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                if from == SocketAddr::from((VIP6, ECHO_PORT)) {
                    return String::from_utf8_lossy(&buf[..n]).into_owned();
                }
            }
        }
        panic!("no reply from [{VIP6}]:{ECHO_PORT}");
    })
}

/// From the director: one IPIP request to VIP:7000 (as `tunnelled_request`).
fn tunnelled_request4(director: &Netns, payload: &[u8]) -> String {
    director.run(|| {
        let sock = UdpSocket::bind((DIRECTOR, 0)).expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let pkt = ipip(&inner_udp(sock.local_addr().unwrap().port(), payload));
        let mut buf = vec![0u8; 65536];
        for _ in 0..10 {
            rs::send_raw_ip(&pkt).expect("send IPIP");
            while let Ok((n, from)) = sock.recv_from(&mut buf) {
                if from == SocketAddr::from((VIP, ECHO_PORT)) {
                    return String::from_utf8_lossy(&buf[..n]).into_owned();
                }
            }
        }
        panic!("no reply from {VIP}:{ECHO_PORT}");
    })
}

#[test]
fn decap_delivers_ipv6_in_ipv6_and_ipip_from_one_process() {
    if !precheck() {
        return;
    }
    let t = tunnel6();
    assert_eq!(tunnelled_request6(&t.director, b"six"), "rs6:six");
    assert_eq!(tunnelled_request4(&t.director, b"four"), "rs4:four");
    let (d, c) = (&t.decap, &t.decap.counters);
    assert!(d.get(&c.decapsulated6) >= 1, "{c}");
    assert!(d.get(&c.decapsulated) >= 1, "{c}");
    assert!(d.get(&c.received6) >= d.get(&c.decapsulated6));
    assert_eq!(c.malformed6_total(), 0, "{c}");
    assert_eq!(d.get(&c.malformed), 0, "{c}");
    assert_eq!(d.get(&c.write_errors6), 0, "{c}");
    assert!(t.echo6.served() >= 1 && t.echo4.served() >= 1);
    // A large inner packet (above the TUN's MTU) is taken whole.
    for ns in [&t.director, &t.real] {
        ns.set_mtu("eth0", 9000).expect("jumbo veth");
    }
    let big = "6".repeat(8000);
    assert_eq!(
        tunnelled_request6(&t.director, big.as_bytes()),
        format!("rs6:{big}")
    );
    let Tunnel6 {
        echo4,
        echo6,
        decap,
        director,
        real,
    } = t;
    drop((echo4, echo6));
    decap.finish().expect("decap ends cleanly");
    assert!(tun_gone(&real), "the TUN device outlived the decapsulator");
    drop((director, real));
}

#[test]
fn decap_counts_malformed_ipv6_by_reason_and_keeps_working() {
    if !precheck() {
        return;
    }
    let t = tunnel6();
    let good = inner_udp6(40000, b"x");
    // 20 bytes: shorter than an IPv6 header.
    let truncated = ip6ip6(&good[..20]);
    // An IPv4 header where the inner IPv6 one should be.
    let mut bad_version = good.clone();
    bad_version[0] = 0x45;
    let bad_version = ip6ip6(&bad_version);
    // A payload length beyond what was carried, and a zero one (jumbogram).
    let mut too_long = good.clone();
    too_long[4..6].copy_from_slice(&1000u16.to_be_bytes());
    let too_long = ip6ip6(&too_long);
    let mut zero = good.clone();
    zero[4..6].fill(0);
    let zero = ip6ip6(&zero);
    t.director.run(|| {
        for pkt in [&truncated, &bad_version, &too_long, &zero] {
            rs::send_raw_ip6(pkt).expect("send malformed IPv6-in-IPv6");
        }
    });
    let c = &t.decap.counters;
    assert!(wait_until(WAIT, TICK, || c.malformed6_total() >= 4), "{c}");
    assert_eq!(c.malformed6(Malformed6::Truncated), 1, "{c}");
    assert_eq!(c.malformed6(Malformed6::BadVersion), 1, "{c}");
    assert_eq!(c.malformed6(Malformed6::BadPayloadLen), 2, "{c}");
    assert!(t.decap.running(), "decap stopped after malformed input");
    assert_eq!(t.decap.get(&c.decapsulated6), 0, "{c}");
    assert_eq!(t.echo6.served(), 0);
    assert_eq!(tunnelled_request6(&t.director, b"still"), "rs6:still");
    assert_eq!(c.malformed6_total(), 4, "{c}");
    assert_eq!(t.decap.get(&c.malformed), 0, "{c}");
}

/// Whether the decapsulator's TUN device is gone from `ns` within 5 s: the kernel unregisters
/// a closed TUN device asynchronously, later on a loaded machine.
fn tun_gone(ns: &Netns) -> bool {
    wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        ns.ip(&["link", "show", "dev", rs::DEFAULT_DECAP_TUN])
            .is_err()
    })
}
