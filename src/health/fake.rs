//! A scripted [`Transport`] for tests: no network, every outcome decided up front.
//!
//! TCP servers are a map from address to [`TcpBehaviour`] (refuse, never answer, accept and
//! stay silent, answer any request with fixed bytes and close, or run a per-connection
//! handler such as an in-process TLS server); UDP servers a map to [`UdpBehaviour`]; ICMP
//! echo answers come from the hosts in [`FakeTransport::ping_hosts`]. Everything is delivered
//! synchronously: bytes sent are handed to the server at once and its answer is readable at
//! the next `tcp_recv`. What the checkers sent is recorded for assertions.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::transport::{SockId, TcpState, Transport};

/// A connection's server side: called with each chunk of bytes the client sent (and once
/// with an empty slice when the connection opens); returns bytes to send back and whether
/// the server then closes its side.
pub type Handler = Box<dyn FnMut(&[u8]) -> (Vec<u8>, bool)>;

/// How a scripted TCP server behaves.
#[derive(Clone)]
pub enum TcpBehaviour {
    /// Refuses the connection (RST): the socket is [`TcpState::Failed`].
    Refuse,
    /// Never answers the SYN: the socket stays [`TcpState::Connecting`].
    NoAnswer,
    /// Accepts, reads, never answers and never closes.
    AcceptSilent,
    /// Accepts; once the client's bytes contain a blank line (`\r\n\r\n`, the end of an HTTP
    /// request head), sends these bytes and closes.
    Reply(Vec<u8>),
    /// Accepts and runs a fresh handler made by the factory for each connection.
    Serve(Arc<dyn Fn() -> Handler + Send + Sync>),
}

impl fmt::Debug for TcpBehaviour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TcpBehaviour::Refuse => f.write_str("Refuse"),
            TcpBehaviour::NoAnswer => f.write_str("NoAnswer"),
            TcpBehaviour::AcceptSilent => f.write_str("AcceptSilent"),
            TcpBehaviour::Reply(b) => write!(f, "Reply({} bytes)", b.len()),
            TcpBehaviour::Serve(_) => f.write_str("Serve(..)"),
        }
    }
}

/// How a scripted UDP server behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpBehaviour {
    /// Answers any datagram with these bytes.
    Reply(Vec<u8>),
    /// An ICMP port unreachable comes back.
    Unreachable,
    /// Nothing comes back.
    Silent,
}

struct FakeTcp {
    dst: SocketAddr,
    state: TcpState,
    to_client: VecDeque<u8>,
    from_client: Vec<u8>,
    reply: Option<Vec<u8>>,
    handler: Option<Handler>,
}

struct FakeUdp {
    reply: Option<Vec<u8>>,
    unreachable: bool,
}

/// The scripted transport. Unknown TCP destinations never answer, unknown UDP destinations
/// are silent, unknown hosts do not answer pings.
pub struct FakeTransport {
    /// Scripted TCP servers.
    pub tcp_servers: HashMap<SocketAddr, TcpBehaviour>,
    /// Scripted UDP servers.
    pub udp_servers: HashMap<SocketAddr, UdpBehaviour>,
    /// Hosts that answer ICMP echo.
    pub ping_hosts: HashSet<IpAddr>,
    /// Most bytes one `tcp_send` takes (to exercise partial sends).
    pub send_limit: usize,
    /// Most bytes one `tcp_recv` returns (to exercise partial reads).
    pub recv_limit: usize,
    /// Every TCP connection attempt, in order.
    pub connects: Vec<SocketAddr>,
    /// Per closed TCP connection: destination and everything the client sent.
    pub transcripts: Vec<(SocketAddr, Vec<u8>)>,
    /// Every UDP datagram sent.
    pub udp_sent: Vec<(SocketAddr, Vec<u8>)>,
    /// Every echo request sent.
    pub pings_sent: Vec<IpAddr>,
    next_id: SockId,
    tcp: HashMap<SockId, FakeTcp>,
    udp: HashMap<SockId, FakeUdp>,
    pings: HashMap<SockId, bool>,
}

impl Default for FakeTransport {
    fn default() -> Self {
        FakeTransport::new()
    }
}

impl FakeTransport {
    /// An empty network.
    pub fn new() -> FakeTransport {
        FakeTransport {
            tcp_servers: HashMap::new(),
            udp_servers: HashMap::new(),
            ping_hosts: HashSet::new(),
            send_limit: usize::MAX,
            recv_limit: usize::MAX,
            connects: Vec::new(),
            transcripts: Vec::new(),
            udp_sent: Vec::new(),
            pings_sent: Vec::new(),
            next_id: 1,
            tcp: HashMap::new(),
            udp: HashMap::new(),
            pings: HashMap::new(),
        }
    }

    /// Scripts the TCP server at `addr`.
    pub fn tcp(&mut self, addr: SocketAddr, b: TcpBehaviour) -> &mut Self {
        self.tcp_servers.insert(addr, b);
        self
    }

    /// Scripts the UDP server at `addr`.
    pub fn udp(&mut self, addr: SocketAddr, b: UdpBehaviour) -> &mut Self {
        self.udp_servers.insert(addr, b);
        self
    }

    /// Sockets (TCP, UDP, echo) opened and not yet closed: 0 after a finished check.
    pub fn open_sockets(&self) -> usize {
        self.tcp.len() + self.udp.len() + self.pings.len()
    }

    fn id(&mut self) -> SockId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

impl FakeTcp {
    fn deliver(&mut self, data: &[u8]) {
        if let Some(reply) = self.reply.take() {
            if self.from_client.windows(4).any(|w| w == b"\r\n\r\n") {
                self.to_client.extend(reply);
                self.state = TcpState::PeerClosed;
            } else {
                self.reply = Some(reply);
            }
        }
        if let Some(h) = self.handler.as_mut() {
            let (out, close) = h(data);
            self.to_client.extend(out);
            if close {
                self.state = TcpState::PeerClosed;
                self.handler = None;
            }
        }
    }
}

impl Transport for FakeTransport {
    fn tcp_connect(&mut self, dst: SocketAddr) -> Result<SockId, String> {
        self.connects.push(dst);
        let b = self
            .tcp_servers
            .get(&dst)
            .cloned()
            .unwrap_or(TcpBehaviour::NoAnswer);
        let mut c = FakeTcp {
            dst,
            state: TcpState::Open,
            to_client: VecDeque::new(),
            from_client: Vec::new(),
            reply: None,
            handler: None,
        };
        match b {
            TcpBehaviour::Refuse => c.state = TcpState::Failed,
            TcpBehaviour::NoAnswer => c.state = TcpState::Connecting,
            TcpBehaviour::AcceptSilent => {}
            TcpBehaviour::Reply(r) => c.reply = Some(r),
            TcpBehaviour::Serve(f) => {
                c.handler = Some(f());
                c.deliver(&[]);
            }
        }
        let id = self.id();
        self.tcp.insert(id, c);
        Ok(id)
    }

    fn tcp_state(&self, s: SockId) -> TcpState {
        self.tcp.get(&s).map_or(TcpState::Failed, |c| c.state)
    }

    fn tcp_send(&mut self, s: SockId, data: &[u8]) -> usize {
        let limit = self.send_limit;
        let Some(c) = self.tcp.get_mut(&s) else {
            return 0;
        };
        if c.state != TcpState::Open && c.state != TcpState::PeerClosed {
            return 0;
        }
        let n = data.len().min(limit);
        c.from_client.extend_from_slice(&data[..n]);
        if c.state == TcpState::Open {
            c.deliver(&data[..n]);
        }
        n
    }

    fn tcp_recv(&mut self, s: SockId, buf: &mut [u8]) -> usize {
        let limit = self.recv_limit;
        let Some(c) = self.tcp.get_mut(&s) else {
            return 0;
        };
        let n = buf.len().min(limit).min(c.to_client.len());
        for (i, b) in c.to_client.drain(..n).enumerate() {
            buf[i] = b;
        }
        n
    }

    fn tcp_close(&mut self, s: SockId) {
        if let Some(c) = self.tcp.remove(&s) {
            self.transcripts.push((c.dst, c.from_client));
        }
    }

    fn udp_send(&mut self, dst: SocketAddr, payload: &[u8]) -> Result<SockId, String> {
        self.udp_sent.push((dst, payload.to_vec()));
        let u = match self.udp_servers.get(&dst) {
            Some(UdpBehaviour::Reply(r)) => FakeUdp {
                reply: Some(r.clone()),
                unreachable: false,
            },
            Some(UdpBehaviour::Unreachable) => FakeUdp {
                reply: None,
                unreachable: true,
            },
            Some(UdpBehaviour::Silent) | None => FakeUdp {
                reply: None,
                unreachable: false,
            },
        };
        let id = self.id();
        self.udp.insert(id, u);
        Ok(id)
    }

    fn udp_recv(&mut self, s: SockId, buf: &mut [u8]) -> Option<usize> {
        let r = self.udp.get_mut(&s)?.reply.take()?;
        let n = r.len().min(buf.len());
        buf[..n].copy_from_slice(&r[..n]);
        Some(n)
    }

    fn udp_unreachable(&self, s: SockId) -> bool {
        self.udp.get(&s).is_some_and(|u| u.unreachable)
    }

    fn udp_close(&mut self, s: SockId) {
        self.udp.remove(&s);
    }

    fn ping(&mut self, dst: IpAddr) -> Result<SockId, String> {
        self.pings_sent.push(dst);
        let replied = self.ping_hosts.contains(&dst);
        let id = self.id();
        self.pings.insert(id, replied);
        Ok(id)
    }

    fn ping_replied(&self, s: SockId) -> bool {
        self.pings.get(&s).copied().unwrap_or(false)
    }

    fn ping_close(&mut self, s: SockId) {
        self.pings.remove(&s);
    }
}
