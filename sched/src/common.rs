//! Building blocks shared by several schedulers: the weighted-least-connection
//! walk (wlc, sed, lblc, lblcr), the lblc "overloaded" rule, address folding
//! and the kernel's multiplicative hashes, and destination-identity maps used
//! when a scheduler is rebuilt for a changed destination list.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::{Dest, Input};

/// Knuth's multiplicative constant used by the IPVS dh/lblc hashes
/// (2654435761 = 0x9E3779B1).
pub(crate) const KNUTH_MUL: u32 = 2_654_435_761;

/// The kernel's `GOLDEN_RATIO_32` used by `hash_32()`.
pub(crate) const GOLDEN_RATIO_32: u32 = 0x61C8_8647;

/// IP protocol numbers whose source port a hashing scheduler may use.
const PORT_PROTOS: [u8; 3] = [6, 17, 132];

/// The address as a host-order `u32`; IPv6 addresses are folded by XOR of
/// their four 32-bit words (the kernel's `addr_fold`, then `ntohl`).
pub(crate) fn fold_addr(addr: IpAddr) -> u32 {
    match addr {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => {
            let o = a.octets();
            (0..4).fold(0, |acc, i| {
                acc ^ u32::from_be_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]])
            })
        }
    }
}

/// The kernel's generic `hash_32(val, bits)`: the top `bits` bits of
/// `val * GOLDEN_RATIO_32`.
pub(crate) fn hash_32(val: u32, bits: u32) -> u32 {
    debug_assert!((1..=32).contains(&bits));
    val.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits)
}

/// The client port a hashing scheduler uses when its "port" flag is set:
/// the source port for TCP, UDP and SCTP, 0 for anything else.
pub(crate) fn hash_port(input: &Input, use_port: bool) -> u16 {
    if use_port && PORT_PROTOS.contains(&input.proto) {
        input.src_port
    } else {
        0
    }
}

/// Greatest common divisor (gcd(0, b) = b).
pub(crate) fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The weighted-least-cost walk shared by wlc, sed, lblc and lblcr: the first
/// usable destination in `order` becomes the candidate, and a later usable
/// one replaces it only when strictly cheaper,
/// `cost(least) * w(d) > cost(d) * w(least)` (division free, 64-bit).
/// Ties therefore go to the earliest destination in `order`.
pub(crate) fn weighted_least<I, F>(dests: &[Arc<Dest>], order: I, cost: F) -> Option<usize>
where
    I: IntoIterator<Item = usize>,
    F: Fn(&Dest) -> u64,
{
    let mut least: Option<(usize, u64, u64)> = None; // (index, cost, weight)
    for i in order {
        let d = &dests[i];
        if !d.is_usable() {
            continue;
        }
        let (doh, dw) = (cost(d), d.weight() as u64);
        match least {
            Some((_, loh, lw)) if loh * dw <= doh * lw => {}
            _ => least = Some((i, doh, dw)),
        }
    }
    least.map(|(i, _, _)| i)
}

/// Weighted least-connection over the whole list (the wlc rule).
pub(crate) fn wlc(dests: &[Arc<Dest>]) -> Option<usize> {
    weighted_least(dests, 0..dests.len(), Dest::overhead)
}

/// The lblc/lblcr "overloaded" rule for a cached destination `n`: it has
/// more active connections than its weight, and some destination of the
/// service (any of them, as in the kernel) is under half load
/// (`active * 2 < weight`).
pub(crate) fn lblc_overloaded(n: &Dest, dests: &[Arc<Dest>]) -> bool {
    n.active_conns() > n.weight()
        && dests
            .iter()
            .any(|m| (m.active_conns() as u64) * 2 < m.weight() as u64)
}

/// Map from destination identity `(addr, port)` to its index in `dests`.
pub(crate) fn index_by_key(dests: &[Arc<Dest>]) -> HashMap<(IpAddr, u16), usize> {
    dests
        .iter()
        .enumerate()
        .map(|(i, d)| (d.key(), i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn fold_v4_and_v6() {
        assert_eq!(
            fold_addr(IpAddr::V4(Ipv4Addr::new(1, 2, 3, 4))),
            0x0102_0304
        );
        let v6: Ipv6Addr = "2001:db8::1:0:0:5".parse().unwrap();
        // words 0x20010db8, 0x00000000, 0x00010000, 0x00000005
        assert_eq!(fold_addr(IpAddr::V6(v6)), 0x2001_0db8 ^ 0x0001_0000 ^ 5);
    }

    #[test]
    fn hash_32_takes_top_bits() {
        assert_eq!(hash_32(1, 8), GOLDEN_RATIO_32 >> 24);
        assert_eq!(hash_32(0, 8), 0);
        assert!(hash_32(u32::MAX, 4) < 16);
    }

    #[test]
    fn gcd_works() {
        assert_eq!(gcd(12, 18), 6);
        assert_eq!(gcd(0, 7), 7);
        assert_eq!(gcd(7, 0), 7);
        assert_eq!(gcd(0, 0), 0);
    }

    #[test]
    fn weighted_least_ties_and_skips() {
        let ds = dests(&[1, 0, 2, 2]);
        load(&ds[0], 1, 0); // 256/1
        load(&ds[2], 2, 0); // 512/2 = 256: tie with 0, first stays
        load(&ds[3], 2, 1); // 513/2
        assert_eq!(wlc(&ds), Some(0));
        ds[0].set_available(false);
        assert_eq!(wlc(&ds), Some(2), "weight 0 dest 1 never picked");
    }

    #[test]
    fn lblc_overload_rule() {
        let ds = dests(&[2, 4]);
        load(&ds[0], 3, 0);
        load(&ds[1], 2, 0);
        assert!(!lblc_overloaded(&ds[0], &ds), "nobody under half load");
        ds[1].unbind(true); // 1*2 < 4
        assert!(lblc_overloaded(&ds[0], &ds));
        assert!(!lblc_overloaded(&ds[1], &ds), "1 active <= weight 4");
    }
}
