//! tapvsadm with host and service names, end to end against a daemon in the lab namespaces:
//! `-t web.tapvs.test:http` and `-r ADDR:http` are resolved by tapvsadm (the host by the system
//! resolver, which reads /etc/hosts: the test runs tapvsadm in a private mount namespace where
//! its own hosts file is bind-mounted over /etc/hosts; the service from /etc/services), `-L` and
//! `-S` without `-n` print names where the files have them and numbers elsewhere, `-L -n` and
//! `-S -n` print numbers, `-S` fed to `-R` restores the same table, and an unknown service name
//! is a usage error (exit 2) that changes nothing.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::lab::{self, Lab};
use tapvs_lab::netns::precheck;

const ADM: &str = env!("CARGO_BIN_EXE_tapvsadm");

/// The VIP the test's hosts file names `web.tapvs.test`.
const VIP: &str = "203.0.113.80";
/// Its name.
const HOST: &str = "web.tapvs.test";
/// An IPv6 VIP (the lab plan's) the hosts file names `web6.tapvs.test`.
const VIP6: &str = "2001:db8:f::80";
/// Its name.
const HOST6: &str = "web6.tapvs.test";

/// A hosts file for tapvsadm, removed on drop.
struct Hosts(std::path::PathBuf);

impl Hosts {
    fn new() -> Hosts {
        let p = std::env::temp_dir().join(format!("tapvs-adm-names-{}.hosts", std::process::id()));
        std::fs::write(
            &p,
            format!("127.0.0.1 localhost\n{VIP} {HOST} web\n{VIP6} {HOST6}\n"),
        )
        .expect("hosts");
        Hosts(p)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

thread_local! {
    static HOSTS: Hosts = Hosts::new();
}

/// tapvsadm in a private mount namespace (unshare's default propagation is private, so
/// nothing leaks to the host) with the test's hosts file over /etc/hosts.
fn adm_in(lab: &Lab, args: &str, stdin: Option<&str>) -> Output {
    let hosts = HOSTS.with(|h| h.0.clone());
    let mut child = Command::new("unshare")
        .args([
            "-m",
            "--",
            "sh",
            "-c",
            "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
        ])
        .arg(&hosts)
        .arg(ADM)
        .arg("--socket")
        .arg(lab.socket())
        .args(args.split_whitespace())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tapvsadm");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("tapvsadm output")
}

fn ok(lab: &Lab, args: &str) -> String {
    let o = adm_in(lab, args, None);
    assert!(
        o.status.success(),
        "tapvsadm {args}: {:?} {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8")
}

#[test]
fn names_on_the_command_line_and_in_listings() {
    if !precheck() {
        return;
    }
    let services = std::fs::read_to_string("/etc/services").unwrap_or_default();
    let has = |line_start: &str| services.lines().any(|l| l.starts_with(line_start));
    if !(has("http\t") || has("http ")) || !(has("domain\t") || has("domain ")) {
        eprintln!("skipped: /etc/services has no http or domain entry");
        return;
    }
    let host = HOST;
    let mut lab = Lab::build(1).expect("build lab");
    lab.start(&lab::base_config(2)).expect("start tapvs");
    let rs = lab::real_addr(0);

    ok(&lab, "-A -t web.tapvs.test:http -s rr");
    ok(&lab, &format!("-a -t web.tapvs.test:http -r {rs}:http -m"));
    ok(&lab, "-A -u web.tapvs.test:domain -s wrr");
    ok(
        &lab,
        &format!("-a -u web.tapvs.test:domain -r {rs}:domain -m -w 2"),
    );

    let numeric = ok(&lab, "-L -n");
    let lines: Vec<&str> = numeric.lines().collect();
    assert_eq!(lines[3], "TCP  203.0.113.80:80 rr", "{numeric}");
    assert!(
        lines[4].starts_with(&format!("  -> {:<28} Masq", format!("{rs}:80"))),
        "{numeric}"
    );
    assert_eq!(lines[5], "UDP  203.0.113.80:53 wrr", "{numeric}");

    let named = ok(&lab, "-L");
    let lines: Vec<&str> = named.lines().collect();
    assert_eq!(lines[3], format!("TCP  {host}:http rr"), "{named}");
    assert_eq!(
        lines[4],
        format!(
            "  -> {:<28} Masq    1      0          0         ",
            format!("{rs}:http")
        ),
        "{named}"
    );
    assert_eq!(lines[5], format!("UDP  {host}:domain wrr"), "{named}");
    assert_eq!(
        lines[6],
        format!(
            "  -> {:<28} Masq    2      0          0         ",
            format!("{rs}:domain")
        ),
        "{named}"
    );

    let saved_numeric = ok(&lab, "-S -n");
    assert!(
        saved_numeric.contains("-A -t 203.0.113.80:80 -s rr\n"),
        "{saved_numeric}"
    );
    let saved = ok(&lab, "-S");
    assert!(
        saved.contains(&format!("-A -t {host}:http -s rr\n")),
        "{saved}"
    );
    assert!(
        saved.contains(&format!("-a -u {host}:domain -r {rs}:domain -m -w 2\n")),
        "{saved}"
    );

    // -S with names restores the same table.
    ok(&lab, "-C");
    assert_eq!(ok(&lab, "-L -n").lines().count(), 3);
    let o = adm_in(&lab, "-R", Some(&saved));
    assert!(
        o.status.success(),
        "-R: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(ok(&lab, "-L -n"), numeric);

    // An unknown service name: ipvsadm's usage error, exit 2, nothing changed.
    for (args, msg) in [
        (
            "-A -t web.tapvs.test:no-such-service -s rr".to_string(),
            "illegal virtual server address[:port] specified",
        ),
        (
            format!("-a -t web.tapvs.test:http -r {rs}:no-such-service -m"),
            "illegal real server address[:port] specified",
        ),
    ] {
        let o = adm_in(&lab, &args, None);
        assert_eq!(o.status.code(), Some(2), "{args}");
        assert_eq!(String::from_utf8_lossy(&o.stderr).trim(), msg, "{args}");
    }
    assert_eq!(ok(&lab, "-L -n"), numeric);

    // A name in brackets is looked up for IPv6 (the system resolver reads the hosts file):
    // resolved by tapvsadm, the command reaches the daemon, which adds the IPv6 service and
    // lists it numerically; the same name without brackets has no IPv4 address.
    ok(&lab, &format!("-A -t [{HOST6}]:http -s rr"));
    let listed = ok(&lab, "-L -n");
    assert!(listed.contains(&format!("TCP  [{VIP6}]:80 rr")), "{listed}");
    ok(&lab, &format!("-D -t [{HOST6}]:http"));
    let o = adm_in(&lab, &format!("-A -t {HOST6}:http -s rr"), None);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim(),
        "illegal virtual server address[:port] specified"
    );
    assert_eq!(ok(&lab, "-L -n"), numeric);
}
