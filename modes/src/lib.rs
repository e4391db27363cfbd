//! Packet views and per-mode rewrites for tapvs: pure functions over byte
//! buffers, no I/O, no allocation, no panics on any input.
//!
//! * [`kind`] — the two kinds config, data path and tapvsadm share:
//!   [`Protocol`] (TCP/UDP) and [`Forward`] (NAT, DR, TUN, FullNAT).
//! * [`wire`] — zero-copy header views (Ethernet, ARP, IPv4, IPv6 with its
//!   bounded extension-header walk, TCP, UDP, ICMPv4, ICMPv6 with Neighbor
//!   Discovery, VRRP, IPVS sync v1) and the virtio-net header. IPv6 is wire
//!   groundwork only: [`packet::parse`] still accepts ARP and IPv4 alone.
//! * [`checksum`] — Internet checksum sums, the IPv4 and IPv6
//!   pseudo-headers and RFC 1624 incremental updates (16-bit fields, IPv4
//!   and IPv6 addresses), for full and partial (`NEEDS_CSUM`) checksums.
//! * [`offload`] — finishing a partial checksum in software, as a device
//!   would.
//! * [`packet`] — the fast-path classifier [`packet::parse`] and its
//!   [`packet::DropReason`]s.
//! * [`nat`] — NAT (masquerading) rewrites: DNAT, SNAT, TTL, MACs.
//! * [`dr`] — direct routing (MAC rewrite only).
//! * [`tun`] — IP tunnelling (IPIP encapsulation, decapsulation, MSS
//!   clamping).
//! * [`gso`] — software TCPv4 and TCPv6 segmentation of GSO super-frames.
//! * [`fullnat`] — FullNAT (both ends rewritten) and [`toa`], the TCP
//!   option that carries the client address to the real server.
//! * [`nat64`] — NAT64 for FullNAT: IPv6 client packets to IPv4 real
//!   servers and back (header replaced, checksums moved between
//!   pseudo-headers, offloads kept).
//! * [`icmp_nat`] — NAT of ICMP errors that quote a connection's packet.
//! * [`advert`] — VRRP advertisement frames (the view is [`wire::vrrp`]).
//! * [`synproxy`] — SYNPROXY: syncookie SYN/ACKs, the ACK check, the SYN to the real
//!   server and the sequence shifts between the two handshakes.
//! * [`reply`] — frames the appliance originates as a host: ARP, ICMP echo
//!   replies and errors, TCP RST.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo
    )
)]

pub mod advert;
pub mod checksum;
pub mod dr;
pub mod fullnat;
pub mod gso;
pub mod icmp_nat;
pub mod kind;
pub mod nat;
pub mod nat64;
pub mod offload;
pub mod packet;
pub mod reply;
pub mod synproxy;
pub mod toa;
pub mod tun;
pub mod wire;

pub use kind::{Forward, Protocol, UnsupportedProtocol};
pub use nat::Csum;
pub use packet::{parse, DropReason, Kind, Packet};
pub use wire::{EthernetAddress, VnetHdr, VNET_HDR_LEN};
