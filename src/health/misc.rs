//! MISC_CHECK: run an external program and judge its exit status.
//!
//! `misc_path` is a command line split on whitespace into a program and its arguments (no
//! shell: write `sh -c '...'`-style logic into a script). The program runs with stdin, stdout
//! and stderr on `/dev/null`, in its own process group. It must exit within `misc_timeout`
//! (default: `delay_loop`); otherwise it is killed (SIGKILL to the program itself; processes
//! it started are not followed) and the check fails.
//!
//! Exit 0 means up (with the configured weight), 1 down. Without `misc_dynamic` any other
//! status (or death by a signal) is down; with `misc_dynamic`, 2..=255 mean up with weight
//! `status - 2`. The child is reaped with `try_wait` from [`Checker::poll`], never waited for.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::transport::Transport;
use super::{Checker, Outcome, Poll};

/// How often a running program is polled when nothing else wakes the engine.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// An external-program check.
#[derive(Debug)]
pub struct MiscChecker {
    argv: Vec<String>,
    timeout: Duration,
    dynamic: bool,
    child: Option<(Child, Instant)>,
    last_poll: Option<Instant>,
    error: Option<(String, Instant)>,
}

/// Splits a `misc_path` command line on whitespace; `None` when it is blank.
pub fn split_command(cmd: &str) -> Option<Vec<String>> {
    let argv: Vec<String> = cmd.split_whitespace().map(String::from).collect();
    (!argv.is_empty()).then_some(argv)
}

impl MiscChecker {
    /// Runs `argv` (program first, non-empty) with `timeout`; `dynamic`: `misc_dynamic`.
    pub fn new(argv: Vec<String>, timeout: Duration, dynamic: bool) -> MiscChecker {
        MiscChecker {
            argv,
            timeout,
            dynamic,
            child: None,
            last_poll: None,
            error: None,
        }
    }

    fn judge(&self, code: Option<i32>) -> Outcome {
        let what = self.argv.join(" ");
        match code {
            Some(0) => Outcome::up(format!("{what:?} exited 0")),
            Some(1) => Outcome::down(format!("{what:?} exited 1")),
            Some(c @ 2..=255) if self.dynamic => Outcome {
                ok: true,
                weight: Some(c as u32 - 2),
                reason: format!("{what:?} exited {c}: weight {}", c - 2),
            },
            Some(c) => Outcome::down(format!("{what:?} exited {c}")),
            None => Outcome::down(format!("{what:?} killed by a signal")),
        }
    }
}

impl Checker for MiscChecker {
    fn start(&mut self, t: &mut dyn Transport, now: Instant) {
        self.cancel(t);
        self.last_poll = Some(now);
        let Some((prog, args)) = self.argv.split_first() else {
            self.error = Some(("empty misc_path".into(), now));
            return;
        };
        let spawned = Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        match spawned {
            Ok(c) => self.child = Some((c, now + self.timeout)),
            Err(e) => self.error = Some((format!("cannot run {prog:?}: {e}"), now)),
        }
    }

    fn poll(&mut self, t: &mut dyn Transport, now: Instant) -> Poll {
        if let Some((e, _)) = self.error.take() {
            return Poll::Done(Outcome::down(e));
        }
        self.last_poll = Some(now);
        let Some((child, deadline)) = self.child.as_mut() else {
            return Poll::Pending;
        };
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Poll::Done(self.judge(status.code()))
            }
            Ok(None) if now >= *deadline => {
                self.cancel(t);
                Poll::Done(Outcome::down(format!(
                    "{:?} killed after misc_timeout {:?}",
                    self.argv.join(" "),
                    self.timeout
                )))
            }
            Ok(None) => Poll::Pending,
            Err(e) => {
                self.cancel(t);
                Poll::Done(Outcome::down(format!("waiting for the program: {e}")))
            }
        }
    }

    fn name(&self) -> &'static str {
        "MISC_CHECK"
    }

    fn cancel(&mut self, _t: &mut dyn Transport) {
        if let Some((mut child, _)) = self.child.take() {
            // Already exited is fine; after SIGKILL the wait is immediate.
            let _ = child.kill();
            let _ = child.wait();
        }
        self.error = None;
    }

    fn next_poll(&self) -> Option<Instant> {
        match (&self.child, &self.error) {
            (Some((_, deadline)), _) => {
                let tick = self.last_poll.map_or(*deadline, |l| l + POLL_INTERVAL);
                Some(tick.min(*deadline))
            }
            (None, Some((_, at))) => Some(*at),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::fake::FakeTransport;

    /// Polls with a frozen clock until the real process exits (bounded by 10 s real time).
    fn finish(c: &mut MiscChecker, t: &mut FakeTransport, now: Instant) -> Outcome {
        let real = Instant::now();
        while real.elapsed() < Duration::from_secs(10) {
            if let Poll::Done(o) = c.poll(t, now) {
                return o;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("program did not finish");
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn exit_codes() {
        let now = Instant::now();
        let mut t = FakeTransport::new();
        let to = Duration::from_secs(30);
        let mut c = MiscChecker::new(split_command("true").unwrap(), to, false);
        c.start(&mut t, now);
        assert!(finish(&mut c, &mut t, now).ok);

        let mut c = MiscChecker::new(split_command("false").unwrap(), to, false);
        c.start(&mut t, now);
        assert!(!finish(&mut c, &mut t, now).ok);

        // Without misc_dynamic, exit 3 is a failure.
        let mut c = MiscChecker::new(sh("exit 3"), to, false);
        c.start(&mut t, now);
        assert!(!finish(&mut c, &mut t, now).ok);

        let mut c = MiscChecker::new(vec!["/nonexistent/prog".into()], to, false);
        c.start(&mut t, now);
        let o = finish(&mut c, &mut t, now);
        assert!(!o.ok && o.reason.contains("cannot run"), "{o:?}");
        assert!(split_command("   ").is_none());
    }

    #[test]
    fn dynamic_weights() {
        let now = Instant::now();
        let mut t = FakeTransport::new();
        let to = Duration::from_secs(30);
        for (script, ok, weight) in [
            ("exit 0", true, None),
            ("exit 1", false, None),
            ("exit 2", true, Some(0)),
            ("exit 7", true, Some(5)),
            ("exit 255", true, Some(253)),
        ] {
            let mut c = MiscChecker::new(sh(script), to, true);
            c.start(&mut t, now);
            let o = finish(&mut c, &mut t, now);
            assert_eq!((o.ok, o.weight), (ok, weight), "{script}: {o:?}");
        }
    }

    #[test]
    fn timeout_kills() {
        let now = Instant::now();
        let mut t = FakeTransport::new();
        let mut c = MiscChecker::new(
            split_command("sleep 5").unwrap(),
            Duration::from_millis(100),
            false,
        );
        c.start(&mut t, now);
        assert_eq!(
            c.poll(&mut t, now + Duration::from_millis(50)),
            Poll::Pending
        );
        assert_eq!(c.next_poll(), Some(now + Duration::from_millis(70)));
        let real = Instant::now();
        match c.poll(&mut t, now + Duration::from_millis(100)) {
            Poll::Done(o) => assert!(!o.ok && o.reason.contains("killed"), "{o:?}"),
            Poll::Pending => panic!("pending"),
        }
        assert!(
            real.elapsed() < Duration::from_secs(2),
            "kill did not stop the program"
        );
        assert_eq!(c.next_poll(), None);
    }
}
