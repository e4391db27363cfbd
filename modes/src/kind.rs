//! The two kinds every layer of tapvs names the same way: the transport [`Protocol`] of a
//! virtual service or connection, and the [`Forward`]ing method of a real server.
//!
//! The configuration, the data path and tapvsadm all use these two types; each keeps its own
//! spellings of them (the config file's `nat`/`dr`/`tun`/`fullnat`, ipvsadm's `-m`/`Masq`,
//! ...), so nothing here knows about any text format beyond the protocols' own names. With
//! the `serde` feature both types are serialisable: the protocols as `"TCP"` and `"UDP"`, the
//! methods by their variant names (`"Nat"`, `"Dr"`, `"Tun"`, `"FullNat"`).

use core::fmt;

use crate::wire::ipv4::{PROTO_TCP, PROTO_UDP};

/// Transport protocol of a virtual service or connection: the two tapvs balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Protocol {
    /// TCP (IP protocol 6).
    #[cfg_attr(feature = "serde", serde(rename = "TCP"))]
    Tcp,
    /// UDP (IP protocol 17).
    #[cfg_attr(feature = "serde", serde(rename = "UDP"))]
    Udp,
}

impl Protocol {
    /// The IP protocol number: 6 for TCP, 17 for UDP.
    pub const fn number(self) -> u8 {
        match self {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        }
    }

    /// The protocol with IP protocol number `n`, if it is TCP or UDP.
    pub const fn from_number(n: u8) -> Option<Protocol> {
        match n {
            PROTO_TCP => Some(Protocol::Tcp),
            PROTO_UDP => Some(Protocol::Udp),
            _ => None,
        }
    }

    /// The protocol's name in capitals, as listings print it: `TCP` or `UDP`.
    pub const fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }
}

impl From<Protocol> for u8 {
    fn from(p: Protocol) -> u8 {
        p.number()
    }
}

/// The IP protocol number that is neither TCP nor UDP, refused by [`Protocol::try_from`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsupportedProtocol(pub u8);

impl fmt::Display for UnsupportedProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IP protocol {} is neither TCP nor UDP", self.0)
    }
}

impl std::error::Error for UnsupportedProtocol {}

impl TryFrom<u8> for Protocol {
    type Error = UnsupportedProtocol;

    fn try_from(n: u8) -> Result<Protocol, UnsupportedProtocol> {
        Protocol::from_number(n).ok_or(UnsupportedProtocol(n))
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Forwarding method of a real server: how a client's packets reach it, and whether its
/// replies come back through the appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum Forward {
    /// NAT (masquerading, ipvsadm `-m`): the destination is rewritten to the real server
    /// ([`crate::nat`]) and its replies, which route back through the appliance, are rewritten
    /// to come from the virtual address.
    Nat,
    /// Direct routing (ipvsadm `-g`): only the destination MAC changes ([`crate::dr`]); the
    /// real server holds the virtual address and answers clients directly.
    Dr,
    /// IP-in-IP tunnelling (ipvsadm `-i`): the packet is encapsulated to the real server
    /// ([`crate::tun`]), which answers clients directly.
    Tun,
    /// Full NAT (DPVS `-b`): both ends are rewritten, the client's to a local address of the
    /// appliance ([`crate::fullnat`]), so replies come back without any routing help.
    FullNat,
}

impl Forward {
    /// Every method, in the order above.
    pub const ALL: [Forward; 4] = [Forward::Nat, Forward::Dr, Forward::Tun, Forward::FullNat];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_numbers_round_trip() {
        for p in [Protocol::Tcp, Protocol::Udp] {
            assert_eq!(Protocol::try_from(u8::from(p)), Ok(p));
            assert_eq!(Protocol::from_number(p.number()), Some(p));
        }
        assert_eq!((Protocol::Tcp.number(), Protocol::Udp.number()), (6, 17));
        assert_eq!(Protocol::try_from(1), Err(UnsupportedProtocol(1)));
        assert_eq!(Protocol::from_number(132), None);
        assert_eq!(Protocol::Udp.to_string(), "UDP");
        assert!(Protocol::Tcp < Protocol::Udp, "ordered by protocol number");
    }
}
