//! Reading a capture back through tshark (Debian's), the oracle the VRRP and sync tests decode
//! the wire with.

use std::path::Path;
use std::process::{Command, Stdio};

/// `tshark -r PCAP ARGS... -T fields -e FIELD...`: one line per matching packet, its fields
/// separated by tabs. Panics (failing the test) when tshark fails.
pub fn fields(pcap: &Path, args: &[&str], fields: &[&str]) -> Vec<String> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(pcap).args(args).args(["-T", "fields"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.stderr(Stdio::inherit()).output().expect("tshark -r");
    assert!(out.status.success(), "tshark -r failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Frames a [`Capture`] kept, with the time each was seen.
type Frames = Vec<(std::time::SystemTime, Vec<u8>)>;

/// At most this many frames are kept by a [`Capture`].
const CAPTURE_MAX_FRAMES: usize = 100_000;

/// The capture socket's receive buffer.
const CAPTURE_RCVBUF: libc::c_int = 32 << 20;

/// A capture on one interface of a namespace, taken with a packet socket: the socket is open
/// when [`Capture::start`] returns, so every frame sent afterwards is seen (no wait for a
/// capture process to come up). Frames for which `keep` is true are kept in memory (bounded)
/// until [`Capture::finish`] writes them as a pcap file for tshark to decode.
pub struct Capture {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Frames>>,
}

impl Capture {
    /// Starts capturing on `ifname` in `ns`.
    pub fn start(ns: &tapvs_lab::netns::Netns, ifname: &str, keep: fn(&[u8]) -> bool) -> Capture {
        let name = ifname.to_string();
        let sock = ns
            .run(move || tapvs::sys::PacketSocket::open(&name))
            .expect("capture socket");
        // Room for a burst while this thread waits for a CPU: a frame lost here would look
        // like a frame the appliance never sent.
        sock.set_recv_buffer(CAPTURE_RCVBUF)
            .expect("capture socket buffer");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut frames = Vec::new();
            let mut buf = vec![0u8; 65536];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match sock.recv(&mut buf, 20) {
                    Ok(Some(n)) if frames.len() < CAPTURE_MAX_FRAMES && keep(&buf[..n]) => {
                        frames.push((std::time::SystemTime::now(), buf[..n].to_vec()));
                    }
                    Ok(_) => {}
                    Err(e) => panic!("capture: {e}"),
                }
            }
            // What is already queued on the socket was sent before the stop: take it too.
            while let Ok(Some(n)) = sock.recv(&mut buf, 0) {
                if frames.len() < CAPTURE_MAX_FRAMES && keep(&buf[..n]) {
                    frames.push((std::time::SystemTime::now(), buf[..n].to_vec()));
                }
            }
            let drops = sock.drops().expect("PACKET_STATISTICS");
            assert_eq!(
                drops, 0,
                "the capture socket dropped {drops} frames: the capture is incomplete"
            );
            frames
        });
        Capture {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the capture and writes what it kept to `path` (pcap, Ethernet); the frame count.
    pub fn finish(mut self, path: &Path) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let frames = self
            .thread
            .take()
            .expect("running")
            .join()
            .expect("capture thread");
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&[0; 8]); // thiszone, sigfigs
        out.extend_from_slice(&65536u32.to_le_bytes()); // snaplen
        out.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
        for (at, f) in &frames {
            let t = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            out.extend_from_slice(&(t.as_secs() as u32).to_le_bytes());
            out.extend_from_slice(&t.subsec_micros().to_le_bytes());
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(&(f.len() as u32).to_le_bytes());
            out.extend_from_slice(f);
        }
        std::fs::write(path, out).expect("write the pcap");
        frames.len()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
