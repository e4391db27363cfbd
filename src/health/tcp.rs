//! TCP_CHECK: the real server is up when a TCP connection to it completes within
//! `connect_timeout`.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use super::transport::{SockId, TcpState, Transport};
use super::{Checker, Outcome, Poll};

/// A TCP connect check.
#[derive(Debug)]
pub struct TcpChecker {
    dst: SocketAddrV4,
    timeout: Duration,
    running: Option<(SockId, Instant)>,
    error: Option<(String, Instant)>,
}

impl TcpChecker {
    /// Checks that `dst` accepts a connection within `timeout`.
    pub fn new(dst: SocketAddrV4, timeout: Duration) -> TcpChecker {
        TcpChecker {
            dst,
            timeout,
            running: None,
            error: None,
        }
    }
}

impl Checker for TcpChecker {
    fn start(&mut self, t: &mut dyn Transport, now: Instant) {
        self.cancel(t);
        match t.tcp_connect(self.dst) {
            Ok(s) => self.running = Some((s, now + self.timeout)),
            Err(e) => self.error = Some((format!("connect to {}: {e}", self.dst), now)),
        }
    }

    fn poll(&mut self, t: &mut dyn Transport, now: Instant) -> Poll {
        if let Some((e, _)) = self.error.take() {
            return Poll::Done(Outcome::down(e));
        }
        let Some((s, deadline)) = self.running else {
            return Poll::Pending;
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
        if let Some((s, _)) = self.running.take() {
            t.tcp_close(s);
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
    use crate::health::fake::{FakeTransport, TcpBehaviour};

    fn addr() -> SocketAddrV4 {
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
