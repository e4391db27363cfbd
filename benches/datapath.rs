//! The daemon's own frame pipeline ([`Pipeline::process`]), without I/O: a packet of an
//! established NAT flow (parse, classify, owner, table lookup, state update, output route,
//! DNAT with incremental checksums, TTL, neighbour, MACs, hand to the sink; each packet starts
//! from fresh headers so the rewrites really happen), a new connection (a SYN through the same
//! path: miss, service lookup, rr over 8 servers, insert, rewrite, send; removed in untimed
//! batches), and the connection table's memory per entry at 1 million entries (a counting
//! allocator, printed before the criterion groups). The established-flow case runs twice: with
//! the one service, and with 10,000 services holding 100,000 real servers in the snapshot.
//!
//! `cargo bench --bench datapath`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use etherparse::PacketBuilder;
use modes::Forward;
use tapvs::control::table::Table;
use tapvs::datapath::conn::{ConnTable, FlowKey, NewConn, Toa};
use tapvs::datapath::neigh::{NeighCache, NeighTable};
use tapvs::datapath::persist::Templates;
use tapvs::datapath::pipeline::{Env, Pipeline, Sink, Verdict};
use tapvs::datapath::service::Snapshot;
use tapvs::datapath::tcp_state::Timeouts;

#[path = "support/counting.rs"]
mod counting;

fn client(i: u32) -> (Ipv4Addr, u16) {
    // Spread clients over a /8 and ports, deterministically.
    let h = i.wrapping_mul(0x9E37_79B1);
    (
        Ipv4Addr::from(0x0a00_0000 | (h >> 8)),
        1024 + (i % 60000) as u16,
    )
}

fn vip() -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 1)
}

const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const EXT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// The appliance of the benchmark: a client-side and a server-side port, one NAT service with
/// 8 real servers (rr), every neighbour resolved.
struct World {
    snap: Snapshot,
    neigh: NeighTable,
    templates: Templates,
}

impl World {
    fn new() -> World {
        World::with_services(0)
    }

    /// The world plus `extra` more NAT services (on other VIPs) of 10 real servers each.
    fn with_services(extra: usize) -> World {
        let mut cfg = String::from(
            r#"
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

[[service]]
protocol = "tcp"
address = "192.0.2.1:80"
scheduler = "rr"
"#,
        );
        for i in 0..8 {
            cfg += &format!("\n[[service.real]]\naddress = \"{}:80\"\n", server_addr(i));
        }
        for i in 0..extra as u32 {
            cfg += &format!(
                "\n[[service]]\nprotocol = \"tcp\"\naddress = \"{}:80\"\nscheduler = \"rr\"\n",
                Ipv4Addr::from(0xC612_0000 + i)
            );
            for j in 0..10 {
                cfg += &format!(
                    "\n[[service.real]]\naddress = \"{}:80\"\n",
                    Ipv4Addr::from(0xAC14_0000 + i * 16 + j)
                );
            }
        }
        let cfg = tapvs::config::parse(&cfg, std::path::Path::new("bench.toml")).expect("config");
        let (_, snap) = Table::from_config(&cfg).expect("snapshot");
        let mut cache = NeighCache::new(64, 3600);
        for i in 0..8 {
            cache.learn(server_addr(i), [2, 0, 0, 0, 1, i as u8], 1, 0);
        }
        let neigh = cache.take_update().expect("table");
        World {
            snap,
            neigh,
            templates: Templates::default(),
        }
    }

    fn env(&self) -> Env<'_> {
        Env {
            snap: &self.snap,
            neigh: &self.neigh,
            templates: &self.templates,
            now_ms: 1000,
            expire_nodest: false,
            host_stack: false,
            standby: &tapvs::datapath::ha::NO_STANDBY,
        }
    }
}

fn server_addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(172, 16, 0, 2 + i as u8)
}

/// Counts what the pipeline emits.
struct Count(u64);

impl Sink for Count {
    #[inline]
    fn send(&mut self, _port: usize, frame: &[u8]) -> bool {
        self.0 += frame.len() as u64;
        true
    }
}

fn new_conn(i: u32, dest: &Arc<sched::Dest>) -> NewConn {
    let (caddr, cport) = client(i);
    NewConn {
        proto: 6,
        caddr: caddr.into(),
        cport,
        vaddr: vip().into(),
        vport: 80,
        daddr: server_addr(0).into(),
        dport: 80,
        fwd: Forward::Nat,
        out: 1,
        hop: server_addr(0).into(),
        tun_src: Ipv4Addr::UNSPECIFIED.into(),
        toa: Toa::Off,
        dest_id: 0,
        dest: dest.clone(),
        template: None,
        one_packet: false,
        local_pool: None,
    }
}

fn filled(n: u32, dest: &Arc<sched::Dest>) -> ConnTable {
    let mut t = ConnTable::new(n as usize * 2, Timeouts::default());
    for i in 0..n {
        t.insert(new_conn(i, dest), 0).expect("room");
    }
    t
}

const N: u32 = 1_000_000;

fn memory_per_entry() {
    let dest = server();
    let before = counting::live_bytes();
    let t = filled(N, &dest);
    let after = counting::live_bytes();
    println!(
        "connection table: {} bytes per entry at {} entries (Conn is {} bytes; two 4-byte index entries each)",
        (after - before) / N as isize,
        t.len(),
        std::mem::size_of::<tapvs::datapath::conn::Conn>()
    );
}

/// Virtio-net header, Ethernet, IPv4 and TCP headers of a benchmark frame: what the pipeline
/// rewrites.
const HDRS: usize = 12 + 14 + 20 + 20;

/// A client's TCP frame to the VIP with `payload` bytes, virtio-net header first.
fn frame(i: u32, syn: bool, payload: usize) -> Vec<u8> {
    let (ca, cp) = client(i);
    let mut f = vec![0u8; 12];
    let b = PacketBuilder::ethernet2(CLIENT_MAC, EXT_MAC)
        .ipv4(ca.octets(), vip().octets(), 64)
        .tcp(cp, 80, 1, 65535);
    let b = if syn { b.syn() } else { b.ack(1) };
    b.write(&mut f, &vec![0u8; payload]).unwrap();
    f
}

/// The established-flow case: a pipeline whose table holds 1 M connections, and 4096 of
/// them sending, in turn, a 1066-byte TCP frame (payload 1000) to the VIP.
struct Established {
    world: World,
    pipeline: Pipeline,
    buf: Vec<u8>,
    len: usize,
    headers: Vec<[u8; HDRS]>,
    next: usize,
    sink: Count,
}

impl Established {
    fn new(dest: &Arc<sched::Dest>) -> Established {
        Established::in_world(World::new(), dest)
    }

    fn in_world(world: World, dest: &Arc<sched::Dest>) -> Established {
        let mut pipeline = Pipeline::new(0, 1, N as usize * 2, Timeouts::default());
        for i in 0..N {
            pipeline
                .table_mut()
                .insert(new_conn(i, dest), 0)
                .expect("room");
        }
        let headers = (0..4096u32)
            .map(|i| {
                let f = frame(i * 241 % N, false, 1000);
                f[..HDRS].try_into().unwrap()
            })
            .collect();
        let first = frame(0, false, 1000);
        let len = first.len();
        let mut buf = vec![0u8; tapvs::sys::tap::MAX_FRAME];
        buf[..len].copy_from_slice(&first);
        Established {
            world,
            pipeline,
            buf,
            len,
            headers,
            next: 0,
            sink: Count(0),
        }
    }

    /// One packet of the next flow through the pipeline.
    #[inline(always)]
    fn packet(&mut self) {
        // Fresh headers each time (VIP destination, TTL 64), as from the TAP device, so the
        // rewrites really happen.
        self.next = (self.next + 1) & 4095;
        self.buf[..HDRS].copy_from_slice(&self.headers[self.next]);
        let env = self.world.env();
        let v = self.pipeline.process(
            &env,
            0,
            black_box(&mut self.buf),
            self.len,
            false,
            &mut self.sink,
        );
        debug_assert!(matches!(v, Verdict::Transmit { .. }), "{v:?}");
        black_box(v);
    }
}

fn server() -> Arc<sched::Dest> {
    Arc::new(sched::Dest::new(IpAddr::V4(server_addr(0)), 80, 1))
}

/// `TAPVS_PROFILE=N`: runs N established-flow packets outside criterion, for callgrind
/// (`valgrind --tool=callgrind --toggle-collect='*established_loop*' <bench binary>`; divide
/// by N), and prints the loop's time per packet. `TAPVS_PROFILE_SERVICES=10000` runs them with
/// 10,000 services and 100,000 real servers in the snapshot.
fn profile_established(n: u64) {
    // `TAPVS_PROFILE_SERVICES=10000`: in the big world (10,000 services, 100,000 reals).
    let services: usize = std::env::var("TAPVS_PROFILE_SERVICES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let world = World::with_services(services.saturating_sub(1));
    let mut e = Established::in_world(world, &server());
    let t0 = std::time::Instant::now();
    established_loop(&mut e, n);
    println!(
        "established pipeline: {:.1} ns/packet",
        t0.elapsed().as_nanos() as f64 / n as f64
    );
}

#[inline(never)]
fn established_loop(e: &mut Established, n: u64) {
    for _ in 0..n {
        e.packet();
    }
}

/// `TAPVS_PROFILE_NEW=N`: N SYNs of new clients through a pipeline with an empty table, for
/// callgrind (`--toggle-collect='*new_loop*'`; divide by N), and prints the loop's time per
/// packet.
fn profile_new(n: u32) {
    let world = World::new();
    let mut pipeline = Pipeline::new(0, 1, n as usize * 2, Timeouts::default());
    let syns: Vec<Vec<u8>> = (0..n).map(|i| frame(N + i, true, 0)).collect();
    let mut buf = vec![0u8; tapvs::sys::tap::MAX_FRAME];
    let t0 = std::time::Instant::now();
    new_loop(&world, &mut pipeline, &syns, &mut buf);
    println!(
        "new connection pipeline: {:.1} ns/packet",
        t0.elapsed().as_nanos() as f64 / f64::from(n)
    );
}

#[inline(never)]
fn new_loop(world: &World, pipeline: &mut Pipeline, syns: &[Vec<u8>], buf: &mut [u8]) {
    let env = world.env();
    let mut sink = Count(0);
    for syn in syns {
        buf[..syn.len()].copy_from_slice(syn);
        black_box(pipeline.process(&env, 0, buf, syn.len(), false, &mut sink));
    }
}

fn bench(c: &mut Criterion) {
    let profile = |var: &str| std::env::var(var).ok().and_then(|v| v.parse().ok());
    if let Some(n) = profile("TAPVS_PROFILE") {
        profile_established(n);
        std::process::exit(0);
    }
    if let Some(n) = profile("TAPVS_PROFILE_NEW") {
        profile_new(n as u32);
        std::process::exit(0);
    }
    memory_per_entry();
    let mut e = Established::new(&server());
    let v = {
        let env = e.world.env();
        let len = e.len;
        e.pipeline
            .process(&env, 0, &mut e.buf, len, false, &mut e.sink)
    };
    assert!(matches!(v, Verdict::Transmit { port: 1, .. }), "{v:?}");
    let mut g = c.benchmark_group("per_packet");
    g.sample_size(30);
    g.bench_function("established_pipeline_nat", |b| b.iter(|| e.packet()));
    {
        // The same with 10,000 more services holding 100,000 real servers in the snapshot.
        let mut big = Established::in_world(World::with_services(9_999), &server());
        assert_eq!(big.world.snap.service_count(), 10_000);
        g.bench_function("established_pipeline_nat_10k_services_100k_reals", |b| {
            b.iter(|| big.packet())
        });
    }
    // New connection: a SYN from a new client through the pipeline (miss, schedule rr over 8
    // servers, insert, DNAT, send). Only that is timed; the connections are removed in
    // untimed batches to keep the table at its size.
    let syns: Vec<Vec<u8>> = (0..10_000u32).map(|i| frame(N + i, true, 0)).collect();
    let mut made = Vec::with_capacity(10_000);
    g.bench_function("new_connection_pipeline", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let batch = left.min(10_000) as usize;
                let env = e.world.env();
                let t0 = std::time::Instant::now();
                for syn in &syns[..batch] {
                    let len = syn.len();
                    e.buf[..len].copy_from_slice(syn);
                    let v = e
                        .pipeline
                        .process(&env, 0, &mut e.buf, len, false, &mut e.sink);
                    black_box(v);
                }
                total += t0.elapsed();
                for i in 0..batch as u32 {
                    let (a, p) = client(N + i);
                    let key = FlowKey::new(6, a, p, vip(), 80);
                    if let Some(f) = e.pipeline.table().lookup(&key) {
                        made.push(f.slot);
                    }
                }
                for s in made.drain(..) {
                    e.pipeline.table_mut().remove(s);
                }
                left -= batch as u64;
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
