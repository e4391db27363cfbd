//! Hot-path cost: `parse` alone and `parse` + `dnat` (full and partial
//! checksum) on a 1066-byte IPv4/TCP frame with the timestamp option, and
//! the same on the IPv6 frame with that TCP segment (1086 bytes).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use etherparse::PacketBuilder;
use modes::nat::{dnat, Csum};
use modes::packet::parse;
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

fn frame() -> Vec<u8> {
    let payload = vec![0x5au8; 1000];
    let mut out = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 0xaa])
        .ipv4([198, 51, 100, 7], [203, 0, 113, 10], 64)
        .tcp(40001, 80, 1, 64240)
        .ack(2)
        .options_raw(&[1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8])
        .unwrap()
        .write(&mut out, &payload)
        .unwrap();
    assert_eq!(out.len(), 1066);
    out
}

fn frame6() -> Vec<u8> {
    let payload = vec![0x5au8; 1000];
    let mut out = Vec::new();
    let src: Ipv6Addr = "2001:db8:c::2".parse().unwrap();
    let dst: Ipv6Addr = "2001:db8:f::80".parse().unwrap();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 0xaa])
        .ipv6(src.octets(), dst.octets(), 64)
        .tcp(40001, 80, 1, 64240)
        .ack(2)
        .options_raw(&[1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8])
        .unwrap()
        .write(&mut out, &payload)
        .unwrap();
    assert_eq!(out.len(), 1086);
    out
}

fn bench6(c: &mut Criterion) {
    let mut f = frame6();
    let mut g = c.benchmark_group("hot_path_v6_1086B");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse", |b| {
        b.iter(|| black_box(parse(black_box(&f))).is_ok())
    });
    let rips: [Ipv6Addr; 2] = [
        "2001:db8:5::2".parse().unwrap(),
        "2001:db8:5::3".parse().unwrap(),
    ];
    for (name, csum) in [
        ("parse+dnat/full", Csum::Full),
        ("parse+dnat/partial", Csum::Partial),
    ] {
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                let frame = black_box(&mut f[..]);
                if let Ok(p) = parse(frame) {
                    dnat(frame, &p, csum, rips[i & 1], 8080 + (i & 1) as u16);
                }
            })
        });
    }
    g.finish();
}

fn bench(c: &mut Criterion) {
    let mut f = frame();
    let mut g = c.benchmark_group("hot_path_1066B");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse", |b| {
        b.iter(|| black_box(parse(black_box(&f))).is_ok())
    });
    let rips = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)];
    for (name, csum) in [
        ("parse+dnat/full", Csum::Full),
        ("parse+dnat/partial", Csum::Partial),
    ] {
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                let frame = black_box(&mut f[..]);
                if let Ok(p) = parse(frame) {
                    dnat(frame, &p, csum, rips[i & 1], 8080 + (i & 1) as u16);
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench, bench6);
criterion_main!(benches);
