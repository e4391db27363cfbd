//! PING_CHECK: the real server is up when it answers an ICMP echo request within
//! `connect_timeout`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::transport::{SockId, Transport};
use super::{Checker, Outcome, Poll};

/// An ICMP echo check.
#[derive(Debug)]
pub struct PingChecker {
    dst: Ipv4Addr,
    timeout: Duration,
    running: Option<(SockId, Instant)>,
    error: Option<(String, Instant)>,
}

impl PingChecker {
    /// Pings `dst`, waiting up to `timeout` for the reply.
    pub fn new(dst: Ipv4Addr, timeout: Duration) -> PingChecker {
        PingChecker {
            dst,
            timeout,
            running: None,
            error: None,
        }
    }
}

impl Checker for PingChecker {
    fn start(&mut self, t: &mut dyn Transport, now: Instant) {
        self.cancel(t);
        match t.ping(self.dst) {
            Ok(s) => self.running = Some((s, now + self.timeout)),
            Err(e) => self.error = Some((format!("ping {}: {e}", self.dst), now)),
        }
    }

    fn poll(&mut self, t: &mut dyn Transport, now: Instant) -> Poll {
        if let Some((e, _)) = self.error.take() {
            return Poll::Done(Outcome::down(e));
        }
        let Some((s, deadline)) = self.running else {
            return Poll::Pending;
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
        if let Some((s, _)) = self.running.take() {
            t.ping_close(s);
        }
        self.error = None;
    }

    fn next_poll(&self) -> Option<Instant> {
        match (self.running, &self.error) {
            (Some((_, d)), _) => Some(d),
            (None, Some((_, at))) => Some(*at),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::fake::FakeTransport;

    #[test]
    fn reply_and_no_reply() {
        let now = Instant::now();
        let ip: Ipv4Addr = "172.16.0.2".parse().unwrap();
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
