//! PING_CHECK: the real server is up when it answers an ICMP echo request within
//! `connect_timeout`.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::transport::Transport;
use super::{Attempt, Checker, Outcome, Poll};

/// An ICMP echo check.
#[derive(Debug)]
pub struct PingChecker {
    dst: IpAddr,
    timeout: Duration,
    attempt: Attempt,
}

impl PingChecker {
    /// Pings `dst`, waiting up to `timeout` for the reply.
    pub fn new(dst: IpAddr, timeout: Duration) -> PingChecker {
        PingChecker {
            dst,
            timeout,
            attempt: Attempt::default(),
        }
    }
}

impl Checker for PingChecker {
    fn start(&mut self, t: &mut dyn Transport, now: Instant) {
        self.cancel(t);
        let started = t
            .ping(self.dst)
            .map_err(|e| format!("ping {}: {e}", self.dst));
        self.attempt.begin(started, now + self.timeout, now);
    }

    fn poll(&mut self, t: &mut dyn Transport, now: Instant) -> Poll {
        let (s, deadline) = match self.attempt.current() {
            Ok(running) => running,
            Err(p) => return p,
        };
        let out = if t.ping_replied(s) {
            Outcome::up(format!("{} answered echo", self.dst))
        } else if now >= deadline {
            Outcome::down(format!(
                "no echo reply from {} within {:?}",
                self.dst, self.timeout
            ))
        } else {
            return Poll::Pending;
        };
        self.cancel(t);
        Poll::Done(out)
    }

    fn name(&self) -> &'static str {
        "PING_CHECK"
    }

    fn cancel(&mut self, t: &mut dyn Transport) {
        if let Some(s) = self.attempt.end() {
            t.ping_close(s);
        }
    }

    fn next_poll(&self) -> Option<Instant> {
        self.attempt.next_poll()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::fake::FakeTransport;

    #[test]
    fn reply_and_no_reply() {
        let now = Instant::now();
        let ip: IpAddr = "172.16.0.2".parse().unwrap();
        let mut t = FakeTransport::new();
        t.ping_hosts.insert(ip);
        let mut c = PingChecker::new(ip, Duration::from_secs(5));
        c.start(&mut t, now);
        assert!(matches!(c.poll(&mut t, now), Poll::Done(o) if o.ok));

        let mut c = PingChecker::new("172.16.0.3".parse().unwrap(), Duration::from_secs(5));
        c.start(&mut t, now);
        assert_eq!(c.poll(&mut t, now + Duration::from_secs(2)), Poll::Pending);
        assert!(matches!(c.poll(&mut t, now + Duration::from_secs(5)), Poll::Done(o) if !o.ok));
        assert_eq!(t.open_sockets(), 0);
        assert_eq!(t.pings_sent.len(), 2);
    }
}
