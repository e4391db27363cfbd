//! The long transfers and keep-alive requests of the failover and reload tests: a deterministic
//! byte stream whose SHA-256 the test knows in advance, and one HTTP/1.1 request on an open
//! connection.

use std::io::{Read, Write};
use std::net::TcpStream;

/// Fills `buf` with the next xorshift64 words of the stream whose state is `state`.
pub fn fill(state: &mut u64, buf: &mut [u8]) {
    for w in buf.chunks_exact_mut(8) {
        let mut x = *state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *state = x;
        w.copy_from_slice(&x.to_le_bytes());
    }
}

/// The SHA-256 of the first `bytes` of the stream for `seed`, as [`fill`] makes it in 64 KiB
/// buffers.
pub fn expected_digest(bytes: u64, seed: u64) -> Vec<u8> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    let mut st = seed;
    let mut buf = vec![0u8; 65536];
    let mut left = bytes;
    while left > 0 {
        fill(&mut st, &mut buf);
        let n = left.min(buf.len() as u64) as usize;
        h.update(&buf[..n]);
        left -= n as u64;
    }
    h.finalize().to_vec()
}

/// Sends one keep-alive `GET /` on `s` and reads the whole response; returns its status.
pub fn get_on(s: &mut TcpStream) -> std::io::Result<u16> {
    s.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other("closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return Ok(text
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0));
            }
        }
    }
}

/// Opens `n` keep-alive connections to `vip` (from the calling thread's namespace), each
/// answering one `GET /` with 200 before the next is opened; reads time out after `read_timeout`.
pub fn keep_alive(
    vip: std::net::SocketAddr,
    n: usize,
    read_timeout: std::time::Duration,
) -> std::io::Result<Vec<TcpStream>> {
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect_timeout(&vip, std::time::Duration::from_secs(2))?;
            s.set_read_timeout(Some(read_timeout))?;
            let status = get_on(&mut s)?;
            if status != 200 {
                return Err(std::io::Error::other(format!("status {status}")));
            }
            Ok(s)
        })
        .collect()
}
