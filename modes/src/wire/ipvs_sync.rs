//! IPVS connection synchronisation, protocol version 1 (the kernel's `ip_vs_sync.c`, UDP
//! port 8848, multicast 224.0.0.81): the message header view [`SyncMessage`] and the IPv4 or
//! IPv6 connection entry [`SyncConn`] with [`SyncConn::emit`] / [`SyncConn::parse`], plus the
//! FullNAT option this project adds.
//!
//! Message header (8 bytes): reserved 0 | syncid | size (16 bits, the whole message) |
//! connection count | version 1 | 16 bits zero. Each entry (IPv4 36 bytes, IPv6 72 bytes before
//! options): type (0 = IPv4, [`TYPE_INET6`] = IPv6) | protocol | version (4 bits, 0) and size
//! (12 bits, with options) | flags (32) | state (16) | cport | vport | dport | fwmark (32) |
//! timeout (32, seconds) | caddr | vaddr | daddr (4 or 16 bytes each, all of the type's family),
//! then options (type, length, data); entries start 4-byte aligned (the size excludes the
//! padding). Options whose type has [`OPT_F_PARAM`] set are optional: decoders that do not know
//! them skip them. The FullNAT local address and port travel in such an option,
//! [`OPT_FULLNAT`] (type 0x60: 0x40 | 0x20, length 6 (IPv4) or 18 (IPv6): LIP, local port).
//!
//! One type bit covers all three addresses, so the format cannot carry a connection whose real
//! server is of another family than its client and virtual address (NAT64):
//! [`SyncConn::family`] says so and [`SyncConn::emit`] refuses it.

use super::{get_u16, get_u32, get_u8, set_u16, set_u32, set_u8, Error};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// UDP port of the sync daemon.
pub const PORT: u16 = 8848;
/// Default multicast group.
pub const MCAST_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 81);
/// Length of the message header.
pub const HEADER_LEN: usize = 8;
/// Length of an IPv4 entry without options.
pub const CONN_V4_LEN: usize = 36;
/// Length of an IPv6 entry without options.
pub const CONN_V6_LEN: usize = 72;
/// Entry type of an IPv6 entry (`STYPE_F_INET6`); 0 is IPv4.
pub const TYPE_INET6: u8 = 1;
/// Protocol version in the header.
pub const VERSION: u8 = 1;
/// Flag on an option type: optional, skipped by decoders that do not know it.
pub const OPT_F_PARAM: u8 = 0x40;
/// The FullNAT option (optional): local address (4 or 16 bytes, the entry's family) and local
/// port (2 bytes).
pub const OPT_FULLNAT: u8 = OPT_F_PARAM | 0x20;
/// Length of the FullNAT option's data in an IPv4 entry.
pub const OPT_FULLNAT_LEN: u8 = 6;
/// Length of the FullNAT option's data in an IPv6 entry.
pub const OPT_FULLNAT6_LEN: u8 = 18;
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

/// One connection (or template) as synced: IPv4 or IPv6, all addresses of one family (see
/// [`SyncConn::family`]).
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
    pub caddr: IpAddr,
    /// Virtual address.
    pub vaddr: IpAddr,
    /// Real server address.
    pub daddr: IpAddr,
    /// FullNAT local address and port.
    pub fullnat: Option<(IpAddr, u16)>,
}

impl SyncConn {
    /// `Some(false)` when every address is IPv4, `Some(true)` when every one is IPv6, `None`
    /// for mixed families (NAT64), which the v1 format cannot express.
    pub fn family(&self) -> Option<bool> {
        let v6 = self.caddr.is_ipv6();
        let same = |a: IpAddr| a.is_ipv6() == v6;
        (same(self.vaddr) && same(self.daddr) && self.fullnat.is_none_or(|(l, _)| same(l)))
            .then_some(v6)
    }

    /// Length on the wire (without alignment padding).
    pub fn wire_len(&self) -> usize {
        let v6 = self.caddr.is_ipv6();
        let base = if v6 { CONN_V6_LEN } else { CONN_V4_LEN };
        let opt = if v6 {
            OPT_FULLNAT6_LEN
        } else {
            OPT_FULLNAT_LEN
        };
        base + if self.fullnat.is_some() {
            2 + usize::from(opt)
        } else {
            0
        }
    }

    /// Length including the padding to 4 bytes.
    pub fn padded_len(&self) -> usize {
        (self.wire_len() + 3) & !3
    }

    /// Writes the entry at the start of `buf` (padding zeroed); returns the padded length, or
    /// `None` if `buf` is too short or the addresses are of mixed families.
    pub fn emit(&self, buf: &mut [u8]) -> Option<usize> {
        let v6 = self.family()?;
        let n = self.padded_len();
        let b = buf.get_mut(..n)?;
        b.fill(0);
        set_u8(b, 0, if v6 { TYPE_INET6 } else { 0 });
        set_u8(b, 1, self.protocol);
        set_u16(b, 2, self.wire_len() as u16 & 0x0fff);
        set_u32(b, 4, self.flags);
        set_u16(b, 8, self.state);
        set_u16(b, 10, self.cport);
        set_u16(b, 12, self.vport);
        set_u16(b, 14, self.dport);
        set_u32(b, 16, self.fwmark);
        set_u32(b, 20, self.timeout);
        let mut off = 24;
        for a in [self.caddr, self.vaddr, self.daddr] {
            off = put_addr(b, off, a);
        }
        if let Some((lip, lport)) = self.fullnat {
            set_u8(b, off, OPT_FULLNAT);
            set_u8(
                b,
                off + 1,
                if v6 {
                    OPT_FULLNAT6_LEN
                } else {
                    OPT_FULLNAT_LEN
                },
            );
            let o = put_addr(b, off + 2, lip);
            set_u16(b, o, lport);
        }
        Some(n)
    }

    /// Parses one entry at the start of `buf`: the entry and its size (without padding).
    /// An unknown entry type, an entry version other than 0, a size below its family's entry
    /// length or beyond `buf`, a mandatory option this decoder does not know or a malformed
    /// option are errors; optional unknown options are skipped.
    pub fn parse(buf: &[u8]) -> Result<(SyncConn, usize), Error> {
        if buf.len() < CONN_V4_LEN {
            return Err(Error::Truncated);
        }
        let kind = get_u8(buf, 0);
        let v6 = match kind {
            0 => false,
            TYPE_INET6 => true,
            _ => return Err(Error::Malformed),
        };
        let base = if v6 { CONN_V6_LEN } else { CONN_V4_LEN };
        let ver_size = get_u16(buf, 2);
        let size = usize::from(ver_size & 0x0fff);
        if ver_size >> 12 != 0 || size < base {
            return Err(Error::Malformed);
        }
        if size > buf.len() {
            return Err(Error::Truncated);
        }
        let addr = |off: usize| get_addr(buf, off, v6);
        let alen = if v6 { 16 } else { 4 };
        let mut c = SyncConn {
            protocol: get_u8(buf, 1),
            flags: get_u32(buf, 4),
            state: get_u16(buf, 8),
            cport: get_u16(buf, 10),
            vport: get_u16(buf, 12),
            dport: get_u16(buf, 14),
            fwmark: get_u32(buf, 16),
            timeout: get_u32(buf, 20),
            caddr: addr(24),
            vaddr: addr(24 + alen),
            daddr: addr(24 + 2 * alen),
            fullnat: None,
        };
        let fullnat_len = alen + 2;
        let mut off = base;
        while off < size {
            if off + 2 > size {
                return Err(Error::Malformed);
            }
            let (kind, len) = (get_u8(buf, off), usize::from(get_u8(buf, off + 1)));
            let data = off + 2;
            if len == 0 || data + len > size {
                return Err(Error::Malformed);
            }
            if kind == OPT_FULLNAT && len == fullnat_len {
                c.fullnat = Some((addr(data), get_u16(buf, data + alen)));
            } else if kind & OPT_F_PARAM == 0 {
                return Err(Error::Malformed);
            }
            off = data + len;
        }
        Ok((c, size))
    }
}

/// Writes `a` at `off` (4 or 16 bytes); returns the offset after it.
fn put_addr(b: &mut [u8], off: usize, a: IpAddr) -> usize {
    match a {
        IpAddr::V4(a) => {
            set_u32(b, off, u32::from(a));
            off + 4
        }
        IpAddr::V6(a) => {
            if let Some(d) = b.get_mut(off..off + 16) {
                d.copy_from_slice(&a.octets());
            }
            off + 16
        }
    }
}

/// Reads an address of the family `v6` says at `off` (the caller checked the length).
fn get_addr(b: &[u8], off: usize, v6: bool) -> IpAddr {
    if v6 {
        let mut o = [0u8; 16];
        if let Some(s) = b.get(off..off + 16) {
            o.copy_from_slice(s);
        }
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        IpAddr::V4(Ipv4Addr::from(get_u32(b, off)))
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
            caddr: Ipv4Addr::new(10, 0, 0, 2).into(),
            vaddr: Ipv4Addr::new(192, 0, 2, 1).into(),
            daddr: Ipv4Addr::new(172, 16, 0, 2).into(),
            fullnat: fullnat.then_some((Ipv4Addr::new(172, 16, 0, 100).into(), 5001)),
        }
    }

    fn ip6(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn conn6(fullnat: bool) -> SyncConn {
        SyncConn {
            caddr: ip6("2001:db8:c::2"),
            vaddr: ip6("2001:db8:f::80"),
            daddr: ip6("2001:db8:5::2"),
            fullnat: fullnat.then(|| (ip6("2001:db8:5::100"), 5001)),
            ..conn(fullnat)
        }
    }

    #[test]
    fn ipv6_entry_layout_and_round_trip() {
        let mut b = [0xffu8; 128];
        assert_eq!(conn6(false).family(), Some(true));
        assert_eq!(conn6(false).emit(&mut b), Some(72));
        // Type 1, size 72, the same fixed fields as IPv4, then three 16-byte addresses.
        assert_eq!(&b[..4], &[1, 6, 0, 72]);
        assert_eq!(&b[10..16], &[0x9c, 0x40, 0, 80, 0x1f, 0x90]);
        assert_eq!(&b[24..28], &[0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(b[39], 2);
        assert_eq!(&b[40..56], &ip6_octets("2001:db8:f::80"));
        assert_eq!(&b[56..72], &ip6_octets("2001:db8:5::2"));
        assert_eq!(SyncConn::parse(&b).unwrap(), (conn6(false), 72));
        // FullNAT: the option carries a 16-byte local address (length 18), padded to 4.
        let n = conn6(true).emit(&mut b).unwrap();
        assert_eq!(conn6(true).wire_len(), 92);
        assert_eq!(n, 92);
        assert_eq!(&b[72..74], &[0x60, 18]);
        assert_eq!(&b[74..90], &ip6_octets("2001:db8:5::100"));
        assert_eq!(&b[90..92], &[0x13, 0x89]);
        assert_eq!(SyncConn::parse(&b).unwrap(), (conn6(true), 92));
        // A message mixing both families.
        let mut buf = [0u8; 300];
        let mut m = MessageBuilder::new(&mut buf, 0);
        for c in [conn(false), conn6(true), conn6(false), conn(true)] {
            assert!(m.push(&c));
        }
        let n = m.finish();
        assert_eq!(n, 8 + 36 + 92 + 72 + 44);
        let msg = SyncMessage::new_checked(&buf[..n]).unwrap();
        let got: Vec<_> = msg.conns().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            got,
            vec![conn(false), conn6(true), conn6(false), conn(true)]
        );
    }

    fn ip6_octets(s: &str) -> [u8; 16] {
        s.parse::<Ipv6Addr>().unwrap().octets()
    }

    #[test]
    fn mixed_families_cannot_be_expressed() {
        // NAT64: IPv6 client and VIP, IPv4 real server (or local address).
        let nat64 = SyncConn {
            daddr: Ipv4Addr::new(172, 16, 0, 2).into(),
            ..conn6(false)
        };
        assert_eq!(nat64.family(), None);
        let lip4 = SyncConn {
            fullnat: Some((Ipv4Addr::new(172, 16, 0, 100).into(), 1)),
            ..conn6(true)
        };
        assert_eq!(lip4.family(), None);
        let mut b = [0u8; 128];
        assert_eq!(nat64.emit(&mut b), None);
        assert_eq!(lip4.emit(&mut b), None);
        let mut m = MessageBuilder::new(&mut b, 0);
        assert!(!m.push(&nat64));
        assert_eq!(m.count(), 0);
    }

    #[test]
    fn malformed_ipv6_entries_are_errors() {
        let mut b = [0u8; 100];
        conn6(true).emit(&mut b).unwrap();
        // Size below the IPv6 entry length (an IPv4 entry's size with the IPv6 type).
        let mut s = b;
        s[2..4].copy_from_slice(&[0, 36]);
        assert_eq!(SyncConn::parse(&s).unwrap_err(), Error::Malformed);
        // Truncated: the buffer ends inside the addresses, or inside the option.
        assert_eq!(SyncConn::parse(&b[..60]).unwrap_err(), Error::Truncated);
        assert_eq!(SyncConn::parse(&b[..80]).unwrap_err(), Error::Truncated);
        assert_eq!(SyncConn::parse(&b[..3]).unwrap_err(), Error::Truncated);
        // An IPv4-length FullNAT option in an IPv6 entry is not the FullNAT option: the type
        // is optional, so it is skipped (no local address), as an unknown option.
        let mut o = [0u8; 100];
        conn6(false).emit(&mut o).unwrap();
        o[2..4].copy_from_slice(&[0, 80]);
        o[72..80].copy_from_slice(&[0x60, 6, 1, 2, 3, 4, 5, 6]);
        assert_eq!(SyncConn::parse(&o).unwrap().0, conn6(false));
        // Option overrunning the entry; unknown mandatory option; unknown types 2 and 3.
        o[73] = 20;
        assert_eq!(SyncConn::parse(&o).unwrap_err(), Error::Malformed);
        o[72..74].copy_from_slice(&[0x05, 6]);
        assert_eq!(SyncConn::parse(&o).unwrap_err(), Error::Malformed);
        for t in [2u8, 3, 0x81] {
            let mut t6 = b;
            t6[0] = t;
            assert_eq!(SyncConn::parse(&t6).unwrap_err(), Error::Malformed);
        }
        // A message whose second entry (IPv6) is cut: the first comes, then an error.
        let mut buf = [0u8; 200];
        let mut m = MessageBuilder::new(&mut buf, 0);
        m.push(&conn(false));
        m.push(&conn6(false));
        let n = m.finish();
        let mut cut = buf;
        cut[2..4].copy_from_slice(&((n - 10) as u16).to_be_bytes());
        let msg = SyncMessage::new_checked(&cut[..n - 10]).unwrap();
        let got: Vec<_> = msg.conns().collect();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], Ok(conn(false)));
        assert_eq!(got[1], Err(Error::Truncated));
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
        // IPv6 type with an IPv4 entry's size, or a version nibble: refused.
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
        // Arbitrary bytes never panic (half of them with the IPv6 type).
        let mut seed = 3u32;
        for len in 0..240 {
            let b: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            let mut b = b;
            if len % 2 == 0 && len > 0 {
                b[0] = TYPE_INET6;
            }
            if let Ok(m) = SyncMessage::new_checked(&b[..]) {
                let _ = m.conns().count();
            }
            let _ = SyncConn::parse(&b);
        }
    }
}
