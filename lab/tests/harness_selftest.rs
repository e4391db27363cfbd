//! Self-tests of the netns harness (`tapvs_lab::netns`) and the traffic tools
//! (`tapvs_lab::traffic`): namespaces and veths come and go (also on panic), Rust closures really
//! run inside a namespace, and the HTTP, UDP and bulk TCP endpoints talk across a veth. Needs
//! root; see `precheck`.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tapvs_lab::netns::{self, Netns};
use tapvs_lab::traffic::{self, BulkSink, HttpServer, UdpEcho};

/// Generous bound for every network operation in these tests.
const T: Duration = Duration::from_secs(10);

/// Builds two namespaces joined by a veth: `a` has 10.77.0.1/24, `b` has 10.77.0.2/24.
/// Returns the namespaces and the two link names.
fn pair(role_a: &str, role_b: &str) -> (Netns, Netns, String, String) {
    let a = Netns::new(role_a).expect("create netns a");
    let b = Netns::new(role_b).expect("create netns b");
    let (la, lb) = (netns::link_name("va"), netns::link_name("vb"));
    netns::veth((&a, &la), (&b, &lb)).expect("veth");
    a.add_addr(&la, "10.77.0.1/24").expect("addr a");
    b.add_addr(&lb, "10.77.0.2/24").expect("addr b");
    (a, b, la, lb)
}

/// The network-namespace inode of the calling thread.
fn netns_inode_here() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net")
        .expect("stat own netns")
        .ino()
}

/// Whether `ping` (iputils) is installed.
fn have_ping() -> bool {
    Command::new("ping")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn veth_ping_and_cleanup_on_drop() {
    if !tapvs_lab::netns::precheck() {
        return;
    }
    let started = Instant::now();
    let (a, b, la, lb) = pair("ping-a", "ping-b");
    eprintln!(
        "two namespaces + veth + addresses in {:?}",
        started.elapsed()
    );
    let names = [a.name().to_string(), b.name().to_string()];
    let listed = netns::list_netns().expect("ip netns list");
    assert!(names.iter().all(|n| listed.contains(n)), "{listed:?}");
    assert!(a.ip(&["link", "show", "dev", &la]).unwrap().contains(&la));
    assert!(b
        .ip(&["-br", "addr", "show", "dev", &lb])
        .unwrap()
        .contains("10.77.0.2/24"));
    if have_ping() {
        let out = a
            .exec(&["ping", "-c1", "-W1", "10.77.0.2"])
            .expect("ping a -> b");
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 received"));
        b.exec(&["ping", "-c1", "-W1", "10.77.0.1"])
            .expect("ping b -> a");
        // A failing command reports its command line and stderr.
        let err = a.exec(&["ping", "-c1", "-W1", "10.77.9.9"]).unwrap_err();
        assert!(err.to_string().contains("ping -c1 -W1 10.77.9.9"), "{err}");
    } else {
        eprintln!("note: `ping` not installed; checking reachability with UDP instead");
        let echo = b
            .run(|| UdpEcho::start("10.77.0.2:7000".parse().unwrap(), "b"))
            .unwrap();
        let addr = echo.local_addr();
        assert_eq!(a.run(|| traffic::udp_request(addr, "x", T)).unwrap(), "b:x");
    }
    let err = a.ip(&["link", "show", "dev", "nosuchdev0"]).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("ip -n {} link show", a.name())),
        "{err}"
    );
    drop(a);
    drop(b);
    let listed = netns::list_netns().expect("ip netns list");
    for n in &names {
        assert!(!listed.contains(n), "{n} still listed: {listed:?}");
        assert!(!netns::netns_exists(n));
    }
}

#[test]
fn netns_removed_when_body_panics() {
    if !tapvs_lab::netns::precheck() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let result = std::panic::catch_unwind(move || {
        let ns = Netns::new("panicky").expect("create");
        let child = ns
            .spawn(&["sleep", "60"], Stdio::null(), Stdio::null())
            .expect("spawn");
        tx.send(ns.name().to_string()).unwrap();
        tx.send(child.id().to_string()).unwrap();
        panic!("deliberate panic inside a namespace test body");
    });
    assert!(result.is_err(), "the body must have panicked");
    let name = rx.recv().unwrap();
    let pid = rx.recv().unwrap();
    assert!(
        !netns::list_netns().unwrap().contains(&name),
        "{name} survived the panic"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "child {pid} survived"
    );
}

#[test]
fn http_udp_and_bulk_across_a_veth() {
    if !tapvs_lab::netns::precheck() {
        return;
    }
    let (a, b, _, _) = pair("srv", "cli");
    let http_addr: SocketAddr = "10.77.0.1:8080".parse().unwrap();
    let udp_addr: SocketAddr = "10.77.0.1:5353".parse().unwrap();
    let bulk_addr: SocketAddr = "10.77.0.1:9000".parse().unwrap();

    let http = a
        .run(|| HttpServer::start(http_addr, "rs1"))
        .expect("http server");
    let echo = a.run(|| UdpEcho::start(udp_addr, "rs1")).expect("udp echo");
    let sink = a.run(|| BulkSink::start(bulk_addr)).expect("bulk sink");
    // Readiness via /proc/net/tcp inside the namespace; does not consume the sink's connection.
    netns::wait_for_tcp_listen(&a, http_addr, T).expect("http listening");
    netns::wait_for_tcp_listen(&a, bulk_addr, T).expect("sink listening");
    assert!(netns::wait_for_tcp_listen(
        &a,
        "10.77.0.1:1".parse().unwrap(),
        Duration::from_millis(50)
    )
    .is_err());
    // The listeners exist only in a's namespace.
    assert!(b.run(netns::tcp_listeners_here).unwrap().is_empty());

    let n = 50;
    let split = b
        .run(|| traffic::http_split(http_addr, n, T))
        .expect("http split");
    assert_eq!(split.len(), 1, "{split:?}");
    assert_eq!(split.get("rs1"), Some(&n), "{split:?}");
    assert_eq!(http.served(), n);
    let (status, body) = b.run(|| traffic::http_get(http_addr, "/x?y=1", T)).unwrap();
    assert_eq!((status, body.as_str()), (200, "rs1"));

    // Keep-alive: two requests on one connection, the second one asking to close.
    let kept = b
        .run(|| -> std::io::Result<String> {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect_timeout(&http_addr, T)?;
            s.set_read_timeout(Some(T))?;
            s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .unwrap();
    assert_eq!(kept.matches("HTTP/1.1 200 OK").count(), 2, "{kept}");
    assert!(
        kept.contains("Connection: keep-alive") && kept.ends_with("Connection: close\r\n\r\nrs1")
    );
    assert_eq!(http.served(), n + 3);

    let reply = b
        .run(|| traffic::udp_request(udp_addr, "hello", T))
        .expect("udp");
    assert_eq!(reply, "rs1:hello");
    assert_eq!(echo.served(), 1);
    // Nothing listens on this port: every attempt fails, bounded by the timeout.
    let t0 = Instant::now();
    let err = b
        .run(|| {
            traffic::udp_request(
                "10.77.0.1:5354".parse().unwrap(),
                "x",
                Duration::from_millis(300),
            )
        })
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(2), "{err}");

    let bytes = 20 * 1024 * 1024;
    let t0 = Instant::now();
    let sent = b
        .run(|| traffic::bulk_send(bulk_addr, bytes, 42, Duration::from_secs(60)))
        .expect("bulk send");
    let (got_bytes, got_digest) = sink.wait(T).expect("sink result");
    eprintln!("20 MiB over the veth in {:?}", t0.elapsed());
    assert_eq!(got_bytes, bytes);
    assert_eq!(got_digest, sent);
    assert_eq!(sent, traffic::bulk_digest(bytes, 42));
    assert_eq!(sink.wait(T).unwrap(), (bytes, sent), "result is kept");

    // Servers stop promptly on drop; then the namespaces go.
    let t0 = Instant::now();
    drop(http);
    drop(echo);
    drop(sink);
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(b
        .run(|| traffic::http_get(http_addr, "/", Duration::from_secs(1)))
        .is_err());
}

#[test]
fn run_executes_inside_the_namespace() {
    if !tapvs_lab::netns::precheck() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let (a, b, la, lb) = pair("run-a", "run-b");
    let caller = netns_inode_here();
    let ns_inode = std::fs::metadata(a.path()).unwrap().ino();
    assert_ne!(caller, ns_inode);
    assert_eq!(a.run(netns_inode_here), ns_inode);
    // The caller's thread did not move.
    assert_eq!(netns_inode_here(), caller);
    // The interface list as seen from inside: a's veth end, not b's, not the host's.
    let devs = a.run(|| std::fs::read_to_string("/proc/thread-self/net/dev").unwrap());
    assert!(devs.contains(&format!("{la}:")), "{devs}");
    assert!(!devs.contains(&format!("{lb}:")), "{devs}");
    let host_devs = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
    assert!(!host_devs.contains(&format!("{la}:")));
    // Threads spawned from a namespace thread inherit the namespace.
    let nested = a.run(|| std::thread::spawn(netns_inode_here).join().unwrap());
    assert_eq!(nested, ns_inode);
    assert_eq!(a.spawn_thread(netns_inode_here).join().unwrap(), ns_inode);
    // Panics propagate out of run.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a.run(|| panic!("inner"))));
    assert!(r.is_err());
    // Borrowing closures work (no 'static bound).
    let mut seen = Vec::new();
    a.run(|| seen.push(netns_inode_here()));
    assert_eq!(seen, vec![ns_inode]);
    // sysctl is per namespace. A new namespace may start from the host's value (IPv4 devconf
    // is inherited from the initial namespace), so a is set to the opposite of b's.
    let fwd = |ns: &Netns| {
        String::from_utf8(
            ns.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"])
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .to_string()
    };
    let b_before = fwd(&b);
    let other = if b_before == "1" { "0" } else { "1" };
    a.sysctl("net.ipv4.ip_forward", other).unwrap();
    assert_eq!(fwd(&a), other);
    assert_eq!(fwd(&b), b_before, "b is untouched by a's sysctl");
    a.sysctl(&format!("net.ipv4.conf.{la}.rp_filter"), "2")
        .unwrap();
    assert_eq!(
        a.exec(&["sysctl", "-n", &format!("net.ipv4.conf.{la}.rp_filter")])
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap(),
        "2"
    );
    a.set_mtu(&la, 1400).unwrap();
    assert!(a
        .ip(&["link", "show", "dev", &la])
        .unwrap()
        .contains("mtu 1400"));
}

#[test]
fn spawned_children_are_killed() {
    if !tapvs_lab::netns::precheck() {
        return;
    }
    let ns = Netns::new("kids").unwrap();
    let alive = |pid: u32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    let child = ns
        .spawn(&["sleep", "60"], Stdio::null(), Stdio::null())
        .unwrap();
    let pid = child.id();
    assert!(netns::wait_until(T, Duration::from_millis(5), || {
        ns.exec(&["true"]).is_ok()
            && Command::new("ip")
                .args(["netns", "pids", ns.name()])
                .output()
                .is_ok_and(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .any(|p| p == pid.to_string())
                })
    }));
    assert!(child.try_wait().unwrap().is_none());
    drop(child);
    assert!(!alive(pid), "guard drop kills and reaps");

    let out = ns
        .spawn(
            &["sh", "-c", "echo hi; exec sleep 60"],
            Stdio::piped(),
            Stdio::null(),
        )
        .unwrap();
    let mut line = String::new();
    use std::io::Read;
    out.take_stdout()
        .unwrap()
        .take(3)
        .read_to_string(&mut line)
        .unwrap();
    assert_eq!(line, "hi\n");
    let short = ns.spawn(&["true"], Stdio::null(), Stdio::null()).unwrap();
    assert!(short.wait_timeout(T).unwrap().unwrap().success());
    let pid = out.id();
    drop(ns); // Netns drop kills the still-running child first.
    assert!(!alive(pid), "netns drop kills children");
    drop(out);
}

#[test]
fn bridge_joins_three_namespaces() {
    if !tapvs_lab::netns::precheck() {
        return;
    }
    let sw = Netns::new("switch").unwrap();
    let h1 = Netns::new("h1").unwrap();
    let h2 = Netns::new("h2").unwrap();
    let (p1, p2) = (netns::link_name("p"), netns::link_name("p"));
    let (e1, e2) = (netns::link_name("e"), netns::link_name("e"));
    netns::veth((&h1, &e1), (&sw, &p1)).unwrap();
    netns::veth((&h2, &e2), (&sw, &p2)).unwrap();
    let br = netns::link_name("br");
    netns::bridge(&sw, &br, &[&p1, &p2]).unwrap();
    h1.add_addr(&e1, "10.78.0.1/24").unwrap();
    h2.add_addr(&e2, "10.78.0.2/24").unwrap();
    h2.add_addr(&e2, "fd78::2/64").unwrap();
    h1.add_addr(&e1, "fd78::1/64").unwrap();
    h1.add_default_route("10.78.0.2").unwrap();
    h1.add_route("10.99.0.0/16", "10.78.0.2").unwrap();
    assert!(h1
        .ip(&["route"])
        .unwrap()
        .contains("10.99.0.0/16 via 10.78.0.2"));
    let echo = h2
        .run(|| UdpEcho::start("[fd78::2]:7".parse().unwrap(), "h2"))
        .unwrap();
    let addr = echo.local_addr();
    assert_eq!(
        h1.run(|| traffic::udp_request(addr, "v6", T)).unwrap(),
        "h2:v6"
    );
    let srv = h2
        .run(|| HttpServer::start("0.0.0.0:80".parse().unwrap(), "h2"))
        .unwrap();
    netns::wait_for_tcp_listen(&h2, "10.78.0.2:80".parse().unwrap(), T).unwrap();
    let got = h1
        .run(|| traffic::http_split("10.78.0.2:80".parse().unwrap(), 3, T))
        .unwrap();
    assert_eq!(got.get("h2"), Some(&3));
    drop(srv);
    drop(echo);
}

#[test]
fn sweep_stale_removes_dead_owners() {
    if !tapvs_lab::netns::precheck() {
        return;
    }
    // A pid above pid_max can never be alive.
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stale = format!("{}{}-0-stale", netns::NETNS_PREFIX, pid_max + 1);
    let live = Netns::new("live").unwrap();
    let st = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(st.success());
    netns::sweep_stale();
    let listed = netns::list_netns().unwrap();
    assert!(!listed.contains(&stale), "{listed:?}");
    assert!(
        listed.iter().any(|n| n == live.name()),
        "own namespaces stay"
    );
}
