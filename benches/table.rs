//! The control plane at scale: the cost of one edit (`-a`/`-d` of a real server, `-A`/`-D`
//! of a service on a new address) with 100, 10,000 and 50,000 services of 10 real servers
//! each, including the snapshot the data path gets; and `-R` of 10,000 services with 10 real
//! servers each (110,000 commands, parsed as `-R` lines, applied and published once).
//!
//! `cargo bench --bench table` (the 50,000-service table takes a few seconds to set up).

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tapvs::control::table::Table;
use tapvs_adm::{self as adm, Command};

/// Virtual address of service `i`.
fn vip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0xC612_0000 + i as u32) // 198.18.0.0/15
}

/// Real server `j` of service `i`.
fn real(i: usize, j: usize) -> Ipv4Addr {
    Ipv4Addr::from(0xAC10_0002 + (i * 10 + j) as u32) // 172.16.0.0/12
}

const PORTS: &str = r#"
[[port]]
name = "ext"
tap = "tb0"
mac = "02:00:00:00:00:02"
addresses = ["10.0.0.1/8"]

[[port]]
name = "int"
tap = "tb1"
mac = "02:00:00:00:00:03"
addresses = ["172.16.0.1/12"]
"#;

/// A table of `n` NAT services (rr) with 10 real servers each, built from a config.
fn table(n: usize) -> Table {
    let mut cfg = String::from(PORTS);
    for i in 0..n {
        cfg += &format!(
            "\n[[service]]\nprotocol = \"tcp\"\naddress = \"{}:80\"\nscheduler = \"rr\"\n",
            vip(i)
        );
        for j in 0..10 {
            cfg += &format!(
                "\n[[service.real]]\naddress = \"{}:80\"\nforward = \"nat\"\n",
                real(i, j)
            );
        }
    }
    let cfg = tapvs::config::parse(&cfg, std::path::Path::new("bench.toml")).expect("config");
    Table::from_config(&cfg).expect("table").0
}

fn cmd(line: &str) -> Command {
    let args: Vec<String> = line.split_whitespace().map(String::from).collect();
    adm::parse(&args).expect("command")
}

/// The `-R` input for `n` services of 10 real servers each.
pub fn restore_input(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s += &format!("-A -t {}:80 -s rr\n", vip(i));
        for j in 0..10 {
            s += &format!("-a -t {}:80 -r {}:80 -m -w 1\n", vip(i), real(i, j));
        }
    }
    s
}

fn edits(c: &mut Criterion) {
    let mut g = c.benchmark_group("edit");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_millis(500));
    for n in [100usize, 10_000, 50_000] {
        let t0 = Instant::now();
        let mut t = table(n);
        eprintln!("table of {n} services built in {:?}", t0.elapsed());
        let mid = n / 2;
        let add = cmd(&format!(
            "-a -t {}:80 -r {}:8080 -m -w 1",
            vip(mid),
            real(mid, 0)
        ));
        let del = cmd(&format!("-d -t {}:80 -r {}:8080", vip(mid), real(mid, 0)));
        g.bench_with_input(BenchmarkId::new("server_add_delete_pair", n), &n, |b, _| {
            b.iter(|| {
                black_box(t.apply(&add).expect("-a"));
                black_box(t.apply(&del).expect("-d"));
            })
        });
        let add_svc = cmd(&format!("-A -t {}:80 -s wrr", vip(n + 1)));
        let del_svc = cmd(&format!("-D -t {}:80", vip(n + 1)));
        g.bench_with_input(
            BenchmarkId::new("service_add_delete_pair", n),
            &n,
            |b, _| {
                b.iter(|| {
                    black_box(t.apply(&add_svc).expect("-A"));
                    black_box(t.apply(&del_svc).expect("-D"));
                })
            },
        );
    }
    g.finish();
}

fn restore(c: &mut Criterion) {
    let mut g = c.benchmark_group("restore");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.warm_up_time(Duration::from_millis(1));
    let input = restore_input(10_000);
    g.bench_function("10000_services_x10", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut t = table(0);
                let start = Instant::now();
                for line in input.lines() {
                    if let Some(c) = adm::parse_restore_line(line).expect("line") {
                        t.apply_quiet(&c).expect("apply");
                    }
                }
                black_box(t.snapshot());
                total += start.elapsed();
                assert_eq!(t.len(), 10_000);
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, edits, restore);
criterion_main!(benches);
