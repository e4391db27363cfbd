//! The TUN/TAP driver at the system-call level: [`TunFile`], a descriptor of `/dev/net/tun`,
//! and the driver's ioctls on it, each typed so that it passes the argument its request expects
//! and therefore safe to call. TAP ports ([`super::tap`]) and the real server's decapsulation
//! TUN device ([`crate::rs`]) are built on it.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::{ioctl_ptr, ioctl_val, BpfProg, IfReq};

/// `IFF_TUN`: a layer-3 device; each read or write is one IP packet.
pub const IFF_TUN: i16 = 0x0001;
/// `IFF_TAP`: a layer-2 device; each read or write is one Ethernet frame.
pub const IFF_TAP: i16 = 0x0002;
/// `IFF_MULTI_QUEUE`: every attached descriptor is one queue of the device.
pub const IFF_MULTI_QUEUE: i16 = 0x0100;
/// `IFF_NO_PI`: no packet-information prefix in front of each packet.
pub const IFF_NO_PI: i16 = 0x1000;
/// `IFF_VNET_HDR`: a virtio-net header in front of each packet.
pub const IFF_VNET_HDR: i16 = 0x4000;

/// `TUNSETOFFLOAD` bit: the reader accepts partial checksums.
pub const TUN_F_CSUM: libc::c_uint = 0x01;
/// `TUNSETOFFLOAD` bit: the reader accepts IPv4 TCP segmentation offload.
pub const TUN_F_TSO4: libc::c_uint = 0x02;
/// `TUNSETOFFLOAD` bit: the reader accepts IPv6 TCP segmentation offload.
pub const TUN_F_TSO6: libc::c_uint = 0x04;

/// `_IOW('T', 202, int)`, argument `struct ifreq *`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// `_IOW('T', 208, unsigned int)`, argument passed by value.
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
/// `_IOW('T', 216, int)`, argument `int *`.
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
/// `_IOR('T', 207, unsigned int)`, argument `unsigned int *`.
const TUNGETFEATURES: libc::c_ulong = 0x8004_54cf;
/// `_IOR('T', 224, int)`, argument `int *`: attach (fd) or detach (-1) the queue-selection
/// eBPF program.
const TUNSETSTEERINGEBPF: libc::c_ulong = 0x8004_54e0;

/// An open descriptor of `/dev/net/tun`: detached until [`TunFile::set_iff`] attaches it to a
/// device, then one queue of that device, read and written one packet per call. The device
/// goes away with its last descriptor unless it is persistent.
pub struct TunFile(OwnedFd);

impl fmt::Debug for TunFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TunFile(fd {})", self.0.as_raw_fd())
    }
}

impl TunFile {
    /// Opens `/dev/net/tun` for blocking reads and writes.
    pub fn open() -> io::Result<TunFile> {
        TunFile::open_with(0)
    }

    /// Opens `/dev/net/tun` for non-blocking reads and writes.
    pub fn open_nonblocking() -> io::Result<TunFile> {
        TunFile::open_with(libc::O_NONBLOCK)
    }

    fn open_with(flags: libc::c_int) -> io::Result<TunFile> {
        let path = c"/dev/net/tun";
        // SAFETY: `path` is a valid NUL-terminated string; the result is checked before use.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC | flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by open(2) and has no other owner.
        Ok(TunFile(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The `IFF_*` flags the driver supports (`TUNGETFEATURES`).
    pub fn features(&self) -> io::Result<libc::c_uint> {
        let mut features: libc::c_uint = 0;
        // SAFETY: on a /dev/net/tun descriptor TUNGETFEATURES writes one unsigned int.
        unsafe { ioctl_ptr(self.0.as_fd(), TUNGETFEATURES, &mut features)? };
        Ok(features)
    }

    /// Attaches this descriptor to device `name` with `flags` (`IFF_*`), creating the device
    /// if it does not exist (`TUNSETIFF`). `InvalidInput` for a name longer than 15 bytes or
    /// containing NUL.
    pub fn set_iff(&self, name: &str, flags: i16) -> io::Result<()> {
        if name.len() > super::tap::IFNAME_MAX || name.bytes().any(|b| b == 0) {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let mut req = IfReq::new(name);
        req.set_short(flags);
        // SAFETY: on a /dev/net/tun descriptor TUNSETIFF reads and writes one `struct ifreq`,
        // which `req` is; it carries no pointers.
        unsafe { ioctl_ptr(self.0.as_fd(), TUNSETIFF, &mut req) }
    }

    /// Sets the size of the virtio-net header in front of each packet (`TUNSETVNETHDRSZ`).
    pub fn set_vnet_hdr_size(&self, len: libc::c_int) -> io::Result<()> {
        let mut len = len;
        // SAFETY: on a /dev/net/tun descriptor TUNSETVNETHDRSZ reads one int.
        unsafe { ioctl_ptr(self.0.as_fd(), TUNSETVNETHDRSZ, &mut len) }
    }

    /// Sets the offloads (`TUN_F_*`) this reader accepts (`TUNSETOFFLOAD`).
    pub fn set_offload(&self, offloads: libc::c_uint) -> io::Result<()> {
        // SAFETY: on a /dev/net/tun descriptor TUNSETOFFLOAD takes its argument by value.
        unsafe { ioctl_val(self.0.as_fd(), TUNSETOFFLOAD, offloads as libc::c_ulong) }
    }

    /// Sets the device's queue-selection program (`TUNSETSTEERINGEBPF`), or with `None`
    /// removes it. The device keeps its own reference to the program.
    pub fn set_steering_ebpf(&self, prog: Option<&BpfProg>) -> io::Result<()> {
        let mut fd: libc::c_int = prog.map_or(-1, |p| p.as_raw_fd());
        // SAFETY: on a /dev/net/tun descriptor TUNSETSTEERINGEBPF reads one int (a program
        // descriptor, which `prog` keeps open for the call, or -1).
        unsafe { ioctl_ptr(self.0.as_fd(), TUNSETSTEERINGEBPF, &mut fd) }
    }

    /// Reads one packet into `buf` and returns its length (`WouldBlock` when a non-blocking
    /// descriptor has nothing queued).
    #[inline]
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a valid writable region of `buf.len()` bytes for the whole call.
        let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Writes `packet` as one packet and returns the number of bytes written.
    #[inline]
    pub fn write(&self, packet: &[u8]) -> io::Result<usize> {
        // SAFETY: `packet` is a valid readable region of `packet.len()` bytes for the whole
        // call.
        let n = unsafe { libc::write(self.0.as_raw_fd(), packet.as_ptr().cast(), packet.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl AsFd for TunFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for TunFile {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_names_are_refused_before_the_ioctl() {
        // Without /dev/net/tun (or the right to open it) there is nothing to check.
        let Ok(file) = TunFile::open_nonblocking() else {
            return;
        };
        for name in ["a123456789abcdef", "a\0b"] {
            let err = file.set_iff(name, IFF_TUN | IFF_NO_PI).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name:?}");
        }
    }
}
