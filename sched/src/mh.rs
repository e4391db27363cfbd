//! Maglev hashing (`mh`, kernel `ip_vs_mh.c`, after Eisenbud et al., NSDI'16):
//! a lookup table of prime size `M` (default 4093) in which every destination
//! owns a share of slots proportional to its weight, filled so that adding or
//! removing one destination moves few clients.
//!
//! Table population: each destination gets `offset = h1(addr, port) mod M`
//! and `skip = h2(addr, port) mod (M - 1) + 1`, i.e. the preference list
//! `offset, offset + skip, offset + 2·skip, ... (mod M)`. Destinations take
//! turns in (address, port) order (the kernel uses its list order; tapvs
//! sorts, so the table does not depend on the order real servers were added
//! and every scale-out instance with the same real servers agrees), each claiming its next free preferred slot
//! `turns = (last_weight / gcd) >> rshift` times per round (at least once if
//! its weight is non-zero; never if it is 0), where `rshift` keeps the
//! largest `last_weight / gcd` within `TAB_BITS = index / 2` bits (index 12
//! for 4093). `last_weight` is the destination's latest non-zero weight, so
//! quiescing a destination (weight 0) does not reshuffle the table: its
//! clients get no destination, or another one under `mh-fallback`.
//!
//! Lookup: slot `h1(port + fold(src_addr)) mod M`, with `port` the client
//! port under `mh-port` (TCP/UDP/SCTP) and 0 otherwise. If that destination
//! is unusable and `mh-fallback` is set, the kernel's probe sequence is used:
//! for `offset = 0..M`, slot `h1(((offset + ihash) mod M) + port + addr)`.
//!
//! Hash: `hsiphash` as the kernel computes it on 64-bit machines —
//! SipHash-1-3 with a 128-bit key over the 4 little-endian bytes of the
//! 32-bit value, truncated to 32 bits — with the kernel's fixed keys
//! `h1 = (2654435761, 2654435761)`, `h2 = (2654446892, 2654446892)`. It is
//! deterministic, so two directors with the same destination list build the
//! same table. (Bit-exactness with a particular kernel build is intended
//! but has not been checked against kernel output.)

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use crate::common::{fold_addr, gcd, hash_port};
use crate::{Dest, HashFlags, Input, Scheduler, MH_TABLE_SIZES};

/// Key of the first hash (permutation offsets and lookups).
const KEY1: (u64, u64) = (2_654_435_761, 2_654_435_761);
/// Key of the second hash (permutation skips).
const KEY2: (u64, u64) = (2_654_446_892, 2_654_446_892);

/// Marks an empty lookup slot.
const EMPTY: u32 = u32::MAX;

/// One SipHash round.
#[inline]
fn sipround(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-c-d of a 4-byte message (the little-endian bytes of `value`),
/// full 64-bit result.
fn siphash_u32(key: (u64, u64), value: u32, c: usize, d: usize) -> u64 {
    let mut v = [
        0x736f_6d65_7073_6575 ^ key.0,
        0x646f_7261_6e64_6f6d ^ key.1,
        0x6c79_6765_6e65_7261 ^ key.0,
        0x7465_6462_7974_6573 ^ key.1,
    ];
    let b = (4u64 << 56) | value as u64;
    v[3] ^= b;
    for _ in 0..c {
        sipround(&mut v);
    }
    v[0] ^= b;
    v[2] ^= 0xff;
    for _ in 0..d {
        sipround(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The kernel's 64-bit `hsiphash()` of one `u32`: SipHash-1-3, truncated.
fn hsiphash(key: (u64, u64), value: u32) -> u32 {
    siphash_u32(key, value, 1, 3) as u32
}

/// `ip_vs_mh_hashkey`: hash of `offset + port + fold(addr)`.
fn hashkey(addr: IpAddr, port: u16, key: (u64, u64), offset: u32) -> u32 {
    let v = offset
        .wrapping_add(port as u32)
        .wrapping_add(fold_addr(addr));
    hsiphash(key, v)
}

/// The `mh` scheduler: its lookup table and flags.
pub struct Mh {
    flags: HashFlags,
    /// Table size M (a prime from [`MH_TABLE_SIZES`]).
    size: u32,
    /// Dest index per slot, [`EMPTY`] when no dest has a weight.
    table: Vec<u32>,
}

impl Mh {
    /// Build the Maglev table of `size` slots (one of [`MH_TABLE_SIZES`])
    /// for `dests`.
    pub(crate) fn new(dests: &[Arc<Dest>], size: u32, flags: HashFlags) -> Self {
        let index = MH_TABLE_SIZES
            .iter()
            .position(|&s| s == size)
            .expect("mh table size validated by build()");
        let tab_bits = (index as u32 + 8) / 2;
        Mh {
            flags,
            size,
            table: populate(dests, size, tab_bits),
        }
    }

    /// The slot of a client, with the kernel's probe `offset`.
    fn slot(&self, input: &Input, offset: u32) -> usize {
        let port = hash_port(input, self.flags.port);
        (hashkey(input.src, port, KEY1, offset) % self.size) as usize
    }
}

/// Fill a Maglev table of `m` slots (see the module doc).
fn populate(dests: &[Arc<Dest>], m: u32, tab_bits: u32) -> Vec<u32> {
    // Turns are taken in address order, not list order: the table depends only on the set
    // of (address, port, weight), never on the order real servers were added, so every
    // instance given the same real servers builds the same table.
    let mut order: Vec<usize> = (0..dests.len()).collect();
    order.sort_by_key(|&i| (dests[i].addr(), dests[i].port()));
    let dests: Vec<&Arc<Dest>> = order.iter().map(|&i| &dests[i]).collect();
    let weights: Vec<u32> = dests.iter().map(|d| d.last_weight()).collect();
    let g = weights.iter().fold(0, |g, &w| gcd(g, w));
    let mut table = vec![EMPTY; m as usize];
    if g == 0 {
        return table; // no dest has ever had a weight
    }
    let max = weights.iter().max().copied().unwrap_or(0) / g;
    let fls = u32::BITS - max.leading_zeros();
    let rshift = fls.saturating_sub(tab_bits);
    let turns: Vec<u32> = weights
        .iter()
        .map(|&w| ((w / g) >> rshift).max(u32::from(w != 0)))
        .collect();
    let mut perm: Vec<u32> = dests
        .iter()
        .map(|d| hashkey(d.addr(), d.port(), KEY1, 0) % m)
        .collect();
    let skip: Vec<u32> = dests
        .iter()
        .map(|d| hashkey(d.addr(), d.port(), KEY2, 0) % (m - 1) + 1)
        .collect();
    let (mut filled, mut p, mut taken) = (0u32, 0usize, 0u32);
    while filled < m {
        if turns[p] == 0 {
            p = (p + 1) % dests.len();
            continue;
        }
        let mut c = perm[p];
        while table[c as usize] != EMPTY {
            c += skip[p];
            if c >= m {
                c -= m;
            }
        }
        perm[p] = c;
        table[c as usize] = order[p] as u32;
        filled += 1;
        taken += 1;
        if taken >= turns[p] {
            taken = 0;
            p = (p + 1) % dests.len();
        }
    }
    table
}

impl fmt::Debug for Mh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mh")
            .field("size", &self.size)
            .field("flags", &self.flags)
            .finish()
    }
}

impl Scheduler for Mh {
    fn name(&self) -> &'static str {
        "mh"
    }

    fn schedule(&self, dests: &[Arc<Dest>], input: &Input) -> Option<usize> {
        let lookup = |slot: usize| -> Result<usize, bool> {
            // Ok(dest), Err(true) = occupied but unusable, Err(false) = empty
            let i = self.table[slot];
            if i == EMPTY {
                return Err(false);
            }
            match dests.get(i as usize) {
                Some(d) if d.is_usable() => Ok(i as usize),
                _ => Err(true),
            }
        };
        let ihash = self.slot(input, 0);
        match lookup(ihash) {
            Ok(i) => return Some(i),
            Err(false) => return None,
            Err(true) if !self.flags.fallback => return None,
            Err(true) => {}
        }
        for offset in 0..self.size {
            let roffset = (offset + ihash as u32) % self.size;
            match lookup(self.slot(input, roffset)) {
                Ok(i) => return Some(i),
                Err(false) => return None,
                Err(true) => {}
            }
        }
        None
    }

    fn rebuild(&self, dests: &[Arc<Dest>]) -> Box<dyn Scheduler> {
        Box::new(Mh::new(dests, self.size, self.flags))
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
    #[allow(deprecated)]
    fn siphash_core_matches_std_siphash_2_4() {
        use std::hash::{Hasher, SipHasher};
        for (k0, k1, v) in [
            (0, 0, 0u32),
            (0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908, 0x0302_0100),
            (2_654_435_761, 2_654_435_761, 0x0a00_0001),
            (u64::MAX, 1, u32::MAX),
        ] {
            let mut h = SipHasher::new_with_keys(k0, k1);
            h.write(&v.to_le_bytes());
            assert_eq!(siphash_u32((k0, k1), v, 2, 4), h.finish(), "{k0} {k1} {v}");
        }
    }

    fn shares(s: &Mh, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &i in &s.table {
            c[i as usize] += 1;
        }
        c
    }

    #[test]
    fn table_is_full_and_balanced() {
        let ds = dests(&[1; 7]);
        let s = Mh::new(&ds, 4093, NONE);
        let c = shares(&s, 7);
        assert_eq!(c.iter().sum::<usize>(), 4093);
        assert!(c.iter().all(|&x| x == 584 || x == 585), "{c:?}");
    }

    #[test]
    fn weights_set_shares_and_zero_weight_gets_none() {
        let ds = dests(&[1, 3, 0]);
        let s = Mh::new(&ds, 251, NONE);
        let c = shares(&s, 3);
        assert_eq!(c[2], 0);
        assert!((c[1] as i64 - 3 * c[0] as i64).abs() <= 3, "{c:?}");
        assert_eq!(c[0] + c[1], 251);
    }

    #[test]
    fn large_weights_are_shifted_not_starved() {
        // max/gcd = 65535 needs 16 bits > TAB_BITS 6: rshift 10.
        let ds = dests(&[65535, 1]);
        let s = Mh::new(&ds, 4093, NONE);
        let c = shares(&s, 2);
        // turns 63 and 1 (0 rounded up to 1)
        assert!(c[1] >= 4093 / 64 && c[1] <= 4093 / 64 + 1, "{c:?}");
    }

    #[test]
    fn quiesced_dest_keeps_its_slots() {
        let ds = dests(&[1, 1, 1]);
        let before = Mh::new(&ds, 251, NONE).table;
        ds[1].set_weight(0);
        let s = Mh::new(&ds, 251, NONE);
        assert_eq!(s.table, before, "last_weight keeps the table");
        // Clients of dest 1 get nothing...
        let victim = (0u8..=255)
            .map(|b| input([10, 1, 0, b], 0, 0))
            .find(|inp| s.table[s.slot(inp, 0)] == 1)
            .unwrap();
        assert_eq!(s.schedule(&ds, &victim), None);
        // ...unless mh-fallback is on.
        let f = Mh::new(
            &ds,
            251,
            HashFlags {
                fallback: true,
                port: false,
            },
        );
        let j = f.schedule(&ds, &victim).unwrap();
        assert_ne!(j, 1);
        ds[0].set_thresholds(1, 0);
        ds[0].bind(true);
        ds[2].set_available(false);
        assert_eq!(f.schedule(&ds, &victim), None, "all unusable");
    }

    #[test]
    fn deterministic_and_port_flag() {
        let ds = dests(&[1, 2, 3, 4, 5]);
        let a = Mh::new(&ds, 4093, NONE);
        let b = Mh::new(&ds, 4093, NONE);
        assert_eq!(a.table, b.table);
        let x = input([192, 0, 2, 50], 1000, 0);
        let y = input([192, 0, 2, 50], 2000, 0);
        assert_eq!(a.schedule(&ds, &x), a.schedule(&ds, &y));
        let p = Mh::new(
            &ds,
            4093,
            HashFlags {
                fallback: false,
                port: true,
            },
        );
        assert_eq!(p.slot(&x, 0), a.slot(&input([192, 0, 2, 50], 0, 0), 1000));
        let differs = (0..50u16)
            .any(|k| p.schedule(&ds, &input([192, 0, 2, 50], k, 0)) != p.schedule(&ds, &x));
        assert!(differs, "mh-port must spread one client over dests");
    }

    #[test]
    fn no_weights_means_empty_table() {
        let ds = dests(&[0, 0]);
        let s = Mh::new(
            &ds,
            251,
            HashFlags {
                fallback: true,
                port: false,
            },
        );
        assert!(s.table.iter().all(|&e| e == EMPTY));
        assert_eq!(s.schedule(&ds, &any()), None);
    }

    /// Exact (slot-level, so no sampling noise) disruption bound: removing
    /// any one of N equal servers, N in 5..=20, changes the owner of at most
    /// (1/N + 2%) of the default table's slots. (Worst case seen: N = 16..20
    /// at about 1/N + 1.99%.)
    #[test]
    fn removal_disruption_is_near_minimal() {
        for n in 5..=20usize {
            let ds = dests(&vec![1; n]);
            let before = Mh::new(&ds, 4093, NONE);
            for victim in 0..n {
                let fewer: Vec<_> = (0..n)
                    .filter(|&i| i != victim)
                    .map(|i| ds[i].clone())
                    .collect();
                let after = Mh::new(&fewer, 4093, NONE);
                let moved = before
                    .table
                    .iter()
                    .zip(&after.table)
                    .filter(|&(&a, &b)| ds[a as usize].key() != fewer[b as usize].key())
                    .count();
                let limit = 4093.0 * (1.0 / n as f64 + 0.02);
                assert!(
                    moved as f64 <= limit,
                    "n {n} victim {victim}: {moved} > {limit}"
                );
                // Everything the victim owned had to move.
                let owned = before
                    .table
                    .iter()
                    .filter(|&&a| a as usize == victim)
                    .count();
                assert!(moved >= owned);
            }
        }
    }
}
