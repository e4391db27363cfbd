//! The bare TAP forwarder behind the hidden `tapvs tapfwd` command: a reference program for
//! benchmarks (bench/run's `tapfwd` peer) that costs what any TAP appliance must pay and
//! nothing more. It opens two multi-queue TAP devices exactly as the daemon does (virtio-net
//! header, CSUM/TSO4/TSO6 offloads, queue length, bridge, link up) and copies every frame
//! verbatim, header included, from one to the other: no parsing, no table, no steering program.
//! Thread `i` owns queue `i` of both devices; it counts its frames, bytes and system calls.
//! Every system call goes through [`crate::sys`]; this module has no `unsafe`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde::Serialize;

use crate::sys::tap::{Tap, TapError, TapQueue, MAX_FRAME};
use crate::sys::{poll, poll_in};

/// Kernel-side queue length of both TAPs: the daemon's default `queue_len`.
pub const QUEUE_LEN: u32 = 4096;
/// Frames read from one queue before the thread looks at the other one.
const BURST: usize = 64;
/// How long a thread waits in `poll` before it checks the stop flag again.
const POLL_MS: i32 = 100;

/// What to forward between.
#[derive(Debug, Clone)]
pub struct Options {
    /// The first TAP device (opened or created).
    pub a: String,
    /// The second TAP device (opened or created).
    pub b: String,
    /// Forwarding threads, one queue of each device per thread (at least 1).
    pub threads: usize,
    /// Bridge to attach `a` to, if any.
    pub bridge_a: Option<String>,
    /// Bridge to attach `b` to, if any.
    pub bridge_b: Option<String>,
}

/// Counters of one thread, or their sums over all threads (the exit JSON line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Frames read (and offered to the other device).
    pub frames: u64,
    /// Bytes read, virtio-net header excluded.
    pub bytes: u64,
    /// System calls made: every `poll`, `read` (including the one that finds a queue empty)
    /// and `write`.
    pub syscalls: u64,
    /// Frames the other device refused (its queue full or its link down).
    pub dropped: u64,
}

impl Totals {
    fn add(&mut self, o: &Totals) {
        self.frames += o.frames;
        self.bytes += o.bytes;
        self.syscalls += o.syscalls;
        self.dropped += o.dropped;
    }
}

/// A running forwarder: its threads and their stop flag.
#[derive(Debug)]
pub struct Forwarder {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Totals>>,
}

/// Opens and sets up one device with `queues` queues.
fn open_tap(name: &str, queues: usize, bridge: Option<&str>) -> Result<Vec<TapQueue>, TapError> {
    let tap = Tap::open(name, queues)?;
    tap.set_queue_len(QUEUE_LEN)?;
    if let Some(br) = bridge {
        tap.attach_to_bridge(br)?;
    }
    tap.set_up()?;
    Ok(tap.into_queues())
}

impl Forwarder {
    /// Opens both devices and starts the threads. Signals the caller wants to take with
    /// `sigwait` must be blocked before this call (the threads inherit the mask).
    pub fn start(opts: &Options) -> Result<Forwarder, TapError> {
        let n = opts.threads.max(1);
        let qa = open_tap(&opts.a, n, opts.bridge_a.as_deref())?;
        let qb = open_tap(&opts.b, n, opts.bridge_b.as_deref())?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut fwd = Forwarder {
            stop,
            threads: Vec::with_capacity(n),
        };
        for (i, (a, b)) in qa.into_iter().zip(qb).enumerate() {
            let stop = fwd.stop.clone();
            match std::thread::Builder::new()
                .name(format!("tapfwd-{i}"))
                .spawn(move || forward(&a, &b, &stop))
            {
                Ok(t) => fwd.threads.push(t),
                Err(e) => {
                    // The threads already started stop before the error is returned.
                    fwd.stop();
                    return Err(TapError::Sys {
                        name: opts.a.clone(),
                        op: "spawn forwarding thread",
                        source: e,
                    });
                }
            }
        }
        Ok(fwd)
    }

    /// Stops the threads (within one poll timeout) and returns their summed counters. The
    /// devices are closed (and removed, if this process created them).
    pub fn stop(self) -> Totals {
        self.stop.store(true, Ordering::Relaxed);
        let mut sum = Totals::default();
        for t in self.threads {
            if let Ok(c) = t.join() {
                sum.add(&c);
            }
        }
        sum
    }
}

/// Reads `from` until it is empty or [`BURST`] frames were read, writing each frame unchanged
/// to `to`.
fn drain(from: &TapQueue, to: &TapQueue, buf: &mut [u8], c: &mut Totals) {
    for _ in 0..BURST {
        c.syscalls += 1;
        let n = match from.read(buf) {
            Ok(Some(n)) => n,
            // Empty, or an error a retry will not fix now: back to poll.
            Ok(None) | Err(_) => return,
        };
        c.frames += 1;
        c.bytes += n.saturating_sub(crate::sys::tap::VNET_HDR_LEN) as u64;
        c.syscalls += 1;
        if to.write(&buf[..n]).is_err() {
            c.dropped += 1;
        }
    }
}

/// One thread's loop over its queue of each device, until `stop`.
fn forward(a: &TapQueue, b: &TapQueue, stop: &AtomicBool) -> Totals {
    use std::os::fd::AsRawFd;
    let mut c = Totals::default();
    let mut buf = vec![0u8; MAX_FRAME];
    let mut fds = [poll_in(a.as_raw_fd()), poll_in(b.as_raw_fd())];
    while !stop.load(Ordering::Relaxed) {
        c.syscalls += 1;
        match poll(&mut fds, POLL_MS) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(_) => continue,
        }
        let (ra, rb) = (fds[0].revents, fds[1].revents);
        if ra != 0 {
            drain(a, b, &mut buf, &mut c);
        }
        if rb != 0 {
            drain(b, a, &mut buf, &mut c);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_every_field() {
        let mut s = Totals {
            frames: 1,
            bytes: 2,
            syscalls: 3,
            dropped: 4,
        };
        s.add(&Totals {
            frames: 10,
            bytes: 20,
            syscalls: 30,
            dropped: 40,
        });
        assert_eq!(
            s,
            Totals {
                frames: 11,
                bytes: 22,
                syscalls: 33,
                dropped: 44
            }
        );
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(j, r#"{"frames":11,"bytes":22,"syscalls":33,"dropped":44}"#);
    }

    #[test]
    fn bad_name_is_an_error_not_a_panic() {
        let e = Forwarder::start(&Options {
            a: "a/b".into(),
            b: "x".into(),
            threads: 1,
            bridge_a: None,
            bridge_b: None,
        })
        .unwrap_err();
        assert!(matches!(e, TapError::InvalidName(_)), "{e}");
    }
}
