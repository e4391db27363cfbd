//! TAP ports at the syscall level: opening or creating a named multi-queue TAP device with a
//! virtio-net header and TSO/checksum offloads, one non-blocking file descriptor per queue, and the
//! few interface ioctls the appliance needs (link up, MTU, bridge attachment).
//!
//! The TUN driver's ioctls are [`super::tun::TunFile`]'s; the interface ioctls (link up, MTU,
//! queue length, bridge) go through a control socket here, each `unsafe` block with a `SAFETY:`
//! line. The data path uses [`TapQueue::read`] and [`TapQueue::write`], which move one frame
//! (virtio-net header included) per call.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::tun::{
    TunFile, IFF_MULTI_QUEUE, IFF_NO_PI, IFF_TAP, IFF_VNET_HDR, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6,
};
use super::{ioctl_ptr, IfReq};

/// Size of the virtio-net header in front of every frame (`virtio_net_hdr_v1`, QEMU's choice).
pub const VNET_HDR_LEN: usize = 12;
/// Largest frame a queue can hand over: header, Ethernet header and a 64 KiB IP packet.
pub const MAX_FRAME: usize = VNET_HDR_LEN + 14 + 65535;
/// Longest interface name the kernel accepts (IFNAMSIZ minus the terminating NUL).
pub const IFNAME_MAX: usize = 15;

/// Flags used on every queue: TAP, no packet info, virtio-net header, multi-queue.
const TAP_FLAGS: i16 = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE;

const SIOCBRADDIF: libc::c_ulong = 0x89a2;
const SIOCSIFTXQLEN: libc::c_ulong = 0x8943;

/// Errors from setting up a TAP port. Each names the device and what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// `/dev/net/tun` does not exist: no TUN/TAP support in this kernel or container.
    #[error("/dev/net/tun is missing: this kernel or container has no TUN/TAP support")]
    NoTunDevice,
    /// The process may not create or attach TAP devices (needs root or CAP_NET_ADMIN).
    #[error("no permission to open TAP {0:?}: run as root or with CAP_NET_ADMIN")]
    NoPermission(String),
    /// The name is empty, too long (over 15 bytes) or contains a NUL or '/'.
    #[error("invalid interface name {0:?}: 1 to 15 bytes, no '/', no spaces")]
    InvalidName(String),
    /// The device exists but cannot be attached (another owner, or no queue left).
    #[error("TAP {0:?} is busy (attached by another process or out of queues)")]
    Busy(String),
    /// A device of that name exists with other flags, or is not a TAP.
    #[error(
        "interface {0:?} exists but is not a multi-queue TAP with vnet_hdr \
         (create it with `ip tuntap add dev NAME mode tap multi_queue vnet_hdr` or let tapvs create it)"
    )]
    Incompatible(String),
    /// The kernel lacks a feature tapvs requires (vnet_hdr, multi-queue, offloads).
    #[error("TAP {name:?}: the kernel lacks {feature}")]
    Unsupported {
        /// The device.
        name: String,
        /// The missing feature.
        feature: &'static str,
    },
    /// Any other failing system call.
    #[error("TAP {name:?}: {op} failed: {source}")]
    Sys {
        /// The device.
        name: String,
        /// The operation that failed.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// Checks an interface name the way the kernel will.
pub fn validate_ifname(name: &str) -> Result<(), TapError> {
    let ok = !name.is_empty()
        && name.len() <= IFNAME_MAX
        && !name
            .bytes()
            .any(|b| b == 0 || b == b'/' || b.is_ascii_whitespace() || b == b':');
    if ok {
        Ok(())
    } else {
        Err(TapError::InvalidName(name.to_string()))
    }
}

/// The interface ioctls issued on a [`CtlSocket`]; each takes a `struct ifreq`.
#[derive(Debug, Clone, Copy)]
enum IfIoctl {
    /// `SIOCGIFFLAGS`: reads the flags into the leading `short`.
    GetFlags,
    /// `SIOCSIFFLAGS`: sets the flags from the leading `short`.
    SetFlags,
    /// `SIOCSIFMTU`: sets the MTU from the leading `int`.
    SetMtu,
    /// `SIOCSIFTXQLEN`: sets the transmit queue length from the leading `int`.
    SetTxQueueLen,
    /// `SIOCBRADDIF`: enslaves the interface whose index is the leading `int` to the bridge
    /// named in the request.
    BridgeAddIf,
}

impl IfIoctl {
    fn request(self) -> libc::c_ulong {
        match self {
            IfIoctl::GetFlags => libc::SIOCGIFFLAGS as libc::c_ulong,
            IfIoctl::SetFlags => libc::SIOCSIFFLAGS as libc::c_ulong,
            IfIoctl::SetMtu => libc::SIOCSIFMTU as libc::c_ulong,
            IfIoctl::SetTxQueueLen => SIOCSIFTXQLEN,
            IfIoctl::BridgeAddIf => SIOCBRADDIF,
        }
    }
}

/// A datagram socket in the current network namespace, for interface ioctls.
struct CtlSocket(OwnedFd);

impl CtlSocket {
    fn open() -> io::Result<CtlSocket> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
        Ok(CtlSocket(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Issues `op` with `req` as its argument.
    fn ifreq(&self, op: IfIoctl, req: &mut IfReq) -> io::Result<()> {
        // SAFETY: on an AF_INET socket every `IfIoctl` request reads or writes one
        // `struct ifreq`, which `req` is; it carries no pointers.
        unsafe { ioctl_ptr(self.0.as_fd(), op.request(), req) }
    }
}

/// One queue of a TAP device: a non-blocking file descriptor that reads and writes whole frames,
/// each prefixed by a [`VNET_HDR_LEN`]-byte virtio-net header.
pub struct TapQueue {
    file: TunFile,
}

impl fmt::Debug for TapQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TapQueue(fd {})", self.file.as_raw_fd())
    }
}

impl TapQueue {
    /// Reads one frame into `buf`; `Ok(None)` when the queue is empty.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.file.read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
                _ => Err(e),
            },
        }
    }

    /// Writes one frame (header included). A full queue or a down link drops the frame and
    /// reports it as an error for the caller to count.
    pub fn write(&self, frame: &[u8]) -> io::Result<()> {
        self.file.write(frame).map(|_| ())
    }
}

impl TapQueue {
    /// Sets the device's queue-selection program (for every queue of the device), or with
    /// `None` returns the device to the kernel's automatic flow steering. The device keeps its
    /// own reference to the program.
    pub fn set_steering(&self, prog: Option<&crate::sys::BpfProg>) -> io::Result<()> {
        self.file.set_steering_ebpf(prog)
    }
}

impl AsRawFd for TapQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// A TAP device opened with `queues` queues. The device is created if it does not exist; a
/// device tapvs created disappears when the last queue closes.
#[derive(Debug)]
pub struct Tap {
    name: String,
    queues: Vec<TapQueue>,
}

impl Tap {
    /// Opens (or creates) TAP `name` with `IFF_TAP|IFF_NO_PI|IFF_VNET_HDR|IFF_MULTI_QUEUE`,
    /// attaches `queues` queues, sets the header size and the CSUM|TSO4|TSO6 offloads so the
    /// kernel hands over GSO super-frames and partial checksums.
    pub fn open(name: &str, queues: usize) -> Result<Tap, TapError> {
        validate_ifname(name)?;
        let sys = |op, source| TapError::Sys {
            name: name.to_string(),
            op,
            source,
        };
        let mut out = Vec::with_capacity(queues.max(1));
        for q in 0..queues.max(1) {
            let file = TunFile::open_nonblocking().map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
                    TapError::NoTunDevice
                }
                Some(libc::EPERM) | Some(libc::EACCES) => TapError::NoPermission(name.into()),
                _ => sys("open /dev/net/tun", e),
            })?;
            if q == 0 {
                let features = file.features().map_err(|e| sys("TUNGETFEATURES", e))?;
                let want = (IFF_VNET_HDR | IFF_MULTI_QUEUE) as u16 as libc::c_uint;
                if features & want != want {
                    return Err(TapError::Unsupported {
                        name: name.into(),
                        feature: "IFF_VNET_HDR and IFF_MULTI_QUEUE",
                    });
                }
            }
            file.set_iff(name, TAP_FLAGS)
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::EPERM) | Some(libc::EACCES) => TapError::NoPermission(name.into()),
                    Some(libc::EBUSY) => TapError::Busy(name.into()),
                    Some(libc::EINVAL) => TapError::Incompatible(name.into()),
                    _ => sys("TUNSETIFF", e),
                })?;
            file.set_vnet_hdr_size(VNET_HDR_LEN as libc::c_int)
                .map_err(|e| sys("TUNSETVNETHDRSZ", e))?;
            out.push(TapQueue { file });
        }
        let offload = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
        out[0].file.set_offload(offload).map_err(|e| {
            if e.raw_os_error() == Some(libc::EINVAL) {
                TapError::Unsupported {
                    name: name.into(),
                    feature: "TUNSETOFFLOAD CSUM|TSO4|TSO6",
                }
            } else {
                sys("TUNSETOFFLOAD", e)
            }
        })?;
        Ok(Tap {
            name: name.to_string(),
            queues: out,
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of queues attached.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    /// Hands the queues over (one per worker).
    pub fn into_queues(self) -> Vec<TapQueue> {
        self.queues
    }

    /// Sets the link administratively up.
    pub fn set_up(&self) -> Result<(), TapError> {
        set_link_up(&self.name)
    }

    /// Sets the MTU of the kernel side of the device.
    pub fn set_mtu(&self, mtu: u32) -> Result<(), TapError> {
        let s = CtlSocket::open().map_err(|e| self.sys("socket", e))?;
        let mut req = IfReq::new(&self.name);
        req.set_int(mtu as i32);
        s.ifreq(IfIoctl::SetMtu, &mut req)
            .map_err(|e| self.sys("SIOCSIFMTU", e))
    }

    /// Sets the kernel-side transmit queue length, which is the depth of each queue's ring of
    /// frames waiting for this process to read them (bursts beyond it are dropped by the kernel).
    pub fn set_queue_len(&self, len: u32) -> Result<(), TapError> {
        let s = CtlSocket::open().map_err(|e| self.sys("socket", e))?;
        let mut req = IfReq::new(&self.name);
        req.set_int(len as i32);
        s.ifreq(IfIoctl::SetTxQueueLen, &mut req)
            .map_err(|e| self.sys("SIOCSIFTXQLEN", e))
    }

    /// Enslaves the device to bridge `bridge` (which must exist in this namespace).
    pub fn attach_to_bridge(&self, bridge: &str) -> Result<(), TapError> {
        validate_ifname(bridge)?;
        let index = ifindex(&self.name).map_err(|e| self.sys("if_nametoindex", e))?;
        let s = CtlSocket::open().map_err(|e| self.sys("socket", e))?;
        let mut req = IfReq::new(bridge);
        req.set_int(index as i32);
        s.ifreq(IfIoctl::BridgeAddIf, &mut req)
            .map_err(|e| self.sys("SIOCBRADDIF", e))
    }

    fn sys(&self, op: &'static str, source: io::Error) -> TapError {
        TapError::Sys {
            name: self.name.clone(),
            op,
            source,
        }
    }
}

/// The interface index of `name` in the current network namespace.
pub fn ifindex(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(idx)
    }
}

/// Sets interface `name` administratively up.
pub fn set_link_up(name: &str) -> Result<(), TapError> {
    validate_ifname(name)?;
    let sys = |op, source| TapError::Sys {
        name: name.to_string(),
        op,
        source,
    };
    let s = CtlSocket::open().map_err(|e| sys("socket", e))?;
    let mut req = IfReq::new(name);
    s.ifreq(IfIoctl::GetFlags, &mut req)
        .map_err(|e| sys("SIOCGIFFLAGS", e))?;
    let flags = req.short() | libc::IFF_UP as i16;
    req.set_short(flags);
    s.ifreq(IfIoctl::SetFlags, &mut req)
        .map_err(|e| sys("SIOCSIFFLAGS", e))
}

/// Whether interface `name` is administratively up (`IFF_UP`), in the current namespace.
pub fn link_is_up(name: &str) -> io::Result<bool> {
    validate_ifname(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let s = CtlSocket::open()?;
    let mut req = IfReq::new(name);
    s.ifreq(IfIoctl::GetFlags, &mut req)?;
    Ok(req.short() & libc::IFF_UP as i16 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_syscall() {
        assert!(matches!(Tap::open("", 1), Err(TapError::InvalidName(_))));
        assert!(matches!(
            Tap::open("a123456789abcdef", 1),
            Err(TapError::InvalidName(_))
        ));
        assert!(matches!(Tap::open("a/b", 1), Err(TapError::InvalidName(_))));
        assert!(validate_ifname("a123456789abcde").is_ok());
    }

    #[test]
    fn ifreq_is_the_kernel_size() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
    }

    /// Opens a real multi-queue TAP in a private network namespace, checks both queues work,
    /// then checks that a conflicting open is reported as `Incompatible`.
    #[test]
    fn real_tap_in_private_netns() {
        if !tapvs_lab::netns::precheck() {
            return;
        }
        std::thread::spawn(|| {
            crate::sys::unshare_netns().expect("unshare");
            let tap = Tap::open("tvt0", 2).expect("open tap");
            assert_eq!(tap.queue_count(), 2);
            tap.set_up().expect("up");
            tap.set_mtu(1400).expect("mtu");
            tap.set_queue_len(4096).expect("qlen");
            // `ip` forked from this thread runs in its namespace (sysfs would show the host's).
            let out = std::process::Command::new("ip")
                .args(["-d", "link", "show", "tvt0"])
                .output()
                .expect("ip link");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("mtu 1400"), "{text}");
            assert!(text.contains("qlen 4096"), "{text}");
            assert!(text.contains("state UP") || text.contains(",UP"), "{text}");
            assert!(
                text.contains("tap") && text.contains("vnet_hdr on"),
                "{text}"
            );
            assert!(text.contains("multi_queue numqueues 2"), "{text}");
            let queues = tap.into_queues();
            let mut buf = vec![0u8; MAX_FRAME];
            // Nothing queued yet: a read does not block.
            assert!(matches!(queues[1].read(&mut buf), Ok(None) | Ok(Some(_))));
            // A frame written with a zero header is accepted.
            let mut frame = vec![0u8; VNET_HDR_LEN + 60];
            frame[VNET_HDR_LEN..VNET_HDR_LEN + 6].copy_from_slice(&[0xff; 6]);
            frame[VNET_HDR_LEN + 6..VNET_HDR_LEN + 12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
            frame[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14].copy_from_slice(&[0x88, 0xb5]);
            queues[0].write(&frame).expect("write");
            // A plain (non multi-queue) open of the same device is refused as incompatible.
            let file = TunFile::open_nonblocking().unwrap();
            let err = file.set_iff("tvt0", IFF_TAP | IFF_NO_PI).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        })
        .join()
        .expect("tap thread");
    }
}
