//! The flood harness of `tests/flood.rs` (issue 20): hping3 run for a bounded time from a
//! namespace ([`Flood`]), a legitimate client loop that records each request's outcome and
//! latency so success and p99 can be read per phase ([`Legit`], [`Phase`]), the resident memory
//! of a process ([`rss_kib`]) and a SYN counter at a real server ([`SynCounter`], iptables).

use std::io::Read;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tapvs_lab::netns::{Netns, NsChild};

/// Whether hping3 is installed (scripts/deps installs it).
pub fn have_hping3() -> bool {
    std::process::Command::new("hping3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// A running hping3, stopped by [`Flood::stop`] (SIGINT, so it prints its statistics) or,
/// at the latest, killed on drop.
pub struct Flood {
    child: NsChild,
    started: Instant,
}

/// What a finished flood reports.
#[derive(Debug, Clone, Copy)]
pub struct FloodReport {
    /// Packets hping3 says it sent (0 if it printed no statistics).
    pub sent: u64,
    /// How long it ran.
    pub ran: Duration,
}

impl Flood {
    /// Starts `hping3 ARGS...` in `ns` (stdout and stderr kept for its statistics) at the
    /// lowest CPU priority (`nice -n 19`): a real attacker does not share the balancer's cores,
    /// here hping3 does, and at normal priority its send loop takes the CPU tapvs needs to read
    /// its queues, so that the kernel drops frames at the TAP (legitimate ones with the rest)
    /// for want of CPU rather than anything tapvs decides. It still sends as fast as the CPU
    /// left over allows.
    pub fn start(ns: &Netns, args: &[&str]) -> Flood {
        let mut argv = vec!["nice", "-n", "19", "hping3"];
        argv.extend_from_slice(args);
        let child = ns
            .spawn(&argv, Stdio::piped(), Stdio::piped())
            .expect("hping3");
        Flood {
            child,
            started: Instant::now(),
        }
    }

    /// Whether hping3 is still running.
    pub fn running(&self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGINT, waits (bounded, 3 s) for hping3 to print its statistics and exit (then
    /// kills it), and reads the packets sent.
    pub fn stop(self) -> FloodReport {
        let ran = self.started.elapsed();
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        if !matches!(self.child.wait_timeout(Duration::from_secs(3)), Ok(Some(_))) {
            let _ = self.child.kill();
        }
        let mut text = String::new();
        for mut r in [
            self.child
                .take_stdout()
                .map(|o| Box::new(o) as Box<dyn Read>),
            self.child
                .take_stderr()
                .map(|e| Box::new(e) as Box<dyn Read>),
        ]
        .into_iter()
        .flatten()
        {
            let _ = r.read_to_string(&mut text);
        }
        FloodReport {
            sent: packets_transmitted(&text).unwrap_or(0),
            ran,
        }
    }
}

/// hping3's "N packets transmitted" figure.
pub fn packets_transmitted(text: &str) -> Option<u64> {
    let at = text.find(" packets transmitted")?;
    text[..at].split_whitespace().last()?.parse().ok()
}

/// One request of the legitimate client: when it started (since the loop began), whether it
/// succeeded, and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Start, from the loop's start.
    pub at: Duration,
    /// Success.
    pub ok: bool,
    /// Duration.
    pub took: Duration,
}

/// A legitimate client loop on its own thread in a namespace: `request` (one request per
/// connection or datagram, with its own short timeout) again and again with `gap` between,
/// until stopped or `limit` passes.
pub struct Legit {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<JoinHandle<()>>,
    t0: Instant,
}

impl Legit {
    /// Starts the loop in `ns`.
    pub fn start(
        ns: &Netns,
        gap: Duration,
        limit: Duration,
        request: impl Fn() -> bool + Send + 'static,
    ) -> Legit {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let t0 = Instant::now();
        let thread = {
            let (stop, samples) = (stop.clone(), samples.clone());
            ns.spawn_thread(move || {
                while !stop.load(Ordering::Relaxed) && t0.elapsed() < limit {
                    let at = t0.elapsed();
                    let ok = request();
                    let took = t0.elapsed() - at;
                    samples.lock().unwrap().push(Sample { at, ok, took });
                    std::thread::sleep(gap);
                }
            })
        };
        Legit {
            stop,
            samples,
            thread: Some(thread),
            t0,
        }
    }

    /// Time since the loop started (the clock of [`Sample::at`]).
    pub fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    /// Stops the loop and returns every sample.
    pub fn finish(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.samples.lock().unwrap())
    }
}

impl Drop for Legit {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The requests that started in `[from, to)`: count, success ratio and 99th-percentile latency.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    /// Requests.
    pub n: usize,
    /// Requests that succeeded.
    pub ok: usize,
    /// 99th percentile of the durations (all requests, failed ones at their timeout).
    pub p99: Duration,
}

impl Phase {
    /// The phase of `samples` that started in `[from, to)`.
    pub fn of(samples: &[Sample], from: Duration, to: Duration) -> Phase {
        let mut took: Vec<Duration> = samples
            .iter()
            .filter(|s| s.at >= from && s.at < to)
            .map(|s| s.took)
            .collect();
        let ok = samples
            .iter()
            .filter(|s| s.at >= from && s.at < to && s.ok)
            .count();
        took.sort();
        let p99 = match took.len() {
            0 => Duration::ZERO,
            n => took[((n * 99).div_ceil(100)).saturating_sub(1).min(n - 1)],
        };
        Phase {
            n: took.len(),
            ok,
            p99,
        }
    }

    /// Success ratio (1.0 for an empty phase).
    pub fn success(&self) -> f64 {
        if self.n == 0 {
            1.0
        } else {
            self.ok as f64 / self.n as f64
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} ok ({:.1} %), p99 {:.1} ms",
            self.ok,
            self.n,
            self.success() * 100.0,
            self.p99.as_secs_f64() * 1000.0
        )
    }
}

/// Frames the kernel dropped on `dev` in `ns` on their way out of it (`ip -s link`: TX
/// dropped). On the appliance's TAP these are frames its queues had no room for: what tapvs
/// did not read in time.
pub fn tx_dropped(ns: &Netns, dev: &str) -> u64 {
    let text = ns
        .ip(&["-s", "link", "show", "dev", dev])
        .unwrap_or_default();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l.trim_start().starts_with("TX:") {
            return lines
                .next()
                .and_then(|v| v.split_whitespace().nth(3)?.parse().ok())
                .unwrap_or(0);
        }
    }
    0
}

/// Resident memory (VmRSS) of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// Two iptables rules in a real server's namespace counting the TCP SYNs to `port`: those from
/// `legit` (so a test can see that the counting works) and those from anyone else.
pub struct SynCounter<'a> {
    ns: &'a Netns,
}

impl<'a> SynCounter<'a> {
    /// Installs the rules (the namespace's own INPUT chain; gone with the namespace).
    pub fn install(ns: &'a Netns, legit: std::net::Ipv4Addr, port: u16) -> SynCounter<'a> {
        let (port, legit) = (port.to_string(), legit.to_string());
        for (not, tag) in [(None, "legit"), (Some("!"), "others")] {
            let mut argv = vec!["iptables", "-A", "INPUT", "-p", "tcp", "--syn"];
            argv.extend(["--dport", &port]);
            argv.extend(not);
            argv.extend([
                "-s",
                &legit,
                "-m",
                "comment",
                "--comment",
                tag,
                "-j",
                "ACCEPT",
            ]);
            let out = ns.exec(&argv).expect("iptables");
            assert!(out.status.success(), "iptables: {out:?}");
        }
        SynCounter { ns }
    }

    /// SYNs counted so far: (from the legitimate client, from anyone else).
    pub fn count(&self) -> (u64, u64) {
        let out = self
            .ns
            .exec(&["iptables", "-L", "INPUT", "-v", "-n", "-x"])
            .expect("iptables -L");
        let text = String::from_utf8_lossy(&out.stdout);
        let of = |tag: &str| {
            text.lines()
                .find(|l| l.contains(&format!("/* {tag} */")))
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        (of("legit"), of("others"))
    }
}
