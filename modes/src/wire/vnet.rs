//! The virtio-net header that prefixes every frame on a TAP opened with
//! `IFF_VNET_HDR`: [`VnetHdr`] with its flag and GSO-type constants.
//! Fields are little-endian (the vnet endianness of x86 hosts), not network
//! order. The legacy `struct virtio_net_hdr` is 10 bytes; the appliance
//! uses the 12-byte `virtio_net_hdr_v1` ([`VNET_HDR_LEN`]).

/// Header length the appliance configures (`virtio_net_hdr_v1`).
pub const VNET_HDR_LEN: usize = 12;
/// Length of the legacy `struct virtio_net_hdr` (no `num_buffers`).
pub const VNET_HDR_LEN_LEGACY: usize = 10;

/// Flag: the L4 checksum is partial; the device must finish it from
/// `csum_start`, storing at `csum_start + csum_offset`.
pub const NEEDS_CSUM: u8 = 1;
/// Flag: the checksum was already validated.
pub const DATA_VALID: u8 = 2;
/// Flag: `csum_start/offset` carry RSC coalescing info.
pub const RSC_INFO: u8 = 4;

/// GSO type: not a GSO frame.
pub const GSO_NONE: u8 = 0;
/// GSO type: TCP over IPv4 (TSO).
pub const GSO_TCPV4: u8 = 1;
/// GSO type: UDP fragmentation offload (legacy UFO).
pub const GSO_UDP: u8 = 3;
/// GSO type: TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;
/// GSO type: UDP segmentation offload (USO).
pub const GSO_UDP_L4: u8 = 5;
/// GSO type bit: ECN/CWR handling (OR-ed with a TCP type).
pub const GSO_ECN: u8 = 0x80;

/// The virtio-net header, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VnetHdr {
    /// [`NEEDS_CSUM`] | [`DATA_VALID`] | [`RSC_INFO`].
    pub flags: u8,
    /// One of the `GSO_*` types, possibly OR-ed with [`GSO_ECN`].
    pub gso_type: u8,
    /// Ethernet + IP + L4 header bytes (a hint).
    pub hdr_len: u16,
    /// Payload bytes per segment (MSS) for GSO frames.
    pub gso_size: u16,
    /// Offset in the Ethernet frame where checksumming starts.
    pub csum_start: u16,
    /// Offset after `csum_start` where the checksum is stored.
    pub csum_offset: u16,
    /// Merged rx buffers (12-byte header only; 0 on TAP).
    pub num_buffers: u16,
}

#[inline]
fn le16(buf: &[u8], off: usize) -> u16 {
    match buf.get(off..off + 2) {
        Some(&[a, b]) => u16::from_le_bytes([a, b]),
        _ => 0,
    }
}

#[inline]
fn put_le16(buf: &mut [u8], off: usize, v: u16) {
    if let Some([a, b]) = buf.get_mut(off..off + 2) {
        [*a, *b] = v.to_le_bytes();
    }
}

impl VnetHdr {
    /// Decodes a header: `buf` of 10 or 11 bytes is read as the legacy
    /// 10-byte header (`num_buffers` = 0), 12 bytes or more as the 12-byte
    /// one (extra bytes ignored). `None` if shorter than 10 bytes.
    #[inline]
    pub fn parse(buf: &[u8]) -> Option<VnetHdr> {
        if buf.len() < VNET_HDR_LEN_LEGACY {
            return None;
        }
        let flags = *buf.first()?;
        let gso_type = *buf.get(1)?;
        Some(VnetHdr {
            flags,
            gso_type,
            hdr_len: le16(buf, 2),
            gso_size: le16(buf, 4),
            csum_start: le16(buf, 6),
            csum_offset: le16(buf, 8),
            num_buffers: if buf.len() >= VNET_HDR_LEN {
                le16(buf, 10)
            } else {
                0
            },
        })
    }

    /// Encodes the header into `out`: 12 bytes if `out` has room, else the
    /// 10-byte legacy form (dropping `num_buffers`). Returns the bytes
    /// written (0, writing nothing, if `out` is shorter than 10).
    #[inline]
    pub fn write(&self, out: &mut [u8]) -> usize {
        let n = if out.len() >= VNET_HDR_LEN {
            VNET_HDR_LEN
        } else if out.len() >= VNET_HDR_LEN_LEGACY {
            VNET_HDR_LEN_LEGACY
        } else {
            return 0;
        };
        if let Some([f, g]) = out.get_mut(..2) {
            *f = self.flags;
            *g = self.gso_type;
        }
        put_le16(out, 2, self.hdr_len);
        put_le16(out, 4, self.gso_size);
        put_le16(out, 6, self.csum_start);
        put_le16(out, 8, self.csum_offset);
        if n == VNET_HDR_LEN {
            put_le16(out, 10, self.num_buffers);
        }
        n
    }

    /// True if [`NEEDS_CSUM`] is set.
    #[inline]
    pub const fn needs_csum(&self) -> bool {
        self.flags & NEEDS_CSUM != 0
    }

    /// True if [`DATA_VALID`] is set.
    #[inline]
    pub const fn data_valid(&self) -> bool {
        self.flags & DATA_VALID != 0
    }

    /// The GSO type without the [`GSO_ECN`] bit.
    #[inline]
    pub const fn gso_kind(&self) -> u8 {
        self.gso_type & !GSO_ECN
    }

    /// True if the [`GSO_ECN`] bit is set.
    #[inline]
    pub const fn gso_ecn(&self) -> bool {
        self.gso_type & GSO_ECN != 0
    }

    /// True for a GSO super-frame (GSO type other than [`GSO_NONE`]).
    #[inline]
    pub const fn is_gso(&self) -> bool {
        self.gso_kind() != GSO_NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_12_and_10() {
        let h = VnetHdr {
            flags: NEEDS_CSUM,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 1,
        };
        let mut b = [0u8; 12];
        assert_eq!(h.write(&mut b), 12);
        assert_eq!(b, [1, 0x81, 66, 0, 0xa8, 0x05, 34, 0, 16, 0, 1, 0]);
        assert_eq!(VnetHdr::parse(&b), Some(h));
        assert!(h.needs_csum() && !h.data_valid() && h.is_gso() && h.gso_ecn());
        assert_eq!(h.gso_kind(), GSO_TCPV4);
        let mut s = [0u8; 10];
        assert_eq!(h.write(&mut s), 10);
        assert_eq!(
            VnetHdr::parse(&s),
            Some(VnetHdr {
                num_buffers: 0,
                ..h
            })
        );
        assert_eq!(
            VnetHdr::parse(&b[..11]),
            Some(VnetHdr {
                num_buffers: 0,
                ..h
            })
        );
        assert_eq!(VnetHdr::parse(&b[..9]), None);
        assert_eq!(VnetHdr::parse(&[]), None);
        assert_eq!(h.write(&mut [0u8; 9]), 0);
        assert!(!VnetHdr::default().is_gso());
    }
}
