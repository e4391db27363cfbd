//! The network interface the checks run over.
//!
//! The daemon implements [`Transport`] on its host stack (on the appliance's own TAP), so
//! checks leave from the appliance's address facing the real server. Every call is
//! non-blocking; checkers poll the state of their sockets.

use std::net::{IpAddr, SocketAddr};

/// A socket handle, valid until closed.
pub type SockId = usize;

/// The state of a TCP socket as a checker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    /// The handshake is in progress.
    Connecting,
    /// Established.
    Open,
    /// The peer closed its side (EOF after data, which may still be read).
    PeerClosed,
    /// Reset, refused or failed.
    Failed,
}

/// Non-blocking TCP, UDP and ICMP echo for the checkers.
pub trait Transport {
    /// Starts a TCP connection to `dst` (source: the appliance's address facing dst).
    fn tcp_connect(&mut self, dst: SocketAddr) -> Result<SockId, String>;
    /// The socket's state.
    fn tcp_state(&self, s: SockId) -> TcpState;
    /// Queues bytes for sending; returns how many were taken (may be fewer).
    fn tcp_send(&mut self, s: SockId, data: &[u8]) -> usize;
    /// Reads what has arrived (0 when nothing yet).
    fn tcp_recv(&mut self, s: SockId, buf: &mut [u8]) -> usize;
    /// Closes (gracefully if open) and forgets the socket.
    fn tcp_close(&mut self, s: SockId);
    /// Opens a UDP socket and sends `payload` to `dst`.
    fn udp_send(&mut self, dst: SocketAddr, payload: &[u8]) -> Result<SockId, String>;
    /// A datagram received on the socket from `dst`, if any.
    fn udp_recv(&mut self, s: SockId, buf: &mut [u8]) -> Option<usize>;
    /// Whether an ICMP port/host unreachable came back for the socket's datagram.
    fn udp_unreachable(&self, s: SockId) -> bool;
    /// Closes and forgets the UDP socket.
    fn udp_close(&mut self, s: SockId);
    /// Sends an ICMP echo request to `dst`.
    fn ping(&mut self, dst: IpAddr) -> Result<SockId, String>;
    /// Whether the echo reply arrived.
    fn ping_replied(&self, s: SockId) -> bool;
    /// Forgets the echo request.
    fn ping_close(&mut self, s: SockId);
}
