//! Data-path counters. Each worker counts into a plain [`Counters`] it owns (no atomics, no
//! macros on the per-packet path) and copies it into its published slot every 100 ms; readers
//! fold the published slots of all workers into a [`Stats`].

use std::collections::BTreeMap;

use modes::packet::DropReason;
use serde::Serialize;

use crate::datapath::tcp_state::{State, STATE_COUNT};

/// Why the data path dropped a frame it could parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Drop {
    /// Unicast to another MAC, or IP to a broadcast/multicast MAC.
    NotForUs = 0,
    /// Transit traffic that belongs to no connection.
    NoConnection,
    /// A new connection found the table full.
    ConnTableFull,
    /// A new connection found no usable real server (answered with RST / ICMP).
    NoRealServer,
    /// TTL would reach zero (answered with ICMP time exceeded).
    TtlExceeded,
    /// The next hop did not answer ARP in time.
    NeighUnresolved,
    /// No route to the destination.
    NoRoute,
    /// The owning worker's queue or the buffer pool was full.
    RedirectFull,
    /// IP protocol the appliance does not balance or answer.
    UnsupportedProtocol,
    /// ICMP the appliance does not answer (not an echo request).
    IcmpIgnored,
    /// A packet to a VIP port with no service (answered with RST / ICMP port unreachable).
    NoService,
    /// A non-SYN TCP segment to a VIP with no connection (answered with RST).
    NoConnectionTcp,
    /// An ARP frame that needed no answer.
    ArpIgnored,
    /// The kernel refused a write.
    TxError,
    /// FullNAT: no free local port (answered with RST).
    NoLocalPort,
    /// TUN: the encapsulated packet would exceed the MTU (DF set: answered with ICMP
    /// fragmentation needed).
    FragNeeded,
    /// A packet of a connection whose real server was deleted (`expire_nodest_conn`).
    DestRemoved,
    /// A packet from a VIP reached the director: a DR/TUN real server's reply that should have
    /// gone straight to the client.
    VipSourced,
    /// A martian source address (0.0.0.0/8, 127.0.0.0/8, multicast, class E, a broadcast, or
    /// one of the appliance's own addresses), in an IPv4 packet or as an ARP sender.
    MartianSource,
    /// The port's reverse-path filter: no route back to the source (`loose`), or not through
    /// the receiving port (`strict`).
    RpFilter,
    /// A packet to, or an ARP request for, a virtual address of a VRRP instance that is not
    /// MASTER here (hot standby).
    Standby,
    /// A new connection from a client in the service's `deny` list (refused: RST / ICMP).
    AclDenied,
    /// A new connection from a client outside the service's non-empty `allow` list.
    AclNotAllowed,
    /// A new connection while the service had `conn_limit` open connections.
    ConnLimit,
    /// A new connection beyond the service's `conn_rate` for the client's prefix.
    RateLimited,
    /// SYNPROXY: a client segment to a service's VIP with no connection whose ack − 1 is not
    /// a valid cookie (answered with RST as any stray segment).
    SynproxyAckBad,
    /// SYNPROXY: a pure duplicate ACK while the real server's handshake is pending, or a
    /// frame released from a handshake's store that would start another handshake.
    SynproxyPending,
    /// SYNPROXY: more than [`crate::datapath::pipeline::SYNPROXY_DUP_ACKS`] pure duplicate
    /// ACKs in one pending handshake (ACK-storm guard).
    SynproxyAckStorm,
    /// SYNPROXY: a client segment while the handshake is pending that no longer fits the
    /// handshake's store (frames or bytes).
    SynproxyStoreFull,
    /// SYNPROXY: a valid ACK found every handshake store of the worker in use.
    SynproxyPoolFull,
    /// A new connection over its client prefix's rate while the table is under pressure
    /// (`[defence] pressure_prefix_rate`).
    PrefixRateLimit,
    /// An IPv6 Neighbour Discovery message not for the appliance, or not valid (hop limit
    /// other than 255, bad checksum or options); advertisements after their learning.
    NdIgnored,
}

impl Drop {
    /// Every reason, in index order.
    pub const ALL: [Drop; 32] = [
        Drop::NotForUs,
        Drop::NoConnection,
        Drop::ConnTableFull,
        Drop::NoRealServer,
        Drop::TtlExceeded,
        Drop::NeighUnresolved,
        Drop::NoRoute,
        Drop::RedirectFull,
        Drop::UnsupportedProtocol,
        Drop::IcmpIgnored,
        Drop::NoService,
        Drop::NoConnectionTcp,
        Drop::ArpIgnored,
        Drop::TxError,
        Drop::NoLocalPort,
        Drop::FragNeeded,
        Drop::DestRemoved,
        Drop::VipSourced,
        Drop::MartianSource,
        Drop::RpFilter,
        Drop::Standby,
        Drop::AclDenied,
        Drop::AclNotAllowed,
        Drop::ConnLimit,
        Drop::RateLimited,
        Drop::SynproxyAckBad,
        Drop::SynproxyPending,
        Drop::SynproxyAckStorm,
        Drop::SynproxyStoreFull,
        Drop::SynproxyPoolFull,
        Drop::PrefixRateLimit,
        Drop::NdIgnored,
    ];

    /// Stable snake_case name (metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Drop::NotForUs => "not_for_us",
            Drop::NoConnection => "no_connection",
            Drop::ConnTableFull => "conn_table_full",
            Drop::NoRealServer => "no_real_server",
            Drop::TtlExceeded => "ttl_exceeded",
            Drop::NeighUnresolved => "neighbour_unresolved",
            Drop::NoRoute => "no_route",
            Drop::RedirectFull => "redirect_full",
            Drop::UnsupportedProtocol => "unsupported_protocol",
            Drop::IcmpIgnored => "icmp_ignored",
            Drop::NoService => "no_service",
            Drop::NoConnectionTcp => "tcp_no_connection",
            Drop::ArpIgnored => "arp_ignored",
            Drop::TxError => "tx_error",
            Drop::NoLocalPort => "no_local_port",
            Drop::FragNeeded => "frag_needed",
            Drop::DestRemoved => "dest_removed",
            Drop::VipSourced => "vip_sourced",
            Drop::MartianSource => "martian_source",
            Drop::RpFilter => "rp_filter",
            Drop::Standby => "standby",
            Drop::AclDenied => "acl_denied",
            Drop::AclNotAllowed => "acl_not_allowed",
            Drop::ConnLimit => "conn_limit",
            Drop::RateLimited => "rate_limited",
            Drop::SynproxyAckBad => "synproxy_ack_bad",
            Drop::SynproxyPending => "synproxy_pending",
            Drop::SynproxyAckStorm => "synproxy_ack_storm",
            Drop::SynproxyStoreFull => "synproxy_store_full",
            Drop::SynproxyPoolFull => "synproxy_pool_full",
            Drop::PrefixRateLimit => "prefix_rate_limit",
            Drop::NdIgnored => "nd_ignored",
        }
    }
}

/// Number of data-path drop reasons.
pub const DROP_COUNT: usize = Drop::ALL.len();

/// The scalar counters of the data path (one worker's, or all workers' folded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Frames read.
    pub rx_frames: u64,
    /// Bytes read (Ethernet frames, without the virtio header).
    pub rx_bytes: u64,
    /// Frames written.
    pub tx_frames: u64,
    /// Bytes written.
    pub tx_bytes: u64,
    /// GSO super-frames read.
    pub rx_gso: u64,
    /// Frames read with a partial checksum.
    pub rx_partial_csum: u64,
    /// Frames forwarded client to server.
    pub fwd_in: u64,
    /// Frames forwarded server to client.
    pub fwd_out: u64,
    /// Frames handed to another worker (owner of the connection).
    pub redirected: u64,
    /// ARP replies sent.
    pub arp_replies: u64,
    /// ICMP echo replies sent.
    pub echo_replies: u64,
    /// TCP RSTs sent.
    pub rst_sent: u64,
    /// ICMP errors sent.
    pub icmp_errors_sent: u64,
    /// FullNAT: TOA options inserted.
    pub toa_added: u64,
    /// FullNAT: TOA options that did not fit (the packet went without).
    pub toa_skipped: u64,
    /// TUN: segments cut from GSO super-frames before encapsulation.
    pub segments: u64,
    /// Connections created.
    pub conns_created: u64,
    /// Connections expired.
    pub conns_expired: u64,
    /// ICMP errors not sent: over the `[defence]` ICMP rate limits.
    pub icmp_ratelimited: u64,
    /// SYNPROXY: syncookie SYN/ACKs sent to clients.
    pub synproxy_syn_cookies_sent: u64,
    /// SYNPROXY: client ACKs with a valid cookie (a connection to a real server opened).
    pub synproxy_ack_valid: u64,
    /// SYNPROXY: SYNs sent to real servers (first tries and retransmissions).
    pub synproxy_syns_sent: u64,
    /// SYNPROXY: retransmitted SYNs to real servers.
    pub synproxy_syn_retries: u64,
    /// SYNPROXY: handshakes whose real server answered with its SYN/ACK.
    pub synproxy_established: u64,
    /// SYNPROXY: handshakes the real server refused with a RST (forwarded to the client).
    pub synproxy_server_rst: u64,
    /// SYNPROXY: handshakes given up after the last SYN retransmission.
    pub synproxy_timeouts: u64,
    /// SYNPROXY: TIME_WAIT/CLOSE connections replaced by a valid-cookie ACK.
    pub synproxy_reused: u64,
    /// Connections evicted under table pressure: embryonic TCP.
    pub conns_evicted_embryonic: u64,
    /// Connections evicted under table pressure: UDP without a reply (and one-packet entries).
    pub conns_evicted_udp: u64,
    /// Connections evicted under table pressure: TCP in TIME_WAIT or CLOSE.
    pub conns_evicted_closing: u64,
    /// Times a worker's table came under pressure.
    pub pressure_episodes: u64,
    /// Workers whose table is under pressure now (a gauge: 0 or 1 per worker).
    pub pressure_workers: u64,
    /// System calls the workers made for their I/O: `poll`, `read`, `write`, `io_uring_enter`
    /// and doorbell reads.
    pub syscalls: u64,
    /// Rounds of the workers' loops, each after one wait for work.
    pub wakeups: u64,
    /// IPv6 Neighbour Advertisements sent (answers to solicitations).
    pub nd_replies: u64,
    /// Connection updates the sync master did not send because their addresses are of mixed
    /// families (NAT64): an IPVS sync v1 entry has one family for all its addresses.
    pub sync_skipped_v6: u64,
}

impl Traffic {
    /// Adds `o` into `self`, field by field.
    pub fn add(&mut self, o: &Traffic) {
        let Traffic {
            rx_frames,
            rx_bytes,
            tx_frames,
            tx_bytes,
            rx_gso,
            rx_partial_csum,
            fwd_in,
            fwd_out,
            redirected,
            arp_replies,
            echo_replies,
            rst_sent,
            icmp_errors_sent,
            toa_added,
            toa_skipped,
            segments,
            conns_created,
            conns_expired,
            icmp_ratelimited,
            synproxy_syn_cookies_sent,
            synproxy_ack_valid,
            synproxy_syns_sent,
            synproxy_syn_retries,
            synproxy_established,
            synproxy_server_rst,
            synproxy_timeouts,
            synproxy_reused,
            conns_evicted_embryonic,
            conns_evicted_udp,
            conns_evicted_closing,
            pressure_episodes,
            pressure_workers,
            syscalls,
            wakeups,
            nd_replies,
            sync_skipped_v6,
        } = *o;
        for (a, b) in [
            (&mut self.rx_frames, rx_frames),
            (&mut self.rx_bytes, rx_bytes),
            (&mut self.tx_frames, tx_frames),
            (&mut self.tx_bytes, tx_bytes),
            (&mut self.rx_gso, rx_gso),
            (&mut self.rx_partial_csum, rx_partial_csum),
            (&mut self.fwd_in, fwd_in),
            (&mut self.fwd_out, fwd_out),
            (&mut self.redirected, redirected),
            (&mut self.arp_replies, arp_replies),
            (&mut self.echo_replies, echo_replies),
            (&mut self.rst_sent, rst_sent),
            (&mut self.icmp_errors_sent, icmp_errors_sent),
            (&mut self.toa_added, toa_added),
            (&mut self.toa_skipped, toa_skipped),
            (&mut self.segments, segments),
            (&mut self.conns_created, conns_created),
            (&mut self.conns_expired, conns_expired),
            (&mut self.icmp_ratelimited, icmp_ratelimited),
            (
                &mut self.synproxy_syn_cookies_sent,
                synproxy_syn_cookies_sent,
            ),
            (&mut self.synproxy_ack_valid, synproxy_ack_valid),
            (&mut self.synproxy_syns_sent, synproxy_syns_sent),
            (&mut self.synproxy_syn_retries, synproxy_syn_retries),
            (&mut self.synproxy_established, synproxy_established),
            (&mut self.synproxy_server_rst, synproxy_server_rst),
            (&mut self.synproxy_timeouts, synproxy_timeouts),
            (&mut self.synproxy_reused, synproxy_reused),
            (&mut self.conns_evicted_embryonic, conns_evicted_embryonic),
            (&mut self.conns_evicted_udp, conns_evicted_udp),
            (&mut self.conns_evicted_closing, conns_evicted_closing),
            (&mut self.pressure_episodes, pressure_episodes),
            (&mut self.pressure_workers, pressure_workers),
            (&mut self.syscalls, syscalls),
            (&mut self.wakeups, wakeups),
            (&mut self.nd_replies, nd_replies),
            (&mut self.sync_skipped_v6, sync_skipped_v6),
        ] {
            *a += b;
        }
    }
}

/// One worker's counters: the scalars (reachable directly through `Deref`) and the drops and
/// connection states by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// The scalar counters.
    pub traffic: Traffic,
    /// Parse failures by [`DropReason`].
    pub parse_drops: [u64; DropReason::COUNT],
    /// Other drops by [`Drop`].
    pub drops: [u64; DROP_COUNT],
    /// Connections per state.
    pub conn_states: [u64; STATE_COUNT],
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            traffic: Traffic::default(),
            parse_drops: [0; DropReason::COUNT],
            drops: [0; DROP_COUNT],
            conn_states: [0; STATE_COUNT],
        }
    }
}

impl std::ops::Deref for Counters {
    type Target = Traffic;
    fn deref(&self) -> &Traffic {
        &self.traffic
    }
}

impl std::ops::DerefMut for Counters {
    fn deref_mut(&mut self) -> &mut Traffic {
        &mut self.traffic
    }
}

impl Counters {
    /// Counts a drop.
    #[inline]
    pub fn drop(&mut self, d: Drop) {
        self.drops[d as usize] += 1;
    }

    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &Counters) {
        self.traffic.add(&o.traffic);
        for (a, b) in self.parse_drops.iter_mut().zip(o.parse_drops) {
            *a += b;
        }
        for (a, b) in self.drops.iter_mut().zip(o.drops) {
            *a += b;
        }
        for (a, b) in self.conn_states.iter_mut().zip(o.conn_states) {
            *a += b;
        }
    }
}

/// Traffic of one real server as counted by one worker (IPVS's per-dest stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DestCounters {
    /// Connections scheduled to it.
    pub conns: u64,
    /// Packets client to server.
    pub in_pkts: u64,
    /// Packets server to client (NAT/FullNAT replies).
    pub out_pkts: u64,
    /// IP bytes client to server.
    pub in_bytes: u64,
    /// IP bytes server to client.
    pub out_bytes: u64,
}

impl DestCounters {
    /// Adds `o` into `self`.
    pub fn add(&mut self, o: &DestCounters) {
        self.conns += o.conns;
        self.in_pkts += o.in_pkts;
        self.out_pkts += o.out_pkts;
        self.in_bytes += o.in_bytes;
        self.out_bytes += o.out_bytes;
    }

    /// `self - o`, saturating (for zeroed counters).
    pub fn since(&self, o: &DestCounters) -> DestCounters {
        DestCounters {
            conns: self.conns.saturating_sub(o.conns),
            in_pkts: self.in_pkts.saturating_sub(o.in_pkts),
            out_pkts: self.out_pkts.saturating_sub(o.out_pkts),
            in_bytes: self.in_bytes.saturating_sub(o.in_bytes),
            out_bytes: self.out_bytes.saturating_sub(o.out_bytes),
        }
    }
}

/// Folded counters of all workers, in a form fit for printing and JSON (the scalars are
/// reachable directly through `Deref`).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// The scalar counters.
    #[serde(flatten)]
    pub traffic: Traffic,
    /// Drops by reason (parse failures and data-path reasons), zero counts omitted.
    pub drops: BTreeMap<String, u64>,
    /// Live connections by state name, zero counts omitted.
    pub connections: BTreeMap<String, u64>,
}

impl std::ops::Deref for Stats {
    type Target = Traffic;
    fn deref(&self) -> &Traffic {
        &self.traffic
    }
}

impl Stats {
    /// Folds worker counters.
    pub fn fold<'a>(workers: impl IntoIterator<Item = &'a Counters>) -> Stats {
        let mut t = Counters::default();
        for c in workers {
            t.add(c);
        }
        let mut drops = BTreeMap::new();
        for r in DropReason::ALL {
            if t.parse_drops[r as usize] > 0 {
                drops.insert(r.as_str().to_string(), t.parse_drops[r as usize]);
            }
        }
        for d in Drop::ALL {
            if t.drops[d as usize] > 0 {
                drops.insert(d.as_str().to_string(), t.drops[d as usize]);
            }
        }
        let mut connections = BTreeMap::new();
        for s in State::ALL {
            if t.conn_states[s as usize] > 0 {
                connections.insert(s.name().to_string(), t.conn_states[s as usize]);
            }
        }
        Stats {
            traffic: t.traffic,
            drops,
            connections,
        }
    }

    /// Total drops of the named reason (0 if none).
    pub fn dropped(&self, reason: &str) -> u64 {
        self.drops.get(reason).copied().unwrap_or(0)
    }

    /// Total live connections.
    pub fn live_connections(&self) -> u64 {
        self.connections.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_sums_and_names() {
        let mut a = Counters {
            traffic: Traffic {
                rx_frames: 3,
                ..Traffic::default()
            },
            ..Counters::default()
        };
        a.drop(Drop::NoRoute);
        a.parse_drops[DropReason::ALL[0] as usize] = 2;
        a.conn_states[State::TimeWait as usize] = 4;
        let mut b = Counters {
            traffic: Traffic {
                rx_frames: 4,
                ..Traffic::default()
            },
            ..Counters::default()
        };
        b.drop(Drop::NoRoute);
        let s = Stats::fold([&a, &b]);
        assert_eq!(s.rx_frames, 7);
        assert_eq!(s.dropped("no_route"), 2);
        assert_eq!(s.dropped(DropReason::ALL[0].as_str()), 2);
        assert_eq!(s.connections.get("TIME_WAIT"), Some(&4));
        assert_eq!(s.live_connections(), 4);
        let names: std::collections::HashSet<_> = Drop::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(names.len(), DROP_COUNT, "names are distinct");
        for (i, d) in Drop::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i);
        }
    }
}
