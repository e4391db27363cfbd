//! Live capture over the control socket: the daemon's session that streams the workers'
//! captured frames ([`crate::datapath::capture`]) to a `tapvs capture` client, the wire format
//! of that stream, and the client's writers (classic pcap, or one summary line per frame).
//!
//! The exchange: the client sends the request line `{"args":["--tapvs-capture", FILTER...]}`
//! (no ipvsadm command line looks like it; FILTER is `--service VIP:PORT`, `--real ADDR` or
//! nothing). The daemon answers one JSON [`Response`] line: an error (a bad filter, "a capture
//! is already running"), or success with the port names, one per line, as its standard
//! output. Binary records follow: [`Record::Frame`] for each frame, then one [`Record::End`]
//! with the session's frame and drop counts. The client ends the capture by shutting down its
//! writing side (or sending anything); the daemon then stops the workers' copying, sends what
//! they had already captured and the end record, and closes. A client that goes away ends the
//! capture as well; the daemon's stop ends it too.
//!
//! Records, little-endian: `b'F'`, direction (0 received, 1 sent), port (u16), time (u64,
//! nanoseconds since the Unix epoch), original length (u32), captured length (u32), the
//! captured bytes; `b'E'`, frames (u64), drops (u64).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use tapvs_adm::Response;

use crate::control::shared::Shared;
use crate::datapath::capture::{CaptureShared, Dir, Filter, SNAP};

/// The control-socket request that starts a capture (the first of its `args`).
pub const CAPTURE_REQUEST: &str = "--tapvs-capture";

/// The request's arguments for `filter`.
pub fn request_args(filter: Filter) -> Vec<String> {
    let mut v = vec![CAPTURE_REQUEST.to_string()];
    match filter {
        Filter::All => {}
        Filter::Service(a) => v.extend(["--service".to_string(), a.to_string()]),
        Filter::Real(a) => v.extend(["--real".to_string(), a.to_string()]),
    }
    v
}

/// The filter of a capture request; `None` when `args` is not one, `Some(Err)` when its filter
/// is bad.
pub fn parse_request(args: &[String]) -> Option<Result<Filter, String>> {
    if args.first().map(String::as_str) != Some(CAPTURE_REQUEST) {
        return None;
    }
    Some(match &args[1..] {
        [] => Ok(Filter::All),
        [k, v] if k == "--service" => v
            .parse::<SocketAddrV4>()
            .map(Filter::Service)
            .map_err(|_| format!("--service {v:?}: not an IPv4 address:port")),
        [k, v] if k == "--real" => v
            .parse::<Ipv4Addr>()
            .map(Filter::Real)
            .map_err(|_| format!("--real {v:?}: not an IPv4 address")),
        other => Err(format!("bad capture request {other:?}")),
    })
}

/// One record of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A captured frame.
    Frame {
        /// Received or sent.
        dir: Dir,
        /// Port index.
        port: u16,
        /// Nanoseconds since the Unix epoch.
        ts_ns: u64,
        /// The frame's length on the wire.
        orig_len: u32,
        /// The captured bytes (at most [`SNAP`]).
        data: Vec<u8>,
    },
    /// The end of the capture.
    End {
        /// Frames sent to the client.
        frames: u64,
        /// Frames that matched but were dropped (no free slot, full ring).
        dropped: u64,
    },
}

const FRAME_HEADER: usize = 1 + 1 + 2 + 8 + 4 + 4;

/// Appends a frame record to `out`.
fn encode_frame(out: &mut Vec<u8>, dir: Dir, port: u16, ts_ns: u64, orig_len: u32, data: &[u8]) {
    out.push(b'F');
    out.push(dir as u8);
    out.extend_from_slice(&port.to_le_bytes());
    out.extend_from_slice(&ts_ns.to_le_bytes());
    out.extend_from_slice(&orig_len.to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
}

/// Appends the end record to `out`.
fn encode_end(out: &mut Vec<u8>, frames: u64, dropped: u64) {
    out.push(b'E');
    out.extend_from_slice(&frames.to_le_bytes());
    out.extend_from_slice(&dropped.to_le_bytes());
}

/// Reads the next record; `Ok(None)` at a clean end of stream (before a record).
pub fn read_record(r: &mut impl Read) -> io::Result<Option<Record>> {
    let mut kind = [0u8; 1];
    if r.read(&mut kind)? == 0 {
        return Ok(None);
    }
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    match kind[0] {
        b'F' => {
            let mut h = [0u8; FRAME_HEADER - 1];
            r.read_exact(&mut h)?;
            let dir = match h[0] {
                0 => Dir::Rx,
                1 => Dir::Tx,
                _ => return Err(bad("capture stream: bad direction")),
            };
            let port = u16::from_le_bytes([h[1], h[2]]);
            let ts_ns = u64::from_le_bytes(h[3..11].try_into().map_err(|_| bad("header"))?);
            let orig_len = u32::from_le_bytes(h[11..15].try_into().map_err(|_| bad("header"))?);
            let len = u32::from_le_bytes(h[15..19].try_into().map_err(|_| bad("header"))?);
            if len as usize > SNAP || len > orig_len {
                return Err(bad("capture stream: bad frame length"));
            }
            let mut data = vec![0u8; len as usize];
            r.read_exact(&mut data)?;
            Ok(Some(Record::Frame {
                dir,
                port,
                ts_ns,
                orig_len,
                data,
            }))
        }
        b'E' => {
            let mut b = [0u8; 16];
            r.read_exact(&mut b)?;
            Ok(Some(Record::End {
                frames: u64::from_le_bytes(b[..8].try_into().map_err(|_| bad("end"))?),
                dropped: u64::from_le_bytes(b[8..].try_into().map_err(|_| bad("end"))?),
            }))
        }
        _ => Err(bad("capture stream: unknown record")),
    }
}

/// Writes one response line.
fn reply(mut stream: &UnixStream, resp: &Response) -> io::Result<()> {
    let mut j = serde_json::to_string(resp).map_err(io::Error::other)?;
    j.push('\n');
    stream.write_all(j.as_bytes())
}

/// Flush the stream buffer once it holds this much.
const FLUSH_AT: usize = 64 << 10;

/// Frames moved to the client per [`drain`] call, so the session checks its client between.
const DRAIN_BUDGET: usize = 4096;

/// Moves captured frames from the workers' rings to the client (a bounded share per worker
/// and pass, so one busy worker cannot starve the others' rings), at most [`DRAIN_BUDGET`];
/// whether more may be waiting.
fn drain(
    cap: &CaptureShared,
    stream: &UnixStream,
    buf: &mut Vec<u8>,
    frames: &mut u64,
) -> io::Result<bool> {
    let mut moved = 0;
    let mut any = true;
    while any && moved < DRAIN_BUDGET {
        any = false;
        for w in 0..cap.workers() {
            for _ in 0..256 {
                let Some(s) = cap.take(w) else { break };
                encode_frame(buf, s.dir, s.port, s.ts_ns, s.orig_len, s.frame());
                cap.recycle(s);
                *frames += 1;
                moved += 1;
                any = true;
                if buf.len() >= FLUSH_AT {
                    (&*stream).write_all(buf)?;
                    buf.clear();
                }
            }
        }
    }
    if !buf.is_empty() {
        (&*stream).write_all(buf)?;
        buf.clear();
    }
    Ok(moved >= DRAIN_BUDGET)
}

/// Serves one capture request on `stream` until the client ends it or goes away, or the
/// daemon stops (see the module docs).
pub fn serve(shared: &Shared, stream: UnixStream, filter: Result<Filter, String>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            let _ = reply(
                &stream,
                &Response {
                    stderr: format!("tapvs capture: {e}\n"),
                    code: 2,
                    ..Response::default()
                },
            );
            return;
        }
    };
    let cap = &shared.capture;
    let Some(guard) = cap.begin(filter) else {
        let _ = reply(
            &stream,
            &Response {
                stderr: "tapvs capture: a capture is already running (one at a time)\n".into(),
                code: 1,
                ..Response::default()
            },
        );
        return;
    };
    tracing::info!(?filter, "capture started");
    let dropped_before = cap.dropped_total.load(std::sync::atomic::Ordering::Relaxed);
    let mut names = String::new();
    for p in &cap.ports {
        names.push_str(p);
        names.push('\n');
    }
    let mut frames = 0u64;
    let mut buf: Vec<u8> = Vec::with_capacity(FLUSH_AT + SNAP + FRAME_HEADER);
    let mut ok = reply(&stream, &Response::out(names)).is_ok();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    while ok && !shared.stop.load(std::sync::atomic::Ordering::Relaxed) {
        let more = match drain(cap, &stream, &mut buf, &mut frames) {
            Ok(more) => more,
            Err(_) => {
                ok = false;
                break;
            }
        };
        // The client ends the capture by shutting down its side (EOF) or writing anything; a
        // client that died gives EOF or an error as well.
        let mut pfd = [crate::sys::poll_in(fd)];
        if crate::sys::poll(&mut pfd, if more { 0 } else { 10 }).unwrap_or(0) > 0 {
            let mut scratch = [0u8; 64];
            let _ = (&stream).read(&mut scratch);
            break;
        }
    }
    guard.stop();
    // What the workers had already captured (the copying is off: this ends), then the end.
    while ok {
        match drain(cap, &stream, &mut buf, &mut frames) {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) => ok = false,
        }
    }
    let dropped = cap
        .dropped_total
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(dropped_before);
    // Counted before the end record, so a client that reads it and scrapes sees them.
    cap.frames_total
        .fetch_add(frames, std::sync::atomic::Ordering::Relaxed);
    if ok {
        encode_end(&mut buf, frames, dropped);
        let _ = (&stream).write_all(&buf);
    }
    drop(guard);
    tracing::info!(frames, dropped, "capture ended");
}

/// Writes classic pcap (LINKTYPE_ETHERNET, microsecond timestamps), as tcpdump and tshark read
/// it.
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the file header (snap length [`SNAP`]).
    pub fn new(mut out: W) -> io::Result<PcapWriter<W>> {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&0i32.to_le_bytes()); // thiszone
        h.extend_from_slice(&0u32.to_le_bytes()); // sigfigs
        h.extend_from_slice(&(SNAP as u32).to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
        out.write_all(&h)?;
        Ok(PcapWriter { out })
    }

    /// Writes one frame: its time, captured bytes and original length.
    pub fn frame(&mut self, ts_ns: u64, orig_len: u32, data: &[u8]) -> io::Result<()> {
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&((ts_ns / 1_000_000_000) as u32).to_le_bytes());
        h[4..8].copy_from_slice(&((ts_ns % 1_000_000_000 / 1000) as u32).to_le_bytes());
        h[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
        h[12..16].copy_from_slice(&orig_len.max(data.len() as u32).to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(data)
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One line per frame, as `tapvs capture` prints without `-w`: UTC time, port, direction,
/// then `src > dst` and the protocol (TCP with its flags, UDP, ICMP, IPIP with the inner
/// packet, ARP) and the frame length.
pub fn summary(ts_ns: u64, port: &str, dir: Dir, orig_len: u32, f: &[u8]) -> String {
    let secs = ts_ns / 1_000_000_000;
    let day = secs % 86_400;
    let time = format!(
        "{:02}:{:02}:{:02}.{:06}",
        day / 3600,
        day / 60 % 60,
        day % 60,
        ts_ns % 1_000_000_000 / 1000
    );
    let dir = match dir {
        Dir::Rx => "in ",
        Dir::Tx => "out",
    };
    format!("{time} {port} {dir} {} len {orig_len}", describe(f))
}

/// The frame as `src > dst PROTO ...`.
fn describe(f: &[u8]) -> String {
    if f.len() < 14 {
        return "runt".into();
    }
    match u16::from_be_bytes([f[12], f[13]]) {
        0x0800 => describe_ip(&f[14..], true),
        0x0806 if f.len() >= 42 => {
            let op = u16::from_be_bytes([f[20], f[21]]);
            let spa = Ipv4Addr::new(f[28], f[29], f[30], f[31]);
            let tpa = Ipv4Addr::new(f[38], f[39], f[40], f[41]);
            match op {
                1 => format!("ARP who-has {tpa} tell {spa}"),
                2 => format!("ARP reply {spa} is-at {}", mac(&f[22..28])),
                _ => format!("ARP op {op}"),
            }
        }
        t => format!("ethertype 0x{t:04x}"),
    }
}

fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn describe_ip(ip: &[u8], outer: bool) -> String {
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return "IPv4 (truncated)".into();
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let l4 = ip.get(ihl..).unwrap_or(&[]);
    let ports = || {
        (l4.len() >= 4).then(|| {
            (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            )
        })
    };
    match ip[9] {
        6 => match ports() {
            Some((sp, dp)) => {
                let flags = l4.get(13).map_or(String::new(), |&b| {
                    let mut s = String::new();
                    for (bit, c) in [(0x02, 'S'), (0x01, 'F'), (0x04, 'R'), (0x08, 'P')] {
                        if b & bit != 0 {
                            s.push(c);
                        }
                    }
                    if b & 0x10 != 0 {
                        s.push('.');
                    }
                    format!(" [{s}]")
                });
                format!("{src}:{sp} > {dst}:{dp} TCP{flags}")
            }
            None => format!("{src} > {dst} TCP (truncated)"),
        },
        17 => match ports() {
            Some((sp, dp)) => format!("{src}:{sp} > {dst}:{dp} UDP"),
            None => format!("{src} > {dst} UDP (truncated)"),
        },
        1 => format!(
            "{src} > {dst} ICMP type {}",
            l4.first().map_or("?".into(), |t| t.to_string())
        ),
        4 if outer => format!("{src} > {dst} IPIP: {}", describe_ip(l4, false)),
        p => format!("{src} > {dst} proto {p}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_refused() {
        for f in [
            Filter::All,
            Filter::Service("10.0.0.10:80".parse().unwrap()),
            Filter::Real("172.16.0.2".parse().unwrap()),
        ] {
            assert_eq!(parse_request(&request_args(f)), Some(Ok(f)));
        }
        let args = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
        assert_eq!(parse_request(&args("-L -n")), None);
        assert_eq!(parse_request(&[]), None);
        for bad in [
            "--tapvs-capture --service 10.0.0.10",
            "--tapvs-capture --service host:80",
            "--tapvs-capture --real 10.0.0.300",
            "--tapvs-capture --real",
            "--tapvs-capture --port 1",
        ] {
            assert!(
                matches!(parse_request(&args(bad)), Some(Err(_))),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn records_round_trip_and_bad_streams_are_errors() {
        let mut buf = Vec::new();
        encode_frame(
            &mut buf,
            Dir::Tx,
            3,
            1_700_000_000_123_456_789,
            9000,
            &[1, 2, 3],
        );
        encode_end(&mut buf, 1, 7);
        let mut r = &buf[..];
        assert_eq!(
            read_record(&mut r).unwrap(),
            Some(Record::Frame {
                dir: Dir::Tx,
                port: 3,
                ts_ns: 1_700_000_000_123_456_789,
                orig_len: 9000,
                data: vec![1, 2, 3],
            })
        );
        assert_eq!(
            read_record(&mut r).unwrap(),
            Some(Record::End {
                frames: 1,
                dropped: 7
            })
        );
        assert_eq!(read_record(&mut r).unwrap(), None);
        // Truncated, unknown kind, bad direction, length above the snap length.
        assert!(read_record(&mut &buf[..10]).is_err());
        assert!(read_record(&mut &b"X"[..]).is_err());
        let mut bad = buf.clone();
        bad[1] = 9;
        assert!(read_record(&mut &bad[..]).is_err());
        let mut long = Vec::new();
        encode_frame(&mut long, Dir::Rx, 0, 0, 1, &[0; 4]);
        assert!(read_record(&mut &long[..]).is_err(), "captured > original");
    }

    #[test]
    fn pcap_layout() {
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.frame(1_700_000_001_000_002_999, 70_000, &[0xaa; 60])
            .unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out.len(), 24 + 16 + 60);
        assert_eq!(&out[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(&out[4..8], &[2, 0, 4, 0]);
        assert_eq!(u32::from_le_bytes(out[16..20].try_into().unwrap()), 2048);
        assert_eq!(u32::from_le_bytes(out[20..24].try_into().unwrap()), 1);
        let rec = &out[24..40];
        assert_eq!(
            u32::from_le_bytes(rec[..4].try_into().unwrap()),
            1_700_000_001
        );
        assert_eq!(u32::from_le_bytes(rec[4..8].try_into().unwrap()), 2);
        assert_eq!(u32::from_le_bytes(rec[8..12].try_into().unwrap()), 60);
        assert_eq!(u32::from_le_bytes(rec[12..16].try_into().unwrap()), 70_000);
    }

    #[test]
    fn summary_lines() {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&[10, 0, 0, 2, 10, 0, 0, 10]);
        f.extend_from_slice(&40000u16.to_be_bytes());
        f.extend_from_slice(&80u16.to_be_bytes());
        f.extend_from_slice(&[0; 9]);
        f.push(0x12); // SYN ACK
        f.extend_from_slice(&[0; 6]);
        let ts = 86_400 * 1000 + 3600 + 2 * 60 + 3;
        assert_eq!(
            summary(ts * 1_000_000_000 + 4_000, "ext", Dir::Rx, 54, &f),
            "01:02:03.000004 ext in  10.0.0.2:40000 > 10.0.0.10:80 TCP [S.] len 54"
        );
        assert_eq!(
            summary(0, "int", Dir::Tx, 3, &[1, 2, 3]),
            "00:00:00.000000 int out runt len 3"
        );
        // Every prefix of the frame: no panic.
        for n in 0..f.len() {
            let _ = summary(0, "p", Dir::Rx, n as u32, &f[..n]);
        }
    }
}
