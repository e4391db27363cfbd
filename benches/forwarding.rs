//! Side-by-side measurement in one run and one topology shape: tapvs in NAT mode against plain
//! kernel IPv4 forwarding by the director namespace. Prints bulk TCP throughput and the HTTP
//! request rate (new connection per request) for both, and tapvs as a ratio of the kernel.
//! Each figure comes from a fresh topology (TIME_WAIT state on reused hosts skews later runs).
//!
//! Run as root: `cargo bench --bench forwarding` (options after `--`: `rounds=N bytes=MiB
//! requests=N threads=N`). Traffic stays inside namespaces it creates; every loop is bounded.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

/// tapvs in the `tapvs-lab` topology (shared with the `tapvs` binary and the tests).
#[path = "../src/lab.rs"]
mod lab;

use lab::Lab;
use tapvs_lab::traffic::{self, BulkSink, HttpServer};

#[derive(Clone, Copy, PartialEq)]
enum Path {
    Tapvs,
    Kernel,
}

fn any(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, port))
}

/// A lab where the client reaches the real server(s) through `path`; returns the lab and the
/// address the client must use.
fn setup(path: Path, reals: usize, port: u16) -> (Lab, SocketAddr) {
    let mut lab = Lab::build(reals).expect("lab");
    match path {
        Path::Tapvs => {
            let list: Vec<(usize, u16, u32)> = (0..reals).map(|i| (i, port, 1)).collect();
            let svc = lab::nat_service("tcp", port, "rr", &list);
            lab.start(&format!("{}{}", lab::base_config(2), svc))
                .expect("tapvs");
            (lab, lab::vip(port))
        }
        Path::Kernel => {
            let d = &lab.director;
            d.add_addr("bx", &format!("{}/24", lab::EXT_ADDR)).unwrap();
            d.add_addr("bi", &format!("{}/24", lab::INT_ADDR)).unwrap();
            d.sysctl("net.ipv4.ip_forward", "1").unwrap();
            lab.client
                .add_route("172.16.0.0/24", &lab::EXT_ADDR.to_string())
                .unwrap();
            let addr = SocketAddr::V4(SocketAddrV4::new(lab::real_addr(0), port));
            (lab, addr)
        }
    }
}

fn bulk(path: Path, bytes: u64) -> f64 {
    let (lab, addr) = setup(path, 1, 9000);
    let sink = lab.reals[0].run(|| BulkSink::start(any(9000))).unwrap();
    let t0 = Instant::now();
    let sent = lab
        .client
        .run(|| traffic::bulk_send(addr, bytes, 1, Duration::from_secs(300)))
        .unwrap();
    let (n, got) = sink.wait(Duration::from_secs(60)).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    assert!(n == bytes && got == sent, "transfer corrupted");
    bytes as f64 * 8.0 / secs / 1e9
}

fn http(path: Path, requests: u64, threads: u64) -> f64 {
    let (lab, addr) = setup(path, 2, 80);
    let _servers: Vec<HttpServer> = lab
        .reals
        .iter()
        .enumerate()
        .map(|(i, rs)| {
            let name = format!("rs{i}");
            rs.run(move || HttpServer::start(any(80), &name)).unwrap()
        })
        .collect();
    // Warm-up: resolves neighbours on every path.
    lab.client
        .run(|| traffic::http_split(addr, 4, Duration::from_secs(5)))
        .unwrap();
    let t0 = Instant::now();
    let per = requests / threads;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            lab.client.spawn_thread(move || {
                traffic::http_split(addr, per, Duration::from_secs(5))
                    .map(|m| m.values().sum::<u64>())
            })
        })
        .collect();
    let done: u64 = handles
        .into_iter()
        .map(|h| h.join().unwrap().expect("requests"))
        .sum();
    done as f64 / t0.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if let Err(e) = tapvs_lab::netns::require_root_netns() {
        eprintln!("forwarding bench skipped: {e}");
        return;
    }
    let mut rounds = 3;
    let mut mib = 200u64;
    let mut requests = 4000u64;
    let mut threads = 4u64;
    for a in std::env::args().skip(1) {
        if let Some((k, v)) = a.split_once('=') {
            let v: u64 = v.parse().unwrap_or(0);
            match k {
                "rounds" => rounds = v.max(1) as usize,
                "bytes" => mib = v.max(1),
                "requests" => requests = v.max(1),
                "threads" => threads = v.max(1),
                _ => {}
            }
        }
    }
    let mut table = Vec::new();
    for (name, f) in [
        (
            "bulk TCP, Gbit/s",
            &(|p| bulk(p, mib << 20)) as &dyn Fn(Path) -> f64,
        ),
        ("HTTP close, req/s", &|p| http(p, requests, threads)),
    ] {
        let (mut t, mut k) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            // Interleaved so both paths see the same machine conditions.
            t.push(f(Path::Tapvs));
            k.push(f(Path::Kernel));
        }
        table.push((name, median(t), median(k)));
    }
    println!(
        "\n| figure ({rounds} rounds, medians) | tapvs NAT | kernel forwarding | tapvs / kernel |"
    );
    println!("|---|---:|---:|---:|");
    for (name, t, k) in table {
        println!("| {name} | {t:.2} | {k:.2} | {:.2} |", t / k);
    }
}
