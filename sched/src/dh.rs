//! Destination hashing (`dh`, kernel `ip_vs_dh.c`): a static 256-bucket
//! table filled round-robin with the destinations in list order (bucket `i`
//! holds destination `i mod n`, whatever its weight). A connection goes to
//! the bucket `(fold(dst_addr) * 2654435761) & 255`; IPv6 addresses are
//! folded by XOR of their four words. If that destination is not usable the
//! connection gets no destination (there is no fallback in dh).

use std::fmt;
use std::sync::Arc;

use crate::common::{fold_addr, KNUTH_MUL};
use crate::{Dest, Input, Scheduler};

/// Number of buckets (`IP_VS_DH_TAB_BITS` = 8).
const TAB_SIZE: usize = 256;

/// The `dh` scheduler: its bucket table.
pub struct Dh {
    /// Dest index per bucket; empty when there are no dests.
    table: Vec<u32>,
}

impl Dh {
    /// Build the bucket table for `dests`.
    pub fn new(dests: &[Arc<Dest>]) -> Self {
        let n = dests.len();
        let table = if n == 0 {
            Vec::new()
        } else {
            (0..TAB_SIZE).map(|i| (i % n) as u32).collect()
        };
        Dh { table }
    }

    /// The bucket of a destination address.
    fn bucket(addr: std::net::IpAddr) -> usize {
        (fold_addr(addr).wrapping_mul(KNUTH_MUL) as usize) & (TAB_SIZE - 1)
    }
}

impl fmt::Debug for Dh {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dh")
            .field("buckets", &self.table.len())
            .finish()
    }
}

impl Scheduler for Dh {
    fn name(&self) -> &'static str {
        "dh"
    }

    fn schedule(&self, dests: &[Arc<Dest>], input: &Input) -> Option<usize> {
        let i = *self.table.get(Self::bucket(input.dst))? as usize;
        dests.get(i).filter(|d| d.is_usable()).map(|_| i)
    }

    fn rebuild(&self, dests: &[Arc<Dest>]) -> Box<dyn Scheduler> {
        Box::new(Dh::new(dests))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::net::IpAddr;

    #[test]
    fn bucket_is_knuth_hash_of_destination() {
        // 0x0a000001 * 2654435761 = ...0xb1 in the low byte (0x01 * 0xb1).
        assert_eq!(Dh::bucket("10.0.0.1".parse().unwrap()), 0xb1);
        assert_eq!(Dh::bucket("0.0.0.0".parse().unwrap()), 0);
        let v6: IpAddr = "::1".parse().unwrap();
        assert_eq!(Dh::bucket(v6), 0xb1, "v6 folds to 1");
    }

    #[test]
    fn same_destination_same_server_source_ignored() {
        let ds = dests(&[1, 1, 1]);
        let s = Dh::new(&ds);
        let a = s.schedule(&ds, &to_dst([203, 0, 113, 7], 0)).unwrap();
        let mut other_src = to_dst([203, 0, 113, 7], 0);
        other_src.src = "198.51.100.99".parse().unwrap();
        other_src.src_port = 1;
        assert_eq!(s.schedule(&ds, &other_src), Some(a));
        // bucket b -> dest b % 3
        let b = Dh::bucket("203.0.113.7".parse().unwrap());
        assert_eq!(a, b % 3);
    }

    #[test]
    fn unusable_dest_means_no_destination() {
        let ds = dests(&[1, 1]);
        let s = Dh::new(&ds);
        let inp = to_dst([10, 0, 0, 1], 0); // bucket 0xb1 = 177 -> dest 1
        assert_eq!(s.schedule(&ds, &inp), Some(1));
        ds[1].set_weight(0);
        assert_eq!(s.schedule(&ds, &inp), None);
        ds[1].set_weight(1);
        ds[1].set_thresholds(1, 0);
        ds[1].bind(false);
        assert_eq!(s.schedule(&ds, &inp), None);
        ds[1].set_thresholds(0, 0);
        ds[1].set_available(false);
        assert_eq!(s.schedule(&ds, &inp), None);
        let inp0 = to_dst([10, 0, 0, 2], 0); // 0x02 * 0xb1 = 0x162 -> 0x62 -> dest 0
        assert_eq!(s.schedule(&ds, &inp0), Some(0));
    }

    #[test]
    fn weights_do_not_change_the_table() {
        let a = dests(&[1, 1, 1]);
        let b = dests(&[9, 1, 5]);
        assert_eq!(Dh::new(&a).table, Dh::new(&b).table);
    }
}
