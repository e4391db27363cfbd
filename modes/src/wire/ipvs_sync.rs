//! IPVS connection synchronisation, protocol version 1 (the kernel's `ip_vs_sync.c`, UDP
//! port 8848, multicast 224.0.0.81): the message header view [`SyncMessage`] and the IPv4
//! connection entry [`SyncConn`] with [`SyncConn::emit`] / [`SyncConn::parse`], plus the
//! FullNAT option this project adds.
//!
//! Message header (8 bytes): reserved 0 | syncid | size (16 bits, the whole message) |
//! connection count | version 1 | 16 bits zero. Each entry (IPv4, 36 bytes before options):
//! type (0 = IPv4) | protocol | version (4 bits, 0) and size (12 bits, with options) | flags (32)
//! | state (16) | cport | vport | dport | fwmark (32) | timeout (32, seconds) | caddr | vaddr |
//! daddr, then options (type, length, data); entries start 4-byte aligned (the size excludes the
//! padding). Options whose type has [`OPT_F_PARAM`] set are optional: decoders that do not know
//! them skip them. The FullNAT local address and port travel in such an option,
//! [`OPT_FULLNAT`] (type 0x60: 0x40 | 0x20, length 6: LIP, local port).

use super::{get_u16, get_u32, get_u8, set_u16, set_u32, set_u8, Error};
use std::net::Ipv4Addr;

/// UDP port of the sync daemon.
pub const PORT: u16 = 8848;
/// Default multicast group.
pub const MCAST_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// Length of the message header.
pub const HEADER_LEN: usize = 8;
/// Length of an IPv4 entry without options.
pub const CONN_V4_LEN: usize = 36;
/// Protocol version in the header.
pub const VERSION: u8 = 1;
/// Flag on an option type: optional, skipped by decoders that do not know it.
pub const OPT_F_PARAM: u8 = 0x40;
/// The FullNAT option (optional): local address (4 bytes) and local port (2 bytes).
pub const OPT_FULLNAT: u8 = OPT_F_PARAM | 0x20;
/// Length of the FullNAT option's data.
pub const OPT_FULLNAT_LEN: u8 = 6;
/// Most connections one message counts (an 8-bit field).
pub const MAX_CONNS: usize = 255;

/// Connection flags (`IP_VS_CONN_F_*`): forwarding method in the low 3 bits.
pub mod flags {
    /// NAT (masquerading).
    pub const MASQ: u32 = 0x0000;
    /// IPIP tunnel.
    pub const TUNNEL: u32 = 0x0002;
    /// Direct routing.
    pub const DROUTE: u32 = 0x0003;
    /// FullNAT (DPVS's value).
    pub const FULLNAT: u32 = 0x0005;
    /// Mask of the forwarding method.
    pub const FWD_MASK: u32 = 0x0007;
    /// Created by sync.
    pub const SYNC: u32 = 0x0020;
    /// The client port is not known (templates).
    pub const NO_CPORT: u32 = 0x0800;
    /// A persistence template.
    pub const TEMPLATE: u32 = 0x1000;
    /// One-packet scheduling.
    pub const ONE_PACKET: u32 = 0x2000;
}

/// A view of a sync message (header and the entries after it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncMessage<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SyncMessage<T> {
    /// Wraps `buffer` without any check.
    pub fn new_unchecked(buffer: T) -> Self {
        SyncMessage { buffer }
    }

    /// Wraps after checking the header fits, version is 1 and reserved is 0 (else
    /// [`Error::Malformed`]), and the size field is within 8..=buffer length.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let m = Self::new_unchecked(buffer);
        let len = m.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if m.version() != VERSION || get_u8(m.buffer.as_ref(), 0) != 0 {
            return Err(Error::Malformed);
        }
        let size = usize::from(m.size());
        if size < HEADER_LEN {
            return Err(Error::Malformed);
        }
        if size > len {
            return Err(Error::Truncated);
        }
        Ok(m)
    }

    /// Sync id.
    pub fn syncid(&self) -> u8 {
        get_u8(self.buffer.as_ref(), 1)
    }

    /// Size of the whole message.
    pub fn size(&self) -> u16 {
        get_u16(self.buffer.as_ref(), 2)
    }

    /// Number of entries.
    pub fn count(&self) -> u8 {
        get_u8(self.buffer.as_ref(), 4)
    }

    /// Version (1).
    pub fn version(&self) -> u8 {
        get_u8(self.buffer.as_ref(), 5)
    }

    /// The entries, each parsed or the error that stopped the walk (an entry past the message
    /// or of an unknown version ends it, as in the kernel).
    pub fn conns(&self) -> ConnIter<'_> {
        let end = usize::from(self.size()).min(self.buffer.as_ref().len());
        ConnIter {
            buf: self.buffer.as_ref().get(..end).unwrap_or_default(),
            off: HEADER_LEN,
            left: self.count(),
        }
    }
}

/// The entries of a message.
#[derive(Debug, Clone)]
pub struct ConnIter<'a> {
    buf: &'a [u8],
    off: usize,
    left: u8,
}

impl Iterator for ConnIter<'_> {
    type Item = Result<SyncConn, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let rest = self.buf.get(self.off..).unwrap_or_default();
        match SyncConn::parse(rest) {
            Ok((c, size)) => {
                self.off += (size + 3) & !3;
                Some(Ok(c))
            }
            Err(e) => {
                self.left = 0;
                Some(Err(e))
            }
        }
    }
}

/// One IPv4 connection (or template) as synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncConn {
    /// IP protocol.
    pub protocol: u8,
    /// `IP_VS_CONN_F_*` flags.
    pub flags: u32,
    /// State number (the IPVS TCP state table's; UDP 0).
    pub state: u16,
    /// Client port.
    pub cport: u16,
    /// Virtual port.
    pub vport: u16,
    /// Real server port.
    pub dport: u16,
    /// Firewall mark.
    pub fwmark: u32,
    /// Timeout, seconds.
    pub timeout: u32,
    /// Client address.
    pub caddr: Ipv4Addr,
    /// Virtual address.
    pub vaddr: Ipv4Addr,
    /// Real server address.
    pub daddr: Ipv4Addr,
    /// FullNAT local address and port.
    pub fullnat: Option<(Ipv4Addr, u16)>,
}

impl SyncConn {
    /// Length on the wire (without alignment padding).
    pub fn wire_len(&self) -> usize {
        CONN_V4_LEN
            + if self.fullnat.is_some() {
                2 + usize::from(OPT_FULLNAT_LEN)
            } else {
                0
            }
    }

    /// Length including the padding to 4 bytes.
    pub fn padded_len(&self) -> usize {
        (self.wire_len() + 3) & !3
    }

    /// Writes the entry at the start of `buf` (padding zeroed); returns the padded length, or
    /// `None` if `buf` is too short.
    pub fn emit(&self, buf: &mut [u8]) -> Option<usize> {
        let n = self.padded_len();
        let b = buf.get_mut(..n)?;
        b.fill(0);
        set_u8(b, 0, 0);
        set_u8(b, 1, self.protocol);
        set_u16(b, 2, self.wire_len() as u16 & 0x0fff);
        set_u32(b, 4, self.flags);
        set_u16(b, 8, self.state);
        set_u16(b, 10, self.cport);
        set_u16(b, 12, self.vport);
        set_u16(b, 14, self.dport);
        set_u32(b, 16, self.fwmark);
        set_u32(b, 20, self.timeout);
        set_u32(b, 24, u32::from(self.caddr));
        set_u32(b, 28, u32::from(self.vaddr));
        set_u32(b, 32, u32::from(self.daddr));
        if let Some((lip, lport)) = self.fullnat {
            set_u8(b, 36, OPT_FULLNAT);
            set_u8(b, 37, OPT_FULLNAT_LEN);
            set_u32(b, 38, u32::from(lip));
            set_u16(b, 42, lport);
        }
        Some(n)
    }

    /// Parses one entry at the start of `buf`: the entry and its size (without padding).
    /// IPv6 entries, an entry version other than 0, a size beyond `buf`, a mandatory option
    /// this decoder does not know or a malformed option are errors; optional unknown options
    /// are skipped.
    pub fn parse(buf: &[u8]) -> Result<(SyncConn, usize), Error> {
        if buf.len() < CONN_V4_LEN {
            return Err(Error::Truncated);
        }
        let ver_size = get_u16(buf, 2);
        let size = usize::from(ver_size & 0x0fff);
        if get_u8(buf, 0) != 0 || ver_size >> 12 != 0 || size < CONN_V4_LEN {
            return Err(Error::Malformed);
        }
        if size > buf.len() {
            return Err(Error::Truncated);
        }
        let mut c = SyncConn {
            protocol: get_u8(buf, 1),
            flags: get_u32(buf, 4),
            state: get_u16(buf, 8),
            cport: get_u16(buf, 10),
            vport: get_u16(buf, 12),
            dport: get_u16(buf, 14),
            fwmark: get_u32(buf, 16),
            timeout: get_u32(buf, 20),
            caddr: Ipv4Addr::from(get_u32(buf, 24)),
            vaddr: Ipv4Addr::from(get_u32(buf, 28)),
            daddr: Ipv4Addr::from(get_u32(buf, 32)),
            fullnat: None,
        };
        let mut off = CONN_V4_LEN;
        while off < size {
            if off + 2 > size {
                return Err(Error::Malformed);
            }
            let (kind, len) = (get_u8(buf, off), usize::from(get_u8(buf, off + 1)));
            let data = off + 2;
            if len == 0 || data + len > size {
                return Err(Error::Malformed);
            }
            if kind == OPT_FULLNAT && len == usize::from(OPT_FULLNAT_LEN) {
                c.fullnat = Some((Ipv4Addr::from(get_u32(buf, data)), get_u16(buf, data + 4)));
            } else if kind & OPT_F_PARAM == 0 {
                return Err(Error::Malformed);
            }
            off = data + len;
        }
        Ok((c, size))
    }
}

/// Builds messages in a caller's buffer: [`MessageBuilder::push`] until it refuses, then
/// [`MessageBuilder::finish`].
#[derive(Debug)]
pub struct MessageBuilder<'a> {
    buf: &'a mut [u8],
    len: usize,
    count: u8,
    syncid: u8,
}

impl<'a> MessageBuilder<'a> {
    /// A message for `syncid` in `buf` (its length is the most the message may take, e.g. the
    /// path MTU less IP and UDP headers).
    pub fn new(buf: &'a mut [u8], syncid: u8) -> Self {
        MessageBuilder {
            buf,
            len: HEADER_LEN,
            count: 0,
            syncid,
        }
    }

    /// Adds `c`; `false` when the message is full (size or 255 entries).
    pub fn push(&mut self, c: &SyncConn) -> bool {
        if usize::from(self.count) >= MAX_CONNS {
            return false;
        }
        let Some(rest) = self.buf.get_mut(self.len..) else {
            return false;
        };
        match c.emit(rest) {
            Some(n) => {
                self.len += n;
                self.count += 1;
                true
            }
            None => false,
        }
    }

    /// Entries so far.
    pub fn count(&self) -> u8 {
        self.count
    }

    /// Writes the header; returns the message length (0 when the buffer cannot hold a header).
    pub fn finish(self) -> usize {
        let Some(h) = self.buf.get_mut(..HEADER_LEN) else {
            return 0;
        };
        h.fill(0);
        set_u8(h, 1, self.syncid);
        set_u16(h, 2, self.len as u16);
        set_u8(h, 4, self.count);
        set_u8(h, 5, VERSION);
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(fullnat: bool) -> SyncConn {
        SyncConn {
            protocol: 6,
            flags: if fullnat { flags::FULLNAT } else { flags::MASQ },
            state: 1,
            cport: 40000,
            vport: 80,
            dport: 8080,
            fwmark: 0,
            timeout: 900,
            caddr: Ipv4Addr::new(10, 0, 0, 2),
            vaddr: Ipv4Addr::new(192, 0, 2, 1),
            daddr: Ipv4Addr::new(172, 16, 0, 2),
            fullnat: fullnat.then_some((Ipv4Addr::new(172, 16, 0, 100), 5001)),
        }
    }

    #[test]
    fn entry_layout_is_the_kernels() {
        let mut b = [0xffu8; 64];
        assert_eq!(conn(false).emit(&mut b), Some(36));
        assert_eq!(
            &b[..36],
            &[
                0, 6, 0, 36, 0, 0, 0, 0, 0, 1, 0x9c, 0x40, 0, 80, 0x1f, 0x90, 0, 0, 0, 0, 0, 0,
                0x03, 0x84, 10, 0, 0, 2, 192, 0, 2, 1, 172, 16, 0, 2
            ]
        );
        assert_eq!(SyncConn::parse(&b).unwrap(), (conn(false), 36));
        let n = conn(true).emit(&mut b).unwrap();
        assert_eq!(n, 44);
        assert_eq!(&b[2..4], &[0, 44]);
        assert_eq!(&b[36..44], &[0x60, 6, 172, 16, 0, 100, 0x13, 0x89]);
        assert_eq!(SyncConn::parse(&b).unwrap(), (conn(true), 44));
    }

    #[test]
    fn options_optional_skipped_mandatory_refused() {
        let mut b = [0u8; 48];
        conn(false).emit(&mut b).unwrap();
        // An unknown optional option (0x40 | 5) of 4 bytes: skipped.
        b[3] = 42;
        b[36..42].copy_from_slice(&[0x45, 4, 1, 2, 3, 4]);
        assert_eq!(SyncConn::parse(&b).unwrap().0, conn(false));
        // The same type without the optional flag: refused.
        b[36] = 0x05;
        assert_eq!(SyncConn::parse(&b).unwrap_err(), Error::Malformed);
        // Zero length, or past the entry: refused.
        b[36..38].copy_from_slice(&[0x45, 0]);
        assert_eq!(SyncConn::parse(&b).unwrap_err(), Error::Malformed);
        b[36..38].copy_from_slice(&[0x45, 9]);
        assert_eq!(SyncConn::parse(&b).unwrap_err(), Error::Malformed);
        // IPv6 type, or a version nibble: refused.
        let mut v6 = [0u8; 40];
        conn(false).emit(&mut v6).unwrap();
        v6[0] = 1;
        assert_eq!(SyncConn::parse(&v6).unwrap_err(), Error::Malformed);
        v6[0] = 0;
        v6[2] = 0x10;
        assert_eq!(SyncConn::parse(&v6).unwrap_err(), Error::Malformed);
        assert_eq!(SyncConn::parse(&v6[..30]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn messages_batch_up_to_the_buffer() {
        let mut buf = [0u8; 8 + 36 + 44 + 10];
        let mut m = MessageBuilder::new(&mut buf, 7);
        assert!(m.push(&conn(false)));
        assert!(m.push(&conn(true)));
        assert!(!m.push(&conn(false)), "full");
        let n = m.finish();
        assert_eq!(n, 88);
        assert_eq!(&buf[..8], &[0, 7, 0, 88, 2, 1, 0, 0]);
        let msg = SyncMessage::new_checked(&buf[..n]).unwrap();
        assert_eq!((msg.syncid(), msg.count(), msg.size()), (7, 2, 88));
        let got: Vec<_> = msg.conns().collect::<Result<_, _>>().unwrap();
        assert_eq!(got, vec![conn(false), conn(true)]);
    }

    #[test]
    fn bad_messages() {
        let mut buf = [0u8; 200];
        let mut m = MessageBuilder::new(&mut buf, 1);
        m.push(&conn(false));
        let n = m.finish();
        assert_eq!(
            SyncMessage::new_checked(&buf[..7]).unwrap_err(),
            Error::Truncated
        );
        let mut v = buf;
        v[5] = 0;
        assert_eq!(
            SyncMessage::new_checked(&v[..n]).unwrap_err(),
            Error::Malformed
        );
        let mut r = buf;
        r[0] = 1;
        assert_eq!(
            SyncMessage::new_checked(&r[..n]).unwrap_err(),
            Error::Malformed
        );
        assert_eq!(
            SyncMessage::new_checked(&buf[..n - 1]).unwrap_err(),
            Error::Truncated
        );
        // A count larger than the entries: the walk ends with an error.
        let mut c = buf;
        c[4] = 3;
        let m = SyncMessage::new_checked(&c[..n]).unwrap();
        let got: Vec<_> = m.conns().collect();
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok() && got[1].is_err());
        // Arbitrary bytes never panic.
        let mut seed = 3u32;
        for len in 0..120 {
            let b: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            if let Ok(m) = SyncMessage::new_checked(&b[..]) {
                let _ = m.conns().count();
            }
            let _ = SyncConn::parse(&b);
        }
    }
}
