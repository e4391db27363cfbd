//! The IPv6 frame-pipeline rig shared by `tests/pipeline6.rs` and `tests/sync6.rs`: a
//! dual-stack config (ports `ext`, [`EXT`], 10.0.0.1/24 and 2001:db8:c::1/64; `int`, [`INT`],
//! 172.16.0.1/24 and 2001:db8:5::1/64), services built directly with one real server each
//! ([`one_real`]), a neighbour cache, one pipeline and a sink that keeps what was sent. Frames
//! go in bare (or behind a given virtio-net header) and come back with or without it. Included
//! by `#[path]`, not through `common/mod.rs`, so those tests do not compile the namespace
//! harness.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use modes::wire::ipvs_sync::SyncConn;
use modes::Forward;
use tapvs::datapath::acl::Access;
use tapvs::datapath::ha::{Standby, NO_STANDBY};
use tapvs::datapath::neigh::{NeighCache, NeighTable};
use tapvs::datapath::persist::Templates;
use tapvs::datapath::pipeline::{Env, Pipeline, Sink, SyncDrop, Verdict};
use tapvs::datapath::route::Router;
use tapvs::datapath::service::{Service, Snapshot};
use tapvs::datapath::stats::Drop;
use tapvs::datapath::tcp_state::Timeouts;
use tapvs::sys::tap::MAX_FRAME;

/// The client-side port's index.
pub const EXT: usize = 0;
/// The server-side port's index.
pub const INT: usize = 1;
/// The client-side port's MAC address.
pub const EXT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
/// The server-side port's MAC address.
pub const INT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// The client's MAC address.
pub const CLIENT_MAC: [u8; 6] = [0x02, 0xcc, 0, 0, 0, 0x02];

/// The dual-stack ports' config, the server side with MTU `mtu`.
pub fn config(mtu: u32) -> String {
    format!(
        r#"
workers = 1
max_connections = 1000

[[port]]
name = "ext"
tap = "t6-ext"
mac = "02:00:00:00:00:01"
addresses = ["10.0.0.1/24", "2001:db8:c::1/64"]

[[port]]
name = "int"
tap = "t6-int"
mac = "02:00:00:00:00:02"
addresses = ["172.16.0.1/24", "2001:db8:5::1/64"]
mtu = {mtu}
"#
    )
}

/// An IPv6 address from text.
pub fn ip(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// The client's address.
pub fn client() -> Ipv6Addr {
    ip("2001:db8:c::2")
}

/// The IPv6 VIP.
pub fn vip6() -> Ipv6Addr {
    ip("2001:db8:f::80")
}

/// A TCP service on `[VIP6]:vport` (rr) with the one real server `real:rport` forwarded by
/// `fwd`, whose counters are dest `id`.
pub fn one_real(vport: u16, real: impl Into<IpAddr>, rport: u16, fwd: Forward, id: u32) -> Service {
    let dests = vec![Arc::new(sched::Dest::new(real.into(), rport, 1))];
    let sched: Arc<dyn sched::Scheduler> =
        sched::build(&sched::SchedSpec::new("rr".to_string()), &dests)
            .unwrap()
            .into();
    Service {
        proto: modes::Protocol::Tcp,
        vip: IpAddr::V6(vip6()),
        vport,
        dests,
        dest_ids: vec![id],
        forward: vec![fwd],
        sched,
        persistent: None,
        netmask: u128::MAX,
        ops: false,
        local_addresses: Arc::from(Vec::<IpAddr>::new()),
        toa: false,
        toa_on_syn: false,
        sloppy_tcp: false,
        access: Access::default(),
        synproxy: false,
    }
}

/// A sink keeping every frame sent, with its port and virtio-net header.
#[derive(Default)]
pub struct Collect(pub Vec<(usize, Vec<u8>)>);

impl Sink for Collect {
    fn send(&mut self, port: usize, frame: &[u8]) -> bool {
        self.0.push((port, frame.to_vec()));
        true
    }
}

/// What the pipeline reads besides the frame, at 10 s.
fn env<'a>(
    snap: &'a Snapshot,
    neigh: &'a NeighTable,
    templates: &'a Templates,
    standby: &'a Standby,
) -> Env<'a> {
    Env {
        snap,
        neigh,
        templates,
        now_ms: 10_000,
        expire_nodest: false,
        host_stack: false,
        standby,
    }
}

/// One pipeline over a snapshot, with its neighbours, templates, hot-standby view and sink.
pub struct Rig {
    /// The pipeline (worker 0 of 1).
    pub pipe: Pipeline,
    /// The snapshot it forwards by.
    pub snap: Snapshot,
    /// Neighbours learnt so far.
    pub cache: NeighCache,
    /// The published neighbour table.
    pub neigh: NeighTable,
    /// Persistence templates.
    pub templates: Templates,
    /// The hot-standby view (none by default).
    pub standby: Standby,
    /// What was sent.
    pub sink: Collect,
}

impl Rig {
    /// A rig on the dual-stack ports (server side MTU `mtu`) with `services`, the client
    /// (on [`EXT`]) already resolved.
    pub fn build(mtu: u32, services: Vec<Service>) -> Rig {
        let cfg = tapvs::config::parse(&config(mtu), std::path::Path::new("t6.toml")).unwrap();
        let n = services.len();
        let snap = Snapshot::new(
            Snapshot::ports_of(&cfg),
            Router::new(&cfg.ports, &cfg.routes),
            services,
        );
        let mut pipe = Pipeline::new(0, 1, 1000, Timeouts::new(900, 120, 300));
        pipe.reserve_dests(n);
        let mut r = Rig {
            pipe,
            snap,
            cache: NeighCache::new(100, 300),
            neigh: NeighTable::default(),
            templates: Templates::default(),
            standby: NO_STANDBY.clone(),
            sink: Collect::default(),
        };
        r.learn(client(), EXT, CLIENT_MAC);
        r
    }

    /// Learns neighbour `a` at `mac` on `port` and publishes the table.
    pub fn learn(&mut self, a: impl Into<IpAddr>, port: usize, mac: [u8; 6]) {
        self.cache.learn(a, mac, port, 10);
        if let Some(t) = self.cache.take_update() {
            self.neigh = t;
        }
    }

    /// Feeds `frame` (Ethernet) on `port`.
    pub fn feed(&mut self, port: usize, frame: &[u8]) -> Verdict {
        self.feed_vnet(port, [0; 12], frame)
    }

    /// Feeds `frame` behind the virtio-net header `vnet`.
    pub fn feed_vnet(&mut self, port: usize, vnet: [u8; 12], frame: &[u8]) -> Verdict {
        let mut buf = vec![0u8; MAX_FRAME];
        buf[..12].copy_from_slice(&vnet);
        buf[12..12 + frame.len()].copy_from_slice(frame);
        let (pipe, sink) = (&mut self.pipe, &mut self.sink);
        let env = env(&self.snap, &self.neigh, &self.templates, &self.standby);
        pipe.process(&env, port, &mut buf, 12 + frame.len(), false, sink)
    }

    /// Applies a synced connection entry (the sync backup's step).
    pub fn apply(&mut self, e: &SyncConn) -> Result<(), SyncDrop> {
        let env = env(&self.snap, &self.neigh, &self.templates, &self.standby);
        self.pipe.sync_apply(&env, e)
    }

    /// The frames sent since the last call, with their virtio-net headers.
    pub fn sent_vnet(&mut self) -> Vec<(usize, Vec<u8>)> {
        std::mem::take(&mut self.sink.0)
    }

    /// The frames sent since the last call, without their virtio-net headers.
    pub fn sent(&mut self) -> Vec<(usize, Vec<u8>)> {
        std::mem::take(&mut self.sink.0)
            .into_iter()
            .map(|(p, f)| (p, f[12..].to_vec()))
            .collect()
    }

    /// Frames dropped for reason `d`.
    pub fn drops(&mut self, d: Drop) -> u64 {
        self.pipe.counters().drops[d as usize]
    }
}
