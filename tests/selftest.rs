//! The Linux kernel selftest `ipvs.sh`, NAT case, with the `tapvs` binary as the director:
//! client, director and real server namespaces as in `shared/reference/lvs.md` §1.7, the real
//! server listening with socat on 8080, the client sending 32 random bytes to VIP:8080 with
//! socat, pass when the bytes arrive intact.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::Duration;

use common::lab::{self, Lab};
use tapvs_lab::netns::{precheck, wait_for_tcp_listen};

fn random_bytes(n: usize) -> Vec<u8> {
    let mut f = std::fs::File::open("/dev/urandom").expect("urandom");
    let mut b = vec![0u8; n];
    f.read_exact(&mut b).expect("random bytes");
    b
}

#[test]
fn ipvs_selftest_nat_case() {
    if !precheck() {
        return;
    }
    let lab = Lab::build(1).expect("topology");
    let dir = std::env::temp_dir().join(format!("tapvs-selftest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_path = dir.join("tapvs.toml");
    let config = format!(
        "{}{}",
        lab::base_config(2),
        lab::nat_service("tcp", 8080, "rr", &[(0, 8080, 1)])
    );
    std::fs::write(&cfg_path, config).unwrap();

    // The director: the tapvs binary, ready when it logs "tapvs ready".
    let bin = env!("CARGO_BIN_EXE_tapvs");
    let cfg = cfg_path.to_string_lossy().into_owned();
    let daemon = lab
        .director
        .spawn(
            &[bin, "run", "--config", &cfg],
            Stdio::piped(),
            Stdio::piped(),
        )
        .expect("spawn tapvs");
    let stderr = daemon.take_stderr().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let log = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("tapvs ready") {
                let _ = tx.send(());
            }
            lines.push(line);
        }
        lines
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("tapvs did not become ready");

    // The real server: socat listening on 8080, writing what it receives to stdout.
    let rs = lab.reals[0]
        .spawn(
            &[
                "timeout",
                "10",
                "socat",
                "-u",
                "-4",
                "TCP-LISTEN:8080,reuseaddr",
                "STDOUT",
            ],
            Stdio::piped(),
            Stdio::inherit(),
        )
        .expect("socat listener");
    wait_for_tcp_listen(
        &lab.reals[0],
        "0.0.0.0:8080".parse().unwrap(),
        Duration::from_secs(5),
    )
    .expect("listener up");

    let payload = random_bytes(32);
    let infile = dir.join("infile");
    std::fs::write(&infile, &payload).unwrap();
    lab.client
        .exec(&[
            "sh",
            "-c",
            &format!(
                "timeout 5 socat -u -4 STDIN TCP:{}:8080 < {}",
                lab::VIP,
                infile.display()
            ),
        ])
        .expect("client socat");
    let mut received = Vec::new();
    rs.take_stdout()
        .expect("rs stdout")
        .read_to_end(&mut received)
        .expect("read rs output");
    assert_eq!(received, payload, "PASS needs the 32 bytes intact");

    // SIGTERM: clean shutdown, final counters on stdout as JSON.
    std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .expect("kill");
    let status = daemon
        .wait_timeout(Duration::from_secs(10))
        .expect("wait")
        .expect("tapvs exits on SIGTERM");
    assert!(status.success(), "{status}");
    let mut out = String::new();
    daemon
        .take_stdout()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let stats: serde_json::Value = serde_json::from_str(out.trim()).expect("stats JSON");
    assert!(stats["fwd_in"].as_u64().unwrap() > 0, "{stats}");
    assert!(stats["fwd_out"].as_u64().unwrap() > 0, "{stats}");
    let lines = log.join().unwrap();
    assert!(
        lines.iter().any(|l| l.contains("shutting down")),
        "{lines:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn invalid_config_names_file_field_and_reason() {
    let dir = std::env::temp_dir().join(format!("tapvs-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[[port]]\nname = \"ext\"\ntap = \"t0\"\naddresses = [\"10.0.0.1/24\"]\n\n[[service]]\nprotocol = \"tcp\"\naddress = \"10.9.9.9:80\"\nscheduler = \"bogus\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tapvs"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml"), "{err}");
    assert!(err.contains("service[0].scheduler"), "{err}");
    assert!(err.contains("bogus"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_without_root_says_so_and_fails() {
    use std::os::unix::process::CommandExt;
    if !tapvs::sys::is_root() {
        // Already unprivileged: the demo itself must refuse.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tapvs"))
            .arg("demo")
            .output()
            .unwrap();
        assert!(!out.status.success());
        return;
    }
    // As root, drop to nobody for the child.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tapvs"))
        .arg("demo")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs root"), "{err}");
}

/// Writes a config whose `run` logs `starting` and then fails fast without root or TAP
/// devices (the control socket's directory is a regular file), with `log` appended.
fn fail_fast_config(tag: &str, log: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tapvs-logs-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let blocker = dir.join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let path = dir.join("tapvs.toml");
    std::fs::write(
        &path,
        format!(
            "workers = 1\n\n[control]\nsocket = \"{}/tapvs.sock\"\n\n[metrics]\nenabled = false\n\n\
             [[port]]\nname = \"ext\"\ntap = \"tvs-logs0\"\naddresses = [\"10.0.0.1/24\"]\n\n{log}",
            blocker.display()
        ),
    )
    .unwrap();
    path
}

fn tapvs_cmd() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_tapvs"));
    c.env_remove("TAPVS_LOG_FORMAT")
        .env_remove("TAPVS_LOG")
        .env_remove("NO_COLOR");
    c
}

#[test]
fn text_logs_redirected_to_a_file_have_no_colour() {
    let cfg = fail_fast_config("text", "");
    let log_path = cfg.with_file_name("stderr.log");
    let status = tapvs_cmd()
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(1), "{status}");
    let log = std::fs::read(&log_path).unwrap();
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains("INFO") && text.contains("starting"), "{text}");
    assert!(text.contains("tapvs: cannot start"), "{text}");
    assert!(!log.contains(&0x1b), "ESC in a log file: {text:?}");
    let _ = std::fs::remove_dir_all(cfg.parent().unwrap());
}

/// Runs the fail-fast config and checks that every logger line on stderr is a JSON object
/// with `level`, `timestamp`, `target` and `fields.message` (the program's own `tapvs: ...`
/// error line is not a log line).
fn assert_json_logs(cfg: &std::path::Path, env: Option<&str>) {
    let mut cmd = tapvs_cmd();
    cmd.args(["run", "--config"]).arg(cfg);
    if let Some(v) = env {
        cmd.env("TAPVS_LOG_FORMAT", v);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!out.stderr.contains(&0x1b), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let mut messages = Vec::new();
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with("tapvs: cannot start") {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: not JSON: {line}"));
        assert!(v.is_object(), "{line}");
        assert!(v["level"].is_string(), "{line}");
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["target"].is_string(), "{line}");
        messages.push(v["fields"]["message"].as_str().expect(line).to_string());
    }
    assert!(messages.iter().any(|m| m == "starting"), "{err}");
}

#[test]
fn json_log_format_from_config_or_environment() {
    let cfg = fail_fast_config("json", "[log]\nformat = \"json\"\n");
    assert_json_logs(&cfg, None);
    let _ = std::fs::remove_dir_all(cfg.parent().unwrap());

    // The environment overrides the config's text.
    let cfg = fail_fast_config("jsonenv", "[log]\nformat = \"text\"\n");
    assert_json_logs(&cfg, Some("json"));
    let _ = std::fs::remove_dir_all(cfg.parent().unwrap());
}

#[test]
fn bad_log_format_is_a_config_error() {
    let cfg = fail_fast_config("badfmt", "[log]\nformat = \"xml\"\n");
    let out = tapvs_cmd()
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tapvs.toml: field `log.format`"), "{err}");
    assert!(err.contains("\"xml\""), "{err}");

    let good = fail_fast_config("badenv", "");
    let out = tapvs_cmd()
        .args(["check", "--config"])
        .arg(&good)
        .env("TAPVS_LOG_FORMAT", "yaml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("field `TAPVS_LOG_FORMAT`"), "{err}");
    assert!(err.contains("\"yaml\""), "{err}");
    let out = tapvs_cmd()
        .args(["check", "--config"])
        .arg(&good)
        .env("TAPVS_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok ("));
    let _ = std::fs::remove_dir_all(cfg.parent().unwrap());
    let _ = std::fs::remove_dir_all(good.parent().unwrap());
}
