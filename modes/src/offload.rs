//! What virtio-net offloads leave for the device to do, done in software when a frame must
//! leave without them: [`complete_partial`] finishes a partial (`NEEDS_CSUM`) checksum in an
//! Ethernet frame. (GSO segmentation is [`crate::gso`].)

use crate::checksum::{checksum, udp_finish};
use crate::wire::{ethernet, get_u16, set_u16};

/// End of the IP packet inside an Ethernet frame: the IPv4 total length or
/// IPv6 payload length when they fit the frame, the frame end for other
/// ethertypes, `None` when the length field overruns the frame.
fn ip_end(frame: &[u8]) -> Option<usize> {
    const L3: usize = ethernet::HEADER_LEN;
    match get_u16(frame, ethernet::field::ETHERTYPE) {
        ethernet::ETHERTYPE_IPV4 if frame.len() >= L3 + 20 => {
            let end = L3 + usize::from(get_u16(frame, L3 + 2));
            (end <= frame.len()).then_some(end)
        }
        ethernet::ETHERTYPE_IPV6 if frame.len() >= L3 + 40 => {
            let end = L3 + 40 + usize::from(get_u16(frame, L3 + 4));
            (end <= frame.len()).then_some(end)
        }
        _ => Some(frame.len()),
    }
}

/// Finishes a partial checksum in software, as a device would for
/// `NEEDS_CSUM`: sums the frame from `csum_start` (an offset in the
/// Ethernet frame) to the end of the IP packet (Ethernet padding excluded),
/// the field at `csum_start + csum_offset` included as it is, and stores the
/// complement there (0 is stored as `0xffff`, like the kernel). Returns
/// false, leaving the frame untouched, if the offsets do not fit.
pub fn complete_partial(frame: &mut [u8], csum_start: usize, csum_offset: usize) -> bool {
    let Some(end) = ip_end(frame) else {
        return false;
    };
    let Some(field) = csum_start.checked_add(csum_offset) else {
        return false;
    };
    if field.saturating_add(2) > end {
        return false;
    }
    let Some(region) = frame.get(csum_start..end) else {
        return false;
    };
    let c = udp_finish(checksum(region));
    set_u16(frame, field, c);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_partial_rejects_bad_offsets() {
        let mut f = [0u8; 60];
        f[12] = 0x08;
        f[14] = 0x45;
        f[17] = 40; // total length 40 -> IP end at 54
        assert!(!complete_partial(&mut f, 34, 19)); // field ends at 55 > 54
        assert!(!complete_partial(&mut f, usize::MAX, 16));
        assert!(!complete_partial(&mut f, 55, 0));
        assert!(complete_partial(&mut f, 34, 16));
        f[17] = 100; // overruns the frame
        assert!(!complete_partial(&mut f, 34, 16));
    }
}
