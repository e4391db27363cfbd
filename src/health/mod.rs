//! Health checks of real servers, with keepalived's semantics.
//!
//! Each check type is a non-blocking state machine implementing [`Checker`]: [`tcp`]
//! (TCP_CHECK), [`http`] (HTTP_GET), [`ssl`] (SSL_GET: HTTP over TLS), [`udp`] (UDP_CHECK),
//! [`ping`] (PING_CHECK) and [`misc`] (MISC_CHECK, an external program). Network checks run
//! over a [`transport::Transport`], the appliance's own host stack, so they leave from the
//! appliance's address on the real servers' segment; [`fake::FakeTransport`] scripts a
//! network for tests.
//!
//! [`engine`] schedules the checkers of one real server (`delay_loop`, `retry`,
//! `delay_before_retry`, `warmup`, `alpha`) and turns their outcomes into up, down and weight
//! events, and keeps a virtual service's quorum with hysteresis. [`config`] holds the serde
//! schema embedded in the TOML configuration and builds engines from it. Nothing here blocks:
//! the caller drives everything with [`engine::RealServerHealth::tick`] and its own clock, and
//! sleeps until [`engine::RealServerHealth::next_wakeup`].

use std::time::Instant;

pub mod config;
pub mod engine;
pub mod fake;
pub mod http;
pub mod misc;
pub mod ping;
pub mod ssl;
pub mod tcp;
pub mod transport;
pub mod udp;

pub use transport::{SockId, TcpState, Transport};

/// The result of one check attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the real server passed the check.
    pub ok: bool,
    /// With `misc_dynamic`: the weight the program asked for (`None`: the configured weight).
    pub weight: Option<u32>,
    /// A short human-readable explanation (for logs).
    pub reason: String,
}

impl Outcome {
    /// A passed check.
    pub fn up(reason: impl Into<String>) -> Outcome {
        Outcome {
            ok: true,
            weight: None,
            reason: reason.into(),
        }
    }

    /// A failed check.
    pub fn down(reason: impl Into<String>) -> Outcome {
        Outcome {
            ok: false,
            weight: None,
            reason: reason.into(),
        }
    }
}

/// Progress of a check attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// Still running: poll again on network activity or at [`Checker::next_poll`].
    Pending,
    /// Finished.
    Done(Outcome),
}

/// The attempt of a one-socket checker (TCP, UDP, PING): the socket and its deadline while it
/// runs, or the error that kept it from starting, reported by the next poll.
#[derive(Debug, Default)]
pub struct Attempt {
    running: Option<(SockId, Instant)>,
    error: Option<(String, Instant)>,
}

impl Attempt {
    /// Records how starting at `now` went: a socket with until `deadline`, or why not.
    pub fn begin(&mut self, started: Result<SockId, String>, deadline: Instant, now: Instant) {
        match started {
            Ok(s) => self.running = Some((s, deadline)),
            Err(e) => self.error = Some((e, now)),
        }
    }

    /// The running socket and its deadline; otherwise what `poll` returns: the start error as
    /// a failure, or pending when no attempt runs.
    pub fn current(&mut self) -> Result<(SockId, Instant), Poll> {
        if let Some((e, _)) = self.error.take() {
            return Err(Poll::Done(Outcome::down(e)));
        }
        self.running.ok_or(Poll::Pending)
    }

    /// Ends the attempt; returns its socket for the caller to close.
    pub fn end(&mut self) -> Option<SockId> {
        self.error = None;
        self.running.take().map(|(s, _)| s)
    }

    /// When the attempt next needs a poll: its deadline, or at once for a start error.
    pub fn next_poll(&self) -> Option<Instant> {
        match (self.running, &self.error) {
            (Some((_, d)), _) => Some(d),
            (None, Some((_, at))) => Some(*at),
            _ => None,
        }
    }
}

/// One health check of one real server, as a non-blocking state machine.
///
/// The engine calls [`start`](Checker::start) to begin an attempt, then
/// [`poll`](Checker::poll) until it returns [`Poll::Done`]; every attempt ends by its own
/// timeout. [`cancel`](Checker::cancel) abandons an attempt and releases its sockets or
/// process.
pub trait Checker: Send {
    /// Begins a new attempt at `now` (an attempt still running is cancelled first).
    fn start(&mut self, t: &mut dyn Transport, now: Instant);
    /// Advances the attempt; never blocks.
    fn poll(&mut self, t: &mut dyn Transport, now: Instant) -> Poll;
    /// The keepalived name of the check type (`TCP_CHECK`, `HTTP_GET`, ...).
    fn name(&self) -> &'static str;
    /// Abandons the running attempt, if any, releasing its resources.
    fn cancel(&mut self, t: &mut dyn Transport);
    /// When the running attempt must be polled even without network activity (its deadline,
    /// or a polling interval for a child process); `None` when no attempt is running.
    fn next_poll(&self) -> Option<Instant>;
}
