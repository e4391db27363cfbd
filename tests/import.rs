//! `tapvs import-keepalived` end to end: five keepalived.conf files of increasing size
//! (`tests/import/1.conf` .. `5.conf`, the fifth with globbed includes, a virtual_server_group,
//! several checkers, VRRP, sync and unsupported keywords) and two IPv6 ones (`6.conf`, `7.conf`,
//! on the dual-stack ports of `ports6.toml`) convert to the TOML and stderr report of their
//! goldens (`N.toml`, `N.stderr`; `TAPVS_BLESS=1` rewrites them); every output passes
//! `tapvs check`; `--strict` fails exactly when keywords were ignored; without `--ports` the
//! ports are commented placeholders; syntax errors name file and line. Two converted configs
//! run a daemon in a namespace lab whose `tapvsadm -L -n` listing matches a golden (`N.list`),
//! and an IPv6 one (`7.conf`) in the dual-stack lab, which also forwards requests to its VIP.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::lab::{self, Lab};
use tapvs_lab::netns::{precheck, wait_until};

const TAPVS: &str = env!("CARGO_BIN_EXE_tapvs");

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import")
}

/// Runs `tapvs ARGS` from the crate root (so paths in the output are relative).
fn tapvs(args: &[&str]) -> Output {
    Command::new(TAPVS)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run tapvs")
}

fn bless() -> bool {
    std::env::var_os("TAPVS_BLESS").is_some_and(|v| v == "1")
}

/// Compares `got` with the golden file `name` (or writes it with TAPVS_BLESS=1).
fn golden(name: &str, got: &str) {
    let path = dir().join(name);
    if bless() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (TAPVS_BLESS=1 writes it)", path.display()));
    assert_eq!(
        got,
        want,
        "{} differs (TAPVS_BLESS=1 rewrites it)",
        path.display()
    );
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tapvs-import-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Converts `N.conf` with the `[[port]]` sections of `ports` and compares the TOML, the
/// report and `tapvs check --list`'s start-up listing with their goldens; `--strict` fails
/// exactly when keywords were ignored. Returns the TOML and the report.
fn converts_to_its_goldens(i: usize, ports: &str) -> (String, String) {
    let conf = format!("tests/import/{i}.conf");
    let out = tapvs(&["import-keepalived", "--ports", ports, &conf]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{conf}: {:?}\n{stderr}", out.status);
    golden(&format!("{i}.toml"), &stdout);
    golden(&format!("{i}.stderr"), &stderr);
    let f = scratch(&format!("{i}.toml"));
    std::fs::write(&f, &stdout).unwrap();
    let check = tapvs(&["check", "--list", "--config", f.to_str().unwrap()]);
    let _ = std::fs::remove_file(&f);
    assert!(
        check.status.success(),
        "{conf}: tapvs check: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // The table the converted config gives at start, as `tapvsadm -L -n` lists it (the
    // first line of `check` names the scratch file).
    let listing = String::from_utf8(check.stdout).unwrap();
    let listing = listing.split_once('\n').map_or("", |x| x.1);
    golden(&format!("{i}.start.list"), listing);
    // --strict fails exactly when something was ignored.
    let strict = tapvs(&["import-keepalived", "--strict", "--ports", ports, &conf]);
    let ignored = stderr.contains("has no tapvs equivalent");
    assert_eq!(strict.status.code(), Some(i32::from(ignored)), "{conf}");
    assert_eq!(String::from_utf8(strict.stdout).unwrap(), stdout);
    (stdout, stderr)
}

#[test]
fn five_configs_convert_to_their_goldens_and_pass_check() {
    for i in 1..=5 {
        converts_to_its_goldens(i, "tests/import/ports.toml");
    }
    // The sizes increase, and the largest has the unsupported keywords reported by line.
    let lines = |f: &str| {
        std::fs::read_to_string(dir().join(f))
            .unwrap()
            .lines()
            .count()
    };
    let mut sizes: Vec<usize> = (1..=5).map(|i| lines(&format!("{i}.conf"))).collect();
    sizes[4] += [
        "5.d/10-vrrp.conf",
        "5.d/20-dns.conf",
        "5.d/reals/a.inc",
        "5.d/reals/b.inc",
    ]
    .map(lines)
    .iter()
    .sum::<usize>();
    assert!(sizes.windows(2).all(|w| w[0] < w[1]), "{sizes:?}");
    let report = std::fs::read_to_string(dir().join("5.stderr")).unwrap();
    for line in [
        "tests/import/5.conf:26: 'smtp_alert' has no tapvs equivalent (ignored)",
        "tests/import/5.conf:32: 'fwmark' (fwmark services) has no tapvs equivalent (ignored)",
        "tests/import/5.d/20-dns.conf:10: 'DNS_CHECK' has no tapvs equivalent",
        "tests/import/5.d/reals/a.inc:8: 'regex' has no tapvs equivalent (ignored)",
    ] {
        assert!(report.contains(line), "{line:?} not in\n{report}");
    }
    // The sync group and the weighted tracking come over.
    let toml = std::fs::read_to_string(dir().join("5.toml")).unwrap();
    assert!(
        toml.contains("[[vrrp_sync_group]]\nname = \"VG_1\"\n")
            && toml.contains("group = [\"VI_EXT\", \"VI_INT\"]")
            && toml.contains("track_ports = [{ port = \"eth0\", weight = -30 }]"),
        "{toml}"
    );
    assert!(!report.contains("'vrrp_sync_group'"), "{report}");
    let _ = std::fs::remove_dir_all(scratch("x").parent().unwrap());
}

/// keepalived's IPv6 (`6.conf`: NAT and DR services with checks, a virtual_server_group of
/// IPv6 members, IPv6 instances with unicast peers) comes over in the bracketed syntax on
/// dual-stack ports; the other family, where tapvs has one, is reported by line.
#[test]
fn ipv6_config_converts_to_its_golden_and_passes_check() {
    converts_to_its_goldens(7, "tests/import/ports6.toml");
    let (toml, report) = converts_to_its_goldens(6, "tests/import/ports6.toml");
    for want in [
        "address = \"[2001:db8:f::80]:80\"\nscheduler = \"wrr\"\npersistent = 300\nnetmask = 64\n",
        "address = \"[2001:db8:5::2]:8080\"\nweight = 2\nforward = \"nat\"\n",
        "address = \"[2001:db8:5::3]:443\"\nforward = \"dr\"\n",
        "address = \"[2001:db8:f::91]:80\"",
        "unicast_peers = [\"2001:db8:c::3\"]\nvirtual_addresses = [\"2001:db8:f::80\", \"2001:db8:f::81\", \"2001:db8:f::90\", \"2001:db8:f::91\"]\n",
        "virtual_addresses = [\"2001:db8:5::1\", \"fe80::1\"]\n",
    ] {
        assert!(toml.contains(want), "{want:?} not in\n{toml}");
    }
    assert!(
        !toml.contains("172.16.0.2") && !toml.contains("auth_pass"),
        "{toml}"
    );
    for line in [
        "tests/import/6.conf:12: '207.175.44.110' (IPv4 in a group of IPv6 addresses: one family per group) has no tapvs equivalent (ignored)",
        "tests/import/6.conf:41: 'real_server' 172.16.0.2 8080 (an IPv4 real server of an IPv6 virtual_server",
        "tests/import/6.conf:96: '10.0.0.3' (IPv4 unicast peer of an IPv6 vrrp_instance",
        "tests/import/6.conf:99: '2001:db8:f::80/64': the prefix length /64 is dropped",
        "tests/import/6.conf:103: '10.0.0.100' (IPv4 virtual address of an IPv6 vrrp_instance",
    ] {
        assert!(report.contains(line), "{line:?} not in\n{report}");
    }
}

#[test]
fn without_ports_the_ports_are_placeholders() {
    let out = tapvs(&["import-keepalived", "tests/import/4.conf"]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stdout.contains("# [[port]]\n# name = \"eth0\"\n"),
        "{stdout}"
    );
    assert!(stdout.contains("# name = \"eth1\"\n"), "{stdout}");
    assert!(!stdout.contains("\n[[port]]"), "{stdout}");
    assert!(
        stderr.contains("tests/import/4.conf: no --ports given: the [[port]] sections for eth0, eth1 are commented placeholders"),
        "{stderr}"
    );
    let f = scratch("placeholders.toml");
    std::fs::write(&f, &stdout).unwrap();
    let check = tapvs(&["check", "--config", f.to_str().unwrap()]);
    assert_eq!(check.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&check.stderr).contains("at least one [[port]]"));
    let _ = std::fs::remove_file(f);
}

#[test]
fn bad_input_names_file_and_line_and_changes_nothing() {
    let f = scratch("broken.conf");
    std::fs::write(
        &f,
        "virtual_server 207.175.44.110 80 {\n  lb_algo rr\n  real_server 172.16.0.2 80 {\n",
    )
    .unwrap();
    let out = tapvs(&["import-keepalived", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err,
        format!(
            "tapvs: import-keepalived: {}:3: 'real_server' block is not closed (missing '}}')\n",
            f.display()
        )
    );
    std::fs::write(
        &f,
        "virtual_server 207.175.44.110 80 {\n  lb_algo magic\n}\n",
    )
    .unwrap();
    let out = tapvs(&["import-keepalived", f.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains(&format!(
        "{}:2: 'lb_algo': \"magic\" is not a scheduler",
        f.display()
    )));
    let out = tapvs(&["import-keepalived", "/nonexistent/keepalived.conf"]);
    assert_eq!(out.status.code(), Some(2));
    let bad_ports = scratch("bad-ports.toml");
    std::fs::write(&bad_ports, "[[port]\n").unwrap();
    let out = tapvs(&[
        "import-keepalived",
        "--ports",
        bad_ports.to_str().unwrap(),
        "tests/import/1.conf",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("not TOML"));
    let list = tapvs(&["import-keepalived", "--list"]);
    assert!(list.status.success());
    assert!(String::from_utf8(list.stdout)
        .unwrap()
        .contains("MISC_CHECK"));
    let _ = std::fs::remove_file(f);
    let _ = std::fs::remove_file(bad_ports);
}

/// The lab's ports (with its own control socket; dual-stack ones for `dual`), named as the
/// keepalived interfaces.
fn lab_ports(dual: bool) -> String {
    let base = if dual {
        lab::base_config_dual(2)
    } else {
        lab::base_config(2)
    };
    base.replace("name = \"ext\"", "name = \"eth0\"")
        .replace("name = \"int\"", "name = \"eth1\"")
}

/// Converts `N.conf` with the lab's ports, starts it in a lab (dual-stack for `dual`) with
/// HTTP servers on port 80 of real servers 0 and 1, and compares `tapvsadm -L -n` with
/// `N.list` once the checks ran. Returns the lab and its servers.
fn listing_matches(
    i: usize,
    reals: usize,
    dual: bool,
) -> (Lab, Vec<tapvs_lab::traffic::HttpServer>) {
    let ports = lab_ports(dual);
    let out = tapvs::import::import(
        &dir().join(format!("{i}.conf")),
        Some(tapvs::import::Ports {
            file: Path::new("lab-ports.toml"),
            text: &ports,
        }),
    )
    .unwrap();
    let mut lab = if dual {
        Lab::build_dual(reals).unwrap()
    } else {
        Lab::build(reals).unwrap()
    };
    let listen = if dual {
        "[::]:80".parse().unwrap()
    } else {
        common::any(80)
    };
    let servers: Vec<_> = (0..2.min(reals))
        .map(|r| {
            let name = format!("rs{}", r + 1);
            lab.reals[r]
                .run(move || tapvs_lab::traffic::HttpServer::start(listen, &name))
                .expect("http server")
        })
        .collect();
    lab.start(&out.toml).expect("start tapvs");
    let socket = lab.socket();
    let list = || {
        let o = Command::new(env!("CARGO_BIN_EXE_tapvsadm"))
            .args(["--socket", &socket, "-L", "-n"])
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap()
    };
    let want_path = dir().join(format!("{i}.list"));
    if bless() {
        // Let the first checks run before recording.
        std::thread::sleep(Duration::from_secs(3));
        golden(&format!("{i}.list"), &list());
        return (lab, servers);
    }
    let want = std::fs::read_to_string(&want_path).unwrap();
    let mut got = String::new();
    let same = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        got = list();
        got == want
    });
    assert!(same, "{i}.conf: -L -n\n{got}\nwant\n{want}");
    (lab, servers)
}

#[test]
fn converted_configs_run_and_list_as_expected() {
    if !precheck() {
        return;
    }
    listing_matches(1, 2, false);
    listing_matches(3, 3, false);
}

/// The converted IPv6 config (`7.conf`) runs in the dual-stack lab: its checks take the real
/// server without a server out (`7.list`) and requests to the IPv6 VIP reach the other two.
#[test]
fn converted_ipv6_config_runs_and_forwards() {
    if !precheck() {
        return;
    }
    let (lab, _servers) = listing_matches(7, 3, true);
    let split = lab
        .client
        .run(|| tapvs_lab::traffic::http_split(lab::vip6(80), 6, Duration::from_secs(5)))
        .expect("requests to the IPv6 VIP");
    assert_eq!(split.values().sum::<u64>(), 6, "{split:?}");
    assert!(
        split.get("rs1").is_some_and(|n| *n > 0) && split.get("rs2").is_some_and(|n| *n > 0),
        "{split:?}"
    );
}

#[test]
fn the_inputs_are_keepalived_configs_keepalived_accepts() {
    // keepalived itself is the oracle for the inputs: `keepalived -t` parses them (its exit
    // status also reflects interfaces this machine lacks, so only the parser's complaints are
    // checked).
    if Command::new("keepalived").arg("-v").output().is_err() {
        // scripts/deps installs it; CI never skips.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "keepalived is not installed"
        );
        eprintln!("skipped: keepalived is not installed");
        return;
    }
    for i in 1..=7 {
        let conf = dir().join(format!("{i}.conf"));
        let out = Command::new("keepalived")
            .args(["-t", "-l", "-D", "-f"])
            .arg(&conf)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for bad in ["Unknown keyword", "syntax", "Unexpected", "missing"] {
            assert!(!text.contains(bad), "{i}.conf: keepalived -t says:\n{text}");
        }
    }
}
