//! A minimal HTTPS server for SSL_GET tests: a self-signed certificate made at start (rcgen),
//! rustls over std sockets, one thread per connection, every request answered with
//! `200 OK` and the server's name. It must be started from inside the namespace it serves.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::pki_types::PrivateKeyDer;
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// The running server; dropping it stops it.
pub struct TlsServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TlsServer {
    /// Listens on `bind` (ready when this returns).
    pub fn start(bind: SocketAddr, name: &str) -> std::io::Result<TlsServer> {
        let ck = rcgen::generate_simple_self_signed(vec!["rs.test".to_string()])
            .map_err(std::io::Error::other)?;
        let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der())
            .map_err(std::io::Error::other)?;
        let config = Arc::new(
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(std::io::Error::other)?
                .with_no_client_auth()
                .with_single_cert(vec![ck.cert.der().clone()], key)
                .map_err(std::io::Error::other)?,
        );
        let listener = TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let body = format!(
            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
            name.len()
        );
        let st = stop.clone();
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let config = config.clone();
                        let body = body.clone();
                        std::thread::spawn(move || {
                            let _ = s.set_nonblocking(false);
                            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                            let Ok(conn) = ServerConnection::new(config) else {
                                return;
                            };
                            let mut tls = StreamOwned::new(conn, s);
                            let mut req = Vec::new();
                            let mut buf = [0u8; 1024];
                            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                                match tls.read(&mut buf) {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => req.extend_from_slice(&buf[..n]),
                                }
                            }
                            let _ = tls.write_all(body.as_bytes());
                            tls.conn.send_close_notify();
                            let _ = tls.flush();
                        });
                    }
                    Err(_) => {
                        let mut pfd = [tapvs::sys::poll_in(std::os::fd::AsRawFd::as_raw_fd(
                            &listener,
                        ))];
                        let _ = tapvs::sys::poll(&mut pfd, 50);
                    }
                }
            }
        });
        Ok(TlsServer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
