//! Hook scripts the control plane runs: VRRP `notify*` scripts, real servers'
//! `notify_up`/`notify_down` and services' `quorum_up`/`quorum_down`. Each runs through
//! `/bin/sh -c` with its arguments and environment, stdin closed; the calling thread never
//! waits for it: children are kept and reaped at the caller's next round ([`Scripts::reap`]),
//! and a script that cannot start or exits non-zero is logged.

use std::process::{Child, Command, Stdio};

/// Scripts started and not yet reaped.
#[derive(Default)]
pub struct Scripts {
    children: Vec<(String, Child)>,
}

impl Scripts {
    /// No scripts running.
    pub fn new() -> Scripts {
        Scripts::default()
    }

    /// Starts `script` as `/bin/sh -c 'SCRIPT "$@"' sh ARGS...` with `env` added; `what`
    /// names it in logs.
    pub fn spawn(&mut self, what: &str, script: &str, args: &[String], env: &[(&str, &str)]) {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!("{script} \"$@\""))
            .arg("sh")
            .args(args)
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        match cmd.spawn() {
            Ok(c) => self.children.push((what.to_string(), c)),
            Err(e) => tracing::warn!(script = %script, what, error = %e, "script failed to start"),
        }
    }

    /// Reaps the children that have ended, logging a non-zero exit.
    pub fn reap(&mut self) {
        self.children.retain_mut(|(what, c)| match c.try_wait() {
            Ok(None) => true,
            Ok(Some(st)) => {
                if !st.success() {
                    tracing::warn!(what = %what, status = %st, "script failed");
                }
                false
            }
            Err(e) => {
                tracing::warn!(what = %what, error = %e, "script wait failed");
                false
            }
        });
    }

    /// Scripts still running.
    pub fn running(&self) -> usize {
        self.children.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn runs_with_args_and_env_and_reaps() {
        let dir = std::env::temp_dir().join(format!("tapvs-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let mut s = Scripts::new();
        s.spawn(
            "test",
            &format!("printf '%s|%s|%s' \"$TAPVS_X\" >{}", out.display()),
            &["a".into(), "b c".into()],
            &[("TAPVS_X", "x")],
        );
        s.spawn("missing", "exit 3", &[], &[]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.running() > 0 && Instant::now() < deadline {
            s.reap();
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(s.running(), 0);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "x|a|b c");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
