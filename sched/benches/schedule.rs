//! Cost of one `Scheduler::schedule()` call for every IPVS scheduler, with 8
//! and with 1,000 destinations (one criterion group per scheduler, the
//! parameter is the destination count). Destinations carry mixed weights
//! (1..=5) and connection counts so that the least-connection walks do real
//! comparisons; inputs cycle through 1,024 pseudo-random clients spread over
//! 256 virtual addresses (so lblc/lblcr run on a warm cache). Nothing is
//! bound between calls: the numbers are the pure decision cost.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use sched::{build, Dest, Input, SchedSpec, NAMES};

fn make_dests(n: usize) -> Vec<Arc<Dest>> {
    (0..n)
        .map(|i| {
            let addr = Ipv4Addr::from(0x0a00_0001 + i as u32);
            let d = Arc::new(Dest::new(IpAddr::V4(addr), 80, 1 + (i % 5) as u32));
            for _ in 0..i % 7 {
                d.bind(true);
            }
            for _ in 0..i % 13 {
                d.bind(false);
            }
            d
        })
        .collect()
}

fn make_inputs(n: usize) -> Vec<Input> {
    let mut x: u64 = 0x1234_5678_9abc_def1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Input {
                proto: 6,
                src: IpAddr::V4(Ipv4Addr::from(x as u32)),
                src_port: (x >> 32) as u16,
                dst: IpAddr::V4(Ipv4Addr::new(192, 0, 2, (x >> 48) as u8)),
                dst_port: 80,
                now_secs: 1,
            }
        })
        .collect()
}

fn schedule(c: &mut Criterion) {
    let inputs = make_inputs(1024);
    for name in NAMES {
        let mut group = c.benchmark_group(name);
        for n in [8usize, 1000] {
            let dests = make_dests(n);
            let s = build(&SchedSpec::new(name), &dests).expect("known scheduler");
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                let mut k = 0usize;
                b.iter(|| {
                    k = (k + 1) & 1023;
                    black_box(s.schedule(black_box(&dests), &inputs[k]))
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = schedule
}
criterion_main!(benches);
