//! HTTP_GET (and, with TLS, SSL_GET): fetch each configured URL and check its status code and,
//! optionally, the MD5 digest of its body.
//!
//! For each URL in turn the checker opens a new connection and sends
//!
//! ```text
//! GET <path> HTTP/1.0\r\nHost: <virtualhost or ip:port>\r\nUser-Agent: tapvs-check\r\nConnection: close\r\n\r\n
//! ```
//!
//! The whole exchange of one URL (connect, request, response) must end within
//! `connect_timeout`, as keepalived applies that timeout to the I/O too. Every URL must pass.
//! The status must fall in the URL's ranges (default 200-299). Without a digest the decision is
//! taken as soon as the status line and headers are in; with a digest the body is read to its
//! end (`Content-Length`, the last chunk of a chunked body, or the server's close), at most
//! [`MAX_RESPONSE`] bytes, and its MD5 compared with the configured lowercase hex digest.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use rustls::ClientConnection;

use super::ssl::TlsParams;
use super::transport::{SockId, TcpState, Transport};
use super::{Checker, Outcome, Poll};

/// The most response bytes kept for one URL (headers and body).
pub const MAX_RESPONSE: usize = 1 << 20;

/// A set of inclusive HTTP status ranges, such as `200-299, 404`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRanges(pub Vec<(u16, u16)>);

impl Default for StatusRanges {
    /// keepalived's default: 200-299.
    fn default() -> Self {
        StatusRanges(vec![(200, 299)])
    }
}

impl StatusRanges {
    /// Parses codes and ranges separated by commas or whitespace: `200`, `200-299`,
    /// `200-299, 301 404`. Codes must be 100..=599 and ranges ascending.
    pub fn parse(s: &str) -> Result<StatusRanges, String> {
        let mut out = Vec::new();
        for item in s.split(|c: char| c == ',' || c.is_whitespace()) {
            if item.is_empty() {
                continue;
            }
            let (lo, hi) = match item.split_once('-') {
                Some((a, b)) => (status(a)?, status(b)?),
                None => {
                    let c = status(item)?;
                    (c, c)
                }
            };
            if lo > hi {
                return Err(format!("range {item:?} is descending"));
            }
            out.push((lo, hi));
        }
        if out.is_empty() {
            return Err("no status code given".into());
        }
        Ok(StatusRanges(out))
    }

    /// Whether `code` is in one of the ranges.
    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| (lo..=hi).contains(&code))
    }
}

fn status(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(c) if (100..=599).contains(&c) => Ok(c),
        _ => Err(format!("{s:?} is not an HTTP status code (100..=599)")),
    }
}

/// Parses a 32-digit hex MD5 digest (either case).
pub fn parse_digest(s: &str) -> Result<[u8; 16], String> {
    let s = s.trim();
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{s:?} is not an MD5 digest (32 hex digits)"));
    }
    let mut d = [0u8; 16];
    for (i, byte) in d.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(d)
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One URL to fetch and what its response must satisfy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlCheck {
    /// Request path, such as `/health`.
    pub path: String,
    /// `Host` header value (the virtual host, or `ip:port`).
    pub host: String,
    /// Accepted status codes.
    pub status: StatusRanges,
    /// Expected MD5 of the body, if checked.
    pub digest: Option<[u8; 16]>,
}

impl UrlCheck {
    /// The request bytes.
    pub fn request(&self) -> Vec<u8> {
        format!(
            "GET {} HTTP/1.0\r\nHost: {}\r\nUser-Agent: tapvs-check\r\nConnection: close\r\n\r\n",
            self.path, self.host
        )
        .into_bytes()
    }
}

/// Judges a (possibly partial) response. `eof`: nothing more will arrive. `None`: more data
/// is needed to decide; `Some(Ok(status))`: pass; `Some(Err(why))`: fail.
pub fn evaluate(resp: &[u8], eof: bool, url: &UrlCheck) -> Option<Result<u16, String>> {
    let Some((head_len, body_at)) = header_end(resp) else {
        if eof {
            return Some(Err(if resp.is_empty() {
                "connection closed without a response".into()
            } else {
                format!("incomplete response headers ({} bytes)", resp.len())
            }));
        }
        if resp.len() > MAX_RESPONSE {
            return Some(Err("response headers exceed 1 MiB".into()));
        }
        return None;
    };
    let head = String::from_utf8_lossy(&resp[..head_len]);
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    let code = match (parts.next(), parts.next()) {
        (Some(v), Some(c)) if v.starts_with("HTTP/") && c.len() == 3 => c.parse::<u16>().ok(),
        _ => None,
    };
    let Some(code) = code else {
        return Some(Err(format!("malformed status line {status_line:?}")));
    };
    if !url.status.contains(code) {
        return Some(Err(format!("status {code}")));
    }
    let Some(want) = url.digest else {
        return Some(Ok(code));
    };
    let mut content_length = None;
    let mut chunked = false;
    for l in lines {
        if let Some((name, value)) = l.split_once(':') {
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            }
        }
    }
    let raw = &resp[body_at..];
    let body: Vec<u8> = if chunked {
        match dechunk(raw) {
            Some(Ok(b)) => b,
            Some(Err(e)) => return Some(Err(e)),
            None if eof => return Some(Err("chunked body cut short".into())),
            None if resp.len() > MAX_RESPONSE => return Some(Err("response exceeds 1 MiB".into())),
            None => return None,
        }
    } else if let Some(cl) = content_length {
        if raw.len() >= cl {
            raw[..cl].to_vec()
        } else if eof {
            return Some(Err(format!("body cut short: {} of {cl} bytes", raw.len())));
        } else if body_at + cl > MAX_RESPONSE {
            return Some(Err("response exceeds 1 MiB".into()));
        } else {
            return None;
        }
    } else if eof {
        raw.to_vec()
    } else if resp.len() > MAX_RESPONSE {
        return Some(Err("response exceeds 1 MiB".into()));
    } else {
        return None;
    };
    let got = Md5::digest(&body);
    if got.as_slice() == want {
        Some(Ok(code))
    } else {
        Some(Err(format!(
            "digest {} instead of {}",
            hex(got.as_slice()),
            hex(&want)
        )))
    }
}

/// (length of the head without its blank line, offset of the body).
fn header_end(resp: &[u8]) -> Option<(usize, usize)> {
    if let Some(i) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((i, i + 4));
    }
    resp.windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2))
}

/// Decodes a chunked body: `None` while incomplete.
fn dechunk(b: &[u8]) -> Option<Result<Vec<u8>, String>> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        let eol = i + b[i..].windows(2).position(|w| w == b"\r\n")?;
        let line = String::from_utf8_lossy(&b[i..eol]);
        let size_txt = line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_txt, 16) else {
            return Some(Err(format!("bad chunk size {size_txt:?}")));
        };
        i = eol + 2;
        if size == 0 {
            return Some(Ok(out));
        }
        if size > MAX_RESPONSE || out.len() + size > MAX_RESPONSE {
            return Some(Err("response exceeds 1 MiB".into()));
        }
        if b.len() < i + size + 2 {
            return None;
        }
        out.extend_from_slice(&b[i..i + size]);
        i += size;
        if &b[i..i + 2] != b"\r\n" {
            return Some(Err("chunk not terminated by CRLF".into()));
        }
        i += 2;
    }
}

/// One URL's connection in flight.
struct Exchange {
    sock: SockId,
    deadline: Instant,
    request: Vec<u8>,
    sent: usize,
    tls: Option<Box<ClientConnection>>,
    tls_out: Vec<u8>,
    tls_eof: bool,
    resp: Vec<u8>,
}

impl Exchange {
    fn keep(&mut self, data: &[u8]) {
        let room = (MAX_RESPONSE + 1).saturating_sub(self.resp.len());
        self.resp.extend_from_slice(&data[..data.len().min(room)]);
    }

    /// Moves bytes both ways; returns whether the TCP receive side is drained.
    fn pump(&mut self, t: &mut dyn Transport, can_send: bool) -> Result<(), String> {
        let mut buf = [0u8; 16 * 1024];
        if self.tls.is_none() {
            while can_send && self.sent < self.request.len() {
                let n = t.tcp_send(self.sock, &self.request[self.sent..]);
                if n == 0 {
                    break;
                }
                self.sent += n;
            }
            loop {
                let n = t.tcp_recv(self.sock, &mut buf);
                if n == 0 {
                    return Ok(());
                }
                self.keep(&buf[..n]);
            }
        }
        loop {
            let mut progress = false;
            let conn = self.tls.as_mut().expect("tls");
            if self.tls_out.is_empty() && conn.wants_write() {
                conn.write_tls(&mut self.tls_out)
                    .map_err(|e| format!("TLS: {e}"))?;
            }
            if can_send && !self.tls_out.is_empty() {
                let n = t.tcp_send(self.sock, &self.tls_out);
                if n > 0 {
                    self.tls_out.drain(..n);
                    progress = true;
                }
            }
            let n = t.tcp_recv(self.sock, &mut buf);
            if n > 0 {
                progress = true;
                let mut rd = &buf[..n];
                while !rd.is_empty() {
                    let conn = self.tls.as_mut().expect("tls");
                    conn.read_tls(&mut rd).map_err(|e| format!("TLS: {e}"))?;
                    conn.process_new_packets()
                        .map_err(|e| format!("TLS: {e}"))?;
                    self.drain_plaintext()?;
                }
            }
            self.drain_plaintext()?;
            if !progress {
                return Ok(());
            }
        }
    }

    fn drain_plaintext(&mut self) -> Result<(), String> {
        let mut buf = [0u8; 4096];
        loop {
            let conn = self.tls.as_mut().expect("tls");
            match conn.reader().read(&mut buf) {
                Ok(0) => {
                    self.tls_eof = true;
                    return Ok(());
                }
                Ok(n) => self.keep(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    self.tls_eof = true;
                    return Ok(());
                }
                Err(e) => return Err(format!("TLS: {e}")),
            }
        }
    }
}

/// The HTTP_GET / SSL_GET checker.
pub struct HttpGetChecker {
    dst: SocketAddr,
    timeout: Duration,
    urls: Vec<UrlCheck>,
    tls: Option<TlsParams>,
    idx: usize,
    ex: Option<Exchange>,
    error: Option<(String, Instant)>,
}

impl std::fmt::Debug for HttpGetChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpGetChecker")
            .field("dst", &self.dst)
            .field("timeout", &self.timeout)
            .field("urls", &self.urls)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl HttpGetChecker {
    /// HTTP_GET of `urls` (at least one) on `dst`, each exchange within `timeout`.
    pub fn new(dst: SocketAddr, timeout: Duration, urls: Vec<UrlCheck>) -> HttpGetChecker {
        HttpGetChecker {
            dst,
            timeout,
            urls,
            tls: None,
            idx: 0,
            ex: None,
            error: None,
        }
    }

    /// SSL_GET: the same over TLS.
    pub fn with_tls(
        dst: SocketAddr,
        timeout: Duration,
        urls: Vec<UrlCheck>,
        tls: TlsParams,
    ) -> HttpGetChecker {
        HttpGetChecker {
            tls: Some(tls),
            ..HttpGetChecker::new(dst, timeout, urls)
        }
    }

    fn open(&mut self, t: &mut dyn Transport, now: Instant) -> Result<(), String> {
        let url = &self.urls[self.idx];
        let request = url.request();
        let tls = match &self.tls {
            None => None,
            Some(p) => {
                let mut c = ClientConnection::new(p.config.clone(), p.server_name.clone())
                    .map_err(|e| format!("TLS: {e}"))?;
                c.writer()
                    .write_all(&request)
                    .map_err(|e| format!("TLS: {e}"))?;
                Some(Box::new(c))
            }
        };
        let sock = t
            .tcp_connect(self.dst)
            .map_err(|e| format!("connect to {}: {e}", self.dst))?;
        self.ex = Some(Exchange {
            sock,
            deadline: now + self.timeout,
            request,
            sent: 0,
            tls,
            tls_out: Vec::new(),
            tls_eof: false,
            resp: Vec::new(),
        });
        Ok(())
    }

    fn fail(&mut self, t: &mut dyn Transport, why: String) -> Poll {
        let url = &self.urls[self.idx.min(self.urls.len() - 1)];
        let reason = format!(
            "{} http{}://{}{}: {why}",
            self.name(),
            self.s(),
            self.dst,
            url.path
        );
        self.cancel(t);
        Poll::Done(Outcome::down(reason))
    }

    fn s(&self) -> &'static str {
        if self.tls.is_some() {
            "s"
        } else {
            ""
        }
    }
}

impl Checker for HttpGetChecker {
    fn start(&mut self, t: &mut dyn Transport, now: Instant) {
        self.cancel(t);
        self.idx = 0;
        if self.urls.is_empty() {
            self.error = Some(("no url configured".into(), now));
        } else if let Err(e) = self.open(t, now) {
            self.error = Some((e, now));
        }
    }

    fn poll(&mut self, t: &mut dyn Transport, now: Instant) -> Poll {
        if let Some((e, _)) = self.error.take() {
            return self.fail(t, e);
        }
        loop {
            let Some(ex) = self.ex.as_mut() else {
                return Poll::Pending;
            };
            let state = t.tcp_state(ex.sock);
            if state == TcpState::Connecting {
                if now >= ex.deadline {
                    let why = format!("connect timed out after {:?}", self.timeout);
                    return self.fail(t, why);
                }
                return Poll::Pending;
            }
            if let Err(e) = ex.pump(t, state == TcpState::Open) {
                return self.fail(t, e);
            }
            // Sending may have let the peer answer and close: drain that too.
            let state = match t.tcp_state(ex.sock) {
                s if s == state => s,
                s => {
                    if let Err(e) = ex.pump(t, false) {
                        return self.fail(t, e);
                    }
                    s
                }
            };
            let eof = state != TcpState::Open || ex.tls_eof;
            let verdict = evaluate(&ex.resp, eof, &self.urls[self.idx]);
            match verdict {
                None if now >= ex.deadline => {
                    let why = format!("no complete response within {:?}", self.timeout);
                    return self.fail(t, why);
                }
                None => return Poll::Pending,
                Some(Err(e)) if state == TcpState::Failed => {
                    return self.fail(t, format!("connection failed or reset ({e})"));
                }
                Some(Err(e)) => return self.fail(t, e),
                Some(Ok(_)) => {
                    let sock = ex.sock;
                    self.ex = None;
                    t.tcp_close(sock);
                    self.idx += 1;
                    if self.idx == self.urls.len() {
                        let n = self.urls.len();
                        return Poll::Done(Outcome::up(format!(
                            "{} {}: {n} url(s) passed",
                            self.name(),
                            self.dst
                        )));
                    }
                    if let Err(e) = self.open(t, now) {
                        return self.fail(t, e);
                    }
                }
            }
        }
    }

    fn name(&self) -> &'static str {
        if self.tls.is_some() {
            "SSL_GET"
        } else {
            "HTTP_GET"
        }
    }

    fn cancel(&mut self, t: &mut dyn Transport) {
        if let Some(ex) = self.ex.take() {
            t.tcp_close(ex.sock);
        }
        self.error = None;
    }

    fn next_poll(&self) -> Option<Instant> {
        match (&self.ex, &self.error) {
            (Some(ex), _) => Some(ex.deadline),
            (None, Some((_, at))) => Some(*at),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::fake::{FakeTransport, TcpBehaviour};

    fn addr() -> SocketAddr {
        "172.16.0.2:80".parse().unwrap()
    }

    fn url(path: &str, status: &str, digest: Option<&str>) -> UrlCheck {
        UrlCheck {
            path: path.into(),
            host: "172.16.0.2:80".into(),
            status: StatusRanges::parse(status).unwrap(),
            digest: digest.map(|d| parse_digest(d).unwrap()),
        }
    }

    fn run(t: &mut FakeTransport, c: &mut HttpGetChecker, at: Instant) -> Outcome {
        c.start(t, at);
        match c.poll(t, at) {
            Poll::Done(o) => o,
            Poll::Pending => panic!("still pending"),
        }
    }

    const OK: &[u8] = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
    // MD5("ok")
    const OK_MD5: &str = "444bcb3a3fcf8389296c49467f27e1d6";

    #[test]
    fn status_ranges_parse() {
        assert_eq!(
            StatusRanges::parse("200-299, 404 301").unwrap().0,
            vec![(200, 299), (404, 404), (301, 301)]
        );
        assert!(StatusRanges::parse("299-200").is_err());
        assert!(StatusRanges::parse("2000").is_err());
        assert!(StatusRanges::parse("abc").is_err());
        assert!(StatusRanges::parse(" ").is_err());
        let r = StatusRanges::parse("200-204,404").unwrap();
        assert!(r.contains(200) && r.contains(204) && r.contains(404));
        assert!(!r.contains(205) && !r.contains(500));
        assert!(parse_digest(OK_MD5).is_ok());
        assert!(parse_digest("444bcb").is_err());
    }

    #[test]
    fn success_sends_the_request_and_closes() {
        let now = Instant::now();
        let mut t = FakeTransport::new();
        t.tcp(addr(), TcpBehaviour::Reply(OK.to_vec()));
        t.send_limit = 7;
        t.recv_limit = 5;
        let mut c = HttpGetChecker::new(
            addr(),
            Duration::from_secs(5),
            vec![url("/h", "200-299", None)],
        );
        let o = run(&mut t, &mut c, now);
        assert!(o.ok, "{o:?}");
        assert_eq!(t.open_sockets(), 0);
        assert_eq!(
            t.transcripts[0].1,
            b"GET /h HTTP/1.0\r\nHost: 172.16.0.2:80\r\nUser-Agent: tapvs-check\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn status_500_refusal_and_timeout_fail() {
        let now = Instant::now();
        let mut t = FakeTransport::new();
        t.tcp(
            addr(),
            TcpBehaviour::Reply(b"HTTP/1.1 500 Internal Server Error\r\n\r\n".to_vec()),
        );
        let mut c = HttpGetChecker::new(
            addr(),
            Duration::from_secs(5),
            vec![url("/", "200-299", None)],
        );
        let o = run(&mut t, &mut c, now);
        assert!(!o.ok && o.reason.contains("status 500"), "{o:?}");

        // 500 accepted when configured.
        let mut c = HttpGetChecker::new(
            addr(),
            Duration::from_secs(5),
            vec![url("/", "200, 500-503", None)],
        );
        assert!(run(&mut t, &mut c, now).ok);

        t.tcp(addr(), TcpBehaviour::Refuse);
        assert!(!run(&mut t, &mut c, now).ok);

        // Accepted but never answered: fails at connect_timeout, not before.
        t.tcp(addr(), TcpBehaviour::AcceptSilent);
        c.start(&mut t, now);
        assert_eq!(
            c.poll(&mut t, now + Duration::from_millis(4999)),
            Poll::Pending
        );
        match c.poll(&mut t, now + Duration::from_secs(5)) {
            Poll::Done(o) => assert!(!o.ok && o.reason.contains("within"), "{o:?}"),
            Poll::Pending => panic!("pending"),
        }
        assert_eq!(t.open_sockets(), 0);

        // Closed without any response.
        t.tcp(addr(), TcpBehaviour::Reply(Vec::new()));
        let o = run(&mut t, &mut c, now);
        assert!(!o.ok && o.reason.contains("without a response"), "{o:?}");
    }

    #[test]
    fn digest_right_and_wrong() {
        let now = Instant::now();
        let mut t = FakeTransport::new();
        t.tcp(addr(), TcpBehaviour::Reply(OK.to_vec()));
        let mut good = HttpGetChecker::new(
            addr(),
            Duration::from_secs(5),
            vec![url("/", "200", Some(OK_MD5))],
        );
        assert!(run(&mut t, &mut good, now).ok);
        let mut bad = HttpGetChecker::new(
            addr(),
            Duration::from_secs(5),
            vec![url("/", "200", Some("00000000000000000000000000000000"))],
        );
        let o = run(&mut t, &mut bad, now);
        assert!(!o.ok && o.reason.contains(OK_MD5), "{o:?}");

        // Body until close (no Content-Length), and chunked.
        t.tcp(
            addr(),
            TcpBehaviour::Reply(b"HTTP/1.0 200 OK\r\n\r\nok".to_vec()),
        );
        assert!(run(&mut t, &mut good, now).ok);
        t.tcp(
            addr(),
            TcpBehaviour::Reply(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\no\r\n1;x=y\r\nk\r\n0\r\n\r\n"
                    .to_vec(),
            ),
        );
        assert!(run(&mut t, &mut good, now).ok);
        // Body cut short of its Content-Length.
        t.tcp(
            addr(),
            TcpBehaviour::Reply(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok".to_vec()),
        );
        let o = run(&mut t, &mut good, now);
        assert!(!o.ok && o.reason.contains("cut short"), "{o:?}");
    }

    #[test]
    fn every_url_must_pass() {
        let now = Instant::now();
        let mut t = FakeTransport::new();
        let srv: std::sync::Arc<dyn Fn() -> crate::health::fake::Handler + Send + Sync> =
            std::sync::Arc::new(|| {
                Box::new(|req: &[u8]| {
                    if req.is_empty() {
                        (Vec::new(), false)
                    } else if req.starts_with(b"GET /a ") || req.starts_with(b"GET /b ") {
                        (OK.to_vec(), true)
                    } else {
                        (b"HTTP/1.0 404 Not Found\r\n\r\n".to_vec(), true)
                    }
                })
            });
        t.tcp(addr(), TcpBehaviour::Serve(srv));
        let urls = vec![url("/a", "200", None), url("/b", "200", Some(OK_MD5))];
        let mut c = HttpGetChecker::new(addr(), Duration::from_secs(5), urls.clone());
        assert!(run(&mut t, &mut c, now).ok);
        assert_eq!(t.connects.len(), 2);
        let mut more = urls;
        more.push(url("/c", "200", None));
        let mut c = HttpGetChecker::new(addr(), Duration::from_secs(5), more);
        let o = run(&mut t, &mut c, now);
        assert!(
            !o.ok && o.reason.contains("/c") && o.reason.contains("404"),
            "{o:?}"
        );
        assert_eq!(t.open_sockets(), 0);
    }

    #[test]
    fn evaluate_waits_for_more() {
        let u = url("/", "200", None);
        assert_eq!(evaluate(b"HTTP/1.0 200 O", false, &u), None);
        assert_eq!(
            evaluate(b"HTTP/1.0 200 OK\r\n\r\n", false, &u),
            Some(Ok(200))
        );
        assert!(matches!(
            evaluate(b"garbage\r\n\r\n", false, &u),
            Some(Err(_))
        ));
        let d = url("/", "200", Some(OK_MD5));
        assert_eq!(evaluate(b"HTTP/1.0 200 OK\r\n\r\nok", false, &d), None);
        assert_eq!(
            evaluate(b"HTTP/1.0 200 OK\r\n\r\nok", true, &d),
            Some(Ok(200))
        );
    }
}
