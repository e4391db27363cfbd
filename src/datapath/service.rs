//! The service snapshot the workers read: ports (MAC, addresses), the routing table, the virtual
//! services with their real servers and schedulers, and the set of addresses the appliance
//! answers for. A snapshot is immutable; the control plane builds a new one and publishes it
//! with `arc-swap`, and workers load it once per batch. Real servers' [`sched::Dest`] objects
//! are shared between snapshots so their connection counters survive edits.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use hashbrown::HashSet;
use modes::{Forward, Protocol};
use sched::{Dest, Scheduler};

use crate::config::{Cidr, Config, RpFilter};
use crate::datapath::acl::{Access, IcmpLimits};
use crate::datapath::route::Router;

/// A port as the data path sees it.
#[derive(Debug, Clone)]
pub struct PortInfo {
    /// Name from the config.
    pub name: String,
    /// Its MAC.
    pub mac: [u8; 6],
    /// Its addresses.
    pub addresses: Vec<Cidr>,
    /// MTU of the segment (IP packet size), 1500 unless configured.
    pub mtu: u32,
    /// Reverse-path filter on frames received here.
    pub rp_filter: RpFilter,
}

impl PortInfo {
    /// The port's first IPv4 address, used as the source of ARP probes and ICMP errors.
    pub fn primary(&self) -> Option<Ipv4Addr> {
        self.addresses.iter().find_map(|c| match c.addr {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => None,
        })
    }

    /// The port's first (global) IPv6 address, the source of its Neighbour Solicitations
    /// and ICMPv6 errors.
    pub fn primary6(&self) -> Option<Ipv6Addr> {
        self.addresses.iter().find_map(|c| match c.addr {
            IpAddr::V6(a) => Some(a),
            IpAddr::V4(_) => None,
        })
    }

    /// The IPv4 port address on the same network as `ip`, else the primary one.
    pub fn source_for(&self, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        self.addresses
            .iter()
            .find_map(|c| match c.addr {
                IpAddr::V4(a) if c.contains(ip) => Some(a),
                _ => None,
            })
            .or_else(|| self.primary())
    }

    /// The port address of `ip`'s family on the same network as `ip`, else the first one of
    /// that family.
    pub fn source_for_ip(&self, ip: IpAddr) -> Option<IpAddr> {
        match ip {
            IpAddr::V4(a) => self.source_for(a).map(IpAddr::V4),
            IpAddr::V6(_) => self
                .addresses
                .iter()
                .find(|c| c.contains(ip))
                .map(|c| c.addr)
                .or_else(|| self.primary6().map(IpAddr::V6)),
        }
    }
}

/// A virtual service.
#[derive(Debug)]
pub struct Service {
    /// Protocol.
    pub proto: Protocol,
    /// Virtual address.
    pub vip: IpAddr,
    /// Virtual port.
    pub vport: u16,
    /// Real servers as the scheduler sees them.
    pub dests: Vec<Arc<Dest>>,
    /// Stable id of each real server (same order as `dests`): the index of its traffic
    /// counters in every worker.
    pub dest_ids: Vec<u32>,
    /// Forwarding method of each real server (same order as `dests`).
    pub forward: Vec<Forward>,
    /// The scheduler built for `dests` (shared with the control plane, which rebuilds the
    /// next one from it so state such as the rr position carries over).
    pub sched: Arc<dyn Scheduler>,
    /// Persistence timeout (`-p`), if persistent.
    pub persistent: Option<u32>,
    /// Persistence netmask (`-M`) as a mask of the VIP's width (`config::ip_bits` form).
    pub netmask: u128,
    /// One-packet scheduling (`-o`).
    pub ops: bool,
    /// FullNAT local addresses.
    pub local_addresses: Arc<[IpAddr]>,
    /// FullNAT: insert TOA into the handshake-completing ACK.
    pub toa: bool,
    /// FullNAT: insert TOA into the SYN too.
    pub toa_on_syn: bool,
    /// IPVS `sloppy_tcp`: a non-SYN TCP packet of an unknown flow creates its connection
    /// mid-stream (a RST never does).
    pub sloppy_tcp: bool,
    /// Access control of new connections (allow/deny lists, connection limit and rate).
    pub access: Access,
    /// SYNPROXY: SYNs are answered with syncookies; the real server sees a connection only
    /// after the client's valid ACK (`pipeline/synproxy.rs`).
    pub synproxy: bool,
}

/// What a packet's source address says about it ([`Snapshot::source_class`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An address a packet may come from.
    Ordinary,
    /// A virtual address: a DR/TUN real server's reply that should have gone to the client.
    Vip,
    /// A martian, as the kernel's `ip_route_input_slow` rules them: 0.0.0.0/8, 127.0.0.0/8,
    /// multicast, class E or the limited broadcast, a port subnet's broadcast address, or one
    /// of the appliance's own addresses (port addresses, FullNAT local addresses); for IPv6
    /// ::, ::1, multicast and IPv4-mapped sources.
    Martian,
}

/// A service's key: protocol, virtual address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SvcKey {
    /// IP protocol number.
    pub proto: u8,
    /// Virtual address.
    pub vip: IpAddr,
    /// Virtual port (0: all ports).
    pub vport: u16,
}

impl SvcKey {
    /// A 64-bit digest of the key (never 0), for fixed-size hashed tables.
    #[inline]
    pub fn digest(&self) -> u64 {
        let a = crate::config::ip_bits(self.vip);
        let h = (a as u64 ^ (a >> 64) as u64 ^ u64::from(self.vip.is_ipv6()) << 63)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ (u64::from(self.proto) << 16 | u64::from(self.vport));
        h | 1
    }
}

/// Packs a service key.
#[inline]
pub fn svc_key(proto: u8, vip: IpAddr, vport: u16) -> SvcKey {
    SvcKey { proto, vip, vport }
}

/// A persistent (structurally shared) hash map: a clone is O(1) and an insert or removal
/// copies O(log n) nodes, so deriving the next snapshot from the current one does not copy
/// every service.
pub type PMap<K, V> =
    imbl::GenericHashMap<K, V, foldhash::fast::RandomState, imbl::shared_ptr::DefaultSharedPtr>;

fn pmap<K, V>() -> PMap<K, V>
where
    K: Clone + std::hash::Hash + Eq,
    V: Clone,
{
    PMap::with_hasher(foldhash::fast::RandomState::default())
}

/// Bits of the address filter: 2^18 (32 KiB), so 10,000 addresses set under 4% of it.
const FILTER_BITS: u32 = 18;

/// The word and bit of `ip` in the address filter.
#[inline]
fn filter_bit(ip: IpAddr) -> (usize, u64) {
    let x = match ip {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(a) => {
            let b = u128::from(a);
            (b as u32) ^ ((b >> 32) as u32) ^ ((b >> 64) as u32) ^ ((b >> 96) as u32) ^ 0x5bd1_e995
        }
    };
    let h = x.wrapping_mul(0x9E37_79B1) >> (32 - FILTER_BITS);
    ((h / 64) as usize, 1u64 << (h % 64))
}

/// What an address is to the data path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct AddrInfo {
    /// Services on it as their VIP.
    vips: u32,
    /// Services using it as a FullNAT local address.
    lips: u32,
    /// A port's address or subnet broadcast.
    own: bool,
}

/// Everything the data path reads, immutable once published.
///
/// Services and the VIP and local-address sets live in persistent maps: the control plane
/// derives the next snapshot from the current one with [`Snapshot::with_service`] and
/// [`Snapshot::without_service`], each O(log n), and publishes it (cloning a snapshot is cheap).
/// The ports' own addresses and subnet broadcasts only change with the config and are shared.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Ports by index.
    pub ports: Vec<PortInfo>,
    /// Routing table.
    pub router: Router,
    services: PMap<SvcKey, Arc<Service>>,
    /// Every address a packet's source or destination is classified by: VIPs and FullNAT
    /// local addresses (with how many services use them) and the ports' own addresses and
    /// subnet broadcasts, so classifying a source is one lookup.
    addrs: PMap<IpAddr, AddrInfo>,
    /// A bit per address hash, set for every address in `addrs` (and for some that left):
    /// most packets' sources are in no set, and a clear bit says so without walking `addrs`,
    /// whose depth grows with the table. Shared until an address enters; rebuilt once the
    /// addresses that left since outnumber the ones present.
    filter: Arc<Vec<u64>>,
    /// Addresses that left `addrs` since `filter` was built.
    stale: usize,
    local: Arc<HashSet<IpAddr, foldhash::fast::RandomState>>,
    dest_id_bound: u32,
    /// The ICMP error limits (`[defence]`), the kernel's defaults unless configured.
    pub icmp_limits: IcmpLimits,
}

impl Snapshot {
    /// The ports of a config, as the data path sees them.
    pub fn ports_of(cfg: &Config) -> Vec<PortInfo> {
        cfg.ports
            .iter()
            .map(|p| PortInfo {
                name: p.name.clone(),
                mac: p.mac,
                addresses: p.addresses.clone(),
                mtu: p.mtu.unwrap_or(1500),
                rp_filter: p.rp_filter,
            })
            .collect()
    }

    /// A snapshot without services.
    pub fn empty(ports: Vec<PortInfo>, router: Router) -> Snapshot {
        let mut local = HashSet::with_hasher(foldhash::fast::RandomState::default());
        let mut addrs: PMap<IpAddr, AddrInfo> = pmap();
        let mut filter = vec![0u64; 1 << (FILTER_BITS - 6)];
        let own = AddrInfo {
            own: true,
            ..AddrInfo::default()
        };
        for p in &ports {
            for a in &p.addresses {
                local.insert(a.addr);
                let mut mark = |ip: IpAddr| {
                    addrs.insert(ip, own);
                    let (w, b) = filter_bit(ip);
                    filter[w] |= b;
                };
                mark(a.addr);
                // /31 and /32 have no broadcast address.
                if let IpAddr::V4(v4) = a.addr {
                    if a.prefix <= 30 {
                        mark(IpAddr::V4(Ipv4Addr::from(
                            u32::from(v4) | !(a.mask() as u32),
                        )));
                    }
                }
            }
        }
        Snapshot {
            ports,
            router,
            services: pmap(),
            addrs,
            filter: Arc::new(filter),
            stale: 0,
            local: Arc::new(local),
            dest_id_bound: 0,
            icmp_limits: IcmpLimits::default(),
        }
    }

    /// Assembles a snapshot from a list of services (a later duplicate replaces an earlier one).
    pub fn new(ports: Vec<PortInfo>, router: Router, services: Vec<Service>) -> Snapshot {
        let mut s = Snapshot::empty(ports, router);
        for svc in services {
            s.with_service(Arc::new(svc));
        }
        s
    }

    /// Adds `svc`, replacing the service with its key if any. O(log n).
    ///
    /// Replacing a service by one with the same local addresses leaves the address maps as
    /// they are (shared with the previous snapshot), so steering sees no change.
    pub fn with_service(&mut self, svc: Arc<Service>) {
        let key = svc_key(svc.proto.number(), svc.vip, svc.vport);
        let bound = svc.dest_ids.iter().map(|&i| i + 1).max().unwrap_or(0);
        self.dest_id_bound = self.dest_id_bound.max(bound);
        let (vip, lips) = (svc.vip, svc.local_addresses.clone());
        let old = self.services.insert(key, svc);
        if old.as_ref().is_some_and(|o| o.local_addresses == lips) {
            return;
        }
        if let Some(o) = old {
            self.count(o.vip, -1, 0);
            for &l in o.local_addresses.iter() {
                self.count(l, 0, -1);
            }
        }
        self.count(vip, 1, 0);
        for &l in lips.iter() {
            self.count(l, 0, 1);
        }
    }

    /// Removes the service with key `key` ([`svc_key`]), returning it. O(log n).
    pub fn without_service(&mut self, key: SvcKey) -> Option<Arc<Service>> {
        let old = self.services.remove(&key)?;
        self.count(old.vip, -1, 0);
        for &l in old.local_addresses.iter() {
            self.count(l, 0, -1);
        }
        Some(old)
    }

    /// Counts a service more or less on `ip` as a VIP and as a local address.
    fn count(&mut self, ip: IpAddr, vips: i32, lips: i32) {
        let old = self.addrs.get(&ip).copied();
        let mut a = old.unwrap_or_default();
        a.vips = a.vips.saturating_add_signed(vips);
        a.lips = a.lips.saturating_add_signed(lips);
        if a == AddrInfo::default() {
            if self.addrs.remove(&ip).is_some() {
                self.stale += 1;
                if self.stale > self.addrs.len() + 1024 {
                    // Amortised O(1) per removal: as many removals as the rebuild's work.
                    let mut f = vec![0u64; 1 << (FILTER_BITS - 6)];
                    for ip in self.addrs.keys() {
                        let (w, b) = filter_bit(*ip);
                        f[w] |= b;
                    }
                    self.filter = Arc::new(f);
                    self.stale = 0;
                }
            }
        } else {
            self.addrs.insert(ip, a);
            let (w, b) = filter_bit(ip);
            if self.filter[w] & b == 0 {
                Arc::make_mut(&mut self.filter)[w] |= b;
            }
        }
    }

    /// Raises the bound of real-server ids (the control plane's next id).
    pub fn reserve_dest_ids(&mut self, bound: u32) {
        self.dest_id_bound = self.dest_id_bound.max(bound);
    }

    /// The services, in no particular order.
    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> + '_ {
        self.services.values()
    }

    /// How many services there are.
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// The service with key `key` ([`svc_key`]).
    pub fn service_by_key(&self, key: SvcKey) -> Option<&Arc<Service>> {
        self.services.get(&key)
    }

    /// Whether this snapshot's VIP and local-address sets are the very ones of `other`
    /// (shared, so unchanged), in O(1).
    pub fn same_address_sets(&self, other: &Snapshot) -> bool {
        self.addrs.ptr_eq(&other.addrs) && Arc::ptr_eq(&self.local, &other.local)
    }

    /// The virtual addresses, in no particular order.
    pub fn vips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addrs
            .iter()
            .filter(|(_, a)| a.vips > 0)
            .map(|(ip, _)| *ip)
    }

    /// The FullNAT local addresses, in no particular order.
    pub fn lips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.addrs
            .iter()
            .filter(|(_, a)| a.lips > 0)
            .map(|(ip, _)| *ip)
    }

    /// The ports' own addresses, in no particular order.
    pub fn locals(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.local.iter().copied()
    }

    /// The addresses eBPF steering classifies frames by, sorted.
    pub fn address_sets(&self) -> crate::datapath::steer::AddressSets {
        let sorted = |mut v: Vec<std::net::IpAddr>| {
            v.sort_unstable();
            v
        };
        crate::datapath::steer::AddressSets {
            vips: sorted(self.vips().collect()),
            lips: sorted(self.lips().collect()),
            locals: sorted(self.locals().collect()),
        }
    }

    /// One more than the largest real-server id (sizes the workers' counter arrays).
    pub fn dest_id_bound(&self) -> u32 {
        self.dest_id_bound
    }

    /// Whether `ip` is a FullNAT local address (replies from real servers come back to it).
    #[inline]
    pub fn is_lip(&self, ip: impl Into<IpAddr>) -> bool {
        let ip = ip.into();
        self.maybe(ip) && self.addrs.get(&ip).is_some_and(|a| a.lips > 0)
    }

    /// Whether `ip` is a virtual address.
    #[inline]
    pub fn is_vip(&self, ip: impl Into<IpAddr>) -> bool {
        let ip = ip.into();
        self.maybe(ip) && self.addrs.get(&ip).is_some_and(|a| a.vips > 0)
    }

    /// What a packet from `ip` is: a few integer compares for the fixed martian ranges, then
    /// one lookup for VIPs, own addresses, subnet broadcasts and local addresses.
    #[inline]
    pub fn source_class(&self, ip: impl Into<IpAddr>) -> Source {
        let ip = ip.into();
        match ip {
            IpAddr::V4(v4) => {
                // 0.0.0.0/8, 127.0.0.0/8, and 224.0.0.0/3 (multicast, class E, 255.255.255.255).
                let top = u32::from(v4) >> 24;
                if top == 0 || top == 127 || top >= 224 {
                    return Source::Martian;
                }
            }
            IpAddr::V6(v6) => {
                // ::, ::1, ff00::/8, ::ffff:0:0/96 (link-local sources are on-link, fine).
                let b = u128::from(v6);
                if b <= 1 || b >> 120 == 0xff || b >> 32 == 0xffff {
                    return Source::Martian;
                }
            }
        }
        // A VIP keeps its own reason even if it is also an own address.
        if !self.maybe(ip) {
            return Source::Ordinary;
        }
        match self.addrs.get(&ip) {
            None => Source::Ordinary,
            Some(a) if a.vips > 0 => Source::Vip,
            Some(_) => Source::Martian,
        }
    }

    /// Whether `ip` may be in the address map (false: certainly not).
    #[inline]
    fn maybe(&self, ip: IpAddr) -> bool {
        let (w, b) = filter_bit(ip);
        self.filter.get(w).is_some_and(|x| x & b != 0)
    }

    /// Whether `ip` is one of the ports' own addresses.
    #[inline]
    pub fn is_local(&self, ip: impl Into<IpAddr>) -> bool {
        self.local.contains(&ip.into())
    }

    /// The service for a protocol, address and port: an exact match, else the address's
    /// all-ports (port 0) service.
    #[inline]
    pub fn service(&self, proto: u8, vip: impl Into<IpAddr>, vport: u16) -> Option<&Service> {
        let vip = vip.into();
        self.services
            .get(&svc_key(proto, vip, vport))
            .or_else(|| self.services.get(&svc_key(proto, vip, 0)))
            .map(|s| &**s)
    }

    /// The next hops the appliance should keep resolved: real servers and gateways.
    pub fn wanted_neighbours(&self) -> Vec<(IpAddr, usize)> {
        let mut out = Vec::new();
        for s in self.services.values() {
            for d in &s.dests {
                if let Some(hop) = self.router.lookup(d.addr()) {
                    out.push((hop.1, hop.0));
                }
            }
        }
        for r in self.router.routes() {
            if let Some(via) = r.via {
                out.push((via, r.port));
            }
        }
        out.sort();
        out.dedup();
        out
    }
}
