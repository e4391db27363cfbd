//! Real-server helpers (`tapvs::rs`) in network namespaces: `setup` for DR (VIP on `lo`, ARP
//! and rp_filter sysctls, idempotence, undo), and the user-space IPIP decapsulator end to end: a
//! "director" namespace sends hand-built IPIP packets to a "real server" namespace, whose
//! `decap` feeds the inner UDP datagram to an echo server bound to the VIP, and the reply comes
//! straight back from the VIP. Malformed tunnelled packets are counted and do not stop the loop.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use etherparse::{IpNumber, Ipv4Header, PacketBuilder};
use tapvs::rs::{self, DecapCounters, RsError, RsMode};
use tapvs_lab::netns::{precheck, veth, wait_until, Netns};
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
    assert!(real
        .ip(&["link", "show", "dev", rs::DEFAULT_DECAP_TUN])
        .is_err());
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
