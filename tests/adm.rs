//! tapvsadm end to end: a daemon started with no services is configured and inspected only
//! through the `tapvsadm` binary while traffic flows; listings, counters and rates are checked;
//! a long transfer survives edits of other real servers and of its own server's weight; bad
//! input changes nothing; `-S` fed to `-R` on a fresh daemon reproduces the listing; the
//! Prometheus endpoint shows counters moving. In the dual-stack lab, a config with an IPv6
//! service starts and reloads, tapvsadm edits and lists IPv6 services in ipvsadm's formats, and
//! a mixed IPv4 + IPv6 `-S` restores with `-R` into an empty daemon to the same `-S`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::Duration;

use common::lab::{self, Lab};
use common::{any, http_servers, scrape};
use sha2::{Digest, Sha256};
use tapvs_lab::netns::{precheck, wait_until};
use tapvs_lab::traffic::{self, BulkSink, UdpEcho};

const ADM: &str = env!("CARGO_BIN_EXE_tapvsadm");

fn adm(lab: &Lab, args: &str) -> Output {
    adm_in(lab, args, None)
}

fn adm_in(lab: &Lab, args: &str, stdin: Option<&str>) -> Output {
    common::tapvsadm(&lab.socket(), args, stdin)
}

/// Runs a command that must succeed and returns its standard output.
fn ok(lab: &Lab, args: &str) -> String {
    let o = adm(lab, args);
    assert!(
        o.status.success(),
        "tapvsadm {args}: {:?} {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn dest_line(addr: &str, fwd: &str, w: u32, a: u32, i: u32) -> String {
    format!("  -> {addr:<28} {fwd:<7} {w:<6} {a:<10} {i:<10}")
}

/// `[addr]:port` of real server `i`'s IPv6 address.
fn real6(i: usize, port: u16) -> String {
    format!("[{}]:{port}", lab::real_addr6(i))
}

/// The config of the IPv6 test: the dual lab's ports, an IPv4 NAT service on VIP:80 and an
/// IPv6 NAT service on [VIP6]:80 with real servers 0 and 1 (`weight6` for real 1).
fn dual_config(base: &str, weight6: u32) -> String {
    format!(
        "{base}{}{}",
        lab::nat_service("tcp", 80, "rr", &[(0, 80, 1)]),
        lab::service6("tcp", 80, "wrr", "nat", &[(0, 80, 1), (1, 80, weight6)])
    )
}

#[test]
fn ipv6_services_through_the_daemon() {
    if !precheck() {
        return;
    }
    let mut lab = Lab::build_dual(2).unwrap();
    let base = lab::base_config_dual(1);
    let path = std::env::temp_dir().join(format!("tapvs-adm-v6-{}.toml", std::process::id()));
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _rm = Rm(path.clone());
    // A config with an IPv6 service starts.
    std::fs::write(&path, dual_config(&base, 1)).unwrap();
    lab.start_file(&path).unwrap();
    let vip6 = format!("[{}]", lab::VIP6);
    let listing = ok(&lab, "-L -n");
    assert!(
        listing.contains(&format!(
            "\nTCP  {vip6}:80 wrr\n{}\n{}\n",
            dest_line(&real6(0, 80), "Masq", 1, 0, 0),
            dest_line(&real6(1, 80), "Masq", 1, 0, 0)
        )),
        "{listing}"
    );
    // tapvsadm adds, edits and removes IPv6 services and real servers.
    ok(&lab, &format!("-A -t {vip6}:8080 -s rr"));
    ok(
        &lab,
        &format!("-a -t {vip6}:8080 -r {} -m -w 2", real6(0, 8080)),
    );
    ok(&lab, &format!("-a -t {vip6}:8080 -r {} -m", real6(1, 8080)));
    ok(
        &lab,
        &format!("-e -t {vip6}:8080 -r {} -m -w 5", real6(1, 8080)),
    );
    ok(&lab, &format!("-A -u {vip6}:53 -s sh -p 60 -M 64"));
    ok(&lab, &format!("-a -u {vip6}:53 -r {} -m", real6(1, 5353)));
    let one = ok(&lab, &format!("-L -n -t {vip6}:8080"));
    assert_eq!(
        one.lines().skip(2).collect::<Vec<_>>(),
        [
            format!("TCP  {vip6}:8080 rr"),
            dest_line(&real6(0, 8080), "Masq", 2, 0, 0),
            dest_line(&real6(1, 8080), "Masq", 5, 0, 0),
        ],
        "{one}"
    );
    ok(&lab, &format!("-d -t {vip6}:8080 -r {}", real6(0, 8080)));
    ok(&lab, &format!("-E -t {vip6}:8080 -s wlc"));
    ok(&lab, &format!("-Z -t {vip6}:8080"));
    // Traffic to the IPv6 service: its connection in -L -c, its counters in --stats.
    let _servers: Vec<traffic::HttpServer> = lab
        .reals
        .iter()
        .map(|rs| {
            rs.run(|| traffic::HttpServer::start("[::]:8080".parse().unwrap(), "rs6"))
                .expect("http server")
        })
        .collect();
    let target = std::net::SocketAddr::new(lab::VIP6.into(), 8080);
    let got = lab.client.run(move || {
        let mut last = None;
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            last = Some(traffic::http_get(target, "/", Duration::from_secs(2)));
            matches!(last, Some(Ok((200, _))))
        });
        last
    });
    assert!(matches!(got, Some(Ok((200, _)))), "{got:?}");
    let conns = ok(&lab, "-L -n -c");
    let row = conns
        .lines()
        .find(|l| l.starts_with("TCP ") && l.contains(&format!("{vip6}:8080")))
        .unwrap_or_else(|| panic!("no IPv6 connection in:\n{conns}"));
    assert!(
        row.contains(&format!("[{}]:", lab::CLIENT6)) && row.contains(&real6(1, 8080)),
        "{conns}"
    );
    // The counters reach the listing with the workers' next publication.
    let conns_of = |stats: &str| -> Option<u64> {
        let line = stats.lines().find(|l| l.starts_with("TCP "))?;
        line.split_whitespace().nth(2)?.parse().ok()
    };
    let mut stats = String::new();
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            stats = ok(&lab, &format!("-L -n --stats -t {vip6}:8080"));
            conns_of(&stats).is_some_and(|n| n >= 1)
        }),
        "{stats}"
    );
    let rate = ok(&lab, &format!("-L -n --rate -t {vip6}:8080"));
    assert!(rate.contains(&format!("TCP  {vip6}:8080")), "{rate}");
    // Refused with IPVS's answers, nothing changed.
    let before = ok(&lab, "-S -n");
    for (args, code, msg) in [
        (
            format!("-A -t {vip6}:8080 -s rr"),
            1,
            "Service already exists",
        ),
        (
            format!("-a -t {vip6}:8080 -r [2001:db8:99::2]:8080 -m"),
            1,
            "Invalid operation",
        ),
        (
            format!("-a -t {vip6}:8080 -r {}:8080 -b", lab::real_addr(0)),
            1,
            "local address",
        ),
    ] {
        let o = adm(&lab, &args);
        assert_eq!(o.status.code(), Some(code), "{args}: {o:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(msg),
            "{args}: {o:?}"
        );
    }
    assert_eq!(ok(&lab, "-S -n"), before, "refusals changed nothing");
    // -S of the mixed table restored into an empty daemon gives the same -S.
    let saved = before;
    assert!(
        saved.contains(&format!("-A -t {vip6}:8080 -s wlc")),
        "{saved}"
    );
    assert!(
        saved.contains(&format!("-A -t {}:80 -s rr", lab::VIP)),
        "{saved}"
    );
    let mut fresh = Lab::build_dual(0).unwrap();
    fresh.start(&lab::base_config_dual(1)).unwrap();
    let o = adm_in(&fresh, "-R", Some(&saved));
    assert!(o.status.success(), "{o:?}");
    assert_eq!(ok(&fresh, "-S -n"), saved, "save output round-trips");
    drop(fresh);
    // A reload with IPv6 services: the config's change applies, tapvsadm's services go (the
    // config is the truth), the IPv4 service stays.
    std::fs::write(&path, dual_config(&base, 7)).unwrap();
    lab.daemon().reload().unwrap();
    let after = ok(&lab, "-S -n");
    assert!(
        after.contains(&format!("-a -t {vip6}:80 -r {} -m -w 7", real6(1, 80))),
        "{after}"
    );
    assert!(!after.contains(":8080"), "{after}");
    assert!(
        after.contains(&format!("-A -t {}:80 -s rr", lab::VIP)),
        "{after}"
    );
}

fn empty_lab(reals: usize) -> Lab {
    let mut lab = Lab::build(reals).unwrap();
    lab.start(&lab::base_config(2)).unwrap();
    lab
}

#[test]
fn tapvsadm_drives_the_daemon() {
    if !precheck() {
        return;
    }
    let lab = empty_lab(3);
    let (vip, rs1, rs2, rs3) = (
        lab::VIP.to_string(),
        lab::real_addr(0),
        lab::real_addr(1),
        lab::real_addr(2),
    );
    let _http = http_servers(&lab, 80);
    let _echo = lab.reals[0]
        .run(|| UdpEcho::start(any(5353), "rs1"))
        .unwrap();
    ok(&lab, &format!("-A -t {vip}:80 -s rr"));
    ok(&lab, &format!("-a -t {vip}:80 -r {rs1}:80 -m -w 1"));
    ok(&lab, &format!("-a -t {vip}:80 -r {rs2}:80 -m -w 1"));
    ok(&lab, &format!("-A -u {vip}:53 -s wrr"));
    ok(&lab, &format!("-a -u {vip}:53 -r {rs1}:5353 -m"));
    let list = ok(&lab, "-L -n");
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines[0], "IP Virtual Server version 1.2.1 (size=100000)");
    assert_eq!(lines[1], "Prot LocalAddress:Port Scheduler Flags");
    assert_eq!(
        lines[2],
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn"
    );
    assert_eq!(lines[3], format!("TCP  {vip}:80 rr"));
    assert_eq!(lines[4], dest_line(&format!("{rs1}:80"), "Masq", 1, 0, 0));
    assert_eq!(lines[5], dest_line(&format!("{rs2}:80"), "Masq", 1, 0, 0));
    assert_eq!(lines[6], format!("UDP  {vip}:53 wrr"));
    assert_eq!(lines[7], dest_line(&format!("{rs1}:5353"), "Masq", 1, 0, 0));

    // Traffic through what tapvsadm configured.
    let split = lab
        .client
        .run(|| traffic::http_split(lab::vip(80), 20, Duration::from_secs(5)))
        .unwrap();
    assert_eq!(split.get("rs1"), Some(&10), "{split:?}");
    let reply = lab
        .client
        .run(|| traffic::udp_request(lab::vip(53), "x", Duration::from_secs(3)))
        .unwrap();
    assert_eq!(reply, "rs1:x");
    // Counters are published every 100 ms.
    let stats_line = |s: &str, addr: &str| -> Vec<String> {
        s.lines()
            .find(|l| l.starts_with(&format!("  -> {addr}")))
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let mut stats = String::new();
    assert!(
        wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
            stats = ok(&lab, "-L -n --stats");
            stats_line(&stats, &format!("{rs1}:80"))
                .get(2)
                .map(String::as_str)
                == Some("10")
        }),
        "{stats}"
    );
    let l = stats_line(&stats, &format!("{rs1}:80"));
    assert!(l[3].parse::<u64>().unwrap() >= 40, "InPkts: {stats}");
    assert!(l[4].parse::<u64>().unwrap() >= 30, "OutPkts: {stats}");
    let inact = ok(&lab, "-L -n");
    assert!(
        inact.contains(&dest_line(&format!("{rs1}:80"), "Masq", 1, 0, 10)),
        "{inact}"
    );
    // Connection entries.
    let conns = ok(&lab, "-L -n -c");
    assert!(
        conns.starts_with("IPVS connection entries\npro expire state"),
        "{conns}"
    );
    assert_eq!(
        conns.lines().filter(|l| l.contains("TIME_WAIT")).count(),
        20,
        "{conns}"
    );
    assert!(conns.lines().any(|l| l.starts_with("UDP")), "{conns}");

    // Rates: keep traffic flowing until the 2-second estimator shows it.
    let mut rate = String::new();
    let busy = wait_until(Duration::from_secs(12), Duration::from_millis(10), || {
        lab.client
            .run(|| traffic::http_split(lab::vip(80), 10, Duration::from_secs(5)))
            .unwrap();
        rate = ok(&lab, "-L -n --rate");
        stats_line(&rate, &format!("{rs1}:80"))
            .get(2)
            .is_some_and(|c| c != "0")
    });
    assert!(busy, "CPS never moved: {rate}");
    assert!(rate.contains("CPS"), "{rate}");

    // Timeouts.
    ok(&lab, "--set 100 60 200");
    assert_eq!(
        ok(&lab, "-L --timeout"),
        "Timeout (tcp tcpfin udp): 100 60 200\n"
    );
    ok(&lab, "--set 0 0 300");
    assert_eq!(
        ok(&lab, "-L --timeout"),
        "Timeout (tcp tcpfin udp): 100 60 300\n"
    );
    // Zero.
    ok(&lab, "-Z");
    let z = ok(&lab, "-L -n --stats");
    assert_eq!(stats_line(&z, &format!("{rs1}:80"))[2], "0", "{z}");
    // Other listing forms succeed with their headers.
    assert!(ok(&lab, "-L -n --thresholds").contains("Uthreshold Lthreshold"));
    assert!(ok(&lab, "-L -n --persistent-conn").contains("PersistConn"));
    assert!(ok(&lab, "-L -n --stats --exact").contains("Conns"));
    assert!(ok(&lab, &format!("-L -n -t {vip}:80")).contains(&format!("TCP  {vip}:80 rr")));

    // Edits.
    ok(&lab, &format!("-E -t {vip}:80 -s wlc -p 60"));
    ok(&lab, &format!("-e -t {vip}:80 -r {rs1}:80 -m -w 0"));
    ok(&lab, &format!("-a -t {vip}:80 -r {rs3}:80 -m -w 2"));
    ok(&lab, &format!("-d -t {vip}:80 -r {rs2}:80"));
    assert!(ok(&lab, "-L -n").contains("UDP"));
    let list = ok(&lab, "-L -n");
    assert!(
        list.contains(&format!("TCP  {vip}:80 wlc persistent 60")),
        "{list}"
    );
    assert!(
        list.contains(&format!("  -> {:<28} Masq    0 ", format!("{rs1}:80"))),
        "{list}"
    );
    assert!(
        list.contains(&format!("  -> {:<28} Masq    2 ", format!("{rs3}:80"))),
        "{list}"
    );
    assert!(!list.contains(&format!("{rs2}:80")), "{list}");
    // The other forwarding methods, persistence netmask, thresholds, -l, --sort, fwmark.
    ok(&lab, &format!("-a -t {vip}:80 -r {rs2}:80 -g -w 0"));
    ok(&lab, &format!("-a -u {vip}:53 -r {rs2}:53 -i -w 0"));
    ok(
        &lab,
        &format!("-E -t {vip}:80 -s wlc -p 60 -M 255.255.255.0"),
    );
    ok(
        &lab,
        &format!("-e -t {vip}:80 -r {rs3}:80 -m -w 2 -x 100 -y 50"),
    );
    let l = ok(&lab, "-l -n --sort");
    assert!(
        l.contains(&format!(
            "TCP  {vip}:80 wlc persistent 60 mask 255.255.255.0"
        )),
        "{l}"
    );
    assert!(
        l.contains(&format!("  -> {:<28} Route   0 ", format!("{rs2}:80"))),
        "{l}"
    );
    assert!(
        l.contains(&format!("  -> {:<28} Tunnel  0 ", format!("{rs2}:53"))),
        "{l}"
    );
    let th = ok(&lab, "-L -n --thresholds");
    assert!(
        th.contains(&format!("  -> {:<28} 100        50 ", format!("{rs3}:80"))),
        "{th}"
    );
    let o = adm(&lab, &format!("-a -t {vip}:80 -r {rs2}:81 -b"));
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("local_addresses"),
        "{o:?}"
    );
    let o = adm(&lab, "-A -f 1 -s rr");
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not supported"),
        "{o:?}"
    );
    ok(&lab, &format!("-d -t {vip}:80 -r {rs2}:80"));
    ok(&lab, &format!("-d -u {vip}:53 -r {rs2}:53"));
    ok(&lab, &format!("-E -t {vip}:80 -s wlc -p 60"));
    ok(&lab, &format!("-D -u {vip}:53"));
    // Weight 0 quiesces: new connections go to rs3 only.
    let split = lab
        .client
        .run(|| traffic::http_split(lab::vip(80), 6, Duration::from_secs(5)))
        .unwrap();
    assert_eq!(split.get("rs3"), Some(&6), "{split:?}");

    // Bad input: ipvsadm-like messages, exit codes, nothing changed.
    let before = ok(&lab, "-S -n");
    for (args, code, msg) in [
        ("-L -z", 2, "unknown option"),
        ("-A -t 1.2.3:80", 2, "illegal virtual server address"),
        (
            &format!("-a -t {vip}:81 -r {rs1}:80 -m") as &str,
            1,
            "Service not defined",
        ),
        (&format!("-A -t {vip}:80"), 1, "Service already exists"),
        (
            &format!("-a -t {vip}:80 -r {rs3}:80 -m"),
            1,
            "Destination already exists",
        ),
        (
            &format!("-d -t {vip}:80 -r {rs2}:80"),
            1,
            "No such destination",
        ),
        (&format!("-E -t {vip}:80 -s nosuch"), 1, "Scheduler"),
        (
            &format!("-a -t {vip}:80 -r {rs2}:80 -w 70000"),
            2,
            "illegal weight",
        ),
        (
            &format!("-e -t {vip}:80 -r {rs3}:80 -m -x 5 -y 10"),
            1,
            "Numerical result out of range",
        ),
        (
            &format!("-a -t {vip}:80 -r {rs2}:80 -i --tun-type gre"),
            2,
            "not supported",
        ),
        // IPv6: ipvsadm's syntax and rules in tapvsadm, IPVS's answers from the daemon.
        (
            "-a -t [2001:db8:f::80]:80 -r 172.16.0.2:80 -b",
            1,
            "Service not defined",
        ),
        ("-D -t [2001:db8:f::80]:80", 1, "No such service"),
        ("-L -n -t [2001:db8:f::80]:80", 1, "No such service"),
        (
            "-A -t [2001:db8:f::80] -s rr",
            2,
            "illegal virtual server address",
        ),
        (
            &format!("-a -t [2001:db8:f::80]:80 -r {rs2}:80 -m"),
            2,
            "Different address family is allowed only for FullNAT servers",
        ),
        ("-A -6 -f 1", 2, "-6 used before -f"),
        (
            "-A -f 1 -6 -s rr",
            2,
            "fwmark services (-f) is not supported yet",
        ),
    ] {
        let o = adm(&lab, args);
        assert_eq!(o.status.code(), Some(code), "{args}: {o:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(msg),
            "{args}: {o:?}"
        );
    }
    // A malformed request on the socket is rejected.
    let mut s = std::os::unix::net::UnixStream::connect(lab.socket()).unwrap();
    s.write_all(b"{\"args\": 12}\n").unwrap();
    let mut resp = String::new();
    BufReader::new(&s).read_line(&mut resp).unwrap();
    assert!(
        resp.contains("malformed request") && resp.contains("\"code\":2"),
        "{resp}"
    );
    assert_eq!(ok(&lab, "-S -n"), before, "bad input changed nothing");
    // A non-root user cannot connect (socket mode 0600).
    let meta = std::fs::metadata(lab.socket()).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );
    if tapvs::sys::is_root() {
        use std::os::unix::process::CommandExt;
        let o = Command::new(ADM)
            .args(["--socket", &lab.socket(), "-L", "-n"])
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Permission denied"),
            "{o:?}"
        );
    }

    // Save, then restore into a fresh daemon: the same listing.
    ok(&lab, &format!("-a -t {vip}:80 -r {rs2}:8080 -m -w 3"));
    ok(&lab, &format!("-A -u {vip}:53 -s sh -b sh-port -o"));
    ok(&lab, &format!("-a -u {vip}:53 -r {rs1}:5353 -m"));
    let saved = ok(&lab, "-S -n");
    let fresh = empty_lab(0);
    // ipvsadm's restore skips comment and blank lines.
    let o = adm_in(
        &fresh,
        "-R",
        Some(&format!("# saved by tapvsadm -S -n\n\n{saved}")),
    );
    assert!(o.status.success(), "{o:?}");
    // Identical but for the live connection counters (the fresh daemon has carried none).
    let listing = |l: &Lab| {
        ok(l, "-L -n")
            .lines()
            .map(|line| match line.strip_prefix("  -> ") {
                Some(d) if !d.starts_with("RemoteAddress") => d[..44].to_string(),
                _ => line.to_string(),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(listing(&fresh), listing(&lab));
    assert_eq!(ok(&fresh, "-S -n"), saved, "save output round-trips");
    ok(&fresh, "-C");
    assert_eq!(ok(&fresh, "-L -n").lines().count(), 3, "cleared");
}

/// Sends `n` pseudo-random bytes, returning their SHA-256 (continuing `hasher`).
fn send(s: &mut TcpStream, n: usize, state: &mut u64, hasher: &mut Sha256) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = n;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            w.copy_from_slice(&state.to_le_bytes());
        }
        let k = left.min(buf.len());
        s.write_all(&buf[..k]).unwrap();
        hasher.update(&buf[..k]);
        left -= k;
    }
}

#[test]
fn long_transfer_survives_edits() {
    if !precheck() {
        return;
    }
    let lab = empty_lab(3);
    let (vip, rs1, rs2, rs3) = (
        lab::VIP.to_string(),
        lab::real_addr(0),
        lab::real_addr(1),
        lab::real_addr(2),
    );
    let sink = lab.reals[0].run(|| BulkSink::start(any(9000))).unwrap();
    ok(&lab, &format!("-A -t {vip}:9000 -s rr"));
    ok(&lab, &format!("-a -t {vip}:9000 -r {rs1}:9000 -m"));
    let (half_tx, half_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let client = lab.client.spawn_thread(move || {
        let mut s = TcpStream::connect_timeout(&lab::vip(9000), Duration::from_secs(5)).unwrap();
        let (mut state, mut h) = (7u64, Sha256::new());
        send(&mut s, 100 << 20, &mut state, &mut h);
        half_tx.send(()).unwrap();
        go_rx.recv_timeout(Duration::from_secs(60)).unwrap();
        send(&mut s, 100 << 20, &mut state, &mut h);
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let _ = s.read(&mut [0u8; 1]);
        let d: [u8; 32] = h.finalize().into();
        d
    });
    half_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    // Mid-transfer: add, edit and delete other real servers, and change this one's weight.
    ok(&lab, &format!("-a -t {vip}:9000 -r {rs2}:9000 -m -w 2"));
    ok(&lab, &format!("-a -t {vip}:9000 -r {rs3}:9000 -m"));
    ok(&lab, &format!("-e -t {vip}:9000 -r {rs2}:9000 -m -w 5"));
    ok(&lab, &format!("-d -t {vip}:9000 -r {rs3}:9000"));
    ok(&lab, &format!("-e -t {vip}:9000 -r {rs1}:9000 -m -w 0"));
    ok(&lab, &format!("-E -t {vip}:9000 -s wlc"));
    ok(&lab, &format!("-e -t {vip}:9000 -r {rs1}:9000 -m -w 4"));
    let list = ok(&lab, "-L -n");
    assert!(
        list.contains(&dest_line(&format!("{rs1}:9000"), "Masq", 4, 1, 0)),
        "{list}"
    );
    go_tx.send(()).unwrap();
    let sent = client.join().unwrap();
    let (n, got) = sink.wait(Duration::from_secs(60)).unwrap();
    assert_eq!(n, 200 << 20);
    assert_eq!(got, sent, "the transfer survived the edits intact");
}

fn metric(text: &str, name: &str, real: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && l.contains(&format!("real=\"{real}\""))
                && l.contains("direction=\"in\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[test]
fn metrics_scrape_shows_counters_moving() {
    if !precheck() {
        return;
    }
    let mut lab = Lab::build(1).unwrap();
    lab.start(&format!(
        "{}{}",
        lab::base_config(2),
        lab::nat_service("tcp", 80, "rr", &[(0, 80, 1)])
    ))
    .unwrap();
    let _http = http_servers(&lab, 80);
    let real = format!("{}:80", lab::real_addr(0));
    lab.client
        .run(|| traffic::http_split(lab::vip(80), 5, Duration::from_secs(5)))
        .unwrap();
    let mut first = 0;
    wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
        first = metric(&scrape(&lab).1, "tapvs_real_packets_total", &real);
        first > 0
    });
    assert!(first > 0);
    lab.client
        .run(|| traffic::http_split(lab::vip(80), 5, Duration::from_secs(5)))
        .unwrap();
    let mut body = String::new();
    let moved = wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
        body = scrape(&lab).1;
        metric(&body, "tapvs_real_packets_total", &real) > first
    });
    assert!(moved, "{body}");
    assert_eq!(scrape(&lab).0, 200);
    for name in [
        "tapvs_frames_total",
        "tapvs_real_connections_total",
        "tapvs_real_active_connections",
        "tapvs_real_up",
        "tapvs_connections_created_total",
    ] {
        assert!(body.contains(name), "{name} missing:\n{body}");
    }
}

/// One keep-alive HTTP request on an open connection; the body, or the error.
fn keepalive_get(s: &mut TcpStream) -> std::io::Result<String> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")?;
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if body.len() >= len {
                return Ok(body[..len].to_string());
            }
        }
    }
}

#[test]
fn deleted_real_server_connections_follow_expire_nodest_conn() {
    if !precheck() {
        return;
    }
    for expire in [false, true] {
        let mut lab = Lab::build(1).unwrap();
        let cfg = lab::base_config(2).replace(
            "[control]\n",
            &format!("[control]\nexpire_nodest_conn = {expire}\n"),
        );
        lab.start(&format!(
            "{cfg}{}",
            lab::nat_service("tcp", 80, "rr", &[(0, 80, 1)])
        ))
        .unwrap();
        let _http = http_servers(&lab, 80);
        let mut s = lab
            .client
            .run(|| TcpStream::connect_timeout(&lab::vip(80), Duration::from_secs(5)))
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(keepalive_get(&mut s).unwrap(), "rs1");
        ok(
            &lab,
            &format!("-d -t {}:80 -r {}:80", lab::VIP, lab::real_addr(0)),
        );
        let again = keepalive_get(&mut s);
        if expire {
            assert!(
                again.is_err(),
                "expire_nodest_conn=1 ends the connection: {again:?}"
            );
            let st = common::wait_stats(&lab, |st| st.dropped("dest_removed") > 0);
            assert!(st.dropped("dest_removed") > 0);
        } else {
            assert_eq!(
                again.unwrap(),
                "rs1",
                "expire_nodest_conn=0: the connection goes on"
            );
        }
    }
}
