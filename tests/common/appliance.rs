//! Two tapvs appliances in the lab's director namespace, each its own `tapvs run` process (so
//! a test can `kill -9` it), read through their metrics: the hot-standby tests' harness
//! (`tests/ha.rs`, `tests/vrrp_group.rs`), with the sync-datagram filter their captures use.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::lab::Lab;
use tapvs_lab::netns::{wait_until, NsChild};

const BIN: &str = env!("CARGO_BIN_EXE_tapvs");

/// Whether `cmd` is on the PATH.
pub fn have(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether an Ethernet frame is an IPv4 UDP datagram to the sync port 8848.
pub fn is_sync(f: &[u8]) -> bool {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] || f[23] != 17 {
        return false;
    }
    let l4 = 14 + usize::from(f[14] & 0x0f) * 4;
    f.len() >= l4 + 4 && u16::from_be_bytes([f[l4 + 2], f[l4 + 3]]) == 8848
}

/// `tshark -r pcap -d udp.port==8848,ipvs -Y ipvs -T fields -E aggregator=, ...`: the
/// fields of each sync datagram.
pub fn tshark_fields(pcap: &Path, fields: &[&str]) -> Vec<Vec<String>> {
    let args = [
        "-d",
        "udp.port==8848,ipvs",
        "-Y",
        "ipvs",
        "-E",
        "aggregator=,",
    ];
    super::tshark::fields(pcap, &args, fields)
        .iter()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect()
}

/// One appliance as its own process (so it can be killed), with its metrics port.
pub struct Appliance {
    child: Option<NsChild>,
    /// Its metrics port (on 127.0.0.1 in the director).
    pub metrics: u16,
    /// Its config file (rewritten by tests before a restart).
    pub config: std::path::PathBuf,
}

impl Appliance {
    /// Writes `text` as its config and starts it (see [`Appliance::restart`]).
    pub fn start(lab: &Lab, tag: &str, text: &str, metrics: u16) -> Appliance {
        let config =
            std::env::temp_dir().join(format!("tapvs-ha-{tag}-{}.toml", std::process::id()));
        std::fs::write(&config, text).expect("write config");
        let mut a = Appliance {
            child: None,
            metrics,
            config,
        };
        a.restart(lab);
        a
    }

    /// Starts `tapvs run` in the director and waits (bounded) for its VI_EXT state metric.
    pub fn restart(&mut self, lab: &Lab) {
        let c = self.config.to_str().unwrap().to_string();
        self.child = Some(
            lab.director
                .spawn(
                    &[BIN, "run", "--config", &c],
                    Stdio::null(),
                    Stdio::inherit(),
                )
                .expect("spawn tapvs"),
        );
        assert!(
            wait_until(Duration::from_secs(10), Duration::from_millis(50), || self
                .state(lab, "VI_EXT")
                .is_some()),
            "tapvs did not come up"
        );
    }

    /// Its `/metrics` text.
    pub fn metrics_text(&self, lab: &Lab) -> Option<String> {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.metrics).parse().unwrap();
        lab.director
            .run(|| tapvs_lab::traffic::http_get(addr, "/metrics", Duration::from_secs(2)))
            .ok()
            .map(|(_, b)| b)
    }

    /// Whether both VRRP instances (client side and server side) are in `state`.
    pub fn both_in(&self, lab: &Lab, state: &str) -> bool {
        ["VI_EXT", "VI_INT"]
            .iter()
            .all(|i| self.state(lab, i).as_deref() == Some(state))
    }

    /// Waits (bounded by `within`, polling every `step`) until both instances are in `state`;
    /// the time from `since` until it was seen.
    pub fn wait_both(
        &self,
        lab: &Lab,
        state: &str,
        since: Instant,
        within: Duration,
        step: Duration,
    ) -> Option<Duration> {
        wait_until(within, step, || self.both_in(lab, state)).then(|| since.elapsed())
    }

    /// The state of VRRP instance `inst` from its metrics.
    pub fn state(&self, lab: &Lab, inst: &str) -> Option<String> {
        let text = self.metrics_text(lab)?;
        text.lines()
            .filter(|l| {
                l.starts_with("tapvs_vrrp_state{")
                    && l.contains(&format!("instance=\"{inst}\""))
                    && l.ends_with(" 1")
            })
            .find_map(|l| Some(l.split("state=\"").nth(1)?.split('"').next()?.to_string()))
    }

    /// The sum of the metric lines starting with `prefix`.
    pub fn value(&self, lab: &Lab, prefix: &str) -> f64 {
        self.metrics_text(lab)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// SIGTERM, waiting (bounded) for the exit.
    pub fn sigterm(&mut self) {
        if let Some(c) = self.child.take() {
            let pid = c.id().to_string();
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status();
            assert!(
                c.wait_timeout(Duration::from_secs(10)).unwrap().is_some(),
                "tapvs exits on SIGTERM"
            );
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(c) = self.child.take() {
            c.kill().expect("kill -9");
        }
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_file(&self.config);
    }
}
