//! SSL_GET: HTTP_GET over TLS (rustls with the ring provider), driven over the transport's
//! TCP byte stream.
//!
//! As keepalived without a `ca`, the server's certificate is not verified (the check is about
//! the service answering, not about its identity): [`AcceptAnyServerCert`] accepts any chain,
//! but the handshake signatures are still checked with the provider's algorithms, so the
//! server must hold the private key of the certificate it presents. SNI carries the `sni`
//! option, else the virtual host; when neither is a DNS name none is sent.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use super::http::{HttpGetChecker, UrlCheck};

/// What a TLS exchange needs: the shared client configuration and the server name (SNI).
#[derive(Debug, Clone)]
pub struct TlsParams {
    /// Client configuration (see [`client_config`]).
    pub config: Arc<ClientConfig>,
    /// Name sent as SNI (an IP address sends none).
    pub server_name: ServerName<'static>,
}

/// A certificate verifier that accepts any certificate but checks handshake signatures.
#[derive(Debug)]
pub struct AcceptAnyServerCert {
    algs: WebPkiSupportedAlgorithms,
}

impl AcceptAnyServerCert {
    /// Verifies signatures with these algorithms (normally the provider's).
    pub fn new(algs: WebPkiSupportedAlgorithms) -> AcceptAnyServerCert {
        AcceptAnyServerCert { algs }
    }
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// The shared client configuration: ring provider, TLS 1.2 and 1.3, no certificate
/// verification, no client certificate. Built once.
pub fn client_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let algs = provider.signature_verification_algorithms;
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert::new(algs)))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// The server name for SNI: `sni` if given (a DNS name or an IP address), else the connect
/// address (then no SNI is sent).
pub fn server_name(sni: Option<&str>, ip: IpAddr) -> Result<ServerName<'static>, String> {
    match sni {
        Some(s) => ServerName::try_from(s.to_string())
            .map_err(|_| format!("{s:?} is not a valid TLS server name")),
        None => Ok(ServerName::IpAddress(ip.into())),
    }
}

/// An SSL_GET checker: `urls` over TLS on `dst`, SNI from `sni` (see [`server_name`]).
pub fn ssl_get(
    dst: SocketAddr,
    timeout: Duration,
    urls: Vec<UrlCheck>,
    sni: Option<&str>,
) -> Result<HttpGetChecker, String> {
    let tls = TlsParams {
        config: client_config(),
        server_name: server_name(sni, dst.ip())?,
    };
    Ok(HttpGetChecker::with_tls(dst, timeout, urls, tls))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::fake::{FakeTransport, Handler, TcpBehaviour};
    use crate::health::http::{parse_digest, StatusRanges};
    use crate::health::{Checker, Poll};
    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ServerConfig, ServerConnection};
    use std::io::{Read, Write};
    use std::sync::Mutex;
    use std::time::Instant;

    fn addr() -> SocketAddr {
        "172.16.0.2:443".parse().unwrap()
    }

    /// An in-process rustls server answering one HTTP request with `response`; records SNI.
    fn tls_server(
        response: &'static [u8],
        sni_seen: Arc<Mutex<Vec<Option<String>>>>,
    ) -> TcpBehaviour {
        let ck = rcgen::generate_simple_self_signed(vec!["rs.example".to_string()]).unwrap();
        let cert = ck.cert.der().clone();
        let key = PrivateKeyDer::try_from(ck.signing_key.serialize_der()).unwrap();
        let config = Arc::new(
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .unwrap(),
        );
        TcpBehaviour::Serve(Arc::new(move || {
            let mut conn = ServerConnection::new(config.clone()).unwrap();
            let mut request = Vec::new();
            let mut answered = false;
            let sni_seen = sni_seen.clone();
            let h: Handler = Box::new(move |input: &[u8]| {
                let mut rd = input;
                while !rd.is_empty() {
                    conn.read_tls(&mut rd).unwrap();
                    if conn.process_new_packets().is_err() {
                        return (Vec::new(), true);
                    }
                }
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.reader().read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                let mut close = false;
                if !answered && request.windows(4).any(|w| w == b"\r\n\r\n") {
                    sni_seen
                        .lock()
                        .unwrap()
                        .push(conn.server_name().map(String::from));
                    conn.writer().write_all(response).unwrap();
                    conn.send_close_notify();
                    answered = true;
                    close = true;
                }
                let mut out = Vec::new();
                while conn.wants_write() {
                    conn.write_tls(&mut out).unwrap();
                }
                (out, close)
            });
            h
        }))
    }

    fn url(status: &str, digest: Option<&str>) -> UrlCheck {
        UrlCheck {
            path: "/".into(),
            host: "rs.example".into(),
            status: StatusRanges::parse(status).unwrap(),
            digest: digest.map(|d| parse_digest(d).unwrap()),
        }
    }

    fn run(t: &mut FakeTransport, c: &mut HttpGetChecker) -> crate::health::Outcome {
        let now = Instant::now();
        c.start(t, now);
        // The fake answers synchronously, so each poll advances the handshake.
        for _ in 0..10 {
            if let Poll::Done(o) = c.poll(t, now) {
                return o;
            }
        }
        panic!("TLS exchange did not finish");
    }

    #[test]
    fn handshake_and_status_over_tls() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut t = FakeTransport::new();
        t.send_limit = 100;
        t.recv_limit = 333;
        t.tcp(
            addr(),
            tls_server(
                b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
                seen.clone(),
            ),
        );
        let mut c = ssl_get(
            addr(),
            Duration::from_secs(5),
            vec![url("200", Some("444bcb3a3fcf8389296c49467f27e1d6"))],
            Some("rs.example"),
        )
        .unwrap();
        assert_eq!(c.name(), "SSL_GET");
        let o = run(&mut t, &mut c);
        assert!(o.ok, "{o:?}");
        assert_eq!(seen.lock().unwrap()[0].as_deref(), Some("rs.example"));
        assert_eq!(t.open_sockets(), 0);

        // Without SNI (IP address): still works, no SNI sent.
        let mut c = ssl_get(addr(), Duration::from_secs(5), vec![url("200", None)], None).unwrap();
        assert!(run(&mut t, &mut c).ok);
        assert_eq!(seen.lock().unwrap()[1], None);
    }

    #[test]
    fn status_checked_over_tls() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut t = FakeTransport::new();
        t.tcp(addr(), tls_server(b"HTTP/1.0 503 Busy\r\n\r\n", seen));
        let mut c = ssl_get(
            addr(),
            Duration::from_secs(5),
            vec![url("200-299", None)],
            None,
        )
        .unwrap();
        let o = run(&mut t, &mut c);
        assert!(!o.ok && o.reason.contains("status 503"), "{o:?}");
    }

    #[test]
    fn plain_http_server_fails_the_tls_check() {
        let mut t = FakeTransport::new();
        t.tcp(
            addr(),
            TcpBehaviour::Serve(Arc::new(|| {
                Box::new(|req: &[u8]| {
                    if req.is_empty() {
                        (Vec::new(), false)
                    } else {
                        (b"HTTP/1.0 400 Bad Request\r\n\r\n".to_vec(), true)
                    }
                })
            })),
        );
        let mut c = ssl_get(
            addr(),
            Duration::from_secs(5),
            vec![url("200-499", None)],
            None,
        )
        .unwrap();
        let o = run(&mut t, &mut c);
        assert!(!o.ok && o.reason.contains("TLS"), "{o:?}");
    }

    #[test]
    fn sni_must_be_a_name() {
        assert!(server_name(Some("bad name!"), std::net::Ipv4Addr::LOCALHOST.into()).is_err());
        assert!(server_name(Some("ok.example"), std::net::Ipv4Addr::LOCALHOST.into()).is_ok());
    }
}
