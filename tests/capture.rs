//! `tapvs capture` end to end: a NAT service in the lab namespaces, a bulk transfer through it,
//! and the `tapvs capture` binary talking to the daemon's control socket. The pcap it writes is
//! read back by tshark, which must see both directions on both sides of the appliance
//! (client and VIP, client and real server after NAT). Also: one capture at a time, the
//! capture of a client killed with SIGKILL ends (a new one starts), SIGINT ends a capture
//! cleanly, the summary lines without `-w`, and the capture counters in /metrics.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::lab::{self, Lab};
use common::{any, scrape};
use tapvs_lab::netns::{precheck, wait_until};
use tapvs_lab::traffic::{self, BulkSink};

const TAPVS: &str = env!("CARGO_BIN_EXE_tapvs");

/// A running `tapvs capture`: its stderr lines arrive on a channel; killed on drop.
struct Capture {
    child: Child,
    stderr: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Capture {
    /// Starts `tapvs capture --socket SOCK ARGS...` and waits (bounded) until the daemon has
    /// accepted it (its "capturing" line), so frames sent afterwards are captured.
    fn start(lab: &Lab, args: &[&str]) -> Capture {
        let mut c = Capture::spawn(lab, args);
        let line = c.line(Duration::from_secs(10)).expect("capture started");
        assert!(
            line.starts_with("tapvs capture: capturing"),
            "{line}: {:?}",
            c.seen
        );
        c
    }

    fn spawn(lab: &Lab, args: &[&str]) -> Capture {
        let mut child = Command::new(TAPVS)
            .arg("capture")
            .args(["--socket", &lab.socket()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tapvs capture");
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Capture {
            child,
            stderr: rx,
            seen: Vec::new(),
        }
    }

    /// The next stderr line, within `timeout`.
    fn line(&mut self, timeout: Duration) -> Option<String> {
        let l = self.stderr.recv_timeout(timeout).ok()?;
        self.seen.push(l.clone());
        Some(l)
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Waits (bounded) for the exit; its status, everything on stderr, and stdout.
    fn finish(mut self, timeout: Duration) -> (bool, String, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "tapvs capture still running after {timeout:?}: {:?}",
                self.seen
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Some(l) = self.line(Duration::from_secs(2)) {
            let _ = l;
        }
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut o, &mut out);
        }
        (status.success(), self.seen.join("\n"), out)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A file in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str) -> TempFile {
        TempFile(
            std::env::temp_dir().join(format!("tapvs-capture-{}-{tag}.pcap", std::process::id())),
        )
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn nat_lab() -> Lab {
    let mut lab = Lab::build(1).expect("build lab");
    lab.start(&format!(
        "{}{}",
        lab::base_config(2),
        lab::nat_service("tcp", 9000, "rr", &[(0, 9000, 1)])
    ))
    .expect("start tapvs");
    lab
}

/// Sends `bytes` through VIP:9000 to the real server's sink and checks they arrived.
fn transfer(lab: &Lab, bytes: u64) {
    let sink = lab.reals[0]
        .run(|| BulkSink::start(any(9000)))
        .expect("sink");
    let sent = lab
        .client
        .run(|| traffic::bulk_send(lab::vip(9000), bytes, 3, Duration::from_secs(30)))
        .expect("bulk send");
    let (n, got) = sink.wait(Duration::from_secs(30)).expect("sink result");
    assert_eq!((n, got), (bytes, sent));
}

fn metric(lab: &Lab, name: &str) -> Option<f64> {
    let (_, body) = scrape(lab);
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
}

#[test]
fn pcap_of_a_transfer_has_both_directions_on_both_sides() {
    if !precheck() {
        return;
    }
    let lab = nat_lab();
    let pcap = TempFile::new("nat");
    let vip = format!("{}:9000", lab::VIP);
    let cap = Capture::start(
        &lab,
        &[
            "--service",
            &vip,
            "--count",
            "300",
            "-w",
            &pcap.path().display().to_string(),
        ],
    );
    // A second capture is refused while this one runs.
    let second = Capture::spawn(&lab, &["--count", "1"]);
    let (ok, err, _) = second.finish(Duration::from_secs(10));
    assert!(!ok, "a second capture must be refused");
    assert!(err.contains("a capture is already running"), "{err}");

    transfer(&lab, 32 << 20);
    let (ok, err, _) = cap.finish(Duration::from_secs(20));
    assert!(ok, "tapvs capture failed: {err}");
    eprintln!("{err}");
    assert!(err.contains("300 frames captured"), "{err}");
    assert!(err.contains("frames dropped by tapvs"), "{err}");

    let rows = common::tshark::fields(
        pcap.path(),
        &[],
        &[
            "ip.src",
            "ip.dst",
            "tcp.srcport",
            "tcp.dstport",
            "frame.len",
        ],
    );
    assert_eq!(rows.len(), 300, "tshark reads every frame");
    let (client, vip_ip, rs) = (
        lab::CLIENT.to_string(),
        lab::VIP.to_string(),
        lab::real_addr(0).to_string(),
    );
    let count = |src: &str, dst: &str, port_at_dst: bool| {
        rows.iter()
            .filter(|r| {
                let f: Vec<&str> = r.split('\t').collect();
                let port = if port_at_dst { f[3] } else { f[2] };
                f[0] == src && f[1] == dst && port == "9000"
            })
            .count()
    };
    let to_vip = count(&client, &vip_ip, true);
    let from_vip = count(&vip_ip, &client, false);
    let to_rs = count(&client, &rs, true);
    let from_rs = count(&rs, &client, false);
    eprintln!(
        "capture: client>VIP {to_vip}, VIP>client {from_vip}, client>RS {to_rs}, RS>client {from_rs}"
    );
    assert!(
        to_vip > 0 && from_vip > 0,
        "both directions on the VIP side"
    );
    assert!(
        to_rs > 0 && from_rs > 0,
        "both directions on the real server's side"
    );
    assert_eq!(
        to_vip + from_vip + to_rs + from_rs,
        300,
        "only the service's frames"
    );
    // GSO super-frames are cut at the snap length, their length kept.
    assert!(
        rows.iter()
            .any(|r| r.rsplit('\t').next().and_then(|l| l.parse::<u32>().ok()) > Some(2048)),
        "no frame longer than the snap length (GSO) was seen"
    );
    assert!(metric(&lab, "tapvs_capture_frames_total").unwrap_or(0.0) >= 300.0);
    assert!(metric(&lab, "tapvs_capture_dropped_frames_total").is_some());
}

#[test]
fn sigint_and_sigkill_end_a_capture_and_lines_without_w() {
    if !precheck() {
        return;
    }
    let lab = nat_lab();
    // An output that cannot be created: refused before the daemon is asked.
    let bad = Capture::spawn(&lab, &["-w", "/nonexistent-dir/x.pcap"]);
    let (ok, err, _) = bad.finish(Duration::from_secs(10));
    assert!(!ok && err.contains("/nonexistent-dir/x.pcap"), "{err}");
    // A client killed with SIGKILL: the daemon notices and ends the capture, so the next one
    // is accepted (bounded retry while it notices).
    let doomed = Capture::start(&lab, &[]);
    doomed.signal("-KILL");
    drop(doomed);
    let mut next = None;
    let accepted = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let mut c = Capture::spawn(&lab, &["--real", &lab::real_addr(0).to_string()]);
        match c.line(Duration::from_secs(5)) {
            Some(l) if l.starts_with("tapvs capture: capturing") => {
                next = Some(c);
                true
            }
            _ => false,
        }
    });
    assert!(accepted, "a capture after a killed client was refused");
    let cap = next.expect("capture");
    transfer(&lab, 1 << 20);
    // SIGINT: a clean end with the counts; summary lines on stdout.
    cap.signal("-INT");
    let (ok, err, out) = cap.finish(Duration::from_secs(10));
    assert!(ok, "SIGINT must end the capture cleanly: {err}");
    assert!(err.contains("frames dropped by tapvs"), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(!lines.is_empty(), "no summary lines: {err}");
    let rs = lab::real_addr(0);
    let client = lab::CLIENT;
    // The real server's side and, linked to it, the client's side of the same packets.
    for want in [
        format!(" int out {client}:"),
        format!(" int in  {rs}:9000 > {client}:"),
        format!(" ext in  {client}:"),
        format!(" ext out {}:9000 > {client}:", lab::VIP),
    ] {
        assert!(
            lines.iter().any(|l| l.contains(&want)),
            "no line with {want:?} in {} lines, e.g. {:?}",
            lines.len(),
            &lines[..lines.len().min(5)]
        );
    }
    let n: usize = err
        .lines()
        .find_map(|l| l.strip_suffix(" frames captured")?.parse().ok())
        .expect("frames captured line");
    assert_eq!(n, lines.len());
}

/// A capture of every frame during a 128 MiB transfer: forwarding is unaffected (the data
/// arrives intact), and what the capture cannot keep is counted, not blocking the workers.
#[test]
fn capturing_everything_under_load_keeps_forwarding() {
    if !precheck() {
        return;
    }
    let lab = nat_lab();
    let cap = Capture::start(&lab, &["-w", "/dev/null"]);
    let t0 = Instant::now();
    transfer(&lab, 128 << 20);
    let secs = t0.elapsed().as_secs_f64();
    cap.signal("-TERM");
    let (ok, err, _) = cap.finish(Duration::from_secs(10));
    assert!(ok, "SIGTERM must end the capture cleanly: {err}");
    let num = |suffix: &str| -> u64 {
        err.lines()
            .find_map(|l| l.strip_suffix(suffix)?.parse().ok())
            .unwrap_or_else(|| panic!("no {suffix:?} line in {err}"))
    };
    let (frames, dropped) = (num(" frames captured"), num(" frames dropped by tapvs"));
    eprintln!(
        "capture of everything: 128 MiB in {secs:.2} s ({:.2} Gbit/s), {frames} frames captured, {dropped} dropped",
        (128u64 << 23) as f64 / secs / 1e9
    );
    assert!(frames > 0);
    let delivered = metric(&lab, "tapvs_capture_frames_total").unwrap_or(0.0);
    assert_eq!(delivered as u64, frames);
    // Workers still in the round that saw the capture end may have counted a few more.
    let lost = metric(&lab, "tapvs_capture_dropped_frames_total").unwrap_or(-1.0);
    assert!(lost >= dropped as f64, "{lost} < {dropped}");
}
