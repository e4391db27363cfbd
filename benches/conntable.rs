//! The connection table at 10 million entries: the heap it takes (a counting allocator around
//! the table alone), and the expiry of all of them through [`Pipeline::tick`] as a worker runs
//! it between frame batches: how many rounds, and the longest round (the longest a frame
//! can wait for expiry), against the 1 ms bound.
//!
//! `cargo bench --bench conntable` (`TAPVS_CONNS=N` for another count; needs about 1.2 GB).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use modes::Forward;
use tapvs::control::table::Table;
use tapvs::datapath::conn::{NewConn, Toa};
use tapvs::datapath::neigh::NeighCache;
use tapvs::datapath::persist::Templates;
use tapvs::datapath::pipeline::{Env, Pipeline, Sink, EXPIRE_BUDGET};
use tapvs::datapath::tcp_state::Timeouts;

#[path = "support/counting.rs"]
mod counting;

struct Null;

impl Sink for Null {
    fn send(&mut self, _port: usize, _frame: &[u8]) -> bool {
        true
    }
}

/// This thread's involuntary context switches so far (`/proc/thread-self/status`).
fn involuntary_switches() -> u64 {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and test discovery
    }
    let n: u32 = std::env::var("TAPVS_CONNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let cfg = tapvs::config::parse(
        r#"
[[port]]
name = "ext"
tap = "tb0"
addresses = ["10.0.0.1/8"]

[[port]]
name = "int"
tap = "tb1"
addresses = ["172.16.0.1/24"]
"#,
        std::path::Path::new("bench.toml"),
    )
    .expect("config");
    let (_, snap) = Table::from_config(&cfg).expect("snapshot");
    let neigh = NeighCache::new(64, 3600).take_update().unwrap_or_default();
    let templates = Templates::default();
    let dest = Arc::new(sched::Dest::new(
        IpAddr::V4(Ipv4Addr::new(172, 16, 0, 2)),
        80,
        1,
    ));

    let before = counting::live_bytes();
    let mut p = Pipeline::new(0, 1, n as usize, Timeouts::default());
    let t0 = Instant::now();
    for i in 0..n {
        let h = i.wrapping_mul(0x9E37_79B1);
        let c = NewConn {
            proto: if i % 4 == 0 { 17 } else { 6 },
            caddr: Ipv4Addr::from(0x0a00_0000 | (h >> 8)).into(),
            cport: 1024 + (i % 60000) as u16,
            vaddr: Ipv4Addr::new(192, 0, 2, 1).into(),
            vport: 80,
            daddr: Ipv4Addr::new(172, 16, 0, 2).into(),
            dport: 80,
            fwd: Forward::Nat,
            out: 1,
            hop: Ipv4Addr::new(172, 16, 0, 2).into(),
            tun_src: Ipv4Addr::UNSPECIFIED.into(),
            toa: Toa::Off,
            dest_id: 0,
            dest: dest.clone(),
            template: None,
            one_packet: false,
            local_pool: None,
        };
        // All created within the same second: they all fall due together.
        p.table_mut().insert(c, 0).expect("room");
    }
    let bytes = counting::live_bytes() - before;
    println!(
        "connection table: {} entries in {:.1} MiB ({:.1} bytes per entry; limit 1024 MiB, 92 bytes), filled in {:?}",
        p.table().len(),
        bytes as f64 / (1 << 20) as f64,
        bytes as f64 / f64::from(n),
        t0.elapsed()
    );

    // Expire them all, as the worker would: one tick per round, a frame batch between rounds.
    let env_at = |now_ms| Env {
        snap: &snap,
        neigh: &neigh,
        templates: &templates,
        now_ms,
        expire_nodest: false,
        host_stack: false,
        standby: &tapvs::datapath::ha::NO_STANDBY,
    };
    let now_ms = 3_600_000; // an hour later: every timeout has passed
    let mut wall = Vec::new();
    let mut cpu = Vec::new();
    // Rounds during which the kernel switched this thread out (another task ran on its CPU):
    // their wall time is that wait, not expiry's work.
    let mut undisturbed = Vec::new();
    let t0 = Instant::now();
    loop {
        let env = env_at(now_ms);
        let s0 = involuntary_switches();
        let (r0, c0) = (Instant::now(), tapvs::sys::thread_cpu_time());
        p.tick(&env, &mut Null);
        let w = r0.elapsed();
        wall.push(w);
        cpu.push(tapvs::sys::thread_cpu_time() - c0);
        if involuntary_switches() == s0 {
            undisturbed.push(w);
        }
        if !p.expiry_backlog() {
            break;
        }
    }
    let rounds = wall.len();
    let mut top: Vec<(Duration, usize)> = cpu.iter().copied().zip(0..).collect();
    top.sort();
    println!(
        "  the five longest rounds by CPU time (round number): {:?}",
        &top[top.len().saturating_sub(5)..]
    );
    let mut top_wall: Vec<(Duration, usize)> = wall.iter().copied().zip(0..).collect();
    top_wall.sort();
    println!(
        "  the five longest rounds by wall time (round number): {:?}",
        &top_wall[top_wall.len().saturating_sub(5)..]
    );
    let total = t0.elapsed();
    wall.sort();
    cpu.sort();
    let pct = |v: &[Duration], q: usize| v[(v.len() - 1) * q / 100];
    println!(
        "expiry of {n} entries: {rounds} rounds of at most {EXPIRE_BUDGET} wheel entries in {total:?}"
    );
    println!(
        "  round (the longest a frame waits for expiry), wall: median {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        pct(&wall, 50),
        pct(&wall, 99),
        wall[(wall.len() - 1) * 999 / 1000],
        pct(&wall, 100)
    );
    println!(
        "  round, thread CPU time (without preemption by other processes): median {:?}, p99 {:?}, max {:?} (bound: 1 ms)",
        pct(&cpu, 50),
        pct(&cpu, 99),
        pct(&cpu, 100)
    );
    undisturbed.sort();
    println!(
        "  round, wall, the {} of {} rounds in which the thread was not switched out: median {:?}, p99 {:?}, p99.9 {:?}, max {:?} (bound: 1 ms)",
        undisturbed.len(),
        rounds,
        pct(&undisturbed, 50),
        pct(&undisturbed, 99),
        undisturbed[(undisturbed.len() - 1) * 999 / 1000],
        pct(&undisturbed, 100)
    );
    // The same number of rounds with nothing to expire: what this machine's scheduling adds
    // to any round (the wall-clock outliers above that are not expiry's own work).
    let mut idle = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let env = env_at(now_ms);
        let r0 = Instant::now();
        p.tick(&env, &mut Null);
        idle.push(r0.elapsed());
    }
    idle.sort();
    println!(
        "  {} rounds with nothing due, wall (this machine's scheduling noise): median {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        idle.len(),
        pct(&idle, 50),
        pct(&idle, 99),
        idle[(idle.len() - 1) * 999 / 1000],
        pct(&idle, 100)
    );
    assert_eq!(p.table().len(), 0);
}
