//! Reading a capture back through tshark (Debian's), the oracle the VRRP and sync tests decode
//! the wire with.

use std::path::Path;
use std::process::{Command, Stdio};

/// `tshark -r PCAP ARGS... -T fields -e FIELD...`: one line per matching packet, its fields
/// separated by tabs. Panics (failing the test) when tshark fails.
pub fn fields(pcap: &Path, args: &[&str], fields: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(pcap).args(args).args(["-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.stderr(Stdio::inherit()).output().expect("tshark -r");
    assert!(out.status.success(), "tshark -r failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}
