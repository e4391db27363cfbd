//! `tapvs demo`: the embedded default. It builds the [`crate::lab`] topology with two real
//! servers running small HTTP servers, runs the appliance in NAT mode with `rr` inside the
//! director namespace, sends HTTP requests from the client through the VIP, prints the split
//! per real server and a connection-table summary, and removes everything it created. A module
//! of the `tapvs` binary only: the namespace harness (`tapvs-lab`) is not in the library.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use tapvs_lab::netns;
use tapvs_lab::traffic::{self, HttpServer};

use crate::lab::{self, Lab};

/// Runs the demo with `requests` HTTP requests. Errors are printable reasons.
pub fn run(requests: u32) -> Result<(), String> {
    netns::require_root_netns().map_err(|e| {
        format!("cannot run the demo: {e}. Run it as root on a Linux host with /dev/net/tun.")
    })?;
    let mut lab = Lab::build(2).map_err(|e| format!("building the namespaces: {e}"))?;
    let config = format!(
        "{}{}",
        lab::base_config(2),
        lab::nat_service("tcp", 80, "rr", &[(0, 80, 1), (1, 80, 1)])
    );
    println!(
        "tapvs demo: client {} -> VIP {}:80 (NAT, rr) -> real servers {} and {}",
        lab::CLIENT,
        lab::VIP,
        lab::real_addr(0),
        lab::real_addr(1)
    );
    lab.start(&config)
        .map_err(|e| format!("starting tapvs: {e}"))?;
    let any80 = SocketAddr::V4(SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 80));
    let servers: Vec<HttpServer> = lab
        .reals
        .iter()
        .enumerate()
        .map(|(i, rs)| {
            let name = format!("rs{}", i + 1);
            rs.try_run(move || HttpServer::start(any80, &name))
                .and_then(|r| r)
                .map_err(|e| format!("starting the HTTP server on rs{}: {e}", i + 1))
        })
        .collect::<Result<_, _>>()?;
    let split = lab
        .client
        .try_run(move || {
            traffic::http_split(lab::vip(80), u64::from(requests), Duration::from_secs(5))
        })
        .and_then(|r| r)
        .map_err(|e| format!("sending requests through the VIP: {e}"))?;

    println!("\n{requests} HTTP requests through http://{}:80/", lab::VIP);
    for (i, s) in servers.iter().enumerate() {
        let got = split.get(s.name()).copied().unwrap_or(0);
        println!(
            "  real server rs{} {}:80  answered {got:>5}  ({:.1} %)",
            i + 1,
            lab::real_addr(i),
            100.0 * got as f64 / f64::from(requests.max(1))
        );
    }
    let daemon = lab.daemon();
    // Counters are published every 100 ms; wait until they cover all requests.
    netns::wait_until(Duration::from_secs(2), Duration::from_millis(20), || {
        daemon.stats().conns_created >= u64::from(requests)
    });
    let stats = daemon.stats();
    let snap = daemon.snapshot();
    println!("\nconnection table: {} entries", stats.live_connections());
    for (state, n) in &stats.connections {
        println!("  {state:<12} {n}");
    }
    println!("\nIP Virtual Server (tapvs)");
    println!("Prot LocalAddress:Port Scheduler Flags");
    println!("  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn");
    for s in snap.services() {
        println!(
            "{:<4} {}:{} {}",
            s.proto.name(),
            s.vip,
            s.vport,
            s.sched.name()
        );
        for (d, f) in s.dests.iter().zip(&s.forward) {
            println!(
                "  -> {:<28} {:<7} {:<6} {:<10} {:<10}",
                format!("{}:{}", d.addr(), d.port()),
                tapvs_adm::model::forward_name(*f),
                d.weight(),
                d.active_conns(),
                d.inactive_conns()
            );
        }
    }
    println!(
        "\nframes: {} in, {} out, {} forwarded to servers, {} back to clients, {} between workers",
        stats.rx_frames, stats.tx_frames, stats.fwd_in, stats.fwd_out, stats.redirected
    );
    let both = servers
        .iter()
        .all(|s| split.get(s.name()).copied().unwrap_or(0) > 0);
    drop(servers);
    drop(lab);
    println!("cleaned up: namespaces, links and TAP devices removed");
    if both {
        Ok(())
    } else {
        Err("a real server received no traffic".into())
    }
}
