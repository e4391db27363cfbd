//! tapvsadm input the daemon refuses because it cannot work here: a real server that is
//! 0.0.0.0, 255.255.255.255, a VIP, an address of the appliance or unreachable, and a VIP that
//! is multicast or one of the appliance's addresses. Each is refused with an ipvsadm-like
//! message and a non-zero exit, directly and inside `-R`, and `-S -n` is unchanged after it.
//! (The config file's refusals are unit tests in `src/config.rs`.)

mod common;

use std::process::Output;

use common::lab::{self, Lab};
use tapvs_lab::netns::precheck;

fn adm(lab: &Lab, args: &str, stdin: Option<&str>) -> Output {
    common::tapvsadm(&lab.socket(), args, stdin)
}

fn save(lab: &Lab) -> String {
    let o = adm(lab, "-S -n", None);
    assert!(o.status.success(), "{o:?}");
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn tapvsadm_refuses_addresses_that_cannot_work() {
    if !precheck() {
        return;
    }
    let mut lab = Lab::build(1).unwrap();
    lab.start(&format!(
        "{}{}",
        lab::base_config(1),
        lab::nat_service("tcp", 80, "rr", &[(0, 80, 1)])
    ))
    .unwrap();
    let vip = lab::VIP;
    let before = save(&lab);
    assert!(before.contains(&format!("-a -t {vip}:80 -r")), "{before}");

    let refused = [
        (
            format!("-a -t {vip}:80 -r 0.0.0.0:80 -m"),
            "Invalid operation: 0.0.0.0 is the unspecified address, not a real server address",
        ),
        (
            format!("-a -t {vip}:80 -r 255.255.255.255:80 -m"),
            "255.255.255.255 is the limited broadcast address",
        ),
        (
            format!("-a -t {vip}:80 -r 224.0.0.9:80 -m"),
            "224.0.0.9 is a multicast address",
        ),
        (
            format!("-a -t {vip}:80 -r {vip}:8080 -m"),
            "is a virtual address of the appliance, not a real server",
        ),
        (
            format!("-a -t {vip}:80 -r {vip}:80 -g"),
            "is a virtual address of the appliance",
        ),
        (
            format!("-a -t {vip}:80 -r {}:80 -m", lab::INT_ADDR),
            "172.16.0.1 is an address of the appliance itself (port[1] \"int\")",
        ),
        (
            format!("-a -t {vip}:80 -r {}:80 -m", lab::EXT_ADDR),
            "10.0.0.1 is an address of the appliance itself (port[0] \"ext\")",
        ),
        (
            format!("-a -t {vip}:80 -r 172.16.0.255:80 -m"),
            "broadcast address of port[1]'s network",
        ),
        (
            format!("-a -t {vip}:80 -r 192.168.77.7:80 -m"),
            "192.168.77.7 is unreachable: on no port's network and behind no [[route]]",
        ),
        (
            format!("-e -t {vip}:80 -r 0.0.0.0:80 -m"),
            "No such destination",
        ),
        (
            format!("-e -t {vip}:80 -r 255.255.255.255:80 -m"),
            "No such destination",
        ),
        (
            "-A -t 224.0.0.18:80 -s rr".into(),
            "224.0.0.18 is a multicast address, not a virtual address",
        ),
        (
            "-A -t 0.0.0.0:80 -s rr".into(),
            "0.0.0.0 is the unspecified address, not a virtual address",
        ),
        (
            format!("-A -t {}:80 -s rr", lab::INT_ADDR),
            "is an address of the appliance itself",
        ),
    ];
    for (args, needle) in &refused {
        let o = adm(&lab, args, None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "tapvsadm {args}: {err}");
        assert!(
            err.contains(needle),
            "tapvsadm {args}: {err:?}, want {needle:?}"
        );
        assert!(o.stdout.is_empty(), "tapvsadm {args}");
        assert_eq!(save(&lab), before, "tapvsadm {args} changed the table");
    }

    // The same lines in a restore: each reported, none applied, the good one applied.
    let input = format!(
        "-a -t {vip}:80 -r 0.0.0.0:80 -m\n-a -t {vip}:80 -r {vip}:81 -m\n-a -t {vip}:80 -r {}:80 -m\n-a -t {vip}:80 -r {}:81 -m\n",
        lab::INT_ADDR,
        lab::real_addr(0)
    );
    let o = adm(&lab, "-R", Some(&input));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("Invalid operation: ").count(), 3, "{err}");
    let after = save(&lab);
    assert!(
        !after.contains("0.0.0.0") && !after.contains(&format!("-r {vip}")),
        "{after}"
    );
    assert!(
        after.contains(&format!("-r {}:81", lab::real_addr(0))),
        "{after}"
    );
    assert_eq!(after.lines().count(), before.lines().count() + 1, "{after}");

    // A restore over the request limit: refused whole, and tapvsadm says why although the
    // daemon stopped reading before it finished sending.
    let line = format!("# {}\n", "x".repeat(1021));
    let huge = line.repeat(17 << 10);
    let o = adm(&lab, "-R", Some(&huge));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("request refused: larger than 16 MiB"), "{err}");
    assert_eq!(save(&lab), after);
}
