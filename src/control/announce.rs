//! Route announcement for scale-out (`[scale_out]`): the thread that decides which VIPs this
//! instance announces, and the watchdog process that hands them to BIRD.
//!
//! Mechanism: a file BIRD's config includes, rewritten (atomically, by rename) as a `protocol
//! static tapvs_vips` with one `route VIP/32 blackhole;` per announced IPv4 VIP and a `protocol
//! static tapvs_vips6` with one `route VIP6/128 blackhole;` per IPv6 VIP, then `birdc
//! configure`. BIRD stays an independent daemon with a static config of its own (sessions, filters, next hop);
//! tapvs owns only the list of routes, and a reconfiguration adds or withdraws just the changed
//! routes without touching the BGP sessions.
//!
//! A VIP is announced when at least one of its services has a usable real server (weight above
//! 0 and not removed, so health checks that fail every real server withdraw it) and every port
//! is administratively up; nothing is announced once tapvs stops.
//!
//! The watchdog: a small `sh` child (its own process group, ignoring INT, TERM and HUP) reads
//! the wanted set from a pipe whose writing end only tapvs holds, writes the file and runs
//! `birdc configure` when the set changed (or the last reload failed). When tapvs exits for
//! any reason, `kill -9` included, the kernel closes the pipe: the watchdog reads EOF, writes
//! an empty file, reloads BIRD and exits, so the route is withdrawn within one `birdc
//! configure` plus one BGP UPDATE (tens of milliseconds). Should the watchdog or BIRD die too,
//! the router's BGP hold time bounds the route's life.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::control::shared::Shared;
use crate::datapath::service::Snapshot;
use crate::scaleout::ScaleOutConfig;

/// The watchdog: `$1` the include file, `$2` its text with no route, the rest the birdc
/// command. Each block of lines ended by a line `.` is the file's new text; EOF means tapvs is
/// gone: the text with no route, reload, exit.
const WATCHDOG: &str = r#"trap '' INT TERM HUP
f=$1; none=$2; shift 2
ok=0
apply() {
  if [ "$ok" = 1 ] && cmp -s "$f.new" "$f"; then rm -f "$f.new"; return; fi
  mv -f "$f.new" "$f"
  if out=$("$@" configure 2>&1) && case $out in *Reconfigur*) true;; *) false;; esac; then
    ok=1
  else
    ok=0
    echo "tapvs announce: birdc configure failed: $out" >&2
  fi
}
: > "$f.new"
while IFS= read -r l; do
  if [ "$l" = . ]; then apply "$@"; : > "$f.new"; else printf '%s\n' "$l" >> "$f.new"; fi
done
ok=0
printf '%s' "$none" > "$f.new"
apply "$@"
"#;

/// Starts the announcer thread when the config has `[scale_out]`; the caller joins it after
/// setting `shared.stop`. The watchdog is spawned here, so a missing `sh` is a start error.
pub fn start(cfg: &Config, shared: &Arc<Shared>) -> Result<Option<JoinHandle<()>>, String> {
    let Some(so) = cfg.scale_out.clone() else {
        return Ok(None);
    };
    let taps: Vec<String> = cfg.ports.iter().map(|p| p.tap.clone()).collect();
    let mut wd = Watchdog::spawn(&so)?;
    let sh = shared.clone();
    std::thread::Builder::new()
        .name("tapvs-announce".into())
        .spawn(move || {
            let interval = Duration::from_millis(so.interval_ms);
            let mut last: Option<Vec<IpAddr>> = None;
            let mut sent_at = Instant::now();
            while !sh.stop.load(Ordering::Relaxed) {
                let ports_up = taps
                    .iter()
                    .all(|t| crate::sys::tap::link_is_up(t).unwrap_or(false));
                let vips = if ports_up {
                    served_vips(&sh.snapshot.load())
                } else {
                    Vec::new()
                };
                // Re-sent now and then, so a failed reload is retried.
                if last.as_ref() != Some(&vips) || sent_at.elapsed() > Duration::from_secs(2) {
                    if last.as_ref() != Some(&vips) {
                        tracing::info!(vips = ?vips, ports_up, "scale-out: announcing");
                    }
                    wd.send(&so, &vips);
                    sent_at = Instant::now();
                    last = Some(vips);
                }
                std::thread::sleep(interval);
            }
            wd.finish();
        })
        .map(Some)
        .map_err(|e| format!("announce thread: {e}"))
}

/// The VIPs (both families) of `snap` with at least one usable real server, sorted (IPv4
/// before IPv6) and deduplicated.
pub fn served_vips(snap: &Snapshot) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = snap
        .services()
        .filter(|s| s.dests.iter().any(|d| d.is_available() && d.weight() > 0))
        .map(|s| s.vip)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The watchdog child and the writing end of its pipe.
struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    fn spawn(so: &ScaleOutConfig) -> Result<Watchdog, String> {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("tapvs-announce")
            .arg(&so.bird_include)
            .arg(crate::scaleout::bird_routes(&[]))
            .args(&so.birdc)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("scale_out: cannot start the announce watchdog (sh): {e}"))?;
        let stdin = child.stdin.take();
        Ok(Watchdog { child, stdin })
    }

    /// Hands the set to the watchdog; respawns it if it died.
    fn send(&mut self, so: &ScaleOutConfig, vips: &[IpAddr]) {
        let mut text = crate::scaleout::bird_routes(vips);
        text.push_str(".\n");
        let ok = self.stdin.as_mut().is_some_and(|s| {
            s.write_all(text.as_bytes())
                .and_then(|()| s.flush())
                .is_ok()
        });
        if !ok {
            tracing::warn!("scale-out: announce watchdog gone, restarting it");
            let _ = self.child.wait();
            match Watchdog::spawn(so) {
                Ok(w) => *self = w,
                Err(e) => tracing::error!("{e}"),
            }
        }
    }

    /// Closes the pipe (the watchdog withdraws everything) and waits for it, bounded.
    fn finish(mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::warn!("scale-out: announce watchdog still running after 5 s");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_vips_with_a_usable_real_server_are_served() {
        let cfg = crate::config::parse(
            r#"
[control]
socket = ""

[[port]]
name = "seg"
tap = "tp0"
addresses = ["10.88.0.11/24", "2001:db8:5::1/64"]

[[service]]
protocol = "tcp"
address = "[2001:db8:f::80]:80"
[[service.real]]
address = "[2001:db8:5::2]:80"
forward = "dr"

[[service]]
protocol = "tcp"
address = "[2001:db8:f::81]:80"
[[service.real]]
address = "[2001:db8:5::2]:80"
forward = "dr"
weight = 0

[[service]]
protocol = "tcp"
address = "198.51.100.10:80"
[[service.real]]
address = "10.88.0.101:80"
forward = "dr"

[[service]]
protocol = "tcp"
address = "198.51.100.10:443"
[[service.real]]
address = "10.88.0.101:443"
forward = "dr"

[[service]]
protocol = "tcp"
address = "198.51.100.20:80"
[[service.real]]
address = "10.88.0.101:80"
forward = "dr"
weight = 0

[[service]]
protocol = "udp"
address = "198.51.100.5:53"
[[service.real]]
address = "10.88.0.102:53"
forward = "tun"
"#,
            std::path::Path::new("a.toml"),
        )
        .unwrap();
        let (_, snap) = crate::control::table::Table::from_config(&cfg).unwrap();
        // Both families, sorted (IPv4 first), once per VIP; the quiesced-only VIPs are not
        // served.
        let want: Vec<IpAddr> = ["198.51.100.5", "198.51.100.10", "2001:db8:f::80"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(served_vips(&snap), want);
        for s in snap.services() {
            for d in &s.dests {
                d.set_available(false);
            }
        }
        assert!(served_vips(&snap).is_empty());
    }
}
