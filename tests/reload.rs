//! Hitless reload in network namespaces, with tapvs as its own process (`tapvs run`), reloaded
//! by `tapvs reload` and by SIGHUP:
//! - under load: a 200 MB download and 50 keep-alive HTTP connections run through 10 reloads
//!   that add and remove services and real servers and change schedulers, weights and health
//!   checks; the download keeps its SHA-256, every keep-alive connection answers its next
//!   request, and after each reload `tapvsadm -S -n` is what the new config gives;
//! - refused reloads: an invalid config, and a changed worker count, are refused with the file,
//!   field and problem (or "restart needed") and leave `tapvsadm -S -n` unchanged; after a good
//!   reload `tapvsadm -S -n` equals a fresh daemon's on the same config. Every change is one
//!   JSON change-log line (`[log] format = "json"`).

mod common;

use common::stream::{expected_digest, fill, get_on, keep_alive};

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::lab::{self, Lab};
use tapvs_lab::netns::{precheck, wait_until, NsChild};

const BIN: &str = env!("CARGO_BIN_EXE_tapvs");
const ADM: &str = env!("CARGO_BIN_EXE_tapvsadm");
const MB200: u64 = 200 * 1024 * 1024;

/// A `tapvs run` process in the lab's director, with its config and log files (removed on
/// drop; the process is stopped by SIGTERM, or killed if it does not stop).
struct Tapvs {
    child: Option<NsChild>,
    socket: String,
    config: PathBuf,
    log: PathBuf,
}

impl Tapvs {
    fn start(lab: &Lab, tag: &str, text: &str) -> Tapvs {
        let dir = std::env::temp_dir();
        let id = std::process::id();
        let config = dir.join(format!("tapvs-reload-{tag}-{id}.toml"));
        let log = dir.join(format!("tapvs-reload-{tag}-{id}.log"));
        std::fs::write(&config, text).expect("write config");
        let socket = tapvs::config::parse(text, &config)
            .expect("valid config")
            .control
            .socket;
        let err = std::fs::File::create(&log).expect("log file");
        let child = lab
            .director
            .spawn(
                &[BIN, "run", "--config", config.to_str().unwrap()],
                Stdio::null(),
                Stdio::from(err),
            )
            .expect("spawn tapvs");
        let t = Tapvs {
            child: Some(child),
            socket,
            config,
            log,
        };
        assert!(
            wait_until(Duration::from_secs(20), Duration::from_millis(50), || t
                .adm(&["-S", "-n"])
                .status
                .success()),
            "tapvs answers on its control socket; log:\n{}",
            t.log_text()
        );
        t
    }

    fn adm(&self, args: &[&str]) -> Output {
        std::process::Command::new(ADM)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tapvsadm")
    }

    fn save(&self) -> String {
        let o = self.adm(&["-S", "-n"]);
        assert!(o.status.success(), "tapvsadm -S -n: {o:?}");
        String::from_utf8(o.stdout).unwrap()
    }

    fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("write config");
    }

    /// `tapvs reload --config FILE`.
    fn reload(&self) -> Output {
        std::process::Command::new(BIN)
            .args(["reload", "--config", self.config.to_str().unwrap()])
            .output()
            .expect("run tapvs reload")
    }

    /// `tapvs reload --socket S` (the daemon reads the file itself).
    fn reload_socket(&self) -> Output {
        std::process::Command::new(BIN)
            .args(["reload", "--socket", &self.socket])
            .output()
            .expect("run tapvs reload")
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let st = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(st.success(), "kill {sig} {pid}");
    }

    fn alive(&self) -> bool {
        self.child
            .as_ref()
            .is_some_and(|c| c.try_wait().is_ok_and(|s| s.is_none()))
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits (bounded) for the exit.
    fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait_timeout(Duration::from_secs(10));
        }
    }
}

impl Drop for Tapvs {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// What `tapvsadm -S -n` shows for `text` on a fresh daemon whose checks all pass: the table
/// the config gives, saved.
fn expected_save(text: &str) -> String {
    let cfg = tapvs::config::parse(text, std::path::Path::new("x.toml")).expect("config");
    let (t, _) = tapvs::control::table::Table::from_config(&cfg).expect("table");
    tapvs_adm::format::save(&t.listing(), true)
}

fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

const FAST: &str = "delay_loop = 1, connect_timeout = 1, retry = 1, delay_before_retry = 1";

/// The config of reload step `step` (0: the start). Always: VIP:80 (the keep-alive service,
/// real servers 1 and 2 with TCP checks that never change) and VIP:5001 (the download, real
/// server 1 only). Per step: VIP:80's scheduler and weights, real server 3 in VIP:80 on odd
/// steps, VIP:8080 (with a TCP check whose delay changes) on steps not ≡ 2 (mod 3), UDP
/// VIP:53 on even steps, VIP:5001's scheduler.
fn step_config(base: &str, step: usize) -> String {
    let vip = lab::VIP;
    let r = lab::real_addr;
    let sched80 = ["rr", "wrr", "wlc", "lc"][step % 4];
    let w = 1 + step % 3;
    let tcp = "\n[[service.real.check]]\ntype = \"tcp\"\n";
    let mut s = format!(
        "{base}\n[[service]]\nprotocol = \"tcp\"\naddress = \"{vip}:80\"\nscheduler = \"{sched80}\"\n\
         health = {{ {FAST} }}\n\
         \n[[service.real]]\naddress = \"{}:80\"\nweight = {w}\nforward = \"nat\"\n{tcp}\
         \n[[service.real]]\naddress = \"{}:80\"\nweight = 1\nforward = \"nat\"\n{tcp}",
        r(0),
        r(1)
    );
    if step % 2 == 1 {
        s.push_str(&format!(
            "\n[[service.real]]\naddress = \"{}:80\"\nweight = 2\nforward = \"nat\"\n",
            r(2)
        ));
    }
    let sched5001 = ["rr", "wlc"][step % 2];
    s.push_str(&format!(
        "\n[[service]]\nprotocol = \"tcp\"\naddress = \"{vip}:5001\"\nscheduler = \"{sched5001}\"\n\
         \n[[service.real]]\naddress = \"{}:5001\"\nweight = 1\nforward = \"nat\"\n",
        r(0)
    ));
    if step % 3 != 2 {
        s.push_str(&format!(
            "\n[[service]]\nprotocol = \"tcp\"\naddress = \"{vip}:8080\"\nscheduler = \"rr\"\n\
             health = {{ delay_loop = {}, connect_timeout = 1, retry = 1, delay_before_retry = 1 }}\n\
             \n[[service.real]]\naddress = \"{}:80\"\nweight = 1\nforward = \"nat\"\n\
             \n[[service.real]]\naddress = \"{}:80\"\nweight = {w}\nforward = \"nat\"\n{tcp}",
            1 + step % 2,
            r(1),
            r(2)
        ));
    }
    if step % 2 == 0 {
        s.push_str(&format!(
            "\n[[service]]\nprotocol = \"udp\"\naddress = \"{vip}:53\"\nscheduler = \"sh\"\n\
             \n[[service.real]]\naddress = \"{}:53\"\nweight = 1\nforward = \"nat\"\n",
            r(2)
        ));
    }
    s
}

#[test]
fn reload_under_load_keeps_the_download_and_the_keep_alive_connections() {
    if !precheck() {
        return;
    }
    let started = Instant::now();
    let lab = Lab::build(3).expect("lab");
    let _servers = common::http_servers(&lab, 80);
    let base = lab::base_config(2);
    let mut tapvs = Tapvs::start(&lab, "load", &step_config(&base, 0));
    assert_eq!(
        sorted_lines(&tapvs.save()),
        sorted_lines(&expected_save(&step_config(&base, 0)))
    );
    let vip = SocketAddr::from((lab::VIP, 80));
    let mut keep: Vec<TcpStream> = lab
        .client
        .run(|| keep_alive(vip, 50, Duration::from_secs(20)))
        .expect("50 keep-alive connections");

    // The download server: one client, 200 MB.
    let seed = 0x5eed_u64;
    let listener = lab.reals[0]
        .run(|| std::net::TcpListener::bind("0.0.0.0:5001"))
        .expect("bind 5001");
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_write_timeout(Some(Duration::from_secs(60)))?;
        let mut st = seed;
        let mut buf = vec![0u8; 65536];
        let mut left = MB200;
        while left > 0 {
            fill(&mut st, &mut buf);
            let n = left.min(buf.len() as u64) as usize;
            s.write_all(&buf[..n])?;
            left -= n as u64;
        }
        Ok(())
    });
    // The client reads 18 MB, then waits for the next reload to be done: each of the 10
    // reloads happens mid-transfer (TCP flow control holds the server meanwhile).
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (at_tx, at_rx) = std::sync::mpsc::channel::<u64>();
    let dl = lab
        .client
        .spawn_thread(move || -> std::io::Result<(u64, Vec<u8>)> {
            use sha2::Digest;
            let mut s = TcpStream::connect_timeout(
                &SocketAddr::from((lab::VIP, 5001)),
                Duration::from_secs(5),
            )?;
            s.set_read_timeout(Some(Duration::from_secs(30)))?;
            let mut h = sha2::Sha256::new();
            let mut buf = vec![0u8; 65536];
            let mut total = 0u64;
            let mut next_pause = 18 << 20;
            let mut pauses = 0;
            loop {
                let want = buf.len().min((next_pause - total) as usize).max(1);
                let n = s.read(&mut buf[..want])?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                total += n as u64;
                if total == next_pause && pauses < 10 {
                    pauses += 1;
                    let _ = at_tx.send(total);
                    // Bounded: the test reloads within seconds, or has failed.
                    go_rx
                        .recv_timeout(Duration::from_secs(60))
                        .map_err(std::io::Error::other)?;
                    next_pause += 18 << 20;
                }
            }
            Ok((total, h.finalize().to_vec()))
        });

    let mut reloads = 0;
    for step in 1..=10 {
        let at = at_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the download reached its next pause");
        let text = step_config(&base, step);
        tapvs.write_config(&text);
        let t0 = Instant::now();
        let o = if step % 2 == 0 {
            tapvs.reload()
        } else {
            // SIGHUP: the reload is done when the listing shows the new config.
            tapvs.signal("-HUP");
            Output {
                status: std::process::ExitStatus::default(),
                stdout: Vec::new(),
                stderr: Vec::new(),
            }
        };
        assert!(
            o.status.success(),
            "reload {step}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let want = sorted_lines(&expected_save(&text));
        let mut got = Vec::new();
        assert!(
            wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
                got = sorted_lines(&tapvs.save());
                got == want
            }),
            "reload {step}: -S -n is the new config's\n got {got:#?}\nwant {want:#?}\nlog:\n{}",
            tapvs.log_text()
        );
        eprintln!(
            "reload {step} at {} MB of the download: applied in {:?}",
            at >> 20,
            t0.elapsed()
        );
        reloads += 1;
        go_tx.send(()).expect("download thread waiting");
    }
    assert!(tapvs.alive(), "tapvs runs after 10 reloads");
    let (bytes, digest) = dl.join().expect("download thread").expect("download");
    server.join().expect("server thread").expect("server");
    assert_eq!(bytes, MB200);
    assert_eq!(
        digest,
        expected_digest(MB200, seed),
        "SHA-256 of the download"
    );
    let answered = keep
        .iter_mut()
        .map(|s| get_on(s).is_ok_and(|st| st == 200))
        .filter(|ok| *ok)
        .count();
    assert_eq!(
        answered, 50,
        "keep-alive connections answered after the reloads"
    );
    // Each reload logged its changes, as `reload`.
    let log = tapvs.log_text();
    let changes = log
        .lines()
        .filter(|l| l.contains("who=\"reload\"") || l.contains("who=reload"))
        .count();
    assert!(
        changes >= 10,
        "change-log lines of the reloads: {changes}\n{log}"
    );
    // The health thread took each reload, keeping the state of the real server whose checks
    // did not change (VIP:80's second real server).
    let kept: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("health checks reloaded"))
        .collect();
    assert_eq!(kept.len(), 10, "{log}");
    assert!(
        kept.iter().all(|l| !l.contains("kept=0")),
        "unchanged checks kept: {kept:#?}"
    );
    tapvs.stop();
    eprintln!(
        "{reloads} reloads during a 200 MB download and 50 keep-alive connections: {:?}",
        started.elapsed()
    );
}

#[test]
fn refused_reloads_change_nothing_and_a_good_one_equals_a_fresh_start() {
    if !precheck() {
        return;
    }
    let lab = Lab::build(3).expect("lab");
    let base = format!("{}\n[log]\nformat = \"json\"\n", lab::base_config(2));
    let svc = |port: u16, sched: &str, reals: &[(usize, u32)]| {
        let mut s = format!(
            "\n[[service]]\nprotocol = \"tcp\"\naddress = \"{}:{port}\"\nscheduler = \"{sched}\"\n",
            lab::VIP
        );
        for &(i, w) in reals {
            s.push_str(&format!(
                "\n[[service.real]]\naddress = \"{}:{port}\"\nweight = {w}\nforward = \"nat\"\n",
                lab::real_addr(i)
            ));
        }
        s
    };
    let c1 = format!(
        "{base}{}{}{}",
        svc(80, "rr", &[(0, 1), (1, 1)]),
        svc(81, "wlc", &[(1, 1)]),
        svc(82, "sh", &[(2, 1)])
    );
    let mut tapvs = Tapvs::start(&lab, "refused", &c1);
    let s1 = tapvs.save();
    assert_eq!(s1, expected_save(&c1));

    // A tapvsadm change is logged (who, what, before, after), then undone by hand.
    assert!(tapvs
        .adm(&[
            "-e",
            "-t",
            &format!("{}:80", lab::VIP),
            "-r",
            &format!("{}:80", lab::real_addr(0)),
            "-m",
            "-w",
            "7"
        ])
        .status
        .success());
    assert!(tapvs
        .adm(&[
            "-e",
            "-t",
            &format!("{}:80", lab::VIP),
            "-r",
            &format!("{}:80", lab::real_addr(0)),
            "-m",
            "-w",
            "1"
        ])
        .status
        .success());
    assert_eq!(tapvs.save(), s1);
    let log = tapvs.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("\"who\":\"tapvsadm\"") && l.contains("-w 7"))
        .unwrap_or_else(|| panic!("a JSON change line for the tapvsadm edit in:\n{log}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object");
    let f = &v["fields"];
    assert_eq!(f["who"], "tapvsadm");
    assert!(f["before"].as_str().unwrap().contains("-w 1"), "{line}");
    assert!(f["after"].as_str().unwrap().contains("-w 7"), "{line}");

    // An invalid config: refused (file, field, problem), by `tapvs reload` and by the daemon
    // (through the socket and on SIGHUP).
    let bad = c1.replace("scheduler = \"wlc\"", "scheduler = \"nosuch\"");
    tapvs.write_config(&bad);
    for o in [tapvs.reload(), tapvs.reload_socket()] {
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains("refused"), "{err}");
        assert!(
            err.contains(tapvs.config.to_str().unwrap()),
            "names the file: {err}"
        );
        assert!(err.contains("scheduler"), "names the field: {err}");
        assert_eq!(tapvs.save(), s1, "nothing changed");
    }
    let bad_toml = c1.replace("weight = 1", "weight = \"heavy\"");
    tapvs.write_config(&bad_toml);
    let o = tapvs.reload_socket();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("weight") && err.contains(tapvs.config.to_str().unwrap()),
        "{err}"
    );
    assert_eq!(tapvs.save(), s1, "nothing changed");
    tapvs.signal("-HUP");
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(20), || tapvs
            .log_text()
            .lines()
            .filter(|l| l.contains("reload refused"))
            .count()
            >= 3),
        "SIGHUP with an invalid config is refused in the log:\n{}",
        tapvs.log_text()
    );
    assert!(tapvs.alive(), "SIGHUP does not stop tapvs");
    assert_eq!(tapvs.save(), s1, "nothing changed");

    // A changed worker count, with service changes too: refused as a whole.
    let workers = format!(
        "{}{}",
        c1.replace("workers = 2", "workers = 3"),
        svc(83, "rr", &[(0, 1)])
    );
    tapvs.write_config(&workers);
    let o = tapvs.reload();
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("`workers`") && err.contains("restart needed"),
        "{err}"
    );
    assert_eq!(tapvs.save(), s1, "nothing changed");

    // A good reload: one service edited, one removed, one added, real servers changed.
    let c2 = format!(
        "{base}{}{}{}",
        svc(80, "wrr", &[(0, 3), (2, 1)]),
        svc(82, "sh", &[(2, 1)]),
        svc(84, "lc", &[(0, 1), (1, 2)])
    );
    tapvs.write_config(&c2);
    let o = tapvs.reload();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s2 = tapvs.save();
    assert_ne!(s2, s1);
    let log = tapvs.log_text();
    let reload_changes = log
        .lines()
        .filter(|l| l.contains("\"who\":\"reload\"") && l.contains("\"before\""))
        .count();
    assert!(
        reload_changes >= 5,
        "reload change lines: {reload_changes}\n{log}"
    );
    tapvs.stop();

    // A fresh daemon on the same config lists the same table.
    let fresh = Tapvs::start(&lab, "fresh", &c2);
    assert_eq!(s2, fresh.save(), "after a reload = a fresh start");
    assert_eq!(s2, expected_save(&c2));
}
