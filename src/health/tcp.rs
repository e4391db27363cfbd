//! TCP_CHECK: the real server is up when a TCP connection to it completes within
//! `connect_timeout`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::transport::{TcpState, Transport};
use super::{Attempt, Checker, Outcome, Poll};

/// A TCP connect check.
#[derive(Debug)]
pub struct TcpChecker {
    dst: SocketAddr,
    timeout: Duration,
    attempt: Attempt,
}

impl TcpChecker {
    /// Checks that `dst` accepts a connection within `timeout`.
    pub fn new(dst: SocketAddr, timeout: Duration) -> TcpChecker {
        TcpChecker {
            dst,
            timeout,
            attempt: Attempt::default(),
        }
    }
}

impl Checker for TcpChecker {
    fn start(&mut self, t: &mut dyn Transport, now: Instant) {
        self.cancel(t);
        let started = t
            .tcp_connect(self.dst)
            .map_err(|e| format!("connect to {}: {e}", self.dst));
        self.attempt.begin(started, now + self.timeout, now);
    }

    fn poll(&mut self, t: &mut dyn Transport, now: Instant) -> Poll {
        let (s, deadline) = match self.attempt.current() {
            Ok(running) => running,
            Err(p) => return p,
        };
        let out = match t.tcp_state(s) {
            TcpState::Open | TcpState::PeerClosed => {
                Outcome::up(format!("connected to {}", self.dst))
            }
            TcpState::Failed => Outcome::down(format!("connection to {} failed", self.dst)),
            TcpState::Connecting if now >= deadline => Outcome::down(format!(
                "connection to {} timed out after {:?}",
                self.dst, self.timeout
            )),
            TcpState::Connecting => return Poll::Pending,
        };
        self.cancel(t);
        Poll::Done(out)
    }

    fn name(&self) -> &'static str {
        "TCP_CHECK"
    }

    fn cancel(&mut self, t: &mut dyn Transport) {
        if let Some(s) = self.attempt.end() {
            t.tcp_close(s);
        }
    }

    fn next_poll(&self) -> Option<Instant> {
        self.attempt.next_poll()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::fake::{FakeTransport, TcpBehaviour};

    fn addr() -> SocketAddr {
        "172.16.0.2:80".parse().unwrap()
    }

    #[test]
    fn connect_success_refusal_and_timeout() {
        let now = Instant::now();
        let mut t = FakeTransport::new();
        t.tcp(addr(), TcpBehaviour::AcceptSilent);
        let mut c = TcpChecker::new(addr(), Duration::from_secs(5));
        c.start(&mut t, now);
        match c.poll(&mut t, now) {
            Poll::Done(o) => assert!(o.ok, "{o:?}"),
            Poll::Pending => panic!("pending"),
        }
        assert_eq!(t.open_sockets(), 0);

        t.tcp(addr(), TcpBehaviour::Refuse);
        c.start(&mut t, now);
        assert!(matches!(c.poll(&mut t, now), Poll::Done(o) if !o.ok));

        t.tcp(addr(), TcpBehaviour::NoAnswer);
        c.start(&mut t, now);
        assert_eq!(c.poll(&mut t, now + Duration::from_secs(4)), Poll::Pending);
        assert_eq!(c.next_poll(), Some(now + Duration::from_secs(5)));
        match c.poll(&mut t, now + Duration::from_secs(5)) {
            Poll::Done(o) => assert!(!o.ok && o.reason.contains("timed out"), "{o:?}"),
            Poll::Pending => panic!("pending"),
        }
        assert_eq!(t.open_sockets(), 0);
        assert_eq!(t.connects, vec![addr(); 3]);
    }
}
