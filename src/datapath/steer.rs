//! Deterministic steering of received frames to the worker that owns their connection: an
//! eBPF queue-selection program attached to every TAP port with `TUNSETSTEERINGEBPF`.
//!
//! Without it the kernel's TAP flow steering picks the queue. That table learns a flow's queue
//! only after the first frame tapvs wrote for it has been delivered, and the reply to that
//! frame is usually produced synchronously during the delivery, so the first frames of every
//! connection land on a hashed queue: half the time another worker's, which then has to copy
//! the frame across (see [`crate::datapath::worker`]). For short connections that was about 40% of all
//! frames. The program here computes [`crate::datapath::pipeline::owner_of`] in the kernel instead:
//!
//! - TCP/UDP to a virtual address: the owner of the source (client address and port);
//! - to a FullNAT local address: destination port modulo the worker count (local ports are
//!   allocated so that this names the owning worker);
//! - to one of the appliance's own addresses, and anything else (ARP, ICMP, ICMPv6, IPv6 with
//!   extension headers): queue 0;
//! - any other TCP/UDP (a NAT reply): the owner of the destination (the client).
//!
//! IPv4 and IPv6 are classified alike: an IPv6 packet whose next header is TCP or UDP has its
//! ports at offset 40, and its addresses enter the owner's hash folded to one word
//! ([`crate::datapath::pipeline::fold_addr`]).
//!
//! The address sets live in a BPF hash map (address → class; 16-byte keys, an IPv4 address in
//! its IPv4-mapped IPv6 form, see [`map_key`]), which the program looks up with
//! `bpf_map_lookup_elem` (the map's descriptor is patched into the instructions as a
//! `BPF_PSEUDO_MAP_FD` load). The program is loaded and attached once; a configuration change
//! that alters the sets only inserts and deletes map elements in place, so the table's size
//! never forces a fallback (the map holds up to [`MAP_CAPACITY`] addresses, allocated as
//! inserted). If the kernel ever refuses the program or an update, the ports fall back to the
//! kernel's flow steering: the log says why and the `tapvs_steering_fallback` gauge is 1.
//! Should the program ever disagree with the
//! worker's own classification, the redirect path still delivers the frame correctly, so
//! steering only ever saves work. Frames are read with the classic `LD_ABS`/`LD_IND` loads
//! relative to the link-layer header (`SKF_LL_OFF`), which is where the TAP transmit path and
//! `BPF_PROG_TEST_RUN` agree. The instruction encoding assumes a little-endian host.

use crate::config::SteeringMode;
use std::net::IpAddr;
use std::sync::Arc;

use crate::sys::tap::TapQueue;
use crate::sys::{self, BpfMap, BpfProg};

/// How many addresses (VIPs, local addresses, own addresses) the steering map can hold.
pub const MAP_CAPACITY: u32 = 1 << 20;

/// Map values: what an address is.
const CLASS_VIP: u32 = 1;
const CLASS_LIP: u32 = 2;
const CLASS_LOCAL: u32 = 3;

/// The addresses the program classifies by, each sorted and without duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AddressSets {
    /// Virtual addresses.
    pub vips: Vec<IpAddr>,
    /// FullNAT local addresses.
    pub lips: Vec<IpAddr>,
    /// The ports' own addresses.
    pub locals: Vec<IpAddr>,
}

/// The map's key for `ip`: the four 32-bit words of its IPv6 form (an IPv4 address mapped,
/// `::ffff:a.b.c.d`), each as the program's loads produce it (the word read in network order,
/// stored in host order).
pub fn map_key(ip: IpAddr) -> [u8; 16] {
    let v6 = match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    };
    let o = v6.octets();
    let mut k = [0u8; 16];
    for (d, w) in k.chunks_exact_mut(4).zip(o.chunks_exact(4)) {
        let word = u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
        d.copy_from_slice(&word.to_ne_bytes());
    }
    k
}

/// `SKF_LL_OFF`: classic-BPF load offsets from here on are relative to the link-layer header.
const LL: i32 = -0x20_0000;
/// Ethernet header length.
const ETH: i32 = 14;
/// The multiplier of [`crate::datapath::pipeline::owner_of`].
const MIX: u32 = 0x9E37_79B1;

// Instruction classes, sizes, modes and operations (linux/bpf_common.h, linux/bpf.h).
const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const ALU: u8 = 0x04;
const JMP: u8 = 0x05;
const ALU64: u8 = 0x07;
const W: u8 = 0x00;
const H: u8 = 0x08;
const B: u8 = 0x10;
const ABS: u8 = 0x20;
const IND: u8 = 0x40;
const MEM: u8 = 0x60;
const IMM: u8 = 0x00;
const DW: u8 = 0x18;
const ADD: u8 = 0x00;
const CALL: u8 = 0x80;
/// `BPF_PSEUDO_MAP_FD`: the immediate of a 64-bit load is a map descriptor.
const PSEUDO_MAP_FD: u8 = 1;
/// Helper `bpf_map_lookup_elem`.
const HELPER_MAP_LOOKUP: i32 = 1;
const K: u8 = 0x00;
const X: u8 = 0x08;
const MUL: u8 = 0x20;
const AND: u8 = 0x50;
const LSH: u8 = 0x60;
const RSH: u8 = 0x70;
const MOD: u8 = 0x90;
const XOR: u8 = 0xa0;
const MOV: u8 = 0xb0;
const JA: u8 = 0x00;
const JEQ: u8 = 0x10;
const JNE: u8 = 0x50;
const EXIT: u8 = 0x90;

/// Registers: r0 result, r1 context on entry, r6 context for the loads, r7 address (an IPv6
/// one folded to a word), r8 IP header length (40 for IPv6), r9 port. The stack holds the map
/// key (16 bytes at r10 − 16) and the family (4 or 6, at r10 − 20).
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R6: u8 = 6;
const R7: u8 = 7;
const R8: u8 = 8;
const R9: u8 = 9;
const R10: u8 = 10;

/// Jump targets, patched once the program is laid out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Label {
    Queue0,
    Ipv6,
    Transport,
    Transport6,
    Lookup,
    FromSource,
    FromSource6,
    LocalPort,
    Reply,
    Hash,
}

/// A tiny assembler: instructions plus forward references to labels.
struct Asm {
    insns: Vec<u64>,
    fixups: Vec<(usize, Label)>,
    labels: Vec<(Label, usize)>,
}

impl Asm {
    fn new() -> Asm {
        Asm {
            insns: Vec::new(),
            fixups: Vec::new(),
            labels: Vec::new(),
        }
    }

    fn raw(&mut self, code: u8, dst: u8, src: u8, off: i16, imm: i32) {
        let insn = u64::from(code)
            | (u64::from(dst | (src << 4)) << 8)
            | (u64::from(off as u16) << 16)
            | (u64::from(imm as u32) << 32);
        self.insns.push(insn);
    }

    fn jump(&mut self, code: u8, dst: u8, imm: i32, to: Label) {
        self.fixups.push((self.insns.len(), to));
        self.raw(code, dst, 0, 0, imm);
    }

    fn label(&mut self, l: Label) {
        self.labels.push((l, self.insns.len()));
    }

    /// r0 = the `size` bytes at link-layer offset `at`, in host order.
    fn load(&mut self, size: u8, at: i32) {
        self.raw(LD | ABS | size, 0, 0, 0, LL + at);
    }

    /// r0 = the `size` bytes at link-layer offset r8 + `at`, in host order.
    fn load_ind(&mut self, size: u8, at: i32) {
        self.raw(LD | IND | size, 0, R8, 0, LL + at);
    }

    fn finish(mut self) -> Vec<u64> {
        for &(at, to) in &self.fixups {
            let target = self
                .labels
                .iter()
                .find(|(l, _)| *l == to)
                .map(|&(_, pc)| pc)
                .unwrap_or(at + 1);
            let off = (target as i64 - at as i64 - 1) as i16;
            self.insns[at] = (self.insns[at] & !(0xffff << 16)) | (u64::from(off as u16) << 16);
        }
        self.insns
    }
}

/// The queue-selection program for `workers` queues, classifying destinations by the map
/// with descriptor `map_fd`, as raw instructions.
pub fn program(map_fd: i32, workers: u32) -> Vec<u64> {
    let n = workers.max(1) as i32;
    let mut a = Asm::new();
    a.raw(ALU64 | MOV | X, R6, R1, 0, 0);
    a.load(H, 12);
    a.jump(JMP | JEQ | K, R0, 0x86dd, Label::Ipv6);
    a.jump(JMP | JNE | K, R0, 0x0800, Label::Queue0);
    a.load(B, ETH);
    a.raw(ALU64 | MOV | X, R8, R0, 0, 0);
    a.raw(ALU64 | AND | K, R8, 0, 0, 0x0f);
    a.raw(ALU64 | LSH | K, R8, 0, 0, 2);
    a.load(B, ETH + 9);
    a.jump(JMP | JEQ | K, R0, 6, Label::Transport);
    a.jump(JMP | JEQ | K, R0, 17, Label::Transport);
    a.jump(JMP | JA, 0, 0, Label::Queue0);

    // IPv4: the key is the destination, mapped (::ffff:a.b.c.d).
    a.label(Label::Transport);
    a.raw(ST | MEM | W, R10, 0, -20, 4);
    a.load(W, ETH + 16);
    a.raw(ALU | MOV | X, R7, R0, 0, 0);
    a.raw(ST | MEM | W, R10, 0, -16, 0);
    a.raw(ST | MEM | W, R10, 0, -12, 0);
    a.raw(ST | MEM | W, R10, 0, -8, 0xffff);
    a.raw(STX | MEM | W, R10, R7, -4, 0);
    a.jump(JMP | JA, 0, 0, Label::Lookup);

    // IPv6: TCP or UDP right after the fixed header; the key is the destination, r7 its fold.
    a.label(Label::Ipv6);
    a.load(B, ETH + 6);
    a.jump(JMP | JEQ | K, R0, 6, Label::Transport6);
    a.jump(JMP | JEQ | K, R0, 17, Label::Transport6);
    a.jump(JMP | JA, 0, 0, Label::Queue0);
    a.label(Label::Transport6);
    a.raw(ST | MEM | W, R10, 0, -20, 6);
    a.raw(ALU64 | MOV | K, R8, 0, 0, 40);
    a.raw(ALU64 | MOV | K, R7, 0, 0, 0);
    for (i, off) in [-16i16, -12, -8, -4].into_iter().enumerate() {
        a.load(W, ETH + 24 + 4 * i as i32);
        a.raw(STX | MEM | W, R10, R0, off, 0);
        a.raw(ALU | XOR | X, R7, R0, 0, 0);
    }

    // class = map[destination]: the key on the stack, the map, the helper.
    a.label(Label::Lookup);
    a.raw(ALU64 | MOV | X, R2, R10, 0, 0);
    a.raw(ALU64 | ADD | K, R2, 0, 0, -16);
    a.raw(LD | IMM | DW, R1, PSEUDO_MAP_FD, 0, map_fd);
    a.raw(0, 0, 0, 0, 0);
    a.raw(JMP | CALL, 0, 0, 0, HELPER_MAP_LOOKUP);
    a.jump(JMP | JEQ | K, R0, 0, Label::Reply);
    a.raw(LDX | MEM | W, R0, R0, 0, 0);
    a.jump(JMP | JEQ | K, R0, CLASS_VIP as i32, Label::FromSource);
    a.jump(JMP | JEQ | K, R0, CLASS_LIP as i32, Label::LocalPort);
    a.jump(JMP | JA, 0, 0, Label::Queue0);

    // A reply towards a client: the destination names the owner.
    a.label(Label::Reply);
    a.load_ind(H, ETH + 2);
    a.raw(ALU | MOV | X, R9, R0, 0, 0);
    a.jump(JMP | JA, 0, 0, Label::Hash);

    a.label(Label::FromSource);
    a.raw(LDX | MEM | W, R0, R10, -20, 0);
    a.jump(JMP | JEQ | K, R0, 6, Label::FromSource6);
    a.load(W, ETH + 12);
    a.raw(ALU | MOV | X, R7, R0, 0, 0);
    a.load_ind(H, ETH);
    a.raw(ALU | MOV | X, R9, R0, 0, 0);
    a.jump(JMP | JA, 0, 0, Label::Hash);

    a.label(Label::FromSource6);
    a.raw(ALU64 | MOV | K, R7, 0, 0, 0);
    for i in 0..4 {
        a.load(W, ETH + 8 + 4 * i);
        a.raw(ALU | XOR | X, R7, R0, 0, 0);
    }
    a.load_ind(H, ETH);
    a.raw(ALU | MOV | X, R9, R0, 0, 0);

    a.label(Label::Hash);
    a.raw(ALU | LSH | K, R9, 0, 0, 16);
    a.raw(ALU | XOR | X, R7, R9, 0, 0);
    a.raw(ALU | MUL | K, R7, 0, 0, MIX as i32);
    a.raw(ALU | MOV | X, R0, R7, 0, 0);
    a.raw(ALU64 | MUL | K, R0, 0, 0, n);
    a.raw(ALU64 | RSH | K, R0, 0, 0, 32);
    a.raw(JMP | EXIT, 0, 0, 0, 0);

    a.label(Label::LocalPort);
    a.load_ind(H, ETH + 2);
    a.raw(ALU | MOD | K, R0, 0, 0, n);
    a.raw(JMP | EXIT, 0, 0, 0, 0);

    a.label(Label::Queue0);
    a.raw(ALU64 | MOV | K, R0, 0, 0, 0);
    a.raw(JMP | EXIT, 0, 0, 0, 0);
    a.finish()
}

/// The loaded program and its address map, with what the map holds.
#[derive(Debug)]
pub struct Classifier {
    /// The program (attach it to the ports).
    pub prog: BpfProg,
    map: BpfMap,
    current: hashbrown::HashMap<[u8; 16], u32>,
}

impl Classifier {
    /// Creates the map and loads the program for `workers` queues; the map starts empty.
    pub fn load(workers: u32) -> std::io::Result<Classifier> {
        let map = BpfMap::new_hash_key16(MAP_CAPACITY, "tapvs_addrs")?;
        let insns = program(std::os::fd::AsRawFd::as_raw_fd(&map), workers);
        let prog = sys::bpf_load_socket_filter(&insns, "tapvs_steer")?;
        Ok(Classifier {
            prog,
            map,
            current: hashbrown::HashMap::new(),
        })
    }

    /// Makes the map hold `sets` (a VIP that is also a local or own address counts as a VIP,
    /// a local address that is also an own address as a local address), changing only the
    /// elements that differ. Returns how many elements changed.
    pub fn sync(&mut self, sets: &AddressSets) -> std::io::Result<usize> {
        let mut want: hashbrown::HashMap<[u8; 16], u32> = hashbrown::HashMap::with_capacity(
            sets.vips.len() + sets.lips.len() + sets.locals.len(),
        );
        for (list, class) in [
            (&sets.locals, CLASS_LOCAL),
            (&sets.lips, CLASS_LIP),
            (&sets.vips, CLASS_VIP),
        ] {
            for ip in list {
                want.insert(map_key(*ip), class);
            }
        }
        let mut changed = 0;
        let gone: Vec<[u8; 16]> = self
            .current
            .keys()
            .filter(|k| !want.contains_key(*k))
            .copied()
            .collect();
        for k in gone {
            self.map.remove(&k)?;
            self.current.remove(&k);
            changed += 1;
        }
        for (&k, &v) in &want {
            if self.current.get(&k) != Some(&v) {
                self.map.set(&k, v)?;
                self.current.insert(k, v);
                changed += 1;
            }
        }
        Ok(changed)
    }
}

/// Loads a program for `workers` queues with its map holding `sets`.
pub fn load(sets: &AddressSets, workers: u32) -> std::io::Result<Classifier> {
    let mut c = Classifier::load(workers)?;
    c.sync(sets)?;
    Ok(c)
}

/// The steering of one daemon: its ports (one queue of each) and what is attached.
#[derive(Debug)]
pub struct Steering {
    mode: SteeringMode,
    workers: u32,
    ports: Vec<Arc<TapQueue>>,
    attached: Option<Classifier>,
    failed: Option<String>,
}

impl Steering {
    /// Steering for `ports` (any one queue of each port) read by `workers` workers.
    pub fn new(mode: SteeringMode, workers: usize, ports: Vec<Arc<TapQueue>>) -> Steering {
        Steering {
            mode,
            workers: workers as u32,
            ports,
            attached: None,
            failed: None,
        }
    }

    /// Whether the eBPF program is attached to every port.
    pub fn is_active(&self) -> bool {
        self.attached.is_some()
    }

    /// Why the ports fell back to the kernel's flow steering, if they did.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Whether the ports fell back to the kernel's flow steering after a failure (not by
    /// configuration: flow mode or a single worker is no fallback).
    pub fn fell_back(&self) -> bool {
        self.failed.is_some()
    }

    /// Makes the program classify by `sets`: loads and attaches it the first time, then only
    /// updates its map in place. With one worker, in `Flow` mode, or after a failure, does
    /// nothing. A failure is logged with its reason, shown by the `tapvs_steering_fallback`
    /// gauge, returned, and leaves the kernel's flow steering in place.
    pub fn update(&mut self, sets: &AddressSets) -> std::io::Result<()> {
        if self.mode != SteeringMode::Ebpf || self.workers <= 1 || self.failed.is_some() {
            return Ok(());
        }
        let res = match &mut self.attached {
            Some(c) => c.sync(sets).map(|_| ()),
            None => load(sets, self.workers).and_then(|c| {
                self.ports
                    .iter()
                    .try_for_each(|q| q.set_steering(Some(&c.prog)))?;
                self.attached = Some(c);
                Ok(())
            }),
        };
        match res {
            Ok(()) => Ok(()),
            Err(e) => {
                let reason = format!(
                    "{e} ({} VIPs, {} local addresses, {} own addresses)",
                    sets.vips.len(),
                    sets.lips.len(),
                    sets.locals.len()
                );
                tracing::warn!(error = %reason, "eBPF steering unavailable; using the kernel's flow steering");
                for q in &self.ports {
                    let _ = q.set_steering(None);
                }
                self.attached = None;
                self.failed = Some(reason);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::pipeline::owner_of;
    use etherparse::PacketBuilder;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4s(v: &[Ipv4Addr]) -> Vec<IpAddr> {
        v.iter().map(|&a| IpAddr::V4(a)).collect()
    }

    /// An Ethernet/IPv6 TCP or UDP frame; `ext` puts a Destination Options header first.
    fn frame6(
        proto: u8,
        src: Ipv6Addr,
        sport: u16,
        dst: Ipv6Addr,
        dport: u16,
        ext: bool,
    ) -> Vec<u8> {
        let mut l4 = if proto == 6 {
            let mut t = vec![0u8; 20];
            t[12] = 5 << 4;
            t[13] = 0x10;
            t
        } else {
            let mut u = vec![0u8; 8];
            u[4..6].copy_from_slice(&9u16.to_be_bytes());
            u
        };
        l4[0..2].copy_from_slice(&sport.to_be_bytes());
        l4[2..4].copy_from_slice(&dport.to_be_bytes());
        l4.push(b'x');
        let mut payload = Vec::new();
        let nh = if ext {
            payload.extend_from_slice(&[proto, 0, 1, 4, 0, 0, 0, 0]);
            60
        } else {
            proto
        };
        payload.extend_from_slice(&l4);
        let mut f = vec![
            2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd, 0x60, 0, 0, 0,
        ];
        f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        f.extend_from_slice(&[nh, 64]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        f.extend_from_slice(&payload);
        f
    }

    fn frame(
        proto: u8,
        src: Ipv4Addr,
        sport: u16,
        dst: Ipv4Addr,
        dport: u16,
        opts: bool,
    ) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut ip = etherparse::Ipv4Header::new(
            0,
            64,
            etherparse::IpNumber(proto),
            src.octets(),
            dst.octets(),
        )
        .unwrap();
        if opts {
            ip.options = [1u8, 1, 1, 0].as_slice().try_into().unwrap();
        }
        let b = b.ip(etherparse::IpHeaders::Ipv4(ip, Default::default()));
        let mut out = Vec::new();
        if proto == 6 {
            b.tcp(sport, dport, 1, 1000).write(&mut out, b"x").unwrap();
        } else {
            b.udp(sport, dport).write(&mut out, b"x").unwrap();
        }
        out
    }

    #[test]
    fn jumps_are_patched_forward() {
        let sets = AddressSets {
            vips: v4s(&[Ipv4Addr::new(10, 0, 0, 1)]),
            ..Default::default()
        };
        let _ = sets;
        let p = program(3, 2);
        for (pc, insn) in p.iter().enumerate() {
            let code = (insn & 0xff) as u8;
            let class = code & 0x07;
            if (class == JMP || class == 0x06) && code & 0xf0 != EXIT {
                let off = ((insn >> 16) & 0xffff) as u16 as i16;
                let target = pc as i64 + 1 + i64::from(off);
                assert!(off >= 0 && (target as usize) < p.len(), "pc {pc} off {off}");
            }
        }
    }

    /// The kernel's answer for many frames equals `owner_of` as the workers compute it.
    #[test]
    fn kernel_program_agrees_with_owner_of() {
        if !tapvs_lab::netns::precheck() {
            return;
        }
        let vip = Ipv4Addr::new(207, 175, 44, 110);
        let lip = Ipv4Addr::new(172, 16, 9, 100);
        let local = Ipv4Addr::new(172, 16, 0, 1);
        let vip6: Ipv6Addr = "2001:db8:f::80".parse().unwrap();
        let lip6: Ipv6Addr = "2001:db8:5::100".parse().unwrap();
        let local6: Ipv6Addr = "2001:db8:5::1".parse().unwrap();
        let mut sets = AddressSets {
            vips: v4s(&[Ipv4Addr::new(10, 9, 9, 9), vip]),
            lips: v4s(&[lip]),
            locals: v4s(&[Ipv4Addr::new(10, 0, 0, 1), local]),
        };
        sets.vips.push(IpAddr::V6(vip6));
        sets.lips.push(IpAddr::V6(lip6));
        sets.locals.push(IpAddr::V6(local6));
        for workers in [2u32, 3, 4, 7] {
            let c = load(&sets, workers).expect("load");
            let prog = &c.prog;
            let n = workers as usize;
            let mut seen = vec![0usize; n];
            for i in 0..400u32 {
                let h = i.wrapping_mul(0x2545_F491);
                let client = Ipv4Addr::from(0x0a00_0000 | (h >> 8));
                let cport = 1024 + (h % 60000) as u16;
                let rs = Ipv4Addr::new(172, 16, 0, 2 + (i % 5) as u8);
                let proto = if i % 3 == 0 { 17 } else { 6 };
                let opts = i % 7 == 0;
                // Client → VIP.
                let f = frame(proto, client, cport, vip, 80, opts);
                let q = sys::bpf_test_run(prog, &f).expect("run") as usize;
                assert_eq!(q, owner_of(client, cport, n), "to VIP, {workers} workers");
                seen[q] += 1;
                // NAT reply RS → client.
                let f = frame(proto, rs, 8080, client, cport, opts);
                let q = sys::bpf_test_run(prog, &f).expect("run") as usize;
                assert_eq!(q, owner_of(client, cport, n), "NAT reply");
                // FullNAT reply RS → LIP:lport.
                let f = frame(proto, rs, 8080, lip, cport, opts);
                let q = sys::bpf_test_run(prog, &f).expect("run") as usize;
                assert_eq!(q, usize::from(cport) % n, "FullNAT reply");
                // To the appliance itself.
                let f = frame(proto, rs, 8080, local, cport, opts);
                assert_eq!(sys::bpf_test_run(prog, &f).expect("run"), 0, "local");

                // The same over IPv6.
                let client6 = Ipv6Addr::from(
                    0x2001_0db8_000c_0000_0000_0000_0000_0000u128 | u128::from(h) << 17 | 2,
                );
                let rs6 = Ipv6Addr::from(0x2001_0db8_0005_u128 << 80 | u128::from(2 + i % 5));
                let f = frame6(proto, client6, cport, vip6, 80, false);
                let q = sys::bpf_test_run(prog, &f).expect("run") as usize;
                assert_eq!(q, owner_of(client6, cport, n), "to VIP6, {workers} workers");
                seen[q] += 1;
                let f = frame6(proto, rs6, 8080, client6, cport, false);
                let q = sys::bpf_test_run(prog, &f).expect("run") as usize;
                assert_eq!(q, owner_of(client6, cport, n), "NAT reply (v6)");
                let f = frame6(proto, rs6, 8080, lip6, cport, false);
                let q = sys::bpf_test_run(prog, &f).expect("run") as usize;
                assert_eq!(q, usize::from(cport) % n, "FullNAT reply (v6)");
                let f = frame6(proto, rs6, 8080, local6, cport, false);
                assert_eq!(sys::bpf_test_run(prog, &f).expect("run"), 0, "local (v6)");
                // Extension headers: queue 0 (the workers hand such frames over).
                let f = frame6(proto, client6, cport, vip6, 80, true);
                assert_eq!(sys::bpf_test_run(prog, &f).expect("run"), 0, "ext (v6)");
            }
            assert!(seen.iter().all(|&s| s > 800 / n / 2), "{seen:?}");
        }
        // ARP, ICMP and truncated frames go to queue 0.
        let c = load(&sets, 4).expect("load");
        let prog = &c.prog;
        let mut arp = vec![0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert_eq!(sys::bpf_test_run(prog, &arp).unwrap(), 0);
        let mut icmp = frame(6, Ipv4Addr::new(1, 2, 3, 4), 1, vip, 80, false);
        icmp[14 + 9] = 1;
        assert_eq!(sys::bpf_test_run(prog, &icmp).unwrap(), 0);
        let short = &frame(6, Ipv4Addr::new(1, 2, 3, 4), 1, vip, 80, false)[..36];
        assert_eq!(sys::bpf_test_run(prog, short).unwrap(), 0);
        // ICMPv6, and IPv6 cut short before the ports: queue 0.
        let c6: Ipv6Addr = "2001:db8:c::2".parse().unwrap();
        let mut icmp6 = frame6(6, c6, 1, vip6, 80, false);
        icmp6[14 + 6] = 58;
        assert_eq!(sys::bpf_test_run(prog, &icmp6).unwrap(), 0);
        let short6 = &frame6(6, c6, 1, vip6, 80, false)[..14 + 40 + 1];
        assert_eq!(sys::bpf_test_run(prog, short6).unwrap(), 0);
    }

    /// The map is updated in place: a VIP added or removed changes the program's answer
    /// without loading another program, and only changed elements are written.
    #[test]
    fn map_updates_change_the_classification_in_place() {
        if !tapvs_lab::netns::precheck() {
            return;
        }
        let vip = Ipv4Addr::new(198, 18, 0, 1);
        let client = Ipv4Addr::new(10, 1, 2, 3);
        let f = frame(6, client, 40000, vip, 80, false);
        let mut c = Classifier::load(4).expect("load");
        // 10,000 VIPs (as many services' addresses): one sync, then single changes.
        let many = AddressSets {
            vips: (1..=10_000u32)
                .map(|i| IpAddr::V4(Ipv4Addr::from(0xC612_0000 + i)))
                .collect(),
            ..Default::default()
        };
        assert_eq!(c.sync(&many).expect("sync"), 10_000);
        let q = sys::bpf_test_run(&c.prog, &f).expect("run") as usize;
        assert_eq!(
            q,
            owner_of(client, 40000, 4),
            "a VIP: steered by the client"
        );
        let mut fewer = many.clone();
        fewer.vips.retain(|&v| v != IpAddr::V4(vip));
        assert_eq!(c.sync(&fewer).expect("sync"), 1, "one element removed");
        let q = sys::bpf_test_run(&c.prog, &f).expect("run") as usize;
        assert_eq!(
            q,
            owner_of(vip, 80, 4),
            "no longer a VIP: steered by the destination"
        );
        assert_eq!(c.sync(&fewer).expect("sync"), 0, "nothing to change");
    }

    /// A real multi-queue TAP: frames the kernel sends out of it land on the owner's queue.
    #[test]
    fn tap_queues_follow_the_program() {
        if !tapvs_lab::netns::precheck() {
            return;
        }
        std::thread::spawn(|| {
            crate::sys::unshare_netns().expect("unshare");
            let tap = crate::sys::tap::Tap::open("tvsteer0", 2).expect("tap");
            tap.set_up().expect("up");
            let run = |args: &[&str]| {
                let st = std::process::Command::new("ip")
                    .args(args)
                    .status()
                    .unwrap();
                assert!(st.success(), "ip {args:?}");
            };
            run(&["addr", "add", "10.7.0.1/24", "dev", "tvsteer0"]);
            run(&["link", "set", "lo", "up"]);
            run(&[
                "neigh",
                "add",
                "10.7.0.2",
                "lladdr",
                "02:00:00:00:00:02",
                "dev",
                "tvsteer0",
            ]);
            let queues: Vec<Arc<TapQueue>> = tap.into_queues().into_iter().map(Arc::new).collect();
            let vip = Ipv4Addr::new(10, 7, 0, 9);
            let mut st = Steering::new(SteeringMode::Ebpf, 2, vec![queues[0].clone()]);
            st.update(&AddressSets {
                vips: v4s(&[vip]),
                ..Default::default()
            })
            .expect("attach");
            assert!(st.is_active());
            // The host sends UDP to 10.7.0.2 from many ports: NAT-reply shaped frames.
            let client = Ipv4Addr::new(10, 7, 0, 2);
            let mut per_queue = [0usize; 2];
            let mut buf = vec![0u8; crate::sys::tap::MAX_FRAME];
            for i in 0..40u16 {
                let sock = std::net::UdpSocket::bind("10.7.0.1:0").unwrap();
                sock.send_to(b"steer", (client, 5000 + i)).unwrap();
                let want = owner_of(client, 5000 + i, 2);
                let mut got = None;
                let mut pfds: Vec<libc::pollfd> = queues
                    .iter()
                    .map(|q| sys::poll_in(std::os::fd::AsRawFd::as_raw_fd(&**q)))
                    .collect();
                for _ in 0..20 {
                    if sys::poll(&mut pfds, 1000).expect("poll") == 0 {
                        break;
                    }
                    for (q, queue) in queues.iter().enumerate() {
                        while let Ok(Some(n)) = queue.read(&mut buf) {
                            let f = &buf[crate::sys::tap::VNET_HDR_LEN..n];
                            if f.len() > 42 && f[12..14] == [8, 0] && f[23] == 17 {
                                got = Some(q);
                            }
                        }
                    }
                    if got.is_some() {
                        break;
                    }
                }
                let q = got.expect("frame on a queue");
                assert_eq!(q, want, "port {}", 5000 + i);
                per_queue[q] += 1;
            }
            assert!(per_queue[0] > 0 && per_queue[1] > 0, "{per_queue:?}");
        })
        .join()
        .expect("steer thread");
    }
}
