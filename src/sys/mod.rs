//! The system-call layer: this module and its children wrap the system calls the crate makes,
//! so that the rest of it is safe code. [`tap`] opens TAP ports and [`tun`] is the
//! `/dev/net/tun` driver both TAP ports and TUN devices are made with; [`uring`] is the
//! workers' io_uring (provided receive buffers, batched writes); this module holds the
//! small wrappers besides: an eventfd to wake a sleeping thread, `poll(2)` over raw
//! descriptors, blocking of termination signals for `sigwait`, a private network namespace for
//! the calling thread, raw `AF_PACKET`, IPv4 and IPv6 sockets, and loading and test-running eBPF
//! programs. [`notify`] sends systemd readiness notifications.
//!
//! A wrapper is a safe function when its argument types (owned or borrowed descriptors,
//! slices, typed requests) are enough to make the call sound; one whose soundness depends on
//! what the caller passes is an `unsafe fn` with a `# Safety` section. Every `unsafe` block
//! carries a `SAFETY:` line.

#![warn(unsafe_op_in_unsafe_fn)]

pub mod notify;
pub mod tap;
pub mod tun;
pub mod uring;

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `struct ifreq` as the TUN and socket interface ioctls read it: a name and a 24-byte union, of
/// which we use the leading `short` (flags) or `int` (index, MTU, queue length).
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    data: [u8; 24],
}

impl IfReq {
    /// A request for interface `name`, which must be at most 15 bytes long.
    fn new(name: &str) -> IfReq {
        let mut req = IfReq {
            name: [0; 16],
            data: [0; 24],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        req
    }

    fn set_short(&mut self, v: i16) {
        self.data[..2].copy_from_slice(&v.to_ne_bytes());
    }

    fn short(&self) -> i16 {
        i16::from_ne_bytes([self.data[0], self.data[1]])
    }

    fn set_int(&mut self, v: i32) {
        self.data[..4].copy_from_slice(&v.to_ne_bytes());
    }
}

/// `ioctl(fd, req, arg)` for a request that reads or writes one `T` through its pointer
/// argument.
///
/// # Safety
///
/// On the kind of file `fd` refers to, request `req` must take a pointer to one `T` (reading
/// or writing at most `size_of::<T>()` bytes), and any pointer inside `*arg` must be valid for
/// what the request does with it.
unsafe fn ioctl_ptr<T>(fd: BorrowedFd<'_>, req: libc::c_ulong, arg: &mut T) -> io::Result<()> {
    // SAFETY: `fd` is open for the call (borrowed) and `arg` is a valid, exclusively borrowed
    // `T`; that the request expects a `T` is this function's precondition.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg as *mut T) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `ioctl(fd, req, val)` for a request that takes its argument by value.
///
/// # Safety
///
/// On the kind of file `fd` refers to, request `req` must take an integer argument, not a
/// pointer (the kernel would otherwise use `val` as an address in this process).
unsafe fn ioctl_val(fd: BorrowedFd<'_>, req: libc::c_ulong, val: libc::c_ulong) -> io::Result<()> {
    // SAFETY: `fd` is open for the call (borrowed); that the request reads no memory is this
    // function's precondition.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, val) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A non-blocking eventfd used as a doorbell between threads.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// Creates a non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: plain eventfd(2) call; the result is checked before use.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd(2) and has no other owner.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Rings the bell (never blocks; a saturated counter still wakes the reader).
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid local u64 to an eventfd we own.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Clears pending rings.
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid local u64 from an eventfd we own.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A `pollfd` waiting for input on `fd`.
pub fn poll_in(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

/// Waits up to `timeout_ms` for any of `fds` to become ready; returns how many are.
///
/// Safe for any descriptor numbers, owned or not: `poll(2)` only reports readiness and does no
/// I/O on them (a closed one comes back as `POLLNVAL`).
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfd structures.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}

/// The signal set {SIGINT, SIGTERM}.
fn term_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before sigaddset uses it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread (and the threads it spawns afterwards), so
/// that [`wait_for_termination`] can take them synchronously.
pub fn block_termination_signals() {
    let set = term_set();
    // SAFETY: `set` is an initialised signal set; the old mask is not requested.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for SIGINT or SIGTERM (which must be blocked) and returns its name.
pub fn wait_for_termination() -> &'static str {
    let set = term_set();
    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: `set` is initialised and `sig` is a valid out-parameter.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        if rc == 0 {
            return if sig == libc::SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
        }
    }
}

fn daemon_set() -> libc::sigset_t {
    let mut set = term_set();
    // SAFETY: `set` was initialised by term_set.
    unsafe {
        libc::sigaddset(&mut set, libc::SIGHUP);
    }
    set
}

/// A signal the daemon's main thread acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonSignal {
    /// SIGINT or SIGTERM (its name): stop.
    Stop(&'static str),
    /// SIGHUP: reload the config.
    Reload,
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (and the threads it spawns
/// afterwards), so that [`wait_for_daemon_signal`] can take them synchronously.
pub fn block_daemon_signals() {
    let set = daemon_set();
    // SAFETY: `set` is an initialised signal set; the old mask is not requested.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for SIGINT, SIGTERM or SIGHUP (which must be blocked).
pub fn wait_for_daemon_signal() -> DaemonSignal {
    let set = daemon_set();
    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: `set` is initialised and `sig` is a valid out-parameter.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        if rc == 0 {
            return match sig {
                libc::SIGHUP => DaemonSignal::Reload,
                libc::SIGINT => DaemonSignal::Stop("SIGINT"),
                _ => DaemonSignal::Stop("SIGTERM"),
            };
        }
    }
}

/// Moves the calling thread into a new, empty network namespace (`unshare(CLONE_NEWNET)`).
/// Other threads keep theirs, and descriptors opened before keep the namespace they were
/// opened in; processes the thread starts afterwards inherit the new one. Needs
/// `CAP_SYS_ADMIN`.
pub fn unshare_netns() -> io::Result<()> {
    // SAFETY: unshare(2) takes no pointers; CLONE_NEWNET only changes the calling thread's
    // network namespace, which no Rust object depends on.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), the unit of the CPU times and the start
/// time in `/proc/self/stat`; 100 if the call fails.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf takes no pointers and has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

/// The page size in bytes (`sysconf(_SC_PAGESIZE)`), the unit of the resident set in
/// `/proc/self/stat`; 4096 if the call fails.
pub fn page_size() -> u64 {
    // SAFETY: sysconf takes no pointers and has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as u64
    } else {
        4096
    }
}

/// The calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`): its own work, without the time
/// other processes held the CPU. Zero if the clock cannot be read.
pub fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec that outlives the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 || ts.tv_sec < 0 || !(0..1_000_000_000).contains(&ts.tv_nsec) {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A raw `AF_PACKET` socket bound to one interface, for injecting arbitrary Ethernet frames
/// (tests feed malformed frames to the appliance this way) and capturing what crosses it.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    /// Opens a packet socket on interface `ifname` of the calling thread's network namespace.
    pub fn open(ifname: &str) -> io::Result<PacketSocket> {
        let ifindex = crate::sys::tap::ifindex(ifname)? as i32;
        let proto = (libc::ETH_P_ALL as u16).to_be() as libc::c_int;
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd =
            unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and has no other owner.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid starting value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = ifindex;
        // SAFETY: `addr` is a valid sockaddr_ll for the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, ifindex })
    }

    /// Receives one frame seen on the interface (either direction), waiting at most
    /// `timeout_ms`; `Ok(None)` on timeout.
    pub fn recv(&self, buf: &mut [u8], timeout_ms: i32) -> io::Result<Option<usize>> {
        let mut pfd = [poll_in(self.fd.as_raw_fd())];
        if poll(&mut pfd, timeout_ms)? == 0 {
            return Ok(None);
        }
        // SAFETY: `buf` is a valid writable region of `buf.len()` bytes for the whole call.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::WouldBlock {
                Ok(None)
            } else {
                Err(e)
            };
        }
        Ok(Some(n as usize))
    }

    /// Asks for a receive buffer of `bytes`: `SO_RCVBUFFORCE` (beyond `net.core.rmem_max`,
    /// needs `CAP_NET_ADMIN`), else `SO_RCVBUF` (capped at `rmem_max`).
    pub fn set_recv_buffer(&self, bytes: libc::c_int) -> io::Result<()> {
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: the option reads one c_int from the valid local `bytes` for the length
            // passed.
            let rc = unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&bytes as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                return Ok(());
            }
        }
        Err(io::Error::last_os_error())
    }

    /// Frames the kernel dropped for want of room on this socket since the last call
    /// (`PACKET_STATISTICS`, which resets the counters when read).
    pub fn drops(&self) -> io::Result<u32> {
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` and `len` are valid writable locals; the kernel writes at most `len`
        // bytes into `st`.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(st.tp_drops)
    }

    /// Sends one frame as is (it must start with an Ethernet header).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid starting value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex;
        addr.sll_halen = 6;
        // SAFETY: `frame` and `addr` are valid for the sizes passed for the whole call.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A raw IP socket (`SOCK_RAW`) of one IP protocol in the calling thread's network namespace:
/// it receives every packet of that protocol delivered to the host. An IPv4 socket
/// ([`RawIpSocket::open`]) receives the packet with its IPv4 header (see `raw(7)`); an IPv6
/// one ([`RawIpSocket::open6`]) receives only what follows the IPv6 header and the extension
/// headers the kernel processed, e.g. the inner packet of IPv6-in-IPv6 (see `raw(7)`, `ipv6(7)`).
#[derive(Debug)]
pub struct RawIpSocket(OwnedFd);

impl RawIpSocket {
    /// Opens a raw socket for IP protocol `protocol` (e.g. `IPPROTO_IPIP`; `IPPROTO_RAW` for
    /// a send-only socket whose packets carry their own IPv4 header). Needs `CAP_NET_RAW`.
    pub fn open(protocol: libc::c_int) -> io::Result<RawIpSocket> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd =
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and has no other owner.
        Ok(RawIpSocket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Opens a raw IPv6 socket for next header `protocol` (e.g. `IPPROTO_IPV6`, 41, for
    /// IPv6-in-IPv6; `IPPROTO_RAW` for a send-only socket whose packets carry their own IPv6
    /// header). Needs `CAP_NET_RAW`; `EAFNOSUPPORT` when the kernel runs without IPv6.
    pub fn open6(protocol: libc::c_int) -> io::Result<RawIpSocket> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET6,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and has no other owner.
        Ok(RawIpSocket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Asks for a receive buffer of `bytes` (`SO_RCVBUF`; the kernel caps it at
    /// `net.core.rmem_max`).
    pub fn set_recv_buffer(&self, bytes: libc::c_int) -> io::Result<()> {
        // SAFETY: SO_RCVBUF reads one c_int from the valid local `bytes` for the length passed.
        let rc = unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one packet into `buf` without blocking (`MSG_DONTWAIT`) and returns its length
    /// (`WouldBlock` when nothing is queued).
    pub fn recv_nonblocking(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a valid writable region of `buf.len()` bytes for the whole call.
        let n = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Sends `packet` to `dst` and returns the number of bytes sent.
    pub fn send_to(&self, packet: &[u8], dst: Ipv4Addr) -> io::Result<usize> {
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.octets()),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: `packet` and `addr` are valid for the sizes passed for the whole call.
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl RawIpSocket {
    /// Sends `packet` to `dst` from a socket made by [`RawIpSocket::open6`] and returns the
    /// number of bytes sent.
    pub fn send_to6(&self, packet: &[u8], dst: Ipv6Addr) -> io::Result<usize> {
        let addr = libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: 0,
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr {
                s6_addr: dst.octets(),
            },
            sin6_scope_id: 0,
        };
        // SAFETY: `packet` and `addr` are valid for the sizes passed for the whole call.
        let n = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&addr as *const libc::sockaddr_in6).cast(),
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl AsFd for RawIpSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for RawIpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// `bpf(2)` commands used here.
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
/// `BPF_MAP_TYPE_HASH`.
const BPF_MAP_TYPE_HASH: u32 = 1;
/// `BPF_F_NO_PREALLOC`: a hash map's elements are allocated when inserted, so a large
/// `max_entries` costs nothing until used.
const BPF_F_NO_PREALLOC: u32 = 1;

/// `union bpf_attr` as `BPF_MAP_CREATE` reads it, padded with zeros.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
    rest: [u32; 15],
}

/// `union bpf_attr` as `BPF_MAP_*_ELEM` read it.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// An eBPF map; the kernel frees it when this descriptor and every program using it are gone.
#[derive(Debug)]
pub struct BpfMap(OwnedFd);

impl AsRawFd for BpfMap {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl BpfMap {
    /// Creates a hash map from 16-byte keys to `u32` values holding up to `max_entries`
    /// elements, allocated as they are inserted.
    pub fn new_hash_key16(max_entries: u32, name: &str) -> io::Result<BpfMap> {
        let mut map_name = [0u8; 16];
        for (d, s) in map_name.iter_mut().zip(name.bytes().take(15)) {
            *d = s;
        }
        let mut attr = MapCreateAttr {
            map_type: BPF_MAP_TYPE_HASH,
            key_size: 16,
            value_size: 4,
            max_entries,
            map_flags: BPF_F_NO_PREALLOC,
            map_name,
            ..Default::default()
        };
        // SAFETY: MapCreateAttr is BPF_MAP_CREATE's layout and holds no addresses.
        let fd = unsafe { bpf(BPF_MAP_CREATE, &mut attr)? };
        // SAFETY: `fd` was just returned by bpf(BPF_MAP_CREATE) and has no other owner.
        Ok(BpfMap(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
    }

    /// Sets `key` to `value` (inserting or replacing).
    pub fn set(&self, key: &[u8; 16], value: u32) -> io::Result<()> {
        let mut attr = MapElemAttr {
            map_fd: self.0.as_raw_fd() as u32,
            key: key.as_ptr() as u64,
            value: (&value as *const u32) as u64,
            ..Default::default()
        };
        // SAFETY: MapElemAttr is BPF_MAP_UPDATE_ELEM's layout; `key` points to 16 live bytes
        // and `value` to a live 4-byte local, the map's key and value sizes.
        unsafe { bpf(BPF_MAP_UPDATE_ELEM, &mut attr)? };
        Ok(())
    }

    /// Removes `key`; a missing key is not an error.
    pub fn remove(&self, key: &[u8; 16]) -> io::Result<()> {
        let mut attr = MapElemAttr {
            map_fd: self.0.as_raw_fd() as u32,
            key: key.as_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: MapElemAttr is BPF_MAP_DELETE_ELEM's layout; `key` points to 16 live bytes,
        // the map's key size.
        match unsafe { bpf(BPF_MAP_DELETE_ELEM, &mut attr) } {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r.map(|_| ()),
        }
    }
}
const BPF_PROG_TEST_RUN: libc::c_long = 10;
/// `BPF_PROG_TYPE_SOCKET_FILTER`, the program type TUN steering runs.
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;

/// `union bpf_attr` as `BPF_PROG_LOAD` reads it, padded with zeros (the kernel requires
/// bytes it does not know to be zero).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    rest: [u64; 8],
}

/// `union bpf_attr` as `BPF_PROG_TEST_RUN` reads it.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    rest: [u64; 8],
}

/// A loaded eBPF program; the kernel frees it when this descriptor and every attachment are
/// gone.
#[derive(Debug)]
pub struct BpfProg(OwnedFd);

impl AsRawFd for BpfProg {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// `bpf(cmd, attr, size_of::<T>())`; returns the non-negative result (a descriptor for the
/// commands that create one).
///
/// # Safety
///
/// `T` must be the `union bpf_attr` layout command `cmd` reads (zero where the kernel wants
/// zero), and every address inside `*attr` must point to memory that stays valid for the call
/// and is at least as long as the length given beside it (writable where the command writes).
///
/// `EAGAIN` and `EINTR` (the verifier gives up when a signal is pending; map updates can
/// meet a busy bucket) are retried a few times, as libbpf does, before they are returned.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    let mut tries = 0;
    loop {
        // SAFETY: `attr` is a valid, exclusively borrowed `T` of the size passed; that `T` is
        // the layout `cmd` expects and its addresses are valid is this function's
        // precondition.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                (attr as *mut T).cast::<libc::c_void>(),
                std::mem::size_of::<T>() as libc::c_uint,
            )
        };
        if rc >= 0 {
            return Ok(rc);
        }
        let e = io::Error::last_os_error();
        tries += 1;
        if tries >= BPF_TRIES || !matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) {
            return Err(e);
        }
    }
}

/// Attempts of one `bpf(2)` command that fails with `EAGAIN` or `EINTR`.
const BPF_TRIES: u32 = 5;

/// Loads `insns` (raw 8-byte eBPF instructions) as a socket-filter program named `name`.
/// On a verifier rejection the error carries the verifier's log.
pub fn bpf_load_socket_filter(insns: &[u64], name: &str) -> io::Result<BpfProg> {
    let license = c"Apache-2.0";
    let mut prog_name = [0u8; 16];
    for (d, s) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SOCKET_FILTER,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        ..Default::default()
    };
    // SAFETY: ProgLoadAttr is BPF_PROG_LOAD's layout; `insns` points to `insn_cnt` instructions
    // of the borrowed slice and `license` to a static NUL-terminated string; no log buffer.
    let fd = match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
        Ok(fd) => fd,
        Err(e)
            if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EINVAL) =>
        {
            // Load again with the verifier's log for the error message.
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            // SAFETY: as above, and `log_buf` points to the live `log`, `log_size` bytes long.
            let _ = unsafe { bpf(BPF_PROG_LOAD, &mut attr) };
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            return Err(io::Error::new(e.kind(), format!("{e}: {}", text.trim())));
        }
        Err(e) => return Err(e),
    };
    // SAFETY: `fd` was just returned by bpf(BPF_PROG_LOAD) and has no other owner.
    Ok(BpfProg(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }))
}

/// Runs `prog` once over `frame` (an Ethernet frame) with `BPF_PROG_TEST_RUN` and returns
/// the program's return value.
pub fn bpf_test_run(prog: &BpfProg, frame: &[u8]) -> io::Result<u32> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    // SAFETY: TestRunAttr is BPF_PROG_TEST_RUN's layout; `data_in` points to the borrowed
    // `frame` (`data_size_in` bytes) and `data_out` to the writable `out` (`data_size_out`).
    unsafe { bpf(BPF_PROG_TEST_RUN, &mut attr)? };
    Ok(attr.retval)
}
