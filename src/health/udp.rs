//! UDP_CHECK: send a datagram and judge what comes back.
//!
//! The payload defaults to an empty datagram. With `require_reply`, the server is up only if
//! a reply equal to it arrives within `connect_timeout`. Without it, keepalived's rule applies:
//! any reply means up, an ICMP port or host unreachable means down, and silence for the whole
//! `connect_timeout` means up (a UDP service need not answer; only the ICMP error proves that
//! nothing listens).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::http::hex;
use super::transport::Transport;
use super::{Attempt, Checker, Outcome, Poll};

/// A UDP check.
#[derive(Debug)]
pub struct UdpChecker {
    dst: SocketAddr,
    timeout: Duration,
    payload: Vec<u8>,
    require_reply: Option<Vec<u8>>,
    attempt: Attempt,
}

impl UdpChecker {
    /// Sends `payload` to `dst`; see the module documentation for the verdict.
    pub fn new(
        dst: SocketAddr,
        timeout: Duration,
        payload: Vec<u8>,
        require_reply: Option<Vec<u8>>,
    ) -> UdpChecker {
        UdpChecker {
            dst,
            timeout,
            payload,
            require_reply,
            attempt: Attempt::default(),
        }
    }
}

/// Parses a hex string (whitespace and `:` ignored, optional `0x`), as keepalived's
/// `payload` and `require_reply`.
pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let digits: Vec<u8> = t
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b':')
        .collect();
    if digits.len() % 2 != 0 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(format!("{s:?} is not an even number of hex digits"));
    }
    digits
        .chunks(2)
        .map(|p| {
            u8::from_str_radix(std::str::from_utf8(p).unwrap_or("zz"), 16)
                .map_err(|e| e.to_string())
        })
        .collect()
}

impl Checker for UdpChecker {
    fn start(&mut self, t: &mut dyn Transport, now: Instant) {
        self.cancel(t);
        let started = t
            .udp_send(self.dst, &self.payload)
            .map_err(|e| format!("send to {}: {e}", self.dst));
        self.attempt.begin(started, now + self.timeout, now);
    }

    fn poll(&mut self, t: &mut dyn Transport, now: Instant) -> Poll {
        let (s, deadline) = match self.attempt.current() {
            Ok(running) => running,
            Err(p) => return p,
        };
        let mut buf = [0u8; 2048];
        let out = if let Some(n) = t.udp_recv(s, &mut buf) {
            match &self.require_reply {
                Some(want) if &buf[..n] != want.as_slice() => Outcome::down(format!(
                    "{} replied {} instead of {}",
                    self.dst,
                    hex(&buf[..n]),
                    hex(want)
                )),
                _ => Outcome::up(format!("{} replied", self.dst)),
            }
        } else if t.udp_unreachable(s) {
            Outcome::down(format!("{} unreachable (ICMP)", self.dst))
        } else if now >= deadline {
            if self.require_reply.is_some() {
                Outcome::down(format!(
                    "no reply from {} within {:?}",
                    self.dst, self.timeout
                ))
            } else {
                Outcome::up(format!(
                    "no ICMP error from {} within {:?}",
                    self.dst, self.timeout
                ))
            }
        } else {
            return Poll::Pending;
        };
        self.cancel(t);
        Poll::Done(out)
    }

    fn name(&self) -> &'static str {
        "UDP_CHECK"
    }

    fn cancel(&mut self, t: &mut dyn Transport) {
        if let Some(s) = self.attempt.end() {
            t.udp_close(s);
        }
    }

    fn next_poll(&self) -> Option<Instant> {
        self.attempt.next_poll()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::fake::{FakeTransport, UdpBehaviour};

    fn addr() -> SocketAddr {
        "172.16.0.2:53".parse().unwrap()
    }

    fn done(p: Poll) -> Outcome {
        match p {
            Poll::Done(o) => o,
            Poll::Pending => panic!("pending"),
        }
    }

    #[test]
    fn hex_payloads() {
        assert_eq!(parse_hex("0x01ff").unwrap(), vec![1, 255]);
        assert_eq!(
            parse_hex("de:ad be ef").unwrap(),
            vec![0xde, 0xad, 0xbe, 0xef]
        );
        assert_eq!(parse_hex("").unwrap(), Vec::<u8>::new());
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
    }

    #[test]
    fn require_reply_match_mismatch_and_silence() {
        let now = Instant::now();
        let to = Duration::from_secs(5);
        let mut t = FakeTransport::new();
        t.udp(addr(), UdpBehaviour::Reply(b"pong".to_vec()));
        let mut c = UdpChecker::new(addr(), to, b"ping".to_vec(), Some(b"pong".to_vec()));
        c.start(&mut t, now);
        assert!(done(c.poll(&mut t, now)).ok);
        assert_eq!(t.udp_sent, vec![(addr(), b"ping".to_vec())]);

        let mut c = UdpChecker::new(addr(), to, b"ping".to_vec(), Some(b"PONG".to_vec()));
        c.start(&mut t, now);
        let o = done(c.poll(&mut t, now));
        assert!(!o.ok && o.reason.contains("706f6e67"), "{o:?}");

        t.udp(addr(), UdpBehaviour::Silent);
        c.start(&mut t, now);
        assert_eq!(c.poll(&mut t, now + Duration::from_secs(4)), Poll::Pending);
        assert!(!done(c.poll(&mut t, now + to)).ok);
        assert_eq!(t.open_sockets(), 0);
    }

    #[test]
    fn without_require_reply_only_icmp_fails() {
        let now = Instant::now();
        let to = Duration::from_secs(5);
        let mut t = FakeTransport::new();
        let mut c = UdpChecker::new(addr(), to, Vec::new(), None);
        t.udp(addr(), UdpBehaviour::Unreachable);
        c.start(&mut t, now);
        let o = done(c.poll(&mut t, now));
        assert!(!o.ok && o.reason.contains("unreachable"), "{o:?}");

        t.udp(addr(), UdpBehaviour::Silent);
        c.start(&mut t, now);
        assert_eq!(c.poll(&mut t, now + Duration::from_secs(1)), Poll::Pending);
        assert!(done(c.poll(&mut t, now + to)).ok);

        t.udp(addr(), UdpBehaviour::Reply(b"anything".to_vec()));
        c.start(&mut t, now);
        assert!(done(c.poll(&mut t, now)).ok);
        assert_eq!(t.open_sockets(), 0);
    }
}
