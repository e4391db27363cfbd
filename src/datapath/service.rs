//! The service snapshot the workers read: ports (MAC, addresses), the routing table, the virtual
//! services with their real servers and schedulers, and the set of addresses the appliance
//! answers for. A snapshot is immutable; the control plane builds a new one and publishes it
//! with `arc-swap`, and workers load it once per batch. Real servers' [`sched::Dest`] objects
//! are shared between snapshots so their connection counters survive edits.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use hashbrown::{HashMap, HashSet};
use modes::{Forward, Protocol};
use sched::{Dest, Scheduler};

use crate::config::{Cidr, Config, RpFilter};
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
    /// The port's first address, used as the source of ARP probes and ICMP errors.
    pub fn primary(&self) -> Option<Ipv4Addr> {
        self.addresses.first().map(|c| c.addr)
    }

    /// The port address on the same network as `ip`, else the primary one.
    pub fn source_for(&self, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        self.addresses
            .iter()
            .find(|c| c.contains(ip))
            .map(|c| c.addr)
            .or_else(|| self.primary())
    }
}

/// A virtual service.
#[derive(Debug)]
pub struct Service {
    /// Protocol.
    pub proto: Protocol,
    /// Virtual address.
    pub vip: Ipv4Addr,
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
    /// Persistence netmask (`-M`) as a host-order mask.
    pub netmask: u32,
    /// One-packet scheduling (`-o`).
    pub ops: bool,
    /// FullNAT local addresses.
    pub local_addresses: Arc<[Ipv4Addr]>,
    /// FullNAT: insert TOA into the handshake-completing ACK.
    pub toa: bool,
    /// FullNAT: insert TOA into the SYN too.
    pub toa_on_syn: bool,
    /// IPVS `sloppy_tcp`: a non-SYN TCP packet of an unknown flow creates its connection
    /// mid-stream (a RST never does).
    pub sloppy_tcp: bool,
}

/// What a packet's IPv4 source address says about it ([`Snapshot::source_class`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An address a packet may come from.
    Ordinary,
    /// A virtual address: a DR/TUN real server's reply that should have gone to the client.
    Vip,
    /// A martian, as the kernel's `ip_route_input_slow` rules them: 0.0.0.0/8, 127.0.0.0/8,
    /// multicast, class E or the limited broadcast, a port subnet's broadcast address, or one
    /// of the appliance's own addresses (port addresses, FullNAT local addresses).
    Martian,
}

/// Packs a service key.
#[inline]
pub fn svc_key(proto: u8, vip: Ipv4Addr, vport: u16) -> u64 {
    (u64::from(proto) << 48) | (u64::from(u32::from(vip)) << 16) | u64::from(vport)
}

/// Everything the data path reads, immutable.
#[derive(Debug)]
pub struct Snapshot {
    /// Ports by index.
    pub ports: Vec<PortInfo>,
    /// Routing table.
    pub router: Router,
    /// Services by index.
    pub services: Vec<Service>,
    index: HashMap<u64, u32, foldhash::fast::RandomState>,
    vips: HashSet<Ipv4Addr, foldhash::fast::RandomState>,
    local: HashSet<Ipv4Addr, foldhash::fast::RandomState>,
    lips: HashSet<Ipv4Addr, foldhash::fast::RandomState>,
    /// The addresses no packet may come from, by what they are: VIPs, own addresses and
    /// subnet broadcasts (one lookup per packet).
    sources: HashMap<Ipv4Addr, Source, foldhash::fast::RandomState>,
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

    /// Assembles a snapshot and its lookup indexes.
    pub fn new(ports: Vec<PortInfo>, router: Router, services: Vec<Service>) -> Snapshot {
        let mut index = HashMap::with_hasher(foldhash::fast::RandomState::default());
        let mut vips = HashSet::with_hasher(foldhash::fast::RandomState::default());
        let mut lips = HashSet::with_hasher(foldhash::fast::RandomState::default());
        for (i, s) in services.iter().enumerate() {
            index.insert(svc_key(s.proto.number(), s.vip, s.vport), i as u32);
            vips.insert(s.vip);
            lips.extend(s.local_addresses.iter().copied());
        }
        let mut local = HashSet::with_hasher(foldhash::fast::RandomState::default());
        let mut sources = HashMap::with_hasher(foldhash::fast::RandomState::default());
        for p in &ports {
            for a in &p.addresses {
                local.insert(a.addr);
                sources.insert(a.addr, Source::Martian);
                // /31 and /32 have no broadcast address.
                if a.prefix <= 30 {
                    let bcast = Ipv4Addr::from(u32::from(a.addr) | !a.mask());
                    sources.insert(bcast, Source::Martian);
                }
            }
        }
        for &l in &lips {
            sources.insert(l, Source::Martian);
        }
        // A VIP keeps its own reason even if it is also an own address.
        for &v in &vips {
            sources.insert(v, Source::Vip);
        }
        Snapshot {
            ports,
            router,
            services,
            index,
            vips,
            local,
            lips,
            sources,
        }
    }

    /// The addresses eBPF steering classifies frames by, sorted.
    pub fn address_sets(&self) -> crate::datapath::steer::AddressSets {
        let sorted = |set: &HashSet<Ipv4Addr, foldhash::fast::RandomState>| {
            let mut v: Vec<Ipv4Addr> = set.iter().copied().collect();
            v.sort_unstable();
            v
        };
        crate::datapath::steer::AddressSets {
            vips: sorted(&self.vips),
            lips: sorted(&self.lips),
            locals: sorted(&self.local),
        }
    }

    /// One more than the largest real-server id (sizes the workers' counter arrays).
    pub fn dest_id_bound(&self) -> u32 {
        self.services
            .iter()
            .flat_map(|s| s.dest_ids.iter())
            .map(|&i| i + 1)
            .max()
            .unwrap_or(0)
    }

    /// Whether `ip` is a FullNAT local address (replies from real servers come back to it).
    #[inline]
    pub fn is_lip(&self, ip: Ipv4Addr) -> bool {
        self.lips.contains(&ip)
    }

    /// Whether `ip` is a virtual address.
    #[inline]
    pub fn is_vip(&self, ip: Ipv4Addr) -> bool {
        self.vips.contains(&ip)
    }

    /// What a packet from `ip` is: a few integer compares for the fixed martian ranges, then
    /// one lookup for VIPs, own addresses and subnet broadcasts.
    #[inline]
    pub fn source_class(&self, ip: Ipv4Addr) -> Source {
        // 0.0.0.0/8, 127.0.0.0/8, and 224.0.0.0/3 (multicast, class E, 255.255.255.255).
        let top = u32::from(ip) >> 24;
        if top == 0 || top == 127 || top >= 224 {
            return Source::Martian;
        }
        self.sources.get(&ip).copied().unwrap_or(Source::Ordinary)
    }

    /// Whether `ip` is one of the ports' own addresses.
    #[inline]
    pub fn is_local(&self, ip: Ipv4Addr) -> bool {
        self.local.contains(&ip)
    }

    /// The service for a protocol, address and port: an exact match, else the address's
    /// all-ports (port 0) service.
    #[inline]
    pub fn service(&self, proto: u8, vip: Ipv4Addr, vport: u16) -> Option<(u32, &Service)> {
        self.index
            .get(&svc_key(proto, vip, vport))
            .or_else(|| self.index.get(&svc_key(proto, vip, 0)))
            .map(|&i| (i, &self.services[i as usize]))
    }

    /// The next hops the appliance should keep resolved: real servers and gateways.
    pub fn wanted_neighbours(&self) -> Vec<(Ipv4Addr, usize)> {
        let mut out = Vec::new();
        for s in &self.services {
            for d in &s.dests {
                if let IpAddr::V4(ip) = d.addr() {
                    if let Some(hop) = self.router.lookup(ip) {
                        out.push((hop.1, hop.0));
                    }
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
