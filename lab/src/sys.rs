//! Every system call of the harness that std does not wrap: joining a network namespace with
//! `setns(2)` and waiting for a descriptor to become readable with `poll(2)`. This is the only
//! module of the crate with `unsafe` code; each block carries a `SAFETY:` line.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

/// Moves the calling thread into the network namespace behind `ns` (an open `/run/netns/NAME`
/// or `/proc/PID/ns/net` handle). Only this thread changes namespace; threads it spawns later
/// inherit the new one.
pub(crate) fn setns_net(ns: &impl AsFd) -> io::Result<()> {
    let fd = ns.as_fd();
    // SAFETY: setns(2) only reads its two integer arguments; `fd` is borrowed from an open
    // descriptor that outlives the call, and CLONE_NEWNET changes only the calling thread's
    // network namespace (callers use a thread created for that purpose).
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits up to `timeout` (rounded down to whole milliseconds) until `fd` is readable (for a
/// listening socket: a connection is waiting). Returns whether it is; an interrupted wait counts
/// as "not yet".
pub(crate) fn wait_readable(fd: &impl AsFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: fd.as_fd().as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `pfd` is one valid, exclusively borrowed pollfd, and the count passed is 1; the
    // descriptor is borrowed from `fd` for the duration of the call.
    let n = unsafe { libc::poll(&mut pfd, 1, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(n > 0)
}
