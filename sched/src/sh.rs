//! Source hashing (`sh`, kernel `ip_vs_sh.c`): a static table of
//! `2^bits` buckets (default 256) tiled with the destinations in list order,
//! each destination repeated `weight` times in a row (at least once), wrapping
//! round until the table is full. A connection goes to bucket
//! `hash_32(port + fold(src_addr), bits)` — the kernel's multiplicative
//! `hash_32` (`GOLDEN_RATIO_32`), with `port` the client port under
//! `sh-port` (TCP/UDP/SCTP only) and 0 otherwise; IPv6 addresses are folded
//! by XOR of their four words.
//!
//! If the bucket's destination is not usable there is no destination, unless
//! `sh-fallback` is set: then buckets are probed deterministically in the
//! kernel's order (`(ihash + (offset + ihash) mod size) mod size` for
//! `offset = 0..size`) until a usable destination is found.

use std::fmt;
use std::sync::Arc;

use crate::common::{fold_addr, hash_32, hash_port};
use crate::{Dest, HashFlags, Input, Scheduler};

/// Smallest table size in bits (`IP_VS_SH_TAB_BITS` range 4..=20).
pub(crate) const MIN_BITS: u8 = 4;
/// Largest table size in bits.
pub(crate) const MAX_BITS: u8 = 20;

/// The `sh` scheduler: its bucket table and flags.
pub struct Sh {
    bits: u8,
    flags: HashFlags,
    /// Dest index per bucket; empty when there are no dests.
    table: Vec<u32>,
}

impl Sh {
    /// Build a `2^bits` bucket table for `dests` (bits in 4..=20).
    pub(crate) fn new(dests: &[Arc<Dest>], bits: u8, flags: HashFlags) -> Self {
        let size = 1usize << bits;
        let mut table = Vec::new();
        if !dests.is_empty() {
            table.reserve(size);
            let (mut p, mut count) = (0usize, 0u32);
            while table.len() < size {
                table.push(p as u32);
                count += 1;
                if count >= dests[p].weight() {
                    p = (p + 1) % dests.len();
                    count = 0;
                }
            }
        }
        Sh { bits, flags, table }
    }

    /// The un-offset hash of a client: `hash_32(port + fold(addr), bits)`.
    fn hash(&self, input: &Input) -> usize {
        let port = hash_port(input, self.flags.port) as u32;
        hash_32(port.wrapping_add(fold_addr(input.src)), self.bits as u32) as usize
    }

    fn usable(&self, dests: &[Arc<Dest>], bucket: usize) -> Option<usize> {
        let i = self.table[bucket] as usize;
        dests.get(i).filter(|d| d.is_usable()).map(|_| i)
    }
}

impl fmt::Debug for Sh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sh")
            .field("bits", &self.bits)
            .field("flags", &self.flags)
            .field("buckets", &self.table.len())
            .finish()
    }
}

impl Scheduler for Sh {
    fn name(&self) -> &'static str {
        "sh"
    }

    fn schedule(&self, dests: &[Arc<Dest>], input: &Input) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let size = self.table.len();
        let ihash = self.hash(input);
        if let Some(i) = self.usable(dests, ihash) {
            return Some(i);
        }
        if !self.flags.fallback {
            return None;
        }
        (0..size).find_map(|offset| {
            let roffset = (offset + ihash) % size;
            self.usable(dests, (roffset + ihash) % size)
        })
    }

    fn rebuild(&self, dests: &[Arc<Dest>]) -> Box<dyn Scheduler> {
        Box::new(Sh::new(dests, self.bits, self.flags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    const NONE: HashFlags = HashFlags {
        fallback: false,
        port: false,
    };

    #[test]
    fn tiles_by_weight_in_list_order() {
        let ds = dests(&[2, 0, 3]);
        let s = Sh::new(&ds, 4, NONE);
        assert_eq!(
            s.table,
            [0, 0, 1, 2, 2, 2, 0, 0, 1, 2, 2, 2, 0, 0, 1, 2],
            "weight 0 still takes one bucket"
        );
    }

    #[test]
    fn bucket_is_hash_32_of_source() {
        let ds = dests(&[1; 256]);
        let s = Sh::new(&ds, 8, NONE);
        let inp = input([10, 0, 0, 1], 1234, 0);
        let h = (0x0a00_0001u32.wrapping_mul(0x61c8_8647) >> 24) as usize;
        assert_eq!(s.schedule(&ds, &inp), Some(h));
        // sh-port adds the port before hashing
        let sp = Sh::new(
            &ds,
            8,
            HashFlags {
                fallback: false,
                port: true,
            },
        );
        let hp = ((0x0a00_0001u32 + 1234).wrapping_mul(0x61c8_8647) >> 24) as usize;
        assert_eq!(sp.schedule(&ds, &inp), Some(hp));
        // ...but only for TCP/UDP/SCTP
        let icmp = Input { proto: 1, ..inp };
        assert_eq!(sp.schedule(&ds, &icmp), Some(h));
    }

    #[test]
    fn same_client_same_server_and_port_ignored_by_default() {
        let ds = dests(&[1, 2, 3, 4]);
        let s = Sh::new(&ds, 8, NONE);
        let a = s.schedule(&ds, &input([203, 0, 113, 9], 1, 0));
        assert!(a.is_some());
        assert_eq!(s.schedule(&ds, &input([203, 0, 113, 9], 65000, 5)), a);
    }

    #[test]
    fn unusable_without_fallback_is_none() {
        let ds = dests(&[1, 1]);
        let s = Sh::new(&ds, 8, NONE);
        let inp = input([10, 0, 0, 1], 0, 0);
        let i = s.schedule(&ds, &inp).unwrap();
        ds[i].set_available(false);
        assert_eq!(s.schedule(&ds, &inp), None);
        ds[i].set_available(true);
        ds[i].set_thresholds(1, 0);
        ds[i].bind(true);
        assert_eq!(s.schedule(&ds, &inp), None);
    }

    #[test]
    fn fallback_finds_another_usable_dest() {
        let ds = dests(&[1, 1, 1]);
        let s = Sh::new(
            &ds,
            8,
            HashFlags {
                fallback: true,
                port: false,
            },
        );
        let inp = input([10, 0, 0, 1], 0, 0);
        let i = s.schedule(&ds, &inp).unwrap();
        ds[i].set_weight(0);
        let j = s.schedule(&ds, &inp).unwrap();
        assert_ne!(i, j);
        assert_eq!(s.schedule(&ds, &inp), Some(j), "deterministic");
        for d in &ds {
            d.set_weight(0);
        }
        assert_eq!(s.schedule(&ds, &inp), None);
    }

    #[test]
    fn ipv6_source_is_folded() {
        let ds = dests(&[1; 16]);
        let s = Sh::new(&ds, 4, NONE);
        let mut inp = input([0, 0, 0, 7], 0, 0);
        let v4 = s.schedule(&ds, &inp);
        inp.src = "1:2:0:0:1:2:0:7".parse().unwrap(); // words cancel to 7
        assert_eq!(s.schedule(&ds, &inp), v4);
    }
}
