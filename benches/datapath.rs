//! The per-packet path without I/O: an established flow's lookup plus NAT rewrite (parse,
//! table lookup, state update, DNAT and TTL decrement with incremental checksums, each packet
//! starting from the same fresh headers so the rewrites really happen), a new connection
//! (schedule plus insert, and its removal), and the connection table's memory per entry at
//! 1 million entries (measured with a counting allocator, printed before the criterion groups).
//!
//! `cargo bench --bench datapath`

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use etherparse::PacketBuilder;
use modes::Forward;
use tapvs::datapath::conn::{ConnTable, FlowKey, NewConn};
use tapvs::datapath::tcp_state::{flags, Timeouts};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged
// and only adds bookkeeping of the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` came from `alloc` with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` came from `alloc` with layout `l`.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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

fn new_conn(i: u32, dest: &Arc<sched::Dest>) -> NewConn {
    let (caddr, cport) = client(i);
    NewConn {
        proto: 6,
        caddr,
        cport,
        vaddr: vip(),
        vport: 80,
        daddr: Ipv4Addr::new(172, 16, 0, 2),
        dport: 80,
        fwd: Forward::Nat,
        svc: 0,
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
    let before = LIVE.load(Ordering::Relaxed);
    let t = filled(N, &dest);
    let after = LIVE.load(Ordering::Relaxed);
    println!(
        "connection table: {} bytes per entry at {} entries (Conn is {} bytes; two 4-byte index entries each)",
        (after - before) / N as isize,
        t.len(),
        std::mem::size_of::<tapvs::datapath::conn::Conn>()
    );
}

/// Ethernet, IPv4 and TCP headers of the benchmark frame: what the rewrites touch.
const HDRS: usize = 14 + 20 + 20;

/// The established-flow case: a full table, a 1066-byte TCP frame (payload 1000) from a client
/// to the VIP, and 4096 known flows to look up in turn.
struct Established {
    table: ConnTable,
    frame: Vec<u8>,
    pristine: Vec<u8>,
    keys: Vec<FlowKey>,
    next: usize,
}

impl Established {
    fn new(dest: &Arc<sched::Dest>) -> Established {
        let (ca, cp) = client(12345);
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(ca.octets(), vip().octets(), 64)
            .tcp(cp, 80, 1, 65535)
            .ack(1)
            .write(&mut frame, &[0u8; 1000])
            .unwrap();
        let keys = (0..4096u32)
            .map(|i| {
                let (a, p) = client(i * 241 % N);
                FlowKey::new(6, a, p, vip(), 80)
            })
            .collect();
        Established {
            table: filled(N, dest),
            pristine: frame.clone(),
            frame,
            keys,
            next: 0,
        }
    }

    /// One packet of the next flow: parse, lookup, state update, DNAT and TTL rewrite.
    #[inline(always)]
    fn packet(&mut self) {
        // A fresh packet each time (VIP destination, TTL 64), as from the TAP device, so the
        // DNAT and TTL rewrites below really happen.
        self.frame[..HDRS].copy_from_slice(&self.pristine[..HDRS]);
        let pkt = modes::parse(black_box(&self.frame[..])).expect("frame");
        self.next = (self.next + 1) & 4095;
        let f = self
            .table
            .lookup(&self.keys[self.next])
            .expect("known flow");
        let conn = self.table.on_packet(f.slot, f.dir, flags::ACK, 1);
        let (d, p) = (conn.daddr, conn.dport);
        modes::nat::dnat(&mut self.frame, &pkt, modes::Csum::Full, d, p);
        modes::nat::decrement_ttl(&mut self.frame, &pkt);
        black_box(&self.frame);
    }
}

fn server() -> Arc<sched::Dest> {
    Arc::new(sched::Dest::new(
        IpAddr::V4(Ipv4Addr::new(172, 16, 0, 2)),
        80,
        1,
    ))
}

/// `TAPVS_PROFILE=N`: runs N established-flow packets outside criterion, for callgrind
/// (`valgrind --tool=callgrind <bench binary>`; divide the loop's instructions by N).
fn profile_established(n: u64) {
    let mut e = Established::new(&server());
    established_loop(&mut e, n);
}

#[inline(never)]
fn established_loop(e: &mut Established, n: u64) {
    for _ in 0..n {
        e.packet();
    }
}

fn bench(c: &mut Criterion) {
    if let Some(n) = std::env::var("TAPVS_PROFILE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        profile_established(n);
        std::process::exit(0);
    }
    memory_per_entry();
    let mut e = Established::new(&server());
    let mut g = c.benchmark_group("per_packet");
    g.sample_size(30);
    g.bench_function("established_lookup_and_nat_rewrite", |b| {
        b.iter(|| e.packet())
    });
    let table = &mut e.table;
    // New connection: schedule (rr over 8 servers), insert and apply the SYN. Only that is
    // timed; the connections are removed in untimed batches to keep the table at its size.
    let dests: Vec<Arc<sched::Dest>> = (0..8)
        .map(|i| {
            Arc::new(sched::Dest::new(
                IpAddr::V4(Ipv4Addr::new(172, 16, 0, 2 + i)),
                80,
                1,
            ))
        })
        .collect();
    let rr = sched::build(&sched::SchedSpec::new("rr"), &dests).unwrap();
    let mut i = N;
    let mut made = Vec::with_capacity(10_000);
    g.bench_function("new_connection_schedule_insert", |b| {
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let batch = left.min(10_000);
                let t0 = std::time::Instant::now();
                for _ in 0..batch {
                    i = i.wrapping_add(1);
                    let (src, sport) = client(i);
                    let input = sched::Input {
                        proto: 6,
                        src: IpAddr::V4(src),
                        src_port: sport,
                        dst: IpAddr::V4(vip()),
                        dst_port: 80,
                        now_secs: 1,
                    };
                    let d = rr.schedule(&dests, &input).expect("a server");
                    let mut nc = new_conn(i, &dests[d]);
                    nc.daddr = Ipv4Addr::new(172, 16, 0, 2 + d as u8);
                    let s = table.insert(nc, 1).expect("room");
                    table.on_packet(s, tapvs::datapath::tcp_state::Dir::Input, flags::SYN, 1);
                    made.push(s);
                }
                total += t0.elapsed();
                for s in made.drain(..) {
                    table.remove(s);
                }
                left -= batch;
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
