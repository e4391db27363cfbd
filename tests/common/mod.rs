//! Helpers shared by the netns integration tests: tapvs in the lab topology ([`lab`], the same
//! glue `tapvs demo` uses), starting HTTP servers in the lab's real servers and waiting for the
//! daemon's counters. `rig.rs` beside this file is not declared here: the root-less pipeline
//! tests include it by `#[path]`, without this harness.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use lab::Lab;
use tapvs::datapath::stats::Stats;
use tapvs_lab::netns::wait_until;
use tapvs_lab::traffic::HttpServer;

/// Runs `tapvsadm --socket SOCKET ARGS...` (words split on white space), with `stdin` written
/// from a thread when given (the daemon may answer before tapvsadm has read it all).
pub fn tapvsadm(socket: &str, args: &str, stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut c = Command::new(env!("CARGO_BIN_EXE_tapvsadm"));
    c.arg("--socket").arg(socket).args(args.split_whitespace());
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("tapvsadm");
    if let Some(input) = stdin {
        let mut w = child.stdin.take().expect("stdin");
        let input = input.to_string();
        std::thread::spawn(move || {
            let _ = w.write_all(input.as_bytes());
        });
    }
    child.wait_with_output().expect("tapvsadm output")
}

/// `0.0.0.0:port`.
pub fn any(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
}

/// Sends 32 random bytes to `vip` (its port) from the client and returns them with what real
/// server 0 received on that port (the selftest's check), through a std listener of the
/// VIP's family.
pub fn selftest_transfer(lab: &Lab, vip: SocketAddr) -> (Vec<u8>, Vec<u8>) {
    use std::io::{Read, Write};
    let bind = SocketAddr::new(
        match vip {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        },
        vip.port(),
    );
    let listener = lab.reals[0]
        .run(|| std::net::TcpListener::bind(bind))
        .expect("listener");
    let mut payload = vec![0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut payload)
        .unwrap();
    let p = payload.clone();
    lab.client.run(move || {
        let mut s = std::net::TcpStream::connect_timeout(&vip, Duration::from_secs(5))
            .expect("connect to the VIP");
        s.write_all(&p).unwrap();
    });
    let (mut c, _) = listener.accept().expect("accept");
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).expect("read");
    (payload, got)
}

/// Starts an HTTP server named `rs{i+1}` on `port` in every real server of the lab.
pub fn http_servers(lab: &Lab, port: u16) -> Vec<HttpServer> {
    lab.reals
        .iter()
        .enumerate()
        .map(|(i, rs)| {
            let name = format!("rs{}", i + 1);
            rs.run(move || HttpServer::start(any(port), &name))
                .expect("http server")
        })
        .collect()
}

/// An HTTPS server for SSL_GET tests.
/// `GET /metrics` on the daemon's metrics listener, from inside the director's namespace:
/// status and body.
pub fn scrape(lab: &Lab) -> (u16, String) {
    lab.director
        .run(|| {
            tapvs_lab::traffic::http_get(
                "127.0.0.1:9273".parse().unwrap(),
                "/metrics",
                Duration::from_secs(5),
            )
        })
        .unwrap()
}

/// Starts `tapvs rs-decap` (user-space IPIP and IPv6-in-IPv6 decapsulation) in `rs` and waits
/// for its ready line; its output is drained from then on so it never blocks on a full pipe.
pub fn rs_decap(rs: &tapvs_lab::netns::Netns) -> tapvs_lab::netns::NsChild {
    use std::io::Read;
    let child = rs
        .spawn(
            &[env!("CARGO_BIN_EXE_tapvs"), "rs-decap"],
            std::process::Stdio::piped(),
            std::process::Stdio::inherit(),
        )
        .expect("spawn rs-decap");
    let mut out = child.take_stdout().expect("stdout");
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut byte = [0u8; 1];
    while std::time::Instant::now() < deadline && !String::from_utf8_lossy(&seen).contains('\n') {
        match out.read(&mut byte) {
            Ok(1) => seen.push(byte[0]),
            _ => break,
        }
    }
    assert!(
        String::from_utf8_lossy(&seen).contains("rs-decap"),
        "rs-decap did not start: {:?}",
        String::from_utf8_lossy(&seen)
    );
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut out, &mut std::io::sink());
    });
    child
}

pub mod appliance;
pub mod flood;
pub mod stream;
pub mod tls;
pub mod tshark;

/// tapvs in the `tapvs-lab` topology (shared with the `tapvs` binary, see the file's docs).
#[path = "../../src/lab.rs"]
pub mod lab;

/// Waits (bounded) until the daemon's published counters satisfy `pred`; returns the last stats.
pub fn wait_stats(lab: &Lab, pred: impl Fn(&Stats) -> bool) -> Stats {
    let mut last = lab.daemon().stats();
    wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        last = lab.daemon().stats();
        pred(&last)
    });
    last
}
