//! `/metrics` and the control socket under abuse, against a `tapvs run` process in a namespace
//! of its own: a client sending a 100 MB request line and a client sending one byte per second
//! to each, all at once. Meanwhile other clients are served (a scrape and `tapvsadm -L -n`,
//! each within 2 s), the greedy clients are cut off at the size limits, the slow ones at the
//! deadlines, and the daemon's peak memory (VmHWM) grows by less than 32 MiB. Then scrapes
//! beyond the concurrency cap get a 503 at once.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tapvs_lab::netns::{precheck, wait_until, Netns};

const BIN: &str = env!("CARGO_BIN_EXE_tapvs");
const ADM: &str = env!("CARGO_BIN_EXE_tapvsadm");
const METRICS: &str = "127.0.0.1:9273";
const HUNDRED_MB: usize = 100 << 20;

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn metrics_addr() -> SocketAddr {
    METRICS.parse().unwrap()
}

/// The daemon's peak resident memory, in KiB.
fn vm_hwm(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM")
}

/// `tapvsadm -L -n`: whether it succeeded, and how long it took.
fn list(socket: &str) -> (bool, Duration) {
    let t0 = Instant::now();
    let o = Command::new(ADM)
        .args(["--socket", socket, "-L", "-n"])
        .stdin(Stdio::null())
        .output()
        .expect("tapvsadm");
    (
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains("TCP  192.0.2.1:80"),
        t0.elapsed(),
    )
}

/// A scrape from inside the namespace: whether it answered 200 with the metrics, and how long
/// it took.
fn scrape(ns: &Netns) -> (bool, Duration) {
    ns.run(|| {
        let t0 = Instant::now();
        let r = tapvs_lab::traffic::http_get(metrics_addr(), "/metrics", Duration::from_secs(5));
        (
            r.is_ok_and(|(code, body)| code == 200 && body.contains("tapvs_build_info")),
            t0.elapsed(),
        )
    })
}

/// Writes `total` bytes of `first` then filler to `w` in 64 KiB chunks until an error or
/// `limit` passes; returns the bytes written and the time it took.
fn flood(mut w: impl Write, first: &[u8], limit: Duration) -> (usize, Duration, bool) {
    let t0 = Instant::now();
    let chunk = vec![b'a'; 64 << 10];
    let mut sent = 0;
    if w.write_all(first).is_err() {
        return (0, t0.elapsed(), true);
    }
    while sent < HUNDRED_MB && t0.elapsed() < limit {
        match w.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => return (sent, t0.elapsed(), true),
        }
    }
    (sent, t0.elapsed(), false)
}

/// Sends `bytes` one per second (stopping at the first failed write); returns when the
/// connection was closed by the server (`Some(time)`) or `None` if it never was.
fn trickle(mut w: impl Write, bytes: &[u8]) -> Option<Duration> {
    let t0 = Instant::now();
    for b in bytes {
        if w.write_all(&[*b]).is_err() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    None
}

#[test]
fn slow_and_greedy_clients_neither_block_nor_bloat() {
    if !precheck() {
        return;
    }
    let pid = std::process::id();
    let dir = Scratch(std::env::temp_dir().join(format!("tapvs-abuse-{pid}")));
    std::fs::create_dir_all(&dir.0).unwrap();
    let socket = dir.0.join("tapvs.sock").display().to_string();
    let cfg = format!(
        r#"workers = 1
steering = "flow"

[control]
socket = "{socket}"

[metrics]
listen = "{METRICS}"

[[port]]
name = "seg"
tap = "tab{n}"
addresses = ["10.77.0.1/24"]

[[service]]
protocol = "tcp"
address = "192.0.2.1:80"
scheduler = "rr"
[[service.real]]
address = "10.77.0.2:80"
"#,
        n = pid % 100_000
    );
    let path = dir.0.join("tapvs.toml");
    std::fs::write(&path, cfg).unwrap();
    let ns = Netns::new("abuse").unwrap();
    let log = dir.0.join("tapvs.log");
    let child = ns
        .spawn(
            &[BIN, "run", "--config", &path.display().to_string()],
            Stdio::null(),
            Stdio::from(File::create(&log).unwrap()),
        )
        .unwrap();
    let up = wait_until(Duration::from_secs(20), Duration::from_millis(50), || {
        list(&socket).0 && scrape(&ns).0
    });
    assert!(
        up,
        "tapvs did not come up: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let before = vm_hwm(child.id());

    // The abusers, all at once.
    let greedy_metrics = ns.spawn_thread(|| {
        // The 431 may be lost to the reset of the unread bytes; a close is what counts.
        let s = TcpStream::connect(metrics_addr()).unwrap();
        flood(
            &s,
            b"GET /metrics HTTP/1.1\r\nX-Filler: ",
            Duration::from_secs(15),
        )
    });
    let greedy_control = {
        let socket = socket.clone();
        std::thread::spawn(move || {
            let s = UnixStream::connect(&socket).unwrap();
            let r = flood(
                &s,
                b"{\"args\":[\"-L\"],\"stdin\":\"",
                Duration::from_secs(15),
            );
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut answer = String::new();
            let _ = BufReader::new(&s).read_line(&mut answer);
            (r, answer)
        })
    };
    let slow_metrics = ns.spawn_thread(|| {
        let s = TcpStream::connect(metrics_addr()).unwrap();
        let t0 = Instant::now();
        let w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || trickle(w, b"GET /metrics"));
        s.set_read_timeout(Some(Duration::from_secs(12))).unwrap();
        let mut answer = String::new();
        let _ = (&s).read_to_string(&mut answer);
        let took = t0.elapsed();
        let _ = s.shutdown(std::net::Shutdown::Both);
        let _ = writer.join();
        (answer, took)
    });
    let slow_control = {
        let socket = socket.clone();
        std::thread::spawn(move || {
            let s = UnixStream::connect(&socket).unwrap();
            let t0 = Instant::now();
            let w = s.try_clone().unwrap();
            let writer = std::thread::spawn(move || trickle(w, b"{\"args\":[\"-L\"]}"));
            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
            let mut answer = String::new();
            let _ = BufReader::new(&s).read_line(&mut answer);
            let took = t0.elapsed();
            let _ = s.shutdown(std::net::Shutdown::Both);
            let _ = writer.join();
            (answer, took)
        })
    };

    // Meanwhile, everyone else is served promptly.
    for round in 0..4 {
        std::thread::sleep(Duration::from_millis(1500));
        let (ok, took) = scrape(&ns);
        assert!(
            ok && took < Duration::from_secs(2),
            "scrape {round}: {ok} in {took:?}"
        );
        let (ok, took) = list(&socket);
        assert!(
            ok && took < Duration::from_secs(2),
            "tapvsadm -L -n {round}: {ok} in {took:?}"
        );
    }

    let (sent, took, closed) = greedy_metrics.join().unwrap();
    assert!(
        closed,
        "/metrics took {sent} bytes in {took:?} without closing"
    );
    assert!(sent < 16 << 20, "/metrics read {sent} bytes before closing");
    let ((sent, took, closed), answer) = greedy_control.join().unwrap();
    assert!(closed, "the control socket took {sent} bytes in {took:?}");
    assert!(
        sent < 32 << 20,
        "the control socket read {sent} bytes before closing"
    );
    assert!(
        answer.contains("request refused: larger than 16 MiB"),
        "{answer:?}"
    );
    let (answer, took) = slow_metrics.join().unwrap();
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(8),
        "408 after {took:?}"
    );
    let (answer, took) = slow_control.join().unwrap();
    assert!(
        answer.contains("request refused: not received within 10 s"),
        "{answer:?}"
    );
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(13),
        "refused after {took:?}"
    );

    let after = vm_hwm(child.id());
    eprintln!("VmHWM: {before} KiB before, {after} KiB after the abuse");
    assert!(
        after < before + (32 << 10),
        "peak memory grew from {before} KiB to {after} KiB"
    );

    // Beyond the cap of concurrent scrapes: a 503 at once, not a wait.
    let (first, busy, held) = ns.run(|| {
        // Connections that send nothing hold the slots; once all are taken, the next one is
        // answered 503 (each attempt waits at most 500 ms for that).
        let mut idle = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let t0 = Instant::now();
            let mut s = TcpStream::connect(metrics_addr()).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            if !answer.is_empty() || Instant::now() > deadline {
                return (answer, t0.elapsed(), idle.len());
            }
            idle.push(s);
        }
    });
    assert!(first.starts_with("HTTP/1.1 503 "), "{first:?}");
    assert_eq!(held, 8, "slots taken before the 503");
    assert!(busy < Duration::from_secs(1), "503 after {busy:?}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "tapvs is still running"
    );
}
