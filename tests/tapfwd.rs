//! `tapvs tapfwd`, the bare benchmark forwarder, end to end: two namespaces on two separate
//! bridges can reach each other only through it; a ping and an 8 MB TCP transfer (SHA-256
//! compared) cross it, and its exit JSON counts the frames and system calls.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tapvs_lab::netns::{bridge, precheck, veth, Netns};
use tapvs_lab::traffic::{bulk_digest, bulk_send, BulkSink};

const BIN: &str = env!("CARGO_BIN_EXE_tapvs");
const BYTES: u64 = 8 * 1024 * 1024;

fn ping(ns: &Netns, dst: &str, count: &str) -> bool {
    ns.exec(&["ping", "-c", count, "-i", "0.2", "-W", "1", "-q", dst])
        .is_ok()
}

#[test]
fn frames_cross_the_bare_forwarder() {
    if !precheck() {
        return;
    }
    let started = Instant::now();
    // Declared first, dropped last: the namespaces outlive the child and the sink.
    let fwd_ns = Netns::new("fwd").expect("netns");
    let left = Netns::new("left").expect("netns");
    let right = Netns::new("right").expect("netns");
    veth((&left, "eth0"), (&fwd_ns, "vl")).expect("veth");
    veth((&right, "eth0"), (&fwd_ns, "vr")).expect("veth");
    bridge(&fwd_ns, "bl", &["vl"]).expect("bridge");
    bridge(&fwd_ns, "br", &["vr"]).expect("bridge");
    left.add_addr("eth0", "10.77.0.1/24").unwrap();
    right.add_addr("eth0", "10.77.0.2/24").unwrap();

    // Two separate segments: nothing crosses before the forwarder runs.
    assert!(
        !ping(&left, "10.77.0.2", "1"),
        "the bridges are not joined yet"
    );

    let child = fwd_ns
        .spawn(
            &[
                BIN,
                "tapfwd",
                "--a",
                "fl",
                "--b",
                "fr",
                "--bridge-a",
                "bl",
                "--bridge-b",
                "br",
            ],
            Stdio::piped(),
            Stdio::piped(),
        )
        .expect("spawn tapfwd");
    let mut err = child.take_stderr().expect("stderr");
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("tapfwd ready") {
        match err.read(&mut byte) {
            Ok(1) => seen.push(byte[0]),
            _ => panic!("tapfwd exited: {}", String::from_utf8_lossy(&seen)),
        }
    }
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut err, &mut std::io::sink());
    });

    // ARP and ICMP cross (the first ping may be lost while the bridges learn; 3 tries).
    assert!(ping(&left, "10.77.0.2", "3"), "no ping through tapfwd");

    let sink = right
        .run(|| BulkSink::start(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 9100))))
        .expect("sink");
    let dst = SocketAddr::from(([10, 77, 0, 2], 9100));
    let sent = left
        .run(move || bulk_send(dst, BYTES, 7, Duration::from_secs(10)))
        .expect("bulk send through tapfwd");
    let (got, digest) = sink.wait(Duration::from_secs(10)).expect("sink result");
    assert_eq!(got, BYTES);
    assert_eq!(digest, sent);
    assert_eq!(digest, bulk_digest(BYTES, 7));

    // SIGTERM: it stops and prints its counters.
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let status = child
        .wait_timeout(Duration::from_secs(5))
        .expect("wait")
        .expect("tapfwd did not stop on SIGTERM");
    assert!(status.success(), "tapfwd exit: {status}");
    let mut out = String::new();
    child
        .take_stdout()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read stdout");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
    let n = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {out}"));
    // Payload in one direction alone exceeds 8 MB; every frame cost a read and a write.
    assert!(n("bytes") > BYTES, "{out}");
    assert!(n("frames") > 10, "{out}");
    assert!(n("syscalls") >= 2 * n("frames"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}
