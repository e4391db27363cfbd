//! Helpers shared by the netns integration tests: tapvs in the lab topology ([`lab`], the same
//! glue `tapvs demo` uses), starting HTTP servers in the lab's real servers and waiting for the
//! daemon's counters.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use lab::Lab;
use tapvs::datapath::stats::Stats;
use tapvs_lab::netns::wait_until;
use tapvs_lab::traffic::HttpServer;

/// `0.0.0.0:port`.
pub fn any(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
}

/// Starts an HTTP server named `rs{i+1}` on `port` in every real server of the lab.
pub fn http_servers(lab: &Lab, port: u16) -> Vec<HttpServer> {
    lab.reals
        .iter()
        .enumerate()
        .map(|(i, rs)| {
            let name = format!("rs{}", i + 1);
            rs.run(move || HttpServer::start(any(port), &name))
                .expect("http server")
        })
        .collect()
}

/// An HTTPS server for SSL_GET tests.
/// `GET /metrics` on the daemon's metrics listener, from inside the director's namespace:
/// status and body.
pub fn scrape(lab: &Lab) -> (u16, String) {
    lab.director
        .run(|| {
            tapvs_lab::traffic::http_get(
                "127.0.0.1:9273".parse().unwrap(),
                "/metrics",
                Duration::from_secs(5),
            )
        })
        .unwrap()
}

pub mod appliance;
pub mod stream;
pub mod tls;
pub mod tshark;

/// tapvs in the `tapvs-lab` topology (shared with the `tapvs` binary, see the file's docs).
#[path = "../../src/lab.rs"]
pub mod lab;

/// Waits (bounded) until the daemon's published counters satisfy `pred`; returns the last stats.
pub fn wait_stats(lab: &Lab, pred: impl Fn(&Stats) -> bool) -> Stats {
    let mut last = lab.daemon().stats();
    wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        last = lab.daemon().stats();
        pred(&last)
    });
    last
}
