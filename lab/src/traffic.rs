//! Tiny traffic endpoints for tests and `tapvs demo`, std only: an HTTP/1.1 server that answers
//! every request with its own name and an HTTP client that counts which backend answered
//! ([`HttpServer`], [`http_get`], [`http_split`]); a UDP echo server and client ([`UdpEcho`],
//! [`udp_request`]); and a bulk TCP sender and sink that compare SHA-256 digests of a
//! deterministic byte stream ([`bulk_send`], [`BulkSink`]). Sockets belong to the network
//! namespace of the thread that creates them, so servers bind synchronously in their constructor
//! (call it inside `Netns::run`; the server is ready when it returns) and clients must be called
//! from a thread inside the client's namespace. Every blocking step has a timeout or polls a stop
//! flag, so nothing here can hang a test forever.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// How often background loops check their stop flag (accept polls, read-timeout ticks).
const TICK: Duration = Duration::from_millis(5);

/// Read timeout of server-side connection reads; each expiry re-checks the stop flag.
const CONN_TICK: Duration = Duration::from_millis(50);

/// A server connection idle (no bytes) this long is closed.
const IDLE_LIMIT: Duration = Duration::from_secs(30);

/// Largest request head the HTTP server accepts.
const MAX_HEAD: usize = 16 * 1024;

/// Largest response the HTTP client accepts.
const MAX_RESPONSE: usize = 1024 * 1024;

/// Size of each write made by [`bulk_send`].
pub const BULK_CHUNK: usize = 64 * 1024;

/// Attempts made by [`udp_request`] before giving up.
pub const UDP_ATTEMPTS: u32 = 3;

/// Returns a `TimedOut` error carrying `what`.
fn timed_out(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what)
}

/// Returns the time left until `deadline`, or a `TimedOut` error naming `what` if none is left.
fn remaining(deadline: Instant, what: &str) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(timed_out(format!("{what}: timed out")))
    } else {
        Ok(left)
    }
}

/// Returns whether an I/O error is a read/write timeout expiry.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Returns the index just past the first `\r\n\r\n` in `buf`.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Finds header `name` (case-insensitive) among the header lines of an HTTP head.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// Accepts connections with a non-blocking listener, polling `stop` every [`TICK`], and hands
/// each accepted (blocking) stream to `handle`; returns when `stop` is set or `handle` returns
/// `false`.
fn accept_loop(
    listener: &TcpListener,
    stop: &AtomicBool,
    mut handle: impl FnMut(TcpStream) -> bool,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(false).is_ok() && !handle(stream) {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Sleep until a connection arrives (or a tick passes, to see `stop`).
                let _ = crate::sys::wait_readable(listener, TICK);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => std::thread::sleep(TICK),
        }
    }
}

/// A minimal HTTP/1.1 server answering every request with status 200 (or the status set with
/// [`HttpServer::set_status`]) and its `name` as the body.
///
/// Supports keep-alive (the HTTP/1.1 default) and `Connection: close`; request bodies announced by
/// `Content-Length` are read and discarded. One thread accepts, one thread serves each
/// connection. Dropping the server stops accepting, closes open connections within ~50 ms, and
/// joins all its threads.
#[derive(Debug)]
pub struct HttpServer {
    /// The bound address (with the real port when bound to port 0).
    local: SocketAddr,
    /// The body of every response.
    name: String,
    /// Requests answered so far.
    served: Arc<AtomicU64>,
    /// Status code of every response (200 unless changed with [`HttpServer::set_status`]).
    status: Arc<std::sync::atomic::AtomicU16>,
    /// Tells the threads to finish.
    stop: Arc<AtomicBool>,
    /// The accept thread (which joins the connection threads when it ends).
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `bind` in the calling thread's network namespace and starts serving; the server is
    /// ready (listening) when this returns. Port 0 picks a free port, see
    /// [`HttpServer::local_addr`].
    pub fn start(bind: SocketAddr, name: &str) -> io::Result<HttpServer> {
        let listener = TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let served = Arc::new(AtomicU64::new(0));
        let status = Arc::new(std::sync::atomic::AtomicU16::new(200));
        let stop = Arc::new(AtomicBool::new(false));
        let body: Arc<str> = Arc::from(name);
        let thread = {
            let (served, stop, status) = (served.clone(), stop.clone(), status.clone());
            std::thread::Builder::new()
                .name(format!("http-{name}"))
                .spawn(move || {
                    let mut conns: Vec<JoinHandle<()>> = Vec::new();
                    accept_loop(&listener, &stop, |stream| {
                        conns.retain(|h| !h.is_finished());
                        let (served, stop, body, status) =
                            (served.clone(), stop.clone(), body.clone(), status.clone());
                        let spawned =
                            std::thread::Builder::new()
                                .name("http-conn".into())
                                .spawn(move || {
                                    // Errors just end this connection.
                                    let _ = serve_http_conn(stream, &body, &served, &status, &stop);
                                });
                        if let Ok(h) = spawned {
                            conns.push(h);
                        }
                        true
                    });
                    drop(listener);
                    for h in conns {
                        let _ = h.join();
                    }
                })?
        };
        Ok(HttpServer {
            local,
            name: name.to_string(),
            served,
            status,
            stop,
            thread: Some(thread),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The name the server puts in every response body.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes every later response carry `status` (e.g. 500 to fail an HTTP check).
    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::Relaxed);
    }

    /// The number of requests answered so far (counted just before each response is written, so
    /// a client holding a response always sees it counted).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves the requests of one HTTP connection until the client closes, asks to close, idles for
/// [`IDLE_LIMIT`], sends something malformed, or `stop` is set.
fn serve_http_conn(
    mut stream: TcpStream,
    body: &str,
    served: &AtomicU64,
    status: &std::sync::atomic::AtomicU16,
    stop: &AtomicBool,
) -> io::Result<()> {
    stream.set_read_timeout(Some(CONN_TICK))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let mut last_data = Instant::now();
    loop {
        // Serve every complete request already buffered.
        while let Some(end) = head_end(&buf) {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let content_length: usize = match header(&head, "content-length") {
                Some(v) => v
                    .parse()
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad length"))?,
                None => 0,
            };
            if buf.len() < end + content_length {
                break; // Request body still incoming.
            }
            buf.drain(..end + content_length);
            let request_line = head.lines().next().unwrap_or("");
            let http10 = request_line.ends_with("HTTP/1.0");
            let conn_hdr = header(&head, "connection").map(str::to_ascii_lowercase);
            let close = match conn_hdr.as_deref() {
                Some(v) if v.contains("close") => true,
                Some(v) if v.contains("keep-alive") => false,
                _ => http10,
            };
            let code = status.load(Ordering::Relaxed);
            let response = format!(
                "HTTP/1.1 {code} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                 Connection: {}\r\n\r\n{body}",
                if code == 200 { "OK" } else { "Status" },
                body.len(),
                if close { "close" } else { "keep-alive" },
            );
            // Counted before writing, so a client that has the response also sees the count.
            served.fetch_add(1, Ordering::Relaxed);
            stream.write_all(response.as_bytes())?;
            if close {
                let _ = stream.shutdown(Shutdown::Write);
                return Ok(());
            }
        }
        if buf.len() > MAX_HEAD + 1024 * 1024 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request too big",
            ));
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                last_data = Instant::now();
                if head_end(&buf).is_none() && buf.len() > MAX_HEAD {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "head too big"));
                }
            }
            Err(e) if is_timeout(&e) => {
                if last_data.elapsed() > IDLE_LIMIT {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Sends `GET path` with `Connection: close` to `addr` from the calling thread's namespace and
/// returns the status code and body. `timeout` bounds the whole exchange (connect included).
/// The body is delimited by `Content-Length` when present, else by the server closing.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<(u16, String)> {
    let deadline = Instant::now() + timeout;
    let what = format!("GET http://{addr}{path}");
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| io::Error::new(e.kind(), format!("{what}: connect: {e}")))?;
    stream.set_write_timeout(Some(remaining(deadline, &what)?))?;
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: tapvs-traffic\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = head_end(&buf) {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            if let Some(len) = header(&head, "content-length") {
                let len: usize = len.parse().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("{what}: bad length"))
                })?;
                if buf.len() >= end + len {
                    return parse_response(&head, &buf[end..end + len], &what);
                }
            }
        }
        if buf.len() > MAX_RESPONSE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{what}: response too big"),
            ));
        }
        stream.set_read_timeout(Some(remaining(deadline, &what)?))?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                let end = head_end(&buf).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{what}: connection closed before a complete response"),
                    )
                })?;
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                if header(&head, "content-length").is_some() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("{what}: body shorter than Content-Length"),
                    ));
                }
                return parse_response(&head, &buf[end..], &what);
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => return Err(timed_out(format!("{what}: timed out"))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{what}: {e}"))),
        }
    }
}

/// Extracts the status code from a response head and pairs it with the body.
fn parse_response(head: &str, body: &[u8], what: &str) -> io::Result<(u16, String)> {
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{what}: bad status line"),
            )
        })?;
    Ok((status, String::from_utf8_lossy(body).into_owned()))
}

/// Makes `n` sequential [`http_get`]s of `/` (each a new connection, each bounded by `timeout`)
/// and counts the responses by body, i.e. by which [`HttpServer`] answered. Any error or non-200
/// status aborts with an error.
pub fn http_split(
    addr: SocketAddr,
    n: u64,
    timeout: Duration,
) -> io::Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for i in 0..n {
        let (status, body) = http_get(addr, "/", timeout)
            .map_err(|e| io::Error::new(e.kind(), format!("request {i} of {n}: {e}")))?;
        if status != 200 {
            return Err(io::Error::other(format!(
                "request {i} of {n} to {addr}: status {status}"
            )));
        }
        *counts.entry(body).or_insert(0) += 1;
    }
    Ok(counts)
}

/// A UDP server replying to each datagram with `name + ":" + payload` (payload as UTF-8, lossily).
/// Dropping it stops and joins its thread.
#[derive(Debug)]
pub struct UdpEcho {
    /// The bound address.
    local: SocketAddr,
    /// Datagrams answered so far.
    served: Arc<AtomicU64>,
    /// Tells the thread to finish.
    stop: Arc<AtomicBool>,
    /// The serving thread.
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    /// Binds `bind` in the calling thread's network namespace and starts answering; ready when
    /// this returns.
    pub fn start(bind: SocketAddr, name: &str) -> io::Result<UdpEcho> {
        let socket = UdpSocket::bind(bind)?;
        socket.set_read_timeout(Some(CONN_TICK))?;
        socket.set_write_timeout(Some(Duration::from_secs(1)))?;
        let local = socket.local_addr()?;
        let served = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let prefix = format!("{name}:");
        let thread = {
            let (served, stop) = (served.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("udp-{name}"))
                .spawn(move || {
                    let mut buf = vec![0u8; 65536];
                    while !stop.load(Ordering::Relaxed) {
                        // A timeout tick or transient error just re-checks `stop`.
                        if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                            let mut reply = prefix.clone().into_bytes();
                            reply.extend_from_slice(&buf[..n]);
                            // Counted before sending (see HttpServer::served).
                            served.fetch_add(1, Ordering::Relaxed);
                            let _ = socket.send_to(&reply, peer);
                        }
                    }
                })?
        };
        Ok(UdpEcho {
            local,
            served,
            stop,
            thread: Some(thread),
        })
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The number of datagrams answered so far (counted just before each reply is sent).
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `payload` to `addr` from a fresh socket in the calling thread's namespace and returns the
/// first reply (e.g. `"rs1:payload"` from a [`UdpEcho`]). Makes up to [`UDP_ATTEMPTS`] attempts,
/// each waiting `timeout / UDP_ATTEMPTS`, so `timeout` bounds the whole call; ICMP errors
/// (connection refused) are retried too and reported if every attempt fails.
pub fn udp_request(addr: SocketAddr, payload: &str, timeout: Duration) -> io::Result<String> {
    udp_request_from(0, addr, payload, timeout)
}

/// [`udp_request`] from local port `port` (0: any), so that a test can be sure that each
/// request is a new flow (the kernel may hand a just-freed ephemeral port out again).
pub fn udp_request_from(
    port: u16,
    addr: SocketAddr,
    payload: &str,
    timeout: Duration,
) -> io::Result<String> {
    let bind: SocketAddr = if addr.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], port))
    } else {
        SocketAddr::from(([0u16; 8], port))
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(addr)?;
    let per_try = (timeout / UDP_ATTEMPTS).max(Duration::from_millis(1));
    socket.set_read_timeout(Some(per_try))?;
    socket.set_write_timeout(Some(per_try))?;
    let mut buf = vec![0u8; 65536];
    let mut last_err = None;
    for _ in 0..UDP_ATTEMPTS {
        if let Err(e) = socket.send(payload.as_bytes()) {
            last_err = Some(e);
            continue;
        }
        match socket.recv(&mut buf) {
            Ok(n) => return Ok(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) => last_err = Some(e),
        }
    }
    let e = last_err.unwrap_or_else(|| timed_out(String::new()));
    let kind = if is_timeout(&e) {
        io::ErrorKind::TimedOut
    } else {
        e.kind()
    };
    Err(io::Error::new(
        kind,
        format!("udp {addr}: no reply after {UDP_ATTEMPTS} attempts in {timeout:?}: {e}"),
    ))
}

/// The deterministic pseudo-random byte stream of [`bulk_send`]: xorshift64 output words,
/// little-endian.
struct BulkStream {
    /// The xorshift64 state (never zero).
    state: u64,
}

impl BulkStream {
    /// Seeds the generator; every seed (including 0) gives a valid non-zero state.
    fn new(seed: u64) -> BulkStream {
        let state = seed ^ 0x9E37_79B9_7F4A_7C15;
        BulkStream {
            state: if state == 0 {
                0x9E37_79B9_7F4A_7C15
            } else {
                state
            },
        }
    }

    /// Fills `buf` (length a multiple of 8) with the next bytes of the stream.
    fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_exact_mut(8) {
            let mut x = self.state;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.state = x;
            word.copy_from_slice(&x.to_le_bytes());
        }
    }
}

/// Calls `sink` with the first `bytes` bytes of the stream for `seed`, in chunks of at most
/// [`BULK_CHUNK`] bytes.
fn for_each_bulk_chunk(
    bytes: u64,
    seed: u64,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> io::Result<()> {
    let mut gen = BulkStream::new(seed);
    let mut buf = vec![0u8; BULK_CHUNK];
    let mut left = bytes;
    while left > 0 {
        gen.fill(&mut buf);
        let n = usize::try_from(left).map_or(BULK_CHUNK, |l| l.min(BULK_CHUNK));
        sink(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// The SHA-256 digest of the first `bytes` bytes that [`bulk_send`] sends for `seed`, computed
/// locally (no network).
pub fn bulk_digest(bytes: u64, seed: u64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let _ = for_each_bulk_chunk(bytes, seed, |c| {
        hasher.update(c);
        Ok(())
    });
    hasher.finalize().into()
}

/// Connects to `addr` from the calling thread's namespace, sends `bytes` bytes of the xorshift64
/// stream for `seed` in 64 KiB writes, half-closes, waits for the peer to close (so the data was
/// consumed), and returns the SHA-256 of what was sent. `timeout` bounds the whole transfer.
pub fn bulk_send(
    addr: SocketAddr,
    bytes: u64,
    seed: u64,
    timeout: Duration,
) -> io::Result<[u8; 32]> {
    let deadline = Instant::now() + timeout;
    let what = format!("bulk send of {bytes} bytes to {addr}");
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| io::Error::new(e.kind(), format!("{what}: connect: {e}")))?;
    let mut hasher = Sha256::new();
    for_each_bulk_chunk(bytes, seed, |chunk| {
        stream.set_write_timeout(Some(remaining(deadline, &what)?))?;
        stream
            .write_all(chunk)
            .map_err(|e| io::Error::new(e.kind(), format!("{what}: write: {e}")))?;
        hasher.update(chunk);
        Ok(())
    })?;
    stream.shutdown(Shutdown::Write)?;
    let mut scratch = [0u8; 4096];
    loop {
        stream.set_read_timeout(Some(remaining(deadline, &what)?))?;
        match stream.read(&mut scratch) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {
                return Err(timed_out(format!("{what}: peer did not close in time")))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{what}: {e}"))),
        }
    }
    Ok(hasher.finalize().into())
}

/// Result of a [`BulkSink`] transfer: bytes received and their SHA-256.
type BulkResult = (u64, [u8; 32]);

/// A one-shot TCP sink: accepts a single connection, reads it to EOF while hashing (SHA-256),
/// then closes it. Dropping it stops and joins its thread (an unfinished transfer is abandoned).
#[derive(Debug)]
pub struct BulkSink {
    /// The bound address.
    local: SocketAddr,
    /// Tells the thread to finish.
    stop: Arc<AtomicBool>,
    /// Delivers the outcome; the cached success is kept for repeated [`BulkSink::wait`] calls.
    result: Mutex<(Receiver<io::Result<BulkResult>>, Option<BulkResult>)>,
    /// The accepting/reading thread.
    thread: Option<JoinHandle<()>>,
}

impl BulkSink {
    /// Binds `bind` in the calling thread's network namespace and waits in the background for
    /// one connection; ready (listening) when this returns.
    pub fn start(bind: SocketAddr) -> io::Result<BulkSink> {
        let listener = TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("bulk-sink".into())
                .spawn(move || {
                    let mut first = None;
                    accept_loop(&listener, &stop, |s| {
                        first = Some(s);
                        false
                    });
                    drop(listener);
                    if let Some(stream) = first {
                        let _ = tx.send(sink_stream(stream, &stop));
                    }
                })?
        };
        Ok(BulkSink {
            local,
            stop,
            result: Mutex::new((rx, None)),
            thread: Some(thread),
        })
    }

    /// The address the sink listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Waits up to `timeout` for the transfer to finish (the sender's EOF) and returns the byte
    /// count and SHA-256 of what arrived. Errors with `TimedOut` if it has not finished yet (the
    /// transfer continues; `wait` may be called again).
    pub fn wait(&self, timeout: Duration) -> io::Result<(u64, [u8; 32])> {
        let mut guard = self.result.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = guard.1 {
            return Ok(r);
        }
        match guard.0.recv_timeout(timeout) {
            Ok(Ok(r)) => {
                guard.1 = Some(r);
                Ok(r)
            }
            Ok(Err(e)) => Err(e),
            Err(RecvTimeoutError::Timeout) => Err(timed_out(format!(
                "bulk sink {}: transfer not finished after {timeout:?}",
                self.local
            ))),
            Err(RecvTimeoutError::Disconnected) => Err(io::Error::other(format!(
                "bulk sink {}: no result (already reported or sink stopped)",
                self.local
            ))),
        }
    }
}

impl Drop for BulkSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads `stream` to EOF, hashing; gives up if `stop` is set or the sender idles for
/// [`IDLE_LIMIT`].
fn sink_stream(mut stream: TcpStream, stop: &AtomicBool) -> io::Result<BulkResult> {
    stream.set_read_timeout(Some(CONN_TICK))?;
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let mut last_data = Instant::now();
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
                last_data = Instant::now();
            }
            Err(e) if is_timeout(&e) => {
                if stop.load(Ordering::Relaxed) {
                    return Err(io::Error::other("bulk sink stopped before EOF"));
                }
                if last_data.elapsed() > IDLE_LIMIT {
                    return Err(timed_out(format!(
                        "bulk sink: sender idle for {IDLE_LIMIT:?} after {total} bytes"
                    )));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // Closing tells bulk_send that everything was consumed.
    drop(stream);
    Ok((total, hasher.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_stream_is_deterministic_and_seeded() {
        assert_eq!(bulk_digest(100_000, 7), bulk_digest(100_000, 7));
        assert_ne!(bulk_digest(100_000, 7), bulk_digest(100_000, 8));
        assert_ne!(bulk_digest(100_000, 0), bulk_digest(0, 0));
        let mut a = [0u8; 64];
        BulkStream::new(0).fill(&mut a);
        assert!(a.iter().any(|&b| b != 0));
    }

    #[test]
    fn headers_parse() {
        let head = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nconnection: Close\r\n\r\n";
        assert_eq!(header(head, "content-length"), Some("3"));
        assert_eq!(header(head, "Connection"), Some("Close"));
        assert_eq!(head_end(head.as_bytes()), Some(head.len()));
    }
}
