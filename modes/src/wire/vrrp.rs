//! VRRP (RFC 3768 version 2, RFC 5798 version 3, IPv4 and IPv6): the
//! advertisement view [`VrrpPacket`] (version, type, VRID, priority, address
//! count, the version-specific interval and authentication fields, checksum,
//! the addresses and the v2 authentication data), its checksum rules (v2 over
//! the message; v3 with the IPv4 pseudo-header, as keepalived sends it, or the
//! IPv6 one), the parsed summary [`VrrpRepr`] and [`VrrpRepr::emit`] /
//! [`VrrpRepr::emit6`].
//!
//! The message does not say its addresses' family: the IP header does. A view
//! made with [`VrrpPacket::new_checked6`] reads 16-byte addresses and accepts
//! version 3 only (RFC 5798 §5.1: IPv6 is v3); the others read 4-byte ones.
//!
//! Layout (both versions): `version<<4 | type`, VRID, priority, count of
//! addresses, then v2: auth type (8 bits) and advertisement interval
//! (8 bits, seconds); v3: 4 reserved bits and a 12-bit interval in
//! centiseconds; the checksum; the addresses; v2 only: 8 bytes of
//! authentication data (the PASS password, zero padded).

use super::{get_array, get_u16, get_u8, set_bytes, set_u16, set_u8, sub, Error};
use crate::checksum;
use std::net::{Ipv4Addr, Ipv6Addr};

/// IP protocol number of VRRP.
pub const PROTO_VRRP: u8 = 112;
/// The IPv4 multicast group of VRRP adverts.
pub const MCAST_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 multicast group of VRRP adverts (RFC 5798 §5.1.2.2).
pub const MCAST_GROUP6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// IP TTL adverts are sent with and must arrive with.
pub const TTL: u8 = 255;
/// The only packet type: ADVERTISEMENT.
pub const TYPE_ADVERT: u8 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 8;
/// Length of the v2 authentication data.
pub const AUTH_LEN: usize = 8;
/// Most addresses one advert may carry.
pub const MAX_ADDRS: usize = 255;
/// Priority of the address owner.
pub const PRIO_OWNER: u8 = 255;
/// Priority a master sends when it stops.
pub const PRIO_STOP: u8 = 0;
/// v2 authentication type: none.
pub const AUTH_NONE: u8 = 0;
/// v2 authentication type: simple text password (PASS).
pub const AUTH_PASS: u8 = 1;
/// v2 authentication type: IPsec AH (not supported: such adverts are rejected).
pub const AUTH_AH: u8 = 2;

/// Byte offsets of the VRRP header fields.
pub mod field {
    /// Version (high nibble) and type (low nibble).
    pub const VERS_TYPE: usize = 0;
    /// Virtual router id.
    pub const VRID: usize = 1;
    /// Priority.
    pub const PRIORITY: usize = 2;
    /// Count of IPv4 addresses.
    pub const NADDR: usize = 3;
    /// v2: authentication type (1 byte).
    pub const AUTH_TYPE: usize = 4;
    /// v2: advertisement interval in seconds (1 byte).
    pub const ADVER_INT_V2: usize = 5;
    /// v3: 4 reserved bits and the 12-bit interval in centiseconds.
    pub const ADVER_INT_V3: usize = 4;
    /// Checksum (2 bytes).
    pub const CHECKSUM: usize = 6;
    /// First address.
    pub const ADDRS: usize = 8;
}

/// A view of a VRRP advertisement (the IP payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VrrpPacket<T> {
    buffer: T,
    v6: bool,
}

impl<T: AsRef<[u8]>> VrrpPacket<T> {
    /// Wraps `buffer` without any check.
    #[inline]
    pub fn new_unchecked(buffer: T) -> Self {
        VrrpPacket { buffer, v6: false }
    }

    /// Wraps `buffer`, an advert that came in (or goes out) over IPv6, without any check.
    #[inline]
    pub fn new_unchecked6(buffer: T) -> Self {
        VrrpPacket { buffer, v6: true }
    }

    /// Wraps `buffer`, an advert over IPv6, after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked6(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked6(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// True for a view of an advert over IPv6 (16-byte addresses).
    #[inline]
    pub fn is_v6(&self) -> bool {
        self.v6
    }

    /// Bytes per address: 16 over IPv6, else 4.
    #[inline]
    fn addr_len(&self) -> usize {
        if self.v6 {
            16
        } else {
            4
        }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Self::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    /// Checks the version is 2 or 3 (over IPv6: 3) (else [`Error::Malformed`])
    /// and that the buffer holds the header, the addresses and (v2) the
    /// authentication data (else [`Error::Truncated`]). Bytes after that are
    /// allowed.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated);
        }
        let ok = if self.v6 {
            self.version() == 3
        } else {
            matches!(self.version(), 2 | 3)
        };
        if !ok {
            return Err(Error::Malformed);
        }
        if len < self.message_len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Length of the message its fields describe: header, addresses and, for
    /// v2, the authentication data.
    #[inline]
    pub fn message_len(&self) -> usize {
        let auth = if self.version() == 2 { AUTH_LEN } else { 0 };
        HEADER_LEN + self.addr_len() * usize::from(self.naddr()) + auth
    }

    /// Version (2 or 3 in a checked view).
    #[inline]
    pub fn version(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::VERS_TYPE) >> 4
    }

    /// Packet type (1 = advertisement).
    #[inline]
    pub fn kind(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::VERS_TYPE) & 0x0f
    }

    /// Virtual router id.
    #[inline]
    pub fn vrid(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::VRID)
    }

    /// Priority (0 = the master is stopping, 255 = address owner).
    #[inline]
    pub fn priority(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::PRIORITY)
    }

    /// Count of addresses.
    #[inline]
    pub fn naddr(&self) -> u8 {
        get_u8(self.buffer.as_ref(), field::NADDR)
    }

    /// v2 authentication type (0 for v3, where the byte is part of the interval).
    #[inline]
    pub fn auth_type(&self) -> u8 {
        if self.version() == 2 {
            get_u8(self.buffer.as_ref(), field::AUTH_TYPE)
        } else {
            0
        }
    }

    /// The advertisement interval in centiseconds: v2's seconds × 100, v3's
    /// 12-bit field.
    #[inline]
    pub fn adver_int_cs(&self) -> u16 {
        if self.version() == 2 {
            u16::from(get_u8(self.buffer.as_ref(), field::ADVER_INT_V2)) * 100
        } else {
            get_u16(self.buffer.as_ref(), field::ADVER_INT_V3) & 0x0fff
        }
    }

    /// Checksum as stored.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Address `i` of an IPv4 view (`0.0.0.0` past the count or the buffer, or
    /// in an IPv6 view: see [`addr6`](Self::addr6)).
    #[inline]
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        if self.v6 || i >= usize::from(self.naddr()) {
            return Ipv4Addr::UNSPECIFIED;
        }
        Ipv4Addr::from(get_array::<4>(
            self.buffer.as_ref(),
            field::ADDRS.wrapping_add(i.wrapping_mul(4)),
        ))
    }

    /// The addresses of an IPv4 view, in order.
    pub fn addrs(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        (0..usize::from(self.naddr())).map(move |i| self.addr(i))
    }

    /// Address `i` of an IPv6 view (`::` past the count or the buffer, or in
    /// an IPv4 view).
    #[inline]
    pub fn addr6(&self, i: usize) -> Ipv6Addr {
        if !self.v6 || i >= usize::from(self.naddr()) {
            return Ipv6Addr::UNSPECIFIED;
        }
        Ipv6Addr::from(get_array::<16>(
            self.buffer.as_ref(),
            field::ADDRS.wrapping_add(i.wrapping_mul(16)),
        ))
    }

    /// The addresses of an IPv6 view, in order.
    pub fn addrs6(&self) -> impl Iterator<Item = Ipv6Addr> + '_ {
        (0..usize::from(self.naddr())).map(move |i| self.addr6(i))
    }

    /// v2 authentication data (zeros for v3 or out of range).
    #[inline]
    pub fn auth_data(&self) -> [u8; AUTH_LEN] {
        if self.version() != 2 {
            return [0; AUTH_LEN];
        }
        get_array::<AUTH_LEN>(
            self.buffer.as_ref(),
            field::ADDRS + self.addr_len() * usize::from(self.naddr()),
        )
    }

    /// True if the checksum verifies: v2 over the message, v3 over the IPv4
    /// pseudo-header (`src`, `dst`, protocol 112, the message length) and
    /// the message.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let msg = sub(self.buffer.as_ref(), 0, self.message_len());
        if msg.len() != self.message_len() {
            return false;
        }
        !self.v6 && message_checksum(self.version(), msg, src, dst) == 0
    }

    /// True if an IPv6 view's checksum verifies over the IPv6 pseudo-header
    /// (`src`, `dst`, next header 112, the message length) and the message.
    pub fn verify_checksum6(&self, src: Ipv6Addr, dst: Ipv6Addr) -> bool {
        let msg = sub(self.buffer.as_ref(), 0, self.message_len());
        if !self.v6 || msg.len() != self.message_len() {
            return false;
        }
        checksum::l4_checksum_v6(src, dst, PROTO_VRRP, msg) == 0
    }
}

/// Checksum of `msg` (its checksum field included as it is) for `version`.
fn message_checksum(version: u8, msg: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> u16 {
    if version == 3 {
        checksum::l4_checksum_v4(src, dst, PROTO_VRRP, msg)
    } else {
        checksum::checksum(msg)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VrrpPacket<T> {
    /// Sets version and type.
    #[inline]
    pub fn set_version_kind(&mut self, version: u8, kind: u8) {
        set_u8(
            self.buffer.as_mut(),
            field::VERS_TYPE,
            (version << 4) | (kind & 0x0f),
        );
    }

    /// Sets the VRID.
    #[inline]
    pub fn set_vrid(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), field::VRID, v);
    }

    /// Sets the priority.
    #[inline]
    pub fn set_priority(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), field::PRIORITY, v);
    }

    /// Sets the address count.
    #[inline]
    pub fn set_naddr(&mut self, v: u8) {
        set_u8(self.buffer.as_mut(), field::NADDR, v);
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM, v);
    }

    /// Computes and stores the checksum (see [`verify_checksum`](Self::verify_checksum)).
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let len = self.message_len();
        let version = self.version();
        let msg = sub(self.buffer.as_ref(), 0, len);
        let c = message_checksum(version, msg, src, dst);
        self.set_checksum(c);
    }

    /// Computes and stores an IPv6 view's checksum (see
    /// [`verify_checksum6`](Self::verify_checksum6)).
    pub fn fill_checksum6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let len = self.message_len();
        let msg = sub(self.buffer.as_ref(), 0, len);
        let c = checksum::l4_checksum_v6(src, dst, PROTO_VRRP, msg);
        self.set_checksum(c);
    }
}

/// A parsed advertisement header (the addresses stay in the view).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VrrpRepr {
    /// 2 or 3.
    pub version: u8,
    /// Virtual router id (1..=255 on the wire; 0 is accepted by the view).
    pub vrid: u8,
    /// Priority.
    pub priority: u8,
    /// Address count.
    pub naddr: u8,
    /// v2 authentication type (0 for v3).
    pub auth_type: u8,
    /// Interval in centiseconds (v2: seconds × 100).
    pub adver_int_cs: u16,
    /// v2 authentication data (zeros for v3).
    pub auth: [u8; AUTH_LEN],
}

impl VrrpRepr {
    /// Parses a checked view whose type is ADVERT (else [`Error::Malformed`]).
    pub fn parse<T: AsRef<[u8]>>(p: &VrrpPacket<T>) -> Result<Self, Error> {
        p.check_len()?;
        if p.kind() != TYPE_ADVERT {
            return Err(Error::Malformed);
        }
        Ok(VrrpRepr {
            version: p.version(),
            vrid: p.vrid(),
            priority: p.priority(),
            naddr: p.naddr(),
            auth_type: p.auth_type(),
            adver_int_cs: p.adver_int_cs(),
            auth: p.auth_data(),
        })
    }

    /// Length of the message for `naddr` IPv4 addresses.
    pub fn buffer_len(&self) -> usize {
        let auth = if self.version == 2 { AUTH_LEN } else { 0 };
        HEADER_LEN + 4 * usize::from(self.naddr) + auth
    }

    /// Length of the (version 3) message for `naddr` IPv6 addresses.
    pub fn buffer_len6(&self) -> usize {
        HEADER_LEN + 16 * usize::from(self.naddr)
    }

    /// Writes a version 3 message over IPv6 with `addrs` (the first `naddr`
    /// of them; missing ones as `::`) into `p` (a view made with
    /// [`VrrpPacket::new_unchecked6`]) and fills the checksum over the IPv6
    /// pseudo-header for `src`/`dst`. The version written is 3 whatever
    /// `self.version` says. Writes nothing past the end of the buffer.
    pub fn emit6<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        p: &mut VrrpPacket<T>,
        addrs: &[Ipv6Addr],
        src: Ipv6Addr,
        dst: Ipv6Addr,
    ) {
        p.v6 = true;
        p.set_version_kind(3, TYPE_ADVERT);
        p.set_vrid(self.vrid);
        p.set_priority(self.priority);
        p.set_naddr(self.naddr);
        let buf = p.buffer.as_mut();
        set_u16(buf, field::ADVER_INT_V3, self.adver_int_cs & 0x0fff);
        for i in 0..usize::from(self.naddr) {
            let a = addrs.get(i).copied().unwrap_or(Ipv6Addr::UNSPECIFIED);
            set_bytes(buf, field::ADDRS + 16 * i, &a.octets());
        }
        p.fill_checksum6(src, dst);
    }

    /// Writes the message with `addrs` (the first `naddr` of them; missing
    /// ones as 0.0.0.0) into `buf` and fills the checksum for `src`/`dst`.
    /// v2's interval is `adver_int_cs / 100` seconds (at least 1); v3's
    /// reserved bits are zero. Writes nothing past the end of `buf`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        p: &mut VrrpPacket<T>,
        addrs: &[Ipv4Addr],
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) {
        p.set_version_kind(self.version, TYPE_ADVERT);
        p.set_vrid(self.vrid);
        p.set_priority(self.priority);
        p.set_naddr(self.naddr);
        let buf = p.buffer.as_mut();
        if self.version == 2 {
            set_u8(buf, field::AUTH_TYPE, self.auth_type);
            let secs = (self.adver_int_cs / 100).clamp(1, 255) as u8;
            set_u8(buf, field::ADVER_INT_V2, secs);
        } else {
            set_u16(buf, field::ADVER_INT_V3, self.adver_int_cs & 0x0fff);
        }
        for i in 0..usize::from(self.naddr) {
            let a = addrs.get(i).copied().unwrap_or(Ipv4Addr::UNSPECIFIED);
            set_bytes(buf, field::ADDRS + 4 * i, &a.octets());
        }
        if self.version == 2 {
            set_bytes(buf, field::ADDRS + 4 * usize::from(self.naddr), &self.auth);
        }
        p.fill_checksum(src, dst);
    }
}

/// The 8 bytes of PASS authentication data for `password`: its first 8
/// bytes, zero padded (keepalived uses the first 8 characters).
pub fn pass_data(password: &str) -> [u8; AUTH_LEN] {
    let mut d = [0u8; AUTH_LEN];
    for (o, b) in d.iter_mut().zip(password.bytes()) {
        *o = b;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn v2(addrs: &[Ipv4Addr]) -> Vec<u8> {
        let r = VrrpRepr {
            version: 2,
            vrid: 51,
            priority: 150,
            naddr: addrs.len() as u8,
            auth_type: AUTH_PASS,
            adver_int_cs: 100,
            auth: pass_data("secret12345"),
        };
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(
            &mut VrrpPacket::new_unchecked(&mut b[..]),
            addrs,
            S,
            MCAST_GROUP,
        );
        b
    }

    #[test]
    fn v2_layout_and_checksum() {
        let a = [Ipv4Addr::new(10, 0, 0, 100), Ipv4Addr::new(10, 0, 0, 101)];
        let b = v2(&a);
        assert_eq!(b.len(), 8 + 8 + 8);
        assert_eq!(&b[..6], &[0x21, 51, 150, 2, 1, 1]);
        assert_eq!(&b[8..12], &[10, 0, 0, 100]);
        assert_eq!(&b[16..], b"secret12");
        // v2's checksum ignores the addresses of the IP header.
        let p = VrrpPacket::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(S, MCAST_GROUP));
        assert!(p.verify_checksum(MCAST_GROUP, S));
        assert_eq!(checksum::checksum(&b), 0);
        let r = VrrpRepr::parse(&p).unwrap();
        assert_eq!((r.version, r.vrid, r.priority, r.naddr), (2, 51, 150, 2));
        assert_eq!((r.auth_type, r.adver_int_cs), (AUTH_PASS, 100));
        assert_eq!(&r.auth, b"secret12");
        assert_eq!(p.addrs().collect::<Vec<_>>(), a);
        assert_eq!(p.addr(2), Ipv4Addr::UNSPECIFIED);
        let mut bad = b.clone();
        bad[2] = 149;
        assert!(!VrrpPacket::new_unchecked(&bad[..]).verify_checksum(S, MCAST_GROUP));
    }

    #[test]
    fn v3_layout_and_pseudo_header_checksum() {
        let r = VrrpRepr {
            version: 3,
            vrid: 7,
            priority: 100,
            naddr: 1,
            auth_type: 0,
            adver_int_cs: 150,
            auth: [0; 8],
        };
        let mut b = vec![0xffu8; r.buffer_len()];
        assert_eq!(b.len(), 12);
        r.emit(
            &mut VrrpPacket::new_unchecked(&mut b[..]),
            &[Ipv4Addr::new(1, 2, 3, 4)],
            S,
            MCAST_GROUP,
        );
        assert_eq!(&b[..6], &[0x31, 7, 100, 1, 0, 150]);
        let p = VrrpPacket::new_checked(&b[..]).unwrap();
        assert!(p.verify_checksum(S, MCAST_GROUP));
        assert!(!p.verify_checksum(Ipv4Addr::new(10, 0, 0, 3), MCAST_GROUP));
        // The pseudo-header is part of the sum: a plain sum over the message is not 0.
        assert_ne!(checksum::checksum(&b), 0);
        let r2 = VrrpRepr::parse(&p).unwrap();
        assert_eq!(r2, r);
        assert_eq!(p.auth_type(), 0);
        assert_eq!(p.auth_data(), [0; 8]);
        // The reserved bits are not part of the interval.
        b[4] = 0xf0;
        assert_eq!(VrrpPacket::new_unchecked(&b[..]).adver_int_cs(), 150);
    }

    #[test]
    fn v3_checksum_matches_a_hand_computed_sum() {
        // Header 31 07 64 01 | 00 96 | csum | 01 02 03 04, pseudo-header
        // 10.0.0.2 → 224.0.0.18, proto 112, length 12.
        let words: [u32; 10] = [
            0x3107,
            0x6401,
            0x0096,
            0x0102,
            0x0304,
            0x0a00,
            0x0002,
            0xe000,
            0x0012,
            112 + 12,
        ];
        let mut s: u32 = words.iter().sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        let want = !(s as u16);
        let r = VrrpRepr {
            version: 3,
            vrid: 7,
            priority: 100,
            naddr: 1,
            auth_type: 0,
            adver_int_cs: 150,
            auth: [0; 8],
        };
        let mut b = [0u8; 12];
        r.emit(
            &mut VrrpPacket::new_unchecked(&mut b[..]),
            &[Ipv4Addr::new(1, 2, 3, 4)],
            S,
            MCAST_GROUP,
        );
        assert_eq!(u16::from_be_bytes([b[6], b[7]]), want);
    }

    #[test]
    fn check_len_and_type() {
        let b = v2(&[Ipv4Addr::new(10, 0, 0, 100)]);
        assert_eq!(
            VrrpPacket::new_checked(&b[..7]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            VrrpPacket::new_checked(&b[..b.len() - 1]).unwrap_err(),
            Error::Truncated
        );
        let mut v = b.clone();
        v[0] = 0x41;
        assert_eq!(
            VrrpPacket::new_checked(&v[..]).unwrap_err(),
            Error::Malformed
        );
        let mut t = b.clone();
        t[0] = 0x22;
        let p = VrrpPacket::new_checked(&t[..]).unwrap();
        assert_eq!(VrrpRepr::parse(&p).unwrap_err(), Error::Malformed);
        // Trailing bytes are allowed and outside the checksum.
        let mut long = b.clone();
        long.extend_from_slice(&[1, 2, 3]);
        assert!(VrrpPacket::new_checked(&long[..])
            .unwrap()
            .verify_checksum(S, MCAST_GROUP));
        // 255 addresses claimed in a short buffer.
        let mut many = b.clone();
        many[3] = 255;
        assert_eq!(
            VrrpPacket::new_checked(&many[..]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn accessors_never_panic_on_short_buffers() {
        for n in 0..24 {
            let b = vec![0x21u8; n];
            let p = VrrpPacket::new_unchecked(&b[..]);
            let _ = (p.version(), p.kind(), p.vrid(), p.priority(), p.naddr());
            let _ = (p.auth_type(), p.adver_int_cs(), p.checksum(), p.auth_data());
            let _ = p.addrs().count();
            let _ = p.addr(usize::MAX);
            let _ = p.verify_checksum(S, S);
            let _ = VrrpRepr::parse(&p);
            let mut m = vec![0u8; n];
            let mut pm = VrrpPacket::new_unchecked(&mut m[..]);
            pm.fill_checksum(S, S);
            VrrpRepr {
                version: 2,
                vrid: 1,
                priority: 1,
                naddr: 255,
                auth_type: 1,
                adver_int_cs: 100,
                auth: [1; 8],
            }
            .emit(&mut pm, &[], S, S);
        }
    }

    fn v6_advert(addrs: &[Ipv6Addr], src: Ipv6Addr) -> Vec<u8> {
        let r = VrrpRepr {
            version: 3,
            vrid: 61,
            priority: 200,
            naddr: addrs.len() as u8,
            auth_type: 0,
            adver_int_cs: 100,
            auth: [0; AUTH_LEN],
        };
        let mut b = vec![0xeeu8; r.buffer_len6()];
        r.emit6(
            &mut VrrpPacket::new_unchecked6(&mut b[..]),
            addrs,
            src,
            MCAST_GROUP6,
        );
        b
    }

    #[test]
    fn v3_over_ipv6_layout_and_pseudo_header_checksum() {
        let ll: Ipv6Addr = "fe80::74:76ff:fe00:101".parse().unwrap();
        let a: [Ipv6Addr; 2] = [
            "2001:db8:f::80".parse().unwrap(),
            "2001:db8:c::1".parse().unwrap(),
        ];
        let b = v6_advert(&a, ll);
        assert_eq!(b.len(), 8 + 32);
        // Version 3, type 1, VRID, priority, two addresses, 1 s as 100 cs.
        assert_eq!(&b[..6], &[0x31, 61, 200, 2, 0, 100]);
        assert_eq!(&b[8..24], &a[0].octets());
        assert_eq!(&b[24..40], &a[1].octets());
        // The checksum by hand: the IPv6 pseudo-header (source, destination,
        // 32-bit length, 24 zero bits, next header 112) and the message.
        let mut sum = 0u32;
        let mut words = |d: &[u8]| {
            for c in d.chunks(2) {
                sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
        };
        words(&ll.octets());
        words(&MCAST_GROUP6.octets());
        words(&(b.len() as u32).to_be_bytes());
        words(&[0, 0, 0, PROTO_VRRP]);
        let mut zeroed = b.clone();
        zeroed[6..8].fill(0);
        words(&zeroed);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(u16::from_be_bytes([b[6], b[7]]), !(sum as u16));
        let p = VrrpPacket::new_checked6(&b[..]).unwrap();
        assert!(p.is_v6());
        assert!(p.verify_checksum6(ll, MCAST_GROUP6));
        let other: Ipv6Addr = "fe80::1".parse().unwrap();
        assert!(!p.verify_checksum6(other, MCAST_GROUP6));
        assert!(!p.verify_checksum(Ipv4Addr::UNSPECIFIED, MCAST_GROUP));
        let r = VrrpRepr::parse(&p).unwrap();
        assert_eq!((r.version, r.vrid, r.priority, r.naddr), (3, 61, 200, 2));
        assert_eq!((r.auth_type, r.adver_int_cs), (0, 100));
        assert_eq!(p.addrs6().collect::<Vec<_>>(), a);
        assert_eq!(p.addr6(2), Ipv6Addr::UNSPECIFIED);
        assert_eq!(p.addr(0), Ipv4Addr::UNSPECIFIED, "not an IPv4 view");
        // The same bytes in an IPv4 view read 4-byte addresses (and its
        // checksum rule): the family comes from the IP header.
        let p4 = VrrpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p4.message_len(), 16);
        assert!(!p4.verify_checksum6(ll, MCAST_GROUP6));
    }

    #[test]
    fn ipv6_views_take_version_3_only_and_check_lengths() {
        let ll: Ipv6Addr = "fe80::1".parse().unwrap();
        let a: [Ipv6Addr; 1] = ["2001:db8:f::80".parse().unwrap()];
        let b = v6_advert(&a, ll);
        assert_eq!(
            VrrpPacket::new_checked6(&b[..b.len() - 1]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            VrrpPacket::new_checked6(&b[..7]).unwrap_err(),
            Error::Truncated
        );
        let mut v2 = b.clone();
        v2[0] = 0x21;
        assert_eq!(
            VrrpPacket::new_checked6(&v2[..]).unwrap_err(),
            Error::Malformed
        );
        // A corrupted address fails the checksum.
        let mut bad = b.clone();
        bad[20] ^= 1;
        let p = VrrpPacket::new_checked6(&bad[..]).unwrap();
        assert!(!p.verify_checksum6(ll, MCAST_GROUP6));
        // Arbitrary bytes never panic.
        for len in 0..64usize {
            let junk: Vec<u8> = (0..len).map(|i| (i * 37 + 0x31) as u8).collect();
            let p = VrrpPacket::new_unchecked6(&junk[..]);
            let _ = (p.addr6(3), p.auth_data(), p.message_len());
            if let Ok(p) = VrrpPacket::new_checked6(&junk[..]) {
                let _ = p.verify_checksum6(ll, MCAST_GROUP6);
                let _ = p.addrs6().count();
            }
        }
    }

    #[test]
    fn pass_data_pads_and_truncates() {
        assert_eq!(&pass_data("ab"), b"ab\0\0\0\0\0\0");
        assert_eq!(&pass_data("0123456789"), b"01234567");
    }
}
