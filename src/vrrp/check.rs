//! Validation of a received advert against its instance, in keepalived's
//! order and with its counters: TTL, version, type, length, checksum, VRID,
//! authentication type, password, interval ([`validate`]); each failure is a
//! [`Reject`] reason the caller counts, and a rejected advert never reaches
//! the state machine. An address list that differs from the instance's is
//! counted ([`Checked::addr_list_mismatch`]) and accepted, as keepalived
//! does outside strict mode. Over IPv6 the same checks apply to a version 3
//! advert (hop limit 255, checksum over the IPv6 pseudo-header, 16-byte
//! addresses). Pure, no allocation.

use super::fsm::Advert;
use modes::wire::vrrp::{self, VrrpPacket, VrrpRepr};
use modes::wire::Error;
use std::net::IpAddr;

/// Why an advert was rejected. Dense `#[repr(u8)]` for counter arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reject {
    /// Shorter than its header, addresses and authentication data (keepalived: packet_len_err).
    Truncated = 0,
    /// IP TTL (IPv6: hop limit) not 255 (ip_ttl_err).
    BadTtl = 1,
    /// Version not the instance's (version errors).
    BadVersion = 2,
    /// Type not ADVERT (invalid_type_rcvd).
    BadType = 3,
    /// Checksum does not verify (checksum errors).
    BadChecksum = 4,
    /// No instance with this VRID on the port (vrid errors).
    WrongVrid = 5,
    /// v2 authentication type unknown or AH (invalid_authtype).
    InvalidAuthType = 6,
    /// v2 authentication type differs from the instance's (authtype_mismatch).
    AuthTypeMismatch = 7,
    /// v2 PASS data differs (auth_failure).
    AuthFailure = 8,
    /// v2 interval differs from the instance's (advert_interval_err).
    AdvertInterval = 9,
}

impl Reject {
    /// Number of reasons.
    pub const COUNT: usize = 10;
    /// Every reason in index order.
    pub const ALL: [Reject; Reject::COUNT] = [
        Reject::Truncated,
        Reject::BadTtl,
        Reject::BadVersion,
        Reject::BadType,
        Reject::BadChecksum,
        Reject::WrongVrid,
        Reject::InvalidAuthType,
        Reject::AuthTypeMismatch,
        Reject::AuthFailure,
        Reject::AdvertInterval,
    ];

    /// Metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reject::Truncated => "packet_length",
            Reject::BadTtl => "ttl",
            Reject::BadVersion => "version",
            Reject::BadType => "type",
            Reject::BadChecksum => "checksum",
            Reject::WrongVrid => "vrid",
            Reject::InvalidAuthType => "invalid_auth_type",
            Reject::AuthTypeMismatch => "auth_type_mismatch",
            Reject::AuthFailure => "auth_failure",
            Reject::AdvertInterval => "advert_interval",
        }
    }

    /// Index into a counter array.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// What an instance expects of its peers' adverts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// 2 or 3.
    pub version: u8,
    /// The VRID.
    pub vrid: u8,
    /// v2 PASS data (`None`: no authentication).
    pub auth: Option<[u8; vrrp::AUTH_LEN]>,
    /// The instance's interval, centiseconds.
    pub advert_int_cs: u16,
    /// The instance's addresses (one family).
    pub addrs: Vec<IpAddr>,
}

/// An accepted advert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// What the state machine needs.
    pub advert: Advert,
    /// The address list differs from the instance's (counted, accepted).
    pub addr_list_mismatch: bool,
}

/// The VRID byte of a payload, if present (to pick the instance).
pub fn vrid_of(payload: &[u8]) -> Option<u8> {
    payload.get(1).copied()
}

/// Validates `payload` (the IP payload of a protocol-112 packet, or over IPv6
/// next header 112, from `src` to `dst` with `ttl` or hop limit) against `exp`.
/// `src` and `dst` are of one family (else the checksum cannot verify).
pub fn validate(
    exp: &Expect,
    ttl: u8,
    src: IpAddr,
    dst: IpAddr,
    payload: &[u8],
) -> Result<Checked, Reject> {
    if ttl != vrrp::TTL {
        return Err(Reject::BadTtl);
    }
    let p = if src.is_ipv6() {
        VrrpPacket::new_unchecked6(payload)
    } else {
        VrrpPacket::new_unchecked(payload)
    };
    if payload.len() < vrrp::HEADER_LEN {
        return Err(Reject::Truncated);
    }
    if p.version() != exp.version {
        return Err(Reject::BadVersion);
    }
    if p.kind() != vrrp::TYPE_ADVERT {
        return Err(Reject::BadType);
    }
    let repr = match VrrpRepr::parse(&p) {
        Ok(r) => r,
        Err(Error::Truncated) => return Err(Reject::Truncated),
        Err(Error::Malformed) => return Err(Reject::BadVersion),
    };
    let sum_ok = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => p.verify_checksum(s, d),
        (IpAddr::V6(s), IpAddr::V6(d)) => p.verify_checksum6(s, d),
        _ => false,
    };
    if !sum_ok {
        return Err(Reject::BadChecksum);
    }
    if repr.vrid != exp.vrid {
        return Err(Reject::WrongVrid);
    }
    if exp.version == 2 {
        if !matches!(repr.auth_type, vrrp::AUTH_NONE | vrrp::AUTH_PASS) {
            return Err(Reject::InvalidAuthType);
        }
        let want = if exp.auth.is_some() {
            vrrp::AUTH_PASS
        } else {
            vrrp::AUTH_NONE
        };
        if repr.auth_type != want {
            return Err(Reject::AuthTypeMismatch);
        }
        if let Some(pw) = exp.auth {
            if repr.auth != pw {
                return Err(Reject::AuthFailure);
            }
        }
        if repr.adver_int_cs != exp.advert_int_cs {
            return Err(Reject::AdvertInterval);
        }
    }
    let listed = |a: IpAddr| exp.addrs.contains(&a);
    let addr_list_mismatch = usize::from(repr.naddr) != exp.addrs.len()
        || if p.is_v6() {
            p.addrs6().any(|a| !listed(a.into()))
        } else {
            p.addrs().any(|a| !listed(a.into()))
        };
    Ok(Checked {
        advert: Advert {
            src,
            priority: repr.priority,
            adver_int_cs: repr.adver_int_cs,
        },
        addr_list_mismatch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use modes::wire::vrrp::{pass_data, MCAST_GROUP, MCAST_GROUP6};
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

    fn exp(version: u8) -> Expect {
        Expect {
            version,
            vrid: 51,
            auth: (version == 2).then(|| pass_data("secret")),
            advert_int_cs: 100,
            addrs: vec![VIP.into()],
        }
    }

    fn build(version: u8, f: impl FnOnce(&mut VrrpRepr)) -> Vec<u8> {
        let mut r = VrrpRepr {
            version,
            vrid: 51,
            priority: 120,
            naddr: 1,
            auth_type: if version == 2 { vrrp::AUTH_PASS } else { 0 },
            adver_int_cs: 100,
            auth: if version == 2 {
                pass_data("secret")
            } else {
                [0; 8]
            },
        };
        f(&mut r);
        let mut b = vec![0u8; r.buffer_len()];
        r.emit(
            &mut VrrpPacket::new_unchecked(&mut b[..]),
            &[VIP],
            SRC,
            MCAST_GROUP,
        );
        b
    }

    fn check(e: &Expect, b: &[u8]) -> Result<Checked, Reject> {
        validate(e, 255, SRC.into(), MCAST_GROUP.into(), b)
    }

    #[test]
    fn a_good_advert_passes() {
        for v in [2, 3] {
            let c = check(&exp(v), &build(v, |_| {})).unwrap();
            assert_eq!(c.advert.priority, 120);
            assert_eq!(c.advert.src, IpAddr::from(SRC));
            assert_eq!(c.advert.adver_int_cs, 100);
            assert!(!c.addr_list_mismatch);
        }
    }

    #[test]
    fn each_reason() {
        let e = exp(2);
        let good = build(2, |_| {});
        assert_eq!(
            validate(&e, 64, SRC.into(), MCAST_GROUP.into(), &good),
            Err(Reject::BadTtl)
        );
        assert_eq!(check(&e, &good[..7]), Err(Reject::Truncated));
        assert_eq!(check(&e, &good[..good.len() - 1]), Err(Reject::Truncated));
        assert_eq!(check(&e, &build(3, |_| {})), Err(Reject::BadVersion));
        let mut t = good.clone();
        t[0] = 0x22;
        assert_eq!(check(&e, &t), Err(Reject::BadType));
        let mut c = good.clone();
        c[2] ^= 1;
        assert_eq!(check(&e, &c), Err(Reject::BadChecksum));
        assert_eq!(
            check(&e, &build(2, |r| r.vrid = 52)),
            Err(Reject::WrongVrid)
        );
        assert_eq!(
            check(&e, &build(2, |r| r.auth_type = vrrp::AUTH_AH)),
            Err(Reject::InvalidAuthType)
        );
        assert_eq!(
            check(&e, &build(2, |r| r.auth_type = vrrp::AUTH_NONE)),
            Err(Reject::AuthTypeMismatch)
        );
        assert_eq!(
            check(&e, &build(2, |r| r.auth = pass_data("wrong"))),
            Err(Reject::AuthFailure)
        );
        assert_eq!(
            check(&e, &build(2, |r| r.adver_int_cs = 200)),
            Err(Reject::AdvertInterval)
        );
        // v3 has no authentication and learns the interval.
        let c = check(&exp(3), &build(3, |r| r.adver_int_cs = 250)).unwrap();
        assert_eq!(c.advert.adver_int_cs, 250);
        // v3's checksum covers the pseudo-header: another source fails.
        assert_eq!(
            validate(
                &exp(3),
                255,
                VIP.into(),
                MCAST_GROUP.into(),
                &build(3, |_| {})
            ),
            Err(Reject::BadChecksum)
        );
        // No authentication configured: a PASS advert is a type mismatch.
        let mut none = exp(2);
        none.auth = None;
        assert_eq!(check(&none, &good), Err(Reject::AuthTypeMismatch));
        assert!(check(
            &none,
            &build(2, |r| {
                r.auth_type = 0;
                r.auth = [0; 8]
            })
        )
        .is_ok());
    }

    #[test]
    fn address_list_mismatch_is_noted_not_rejected() {
        let mut e = exp(2);
        e.addrs = vec![Ipv4Addr::new(10, 0, 0, 101).into()];
        assert!(check(&e, &build(2, |_| {})).unwrap().addr_list_mismatch);
        e.addrs = vec![VIP.into(), Ipv4Addr::new(10, 0, 0, 101).into()];
        assert!(check(&e, &build(2, |_| {})).unwrap().addr_list_mismatch);
    }

    /// A version 3 advert over IPv6 from a link-local source to ff02::12.
    fn build6(f: impl FnOnce(&mut VrrpRepr)) -> Vec<u8> {
        let mut r = VrrpRepr {
            version: 3,
            vrid: 51,
            priority: 120,
            naddr: 1,
            auth_type: 0,
            adver_int_cs: 100,
            auth: [0; 8],
        };
        f(&mut r);
        let mut b = vec![0u8; r.buffer_len6()];
        r.emit6(
            &mut VrrpPacket::new_unchecked6(&mut b[..]),
            &[vip6()],
            src6(),
            MCAST_GROUP6,
        );
        b
    }

    fn src6() -> Ipv6Addr {
        "fe80::1:2ff:fe03:405".parse().unwrap()
    }

    fn vip6() -> Ipv6Addr {
        "2001:db8:f::80".parse().unwrap()
    }

    fn exp6() -> Expect {
        Expect {
            addrs: vec![vip6().into()],
            ..exp(3)
        }
    }

    fn check6(e: &Expect, hop: u8, b: &[u8]) -> Result<Checked, Reject> {
        validate(e, hop, src6().into(), MCAST_GROUP6.into(), b)
    }

    #[test]
    fn ipv6_adverts_are_version_3_with_hop_limit_255_and_a_pseudo_header_checksum() {
        let good = build6(|_| {});
        let c = check6(&exp6(), 255, &good).unwrap();
        assert_eq!(c.advert.src, IpAddr::V6(src6()));
        assert_eq!((c.advert.priority, c.advert.adver_int_cs), (120, 100));
        assert!(!c.addr_list_mismatch);
        assert_eq!(check6(&exp6(), 254, &good), Err(Reject::BadTtl));
        assert_eq!(check6(&exp6(), 255, &good[..7]), Err(Reject::Truncated));
        assert_eq!(
            check6(&exp6(), 255, &good[..good.len() - 1]),
            Err(Reject::Truncated)
        );
        let mut v2 = good.clone();
        v2[0] = 0x21;
        assert_eq!(check6(&exp6(), 255, &v2), Err(Reject::BadVersion));
        let mut bad = good.clone();
        bad[2] ^= 1;
        assert_eq!(check6(&exp6(), 255, &bad), Err(Reject::BadChecksum));
        // The checksum covers the IPv6 pseudo-header: another source fails, and the IPv4
        // pseudo-header never verifies an IPv6 advert.
        assert_eq!(
            validate(&exp6(), 255, vip6().into(), MCAST_GROUP6.into(), &good),
            Err(Reject::BadChecksum)
        );
        assert_eq!(
            validate(&exp6(), 255, SRC.into(), MCAST_GROUP6.into(), &good),
            Err(Reject::BadChecksum)
        );
        assert_eq!(
            check6(&exp6(), 255, &build6(|r| r.vrid = 52)),
            Err(Reject::WrongVrid)
        );
        // An IPv4 address list differs from an IPv6 one: counted, accepted.
        assert!(check6(&exp(3), 255, &good).unwrap().addr_list_mismatch);
        let c = check6(&exp6(), 255, &build6(|r| r.adver_int_cs = 50)).unwrap();
        assert_eq!(c.advert.adver_int_cs, 50);
    }

    #[test]
    fn garbage_never_panics() {
        let e = exp(2);
        let mut seed = 7u64;
        for n in 0..64 {
            let b: Vec<u8> = (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 33) as u8
                })
                .collect();
            let _ = check(&e, &b);
            let _ = check6(&exp6(), 255, &b);
            let _ = vrid_of(&b);
        }
        assert_eq!(Reject::ALL.len(), Reject::COUNT);
        for (i, r) in Reject::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }
}
