//! The appliance's own small host stack for health checks: one smoltcp interface per port
//! (the port's MAC and addresses), fed with the frames the workers receive for the
//! appliance's own addresses, and sending through the port's TAP. Checks therefore leave from
//! the appliance's address on the real servers' segment, and the host kernel needs no
//! address there.
//!
//! Frames arrive as the kernel handed them to the TAP: GSO super-frames are cut into
//! segments and partial checksums are completed before smoltcp (which verifies checksums)
//! sees them. ICMP port unreachables that quote a health-check UDP datagram are noted here,
//! because smoltcp does not report them to UDP sockets. The ICMP errors smoltcp sends (port
//! unreachable for UDP to a closed port of the appliance) pass the `[defence]` limits as the
//! data path's do ([`crate::datapath::acl::IcmpLimiter`], one per port). Everything runs on the
//! health thread; nothing here touches the data path.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr,
    IpAddress, IpCidr, Ipv4Address,
};

use crate::datapath::acl::{IcmpLimiter, IcmpLimits};
use crate::datapath::route::Router;
use crate::datapath::service::PortInfo;
use crate::sys::tap::{TapQueue, VNET_HDR_LEN};

use crate::health::transport::Transport;
pub use crate::health::transport::{SockId, TcpState};

/// A queue-backed smoltcp device: frames in from the workers, frames out to the TAP.
struct QueueDevice {
    rx: VecDeque<Vec<u8>>,
    tx: Arc<TapQueue>,
    mtu: usize,
    icmp: HostIcmp,
}

/// The ICMP error limit of a port's stack.
struct HostIcmp {
    limiter: IcmpLimiter,
    limits: IcmpLimits,
    epoch: std::time::Instant,
}

impl HostIcmp {
    /// Whether `frame` (Ethernet) may be sent: anything but an ICMP error over the limits.
    fn allows(&mut self, frame: &[u8]) -> bool {
        let Some(ip) = frame.get(14..).filter(|_| frame[12..14] == [8, 0]) else {
            return true;
        };
        let ihl = usize::from(ip.first().map_or(0, |b| b & 0x0f)) * 4;
        if ip.len() < 20 || ip[9] != 1 || ip.len() <= ihl {
            return true;
        }
        // Destination unreachable, source quench, time exceeded, parameter problem: the
        // kernel's default icmp_ratemask.
        if !matches!(ip[ihl], 3 | 4 | 11 | 12) {
            return true;
        }
        let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        self.limiter.allow(&self.limits, dst.into(), now_ms)
    }
}

struct Rx(Vec<u8>);

struct Tx<'a>(&'a TapQueue, &'a mut HostIcmp);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // Health-check traffic is a few frames a second: a buffer per frame is fine here.
        let mut buf = vec![0u8; VNET_HDR_LEN + len];
        let r = f(&mut buf[VNET_HDR_LEN..]);
        if self.1.allows(&buf[VNET_HDR_LEN..]) {
            let _ = self.0.write(&buf);
        }
        r
    }
}

impl Device for QueueDevice {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let f = self.rx.pop_front()?;
        Some((Rx(f), Tx(&self.tx, &mut self.icmp)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&self.tx, &mut self.icmp))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = self.mtu + 14;
        c
    }
}

struct PortStack {
    iface: Interface,
    dev: QueueDevice,
    sockets: SocketSet<'static>,
}

enum Sock {
    Tcp {
        port: usize,
        h: SocketHandle,
        was_open: bool,
    },
    Udp {
        port: usize,
        h: SocketHandle,
        local: u16,
    },
    Ping {
        port: usize,
        h: SocketHandle,
        ident: u16,
        replied: bool,
    },
}

/// The host stack.
pub struct HostNet {
    ports: Vec<Option<PortStack>>,
    router: Router,
    socks: HashMap<SockId, Sock>,
    next_id: SockId,
    next_port: u16,
    next_ident: u16,
    dying: Vec<(usize, SocketHandle, Instant)>,
    unreachable: HashSet<u16>,
}

impl std::fmt::Debug for HostNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostNet")
            .field("sockets", &self.socks.len())
            .finish()
    }
}

fn v4(a: Ipv4Addr) -> Ipv4Address {
    Ipv4Address::from(a.octets())
}

impl HostNet {
    /// A stack on `ports` (those with addresses), sending through `queues` (one per port), its
    /// ICMP errors under `limits`.
    pub fn new(
        ports: &[PortInfo],
        router: Router,
        queues: &[Arc<TapQueue>],
        limits: IcmpLimits,
    ) -> HostNet {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let now = Instant::now();
        let stacks = ports
            .iter()
            .zip(queues)
            .enumerate()
            .map(|(i, (p, q))| {
                if p.addresses.is_empty() {
                    return None;
                }
                let mut dev = QueueDevice {
                    rx: VecDeque::new(),
                    tx: q.clone(),
                    mtu: p.mtu as usize,
                    icmp: HostIcmp {
                        limiter: IcmpLimiter::new(1),
                        limits,
                        epoch: std::time::Instant::now(),
                    },
                };
                let mut cfg = IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(p.mac)));
                cfg.random_seed = seed ^ i as u64;
                let mut iface = Interface::new(cfg, &mut dev, now);
                iface.update_ip_addrs(|a| {
                    // Both families: IPv6 neighbours are solicited by smoltcp (the pipeline
                    // hands it the advertisements to its addresses).
                    for c in &p.addresses {
                        let _ = a.push(IpCidr::new(IpAddress::from(c.addr), c.prefix));
                    }
                });
                for r in router.routes() {
                    if r.port == i && r.to.prefix == 0 {
                        match r.via {
                            Some(IpAddr::V4(gw)) => {
                                let _ = iface.routes_mut().add_default_ipv4_route(v4(gw));
                            }
                            Some(IpAddr::V6(gw)) => {
                                let _ = iface.routes_mut().add_default_ipv6_route(gw);
                            }
                            None => {}
                        }
                    }
                }
                Some(PortStack {
                    iface,
                    dev,
                    sockets: SocketSet::new(Vec::new()),
                })
            })
            .collect();
        HostNet {
            ports: stacks,
            router,
            socks: HashMap::new(),
            next_id: 1,
            next_port: 49152,
            next_ident: (seed as u16) | 1,
            dying: Vec::new(),
            unreachable: HashSet::new(),
        }
    }

    /// Hands a frame (virtio-net header + Ethernet frame, as read from the TAP) to the stack.
    pub fn deliver(&mut self, port: usize, buf: &[u8]) {
        let Some(Some(stack)) = self.ports.get_mut(port) else {
            return;
        };
        let Some(hdr) = buf.get(..VNET_HDR_LEN).and_then(modes::VnetHdr::parse) else {
            return;
        };
        let frame = &buf[VNET_HDR_LEN..];
        let Ok(pkt) = modes::parse(frame) else {
            return;
        };
        if pkt.is_icmp() {
            if let Some((17, _, sport, _, _)) = modes::icmp_nat::inner_tuple(frame, &pkt) {
                self.unreachable.insert(sport);
            }
        }
        if hdr.is_gso() {
            let mut seg = vec![0u8; 65536 + 256];
            let rx = &mut stack.dev.rx;
            if pkt.kind == modes::packet::Kind::Ipv6 {
                modes::gso::segment_tcp6(frame, &hdr, &mut seg, |s| rx.push_back(s.to_vec()));
            } else {
                modes::gso::segment_tcp4(frame, &hdr, &pkt, &mut seg, |s| rx.push_back(s.to_vec()));
            }
            return;
        }
        let mut f = frame.to_vec();
        if hdr.needs_csum() {
            modes::offload::complete_partial(
                &mut f,
                usize::from(hdr.csum_start),
                usize::from(hdr.csum_offset),
            );
        }
        stack.dev.rx.push_back(f);
    }

    /// Runs the stack: takes in what was delivered, sends what is due.
    pub fn poll(&mut self) {
        let now = Instant::now();
        for stack in self.ports.iter_mut().flatten() {
            stack.iface.poll(now, &mut stack.dev, &mut stack.sockets);
        }
        // Note echo replies and established connections.
        for s in self.socks.values_mut() {
            match s {
                Sock::Ping {
                    port,
                    h,
                    ident,
                    replied,
                } => {
                    let Some(Some(stack)) = self.ports.get_mut(*port) else {
                        continue;
                    };
                    let sock = stack.sockets.get_mut::<icmp::Socket>(*h);
                    let mut buf = [0u8; 1500];
                    while let Ok((n, from)) = sock.recv_slice(&mut buf) {
                        if matches!(from, IpAddress::Ipv6(_)) {
                            // ICMPv6 echo reply (129) carrying our identifier.
                            *replied |= n >= 8
                                && buf[0] == 129
                                && u16::from_be_bytes([buf[4], buf[5]]) == *ident;
                            continue;
                        }
                        let Ok(p) = Icmpv4Packet::new_checked(&buf[..n]) else {
                            continue;
                        };
                        if let Ok(Icmpv4Repr::EchoReply { ident: i, .. }) =
                            Icmpv4Repr::parse(&p, &Default::default())
                        {
                            *replied |= i == *ident;
                        }
                    }
                }
                Sock::Tcp {
                    port, h, was_open, ..
                } => {
                    if let Some(Some(stack)) = self.ports.get(*port) {
                        let st = stack.sockets.get::<tcp::Socket>(*h).state();
                        *was_open |= !matches!(
                            st,
                            tcp::State::Closed | tcp::State::SynSent | tcp::State::Listen
                        );
                    }
                }
                Sock::Udp { .. } => {}
            }
        }
        // Sockets closed by checks are dropped once they had time to say goodbye.
        let ports = &mut self.ports;
        self.dying.retain(|&(port, h, until)| {
            let Some(Some(stack)) = ports.get_mut(port) else {
                return false;
            };
            let gone = stack.sockets.get::<tcp::Socket>(h).state() == tcp::State::Closed;
            if gone || now >= until {
                stack.sockets.remove(h);
                false
            } else {
                true
            }
        });
    }

    /// How long until the stack needs polling again.
    pub fn poll_delay(&mut self) -> Option<Duration> {
        let now = Instant::now();
        self.ports
            .iter_mut()
            .flatten()
            .filter_map(|s| s.iface.poll_delay(now, &s.sockets))
            .map(|d| Duration::from_micros(d.total_micros()))
            .min()
    }

    fn stack_for(&mut self, dst: IpAddr) -> Result<usize, String> {
        let (port, _) = self
            .router
            .lookup(dst)
            .ok_or_else(|| format!("no route to {dst}"))?;
        match self.ports.get(port) {
            Some(Some(_)) => Ok(port),
            _ => Err(format!("port {port} has no address to check {dst} from")),
        }
    }

    fn local_port(&mut self) -> u16 {
        self.next_port = if self.next_port >= 65000 {
            49152
        } else {
            self.next_port + 1
        };
        self.next_port
    }

    fn add(&mut self, s: Sock) -> SockId {
        let id = self.next_id;
        self.next_id += 1;
        self.socks.insert(id, s);
        id
    }

    /// Starts a TCP connection to `dst`.
    pub fn tcp_connect(&mut self, dst: SocketAddr) -> Result<SockId, String> {
        let port = self.stack_for(dst.ip())?;
        let local = self.local_port();
        let Some(Some(stack)) = self.ports.get_mut(port) else {
            return Err("no stack".into());
        };
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 65536]),
            tcp::SocketBuffer::new(vec![0; 16384]),
        );
        sock.connect(
            stack.iface.context(),
            (IpAddress::from(dst.ip()), dst.port()),
            local,
        )
        .map_err(|e| format!("connect {dst}: {e}"))?;
        let h = stack.sockets.add(sock);
        Ok(self.add(Sock::Tcp {
            port,
            h,
            was_open: false,
        }))
    }

    fn tcp(&mut self, s: SockId) -> Option<&mut tcp::Socket<'static>> {
        let Some(Sock::Tcp { port, h, .. }) = self.socks.get(&s) else {
            return None;
        };
        let (port, h) = (*port, *h);
        self.ports
            .get_mut(port)?
            .as_mut()
            .map(|st| st.sockets.get_mut::<tcp::Socket>(h))
    }

    /// The state of TCP socket `s`.
    pub fn tcp_state(&self, s: SockId) -> TcpState {
        let Some(Sock::Tcp { port, h, was_open }) = self.socks.get(&s) else {
            return TcpState::Failed;
        };
        let Some(Some(stack)) = self.ports.get(*port) else {
            return TcpState::Failed;
        };
        let sock = stack.sockets.get::<tcp::Socket>(*h);
        match sock.state() {
            tcp::State::SynSent | tcp::State::SynReceived => TcpState::Connecting,
            tcp::State::Established => TcpState::Open,
            tcp::State::Closed | tcp::State::Listen if !was_open => TcpState::Failed,
            _ if !sock.may_recv() && !sock.can_recv() => TcpState::PeerClosed,
            _ => TcpState::Open,
        }
    }

    /// Queues bytes on TCP socket `s`; returns how many were taken.
    pub fn tcp_send(&mut self, s: SockId, data: &[u8]) -> usize {
        self.tcp(s)
            .and_then(|t| t.send_slice(data).ok())
            .unwrap_or(0)
    }

    /// Reads what arrived on TCP socket `s`.
    pub fn tcp_recv(&mut self, s: SockId, buf: &mut [u8]) -> usize {
        self.tcp(s)
            .and_then(|t| t.recv_slice(buf).ok())
            .unwrap_or(0)
    }

    /// Closes TCP socket `s` (FIN when open) and forgets it.
    pub fn tcp_close(&mut self, s: SockId) {
        if let Some(t) = self.tcp(s) {
            t.close();
        }
        if let Some(Sock::Tcp { port, h, .. }) = self.socks.remove(&s) {
            self.dying.push((
                port,
                h,
                Instant::now() + smoltcp::time::Duration::from_secs(5),
            ));
        }
    }

    /// Opens a UDP socket and sends `payload` to `dst`.
    pub fn udp_send(&mut self, dst: SocketAddr, payload: &[u8]) -> Result<SockId, String> {
        let port = self.stack_for(dst.ip())?;
        let local = self.local_port();
        self.unreachable.remove(&local);
        let Some(Some(stack)) = self.ports.get_mut(port) else {
            return Err("no stack".into());
        };
        let mut sock = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 65536]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 65536]),
        );
        sock.bind(local).map_err(|e| format!("udp bind: {e}"))?;
        sock.send_slice(payload, (IpAddress::from(dst.ip()), dst.port()))
            .map_err(|e| format!("udp send to {dst}: {e}"))?;
        let h = stack.sockets.add(sock);
        Ok(self.add(Sock::Udp { port, h, local }))
    }

    /// A datagram received on UDP socket `s`.
    pub fn udp_recv(&mut self, s: SockId, buf: &mut [u8]) -> Option<usize> {
        let Some(Sock::Udp { port, h, .. }) = self.socks.get(&s) else {
            return None;
        };
        let (port, h) = (*port, *h);
        let stack = self.ports.get_mut(port)?.as_mut()?;
        stack
            .sockets
            .get_mut::<udp::Socket>(h)
            .recv_slice(buf)
            .ok()
            .map(|(n, _)| n)
    }

    /// Whether an ICMP unreachable came back for socket `s`'s datagram.
    pub fn udp_unreachable(&self, s: SockId) -> bool {
        matches!(self.socks.get(&s), Some(Sock::Udp { local, .. }) if self.unreachable.contains(local))
    }

    /// Closes UDP socket `s`.
    pub fn udp_close(&mut self, s: SockId) {
        if let Some(Sock::Udp { port, h, local }) = self.socks.remove(&s) {
            self.unreachable.remove(&local);
            if let Some(Some(stack)) = self.ports.get_mut(port) {
                stack.sockets.remove(h);
            }
        }
    }

    /// Sends an ICMP (ICMPv6 for an IPv6 `dst`) echo request to `dst`.
    pub fn ping(&mut self, dst: IpAddr) -> Result<SockId, String> {
        let port = self.stack_for(dst)?;
        self.next_ident = self.next_ident.wrapping_add(1).max(1);
        let ident = self.next_ident;
        let Some(Some(stack)) = self.ports.get_mut(port) else {
            return Err("no stack".into());
        };
        let mut sock = icmp::Socket::new(
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
            icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 4096]),
        );
        sock.bind(icmp::Endpoint::Ident(ident))
            .map_err(|e| format!("icmp bind: {e}"))?;
        let data = b"tapvs-check";
        let bytes = match dst {
            IpAddr::V4(_) => {
                let repr = Icmpv4Repr::EchoRequest {
                    ident,
                    seq_no: 1,
                    data,
                };
                let mut bytes = vec![0u8; repr.buffer_len()];
                repr.emit(
                    &mut Icmpv4Packet::new_unchecked(&mut bytes[..]),
                    &Default::default(),
                );
                bytes
            }
            IpAddr::V6(d) => {
                // smoltcp fills in the source address and the checksum when it sends.
                let repr = Icmpv6Repr::EchoRequest {
                    ident,
                    seq_no: 1,
                    data,
                };
                let mut bytes = vec![0u8; repr.buffer_len()];
                repr.emit(
                    &std::net::Ipv6Addr::UNSPECIFIED,
                    &d,
                    &mut Icmpv6Packet::new_unchecked(&mut bytes[..]),
                    &Default::default(),
                );
                bytes
            }
        };
        sock.send_slice(&bytes, IpAddress::from(dst))
            .map_err(|e| format!("ping {dst}: {e}"))?;
        let h = stack.sockets.add(sock);
        Ok(self.add(Sock::Ping {
            port,
            h,
            ident,
            replied: false,
        }))
    }

    /// Whether the echo reply for ping `s` arrived.
    pub fn ping_replied(&self, s: SockId) -> bool {
        matches!(self.socks.get(&s), Some(Sock::Ping { replied: true, .. }))
    }

    /// Forgets ping `s`.
    pub fn ping_close(&mut self, s: SockId) {
        if let Some(Sock::Ping { port, h, .. }) = self.socks.remove(&s) {
            if let Some(Some(stack)) = self.ports.get_mut(port) {
                stack.sockets.remove(h);
            }
        }
    }
}

impl Transport for HostNet {
    fn tcp_connect(&mut self, dst: SocketAddr) -> Result<SockId, String> {
        HostNet::tcp_connect(self, dst)
    }
    fn tcp_state(&self, s: SockId) -> TcpState {
        HostNet::tcp_state(self, s)
    }
    fn tcp_send(&mut self, s: SockId, data: &[u8]) -> usize {
        HostNet::tcp_send(self, s, data)
    }
    fn tcp_recv(&mut self, s: SockId, buf: &mut [u8]) -> usize {
        HostNet::tcp_recv(self, s, buf)
    }
    fn tcp_close(&mut self, s: SockId) {
        HostNet::tcp_close(self, s)
    }
    fn udp_send(&mut self, dst: SocketAddr, payload: &[u8]) -> Result<SockId, String> {
        HostNet::udp_send(self, dst, payload)
    }
    fn udp_recv(&mut self, s: SockId, buf: &mut [u8]) -> Option<usize> {
        HostNet::udp_recv(self, s, buf)
    }
    fn udp_unreachable(&self, s: SockId) -> bool {
        HostNet::udp_unreachable(self, s)
    }
    fn udp_close(&mut self, s: SockId) {
        HostNet::udp_close(self, s)
    }
    fn ping(&mut self, dst: IpAddr) -> Result<SockId, String> {
        HostNet::ping(self, dst)
    }
    fn ping_replied(&self, s: SockId) -> bool {
        HostNet::ping_replied(self, s)
    }
    fn ping_close(&mut self, s: SockId) {
        HostNet::ping_close(self, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 frame to 10.0.0.2 of protocol `proto` whose first L4 byte is `t`.
    fn frame(proto: u8, t: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12..14].copy_from_slice(&[8, 0]);
        f[14] = 0x45;
        f[14 + 9] = proto;
        f[14 + 16..14 + 20].copy_from_slice(&[10, 0, 0, 2]);
        f[14 + 20] = t;
        f
    }

    #[test]
    fn icmp_errors_of_the_host_stack_are_limited_and_nothing_else() {
        let mut h = HostIcmp {
            limiter: IcmpLimiter::new(1),
            limits: IcmpLimits::default(),
            epoch: std::time::Instant::now(),
        };
        let unreachable = frame(1, 3);
        let sent = (0..50).filter(|_| h.allows(&unreachable)).count();
        assert_eq!(sent, 6, "the per-host burst");
        assert!(!h.allows(&frame(1, 11)), "time exceeded: same bucket");
        assert!(h.allows(&frame(1, 0)), "echo reply");
        assert!(h.allows(&frame(6, 3)), "TCP");
        assert!(h.allows(&[0u8; 10]), "runt");
        let mut arp = frame(1, 3);
        arp[12..14].copy_from_slice(&[8, 6]);
        assert!(h.allows(&arp), "not IPv4");
    }
}
