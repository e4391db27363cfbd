//! Internet checksum arithmetic (RFC 1071): byte sums, folding, the IPv4
//! and IPv6 (RFC 8200 §8.1) pseudo-headers, RFC 1624 incremental updates
//! (16-bit fields, 4-byte and 16-byte addresses) for full checksums and their
//! inverted-sense variants for *partial* checksums (virtio `NEEDS_CSUM`: the
//! L4 checksum field holds the uncomplemented pseudo-header sum and the
//! device finishes it) and the UDP zero rules (over IPv6 a UDP checksum of
//! 0 is invalid, so the `udp6_*` updates never keep it). Finishing a partial checksum
//! in a frame is [`crate::offload::complete_partial`].
//!
//! Vocabulary: a *sum* is a folded, uncomplemented one's-complement sum; a
//! *checksum* is the complemented value stored in a header.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Folds a wide accumulator of 16-bit one's-complement words to 16 bits
/// (end-around carry). Not complemented.
#[inline]
pub fn fold(acc: u64) -> u16 {
    // Branch-free end-around-carry additions, 64 → 32 → 16 bits. Each step
    // keeps the value mod 2^16 − 1 (a divisor of 2^32 − 1) and never turns a
    // non-zero value into 0, so the result is the unique value in 1..=0xffff
    // congruent to a non-zero `acc` (0 for 0). When a step carries, its
    // wrapped sum is at most 2^k − 2, so adding the carry cannot overflow.
    let (s, c) = (acc as u32).overflowing_add((acc >> 32) as u32);
    let s = s + u32::from(c);
    let (t, c) = (s as u16).overflowing_add((s >> 16) as u16);
    t + u16::from(c)
}

/// One's-complement addition of two sums.
#[inline]
pub fn add(a: u16, b: u16) -> u16 {
    fold(u64::from(a) + u64::from(b))
}

/// Folded one's-complement sum of `data` taken as big-endian 16-bit words
/// (an odd trailing byte is padded with a zero low byte).
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        if let Ok(w) = <[u8; 8]>::try_from(c) {
            // 2^64 ≡ 1 (mod 2^16 - 1), so a 64-bit end-around carry keeps
            // the one's-complement value.
            let (s, o) = acc.overflowing_add(u64::from_be_bytes(w));
            acc = s + u64::from(o);
        }
    }
    // The remainder starts at a multiple of 8, so its 16-bit words sit at
    // even offsets: add them one by one (an odd last byte is the high half
    // of a zero-padded word).
    let mut tail: u64 = 0;
    let mut pairs = chunks.remainder().chunks_exact(2);
    for w in &mut pairs {
        if let [a, b] = *w {
            tail += u64::from(u16::from_be_bytes([a, b]));
        }
    }
    if let [b] = *pairs.remainder() {
        tail += u64::from(b) << 8;
    }
    let (s, o) = acc.overflowing_add(tail);
    fold(s + u64::from(o))
}

/// [`sum`] of exactly 20 bytes (an IPv4 header without options), unrolled:
/// two 64-bit words and a 32-bit one added with end-around carry in native
/// byte order (the one's-complement sum commutes with byte swapping,
/// RFC 1071 §2(B)), folded, then put in network order.
#[inline]
pub fn sum20(data: &[u8; 20]) -> u16 {
    let [a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7, c0, c1, c2, c3] = *data;
    let a = u64::from_ne_bytes([a0, a1, a2, a3, a4, a5, a6, a7]);
    let b = u64::from_ne_bytes([b0, b1, b2, b3, b4, b5, b6, b7]);
    let c = u64::from(u32::from_ne_bytes([c0, c1, c2, c3]));
    let (s, o1) = a.overflowing_add(b);
    // c + o1 ≤ 2^32; on a carry out of this addition s is below 2^32, so the
    // end-around carry cannot overflow.
    let (s, o2) = s.overflowing_add(c + u64::from(o1));
    u16::from_be_bytes(fold(s + u64::from(o2)).to_ne_bytes())
}

/// The Internet checksum of `data` as it is stored: `!sum(data)`.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !sum(data)
}

/// Folded sum of the IPv4 pseudo-header (source, destination, zero,
/// protocol, L4 length). This is also exactly what a partial (`NEEDS_CSUM`)
/// TCP/UDP checksum field holds.
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4_len: u16) -> u16 {
    fold(
        u64::from(u32::from(src))
            + u64::from(u32::from(dst))
            + u64::from(proto)
            + u64::from(l4_len),
    )
}

/// Full TCP/UDP checksum over IPv4 of a whole L4 `segment` (its checksum
/// field included as it is; zero it first to compute a fresh one). Does not
/// apply the UDP zero rule (see [`udp_finish`]). `segment` longer than
/// 65535 bytes is not an IPv4 segment; its length is truncated.
#[inline]
pub fn l4_checksum_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    !add(
        pseudo_header_v4(src, dst, proto, segment.len() as u16),
        sum(segment),
    )
}

/// Unfolded sum of the eight 16-bit words of an IPv6 address.
#[inline(always)]
fn words128(a: Ipv6Addr) -> u64 {
    a.segments().iter().map(|&w| u64::from(w)).sum()
}

/// Folded sum of the IPv6 pseudo-header (RFC 8200 §8.1: source,
/// destination, 32-bit upper-layer length, three zero bytes, next header).
/// `next_header` is the upper-layer protocol (TCP, UDP, ICMPv6), not the
/// first extension header, and `l4_len` the upper-layer packet length
/// (extension headers excluded). Also what a partial (`NEEDS_CSUM`)
/// TCP/UDP checksum field holds over IPv6.
#[inline]
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, l4_len: u32) -> u16 {
    fold(words128(src) + words128(dst) + u64::from(l4_len) + u64::from(next_header))
}

/// Full upper-layer checksum over IPv6 of a whole `segment` (TCP, UDP or
/// ICMPv6, its checksum field included as it is; zero it first to compute a
/// fresh one). Does not apply the UDP zero rule (see [`udp_finish`]).
/// `segment` longer than `u32::MAX` bytes has its length truncated.
#[inline]
pub fn l4_checksum_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, segment: &[u8]) -> u16 {
    !add(
        pseudo_header_v6(src, dst, next_header, segment.len() as u32),
        sum(segment),
    )
}

/// The unfolded RFC 1624 delta `~m + m'` of a 16-bit field changing from `old` to `new`.
/// Deltas of several fields add up; `!fold(!HC + deltas)` is the updated checksum.
#[inline(always)]
pub fn delta16(old: u16, new: u16) -> u64 {
    u64::from(!old) + u64::from(new)
}

/// [`delta16`] of a 32-bit field (an address). The field enters whole: 2^16 ≡ 1
/// (mod 2^16 − 1) makes it congruent to the sum of its two 16-bit words, and [`fold`] gives
/// the one value in 1..=0xffff of a non-zero class, so the folded result is the same.
#[inline(always)]
pub fn delta32(old: u32, new: u32) -> u64 {
    u64::from(!old) + u64::from(new)
}

/// [`delta16`] of a 16-byte field (an IPv6 address): the eight word deltas
/// added, unfolded (at most 8 × 0x1fffe, far from overflowing a `u64`).
#[inline(always)]
pub fn delta128(old: Ipv6Addr, new: Ipv6Addr) -> u64 {
    old.segments()
        .iter()
        .zip(new.segments().iter())
        .map(|(&o, &n)| delta16(o, n))
        .sum()
}

/// RFC 1624 eqn. 3 for one 16-bit field: `HC' = ~(~HC + ~m + m')`.
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!csum) + delta16(old, new))
}

/// RFC 1624 eqn. 3 for a 32-bit field (two 16-bit words), e.g. an address.
#[inline]
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    !fold(u64::from(!csum) + delta32(old, new))
}

/// RFC 1624 eqn. 3 for a 16-byte field, an IPv6 address (eight 16-bit
/// words).
#[inline]
pub fn update128(csum: u16, old: Ipv6Addr, new: Ipv6Addr) -> u16 {
    !fold(u64::from(!csum) + delta128(old, new))
}

/// Update of a *partial* checksum field (the uncomplemented pseudo-header
/// sum) for a 16-bit change inside the pseudo-header:
/// `P' = ~update16(~P, old, new)`.
#[inline]
pub fn update16_partial(partial: u16, old: u16, new: u16) -> u16 {
    !update16(!partial, old, new)
}

/// Update of a *partial* checksum field for a 32-bit change (an address):
/// `P' = ~update32(~P, old, new)`.
#[inline]
pub fn update32_partial(partial: u16, old: u32, new: u32) -> u16 {
    !update32(!partial, old, new)
}

/// Update of a *partial* checksum field for a 16-byte change (an IPv6
/// address in the pseudo-header): `P' = ~update128(~P, old, new)`.
#[inline]
pub fn update128_partial(partial: u16, old: Ipv6Addr, new: Ipv6Addr) -> u16 {
    !update128(!partial, old, new)
}

/// [`update16`] with the UDP rules: 0 ("no checksum") stays 0, and a
/// result of 0 is sent as `0xffff`.
#[inline]
pub fn udp_update16(csum: u16, old: u16, new: u16) -> u16 {
    if csum == 0 {
        0
    } else {
        udp_finish(update16(csum, old, new))
    }
}

/// [`update32`] with the UDP rules (see [`udp_update16`]).
#[inline]
pub fn udp_update32(csum: u16, old: u32, new: u32) -> u16 {
    if csum == 0 {
        0
    } else {
        udp_finish(update32(csum, old, new))
    }
}

/// [`update16`] for UDP over IPv6, where a checksum is mandatory
/// (RFC 8200 §8.1): a stored 0 is invalid and is updated like any other
/// value (the caller should have dropped the datagram), and a result of 0
/// is sent as `0xffff`.
#[inline]
pub fn udp6_update16(csum: u16, old: u16, new: u16) -> u16 {
    udp_finish(update16(csum, old, new))
}

/// [`update128`] for UDP over IPv6 (see [`udp6_update16`]).
#[inline]
pub fn udp6_update128(csum: u16, old: Ipv6Addr, new: Ipv6Addr) -> u16 {
    udp_finish(update128(csum, old, new))
}

/// Maps a computed UDP checksum of 0 to `0xffff` (0 means "none").
#[inline]
pub fn udp_finish(csum: u16) -> u16 {
    if csum == 0 {
        0xffff
    } else {
        csum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slow reference: plain 16-bit word sum.
    fn naive_sum(data: &[u8]) -> u16 {
        let mut acc: u64 = 0;
        for pair in data.chunks(2) {
            let hi = u64::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |&b| u64::from(b));
            acc += hi | lo;
        }
        fold(acc)
    }

    #[test]
    fn sum_matches_naive_for_all_lengths() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 13) as u8 | 0x80).collect();
        for len in 0..data.len() {
            assert_eq!(sum(&data[..len]), naive_sum(&data[..len]), "len {len}");
        }
        let ff = vec![0xffu8; 70_000];
        assert_eq!(sum(&ff), naive_sum(&ff));
    }

    #[test]
    fn sum20_matches_sum() {
        let mut b = [0u8; 20];
        for seed in 0..2000u32 {
            for (i, x) in b.iter_mut().enumerate() {
                *x = (seed.wrapping_mul(2_654_435_761).rotate_left(i as u32) >> 7) as u8;
            }
            if seed % 7 == 0 {
                b = [0xff; 20];
            }
            if seed % 11 == 0 {
                b = [0; 20];
            }
            assert_eq!(sum20(&b), sum(&b), "{b:?}");
        }
    }

    #[test]
    fn fold_extremes() {
        assert_eq!(fold(0), 0);
        assert_eq!(fold(0xffff), 0xffff);
        assert_eq!(fold(0x1_0000), 1);
        assert_eq!(fold(0x1_ffff), 1);
        assert_eq!(fold(u64::MAX), 0xffff);
        assert_eq!(fold(0xffff_ffff), 0xffff);
        assert_eq!(fold(0x1_0000_0000), 1);
        for x in [0x2_fffe_u64, 0x1234_5678_9abc_def0, 0xffff_0000_ffff_0001] {
            assert_eq!(u64::from(fold(x)) % 0xffff, x % 0xffff);
        }
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3: bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
        assert_eq!(
            sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
    }

    #[test]
    fn rfc1624_example() {
        // RFC 1624 §4: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 gives 0x0000.
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn partial_update_tracks_pseudo_header() {
        let (a, b, c) = (
            Ipv4Addr::new(10, 1, 2, 3),
            Ipv4Addr::new(192, 168, 7, 9),
            Ipv4Addr::new(172, 16, 255, 1),
        );
        let p = pseudo_header_v4(a, b, 6, 1500);
        let p2 = update32_partial(p, u32::from(b), u32::from(c));
        assert_eq!(p2, pseudo_header_v4(a, c, 6, 1500));
        let p3 = update16_partial(p2, 1500, 40);
        assert_eq!(p3, pseudo_header_v4(a, c, 6, 40));
    }

    #[test]
    fn pseudo_header_v6_matches_byte_sum() {
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let b: Ipv6Addr = "fe80::ffff:1:2:3".parse().unwrap();
        for (len, nh) in [(0u32, 6u8), (20, 17), (70_000, 58), (u32::MAX, 6)] {
            let mut ph = Vec::new();
            ph.extend_from_slice(&a.octets());
            ph.extend_from_slice(&b.octets());
            ph.extend_from_slice(&len.to_be_bytes());
            ph.extend_from_slice(&[0, 0, 0, nh]);
            assert_eq!(pseudo_header_v6(a, b, nh, len), sum(&ph), "{len} {nh}");
        }
    }

    #[test]
    fn update128_full_and_partial_track_recomputation() {
        let (a, b, c) = (
            "2001:db8::1".parse::<Ipv6Addr>().unwrap(),
            "2001:db8:ffff::ffff".parse::<Ipv6Addr>().unwrap(),
            "::".parse::<Ipv6Addr>().unwrap(),
        );
        let seg = [0x12u8, 0x34, 0, 80, 0, 0, 0, 1, 0xff, 0xfe, 7];
        let full = l4_checksum_v6(a, b, 6, &seg);
        assert_eq!(update128(full, b, c), l4_checksum_v6(a, c, 6, &seg));
        assert_eq!(update128(full, a, a), full);
        let p = pseudo_header_v6(a, b, 6, 1500);
        assert_eq!(update128_partial(p, b, c), pseudo_header_v6(a, c, 6, 1500));
        assert_eq!(update128_partial(p, a, c), pseudo_header_v6(c, b, 6, 1500));
    }

    #[test]
    fn udp6_rules_never_keep_zero() {
        // The RFC 1624 example yields 0: over IPv6 it is sent as 0xffff,
        // and a stored 0 is updated, not kept.
        assert_eq!(udp6_update16(0xdd2f, 0x5555, 0x3285), 0xffff);
        assert_ne!(udp6_update16(0, 1, 2), 0);
        let (a, b) = (Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
        assert_eq!(udp6_update128(0xfffe, a, b), 0xffff);
        assert_ne!(udp6_update128(0, b, a), 0);
    }

    #[test]
    fn udp_zero_rules() {
        assert_eq!(udp_update16(0, 1, 2), 0);
        assert_eq!(udp_update32(0, 1, 2), 0);
        // 0xdd2f -> 0x0000 in the RFC example; UDP must send 0xffff.
        assert_eq!(udp_update16(0xdd2f, 0x5555, 0x3285), 0xffff);
        assert_eq!(udp_finish(0), 0xffff);
        assert_eq!(udp_finish(5), 5);
    }
}
