//! The frame-pipeline rig shared by the tests that drive [`Pipeline::process`] directly, without
//! root or TAP devices (`tests/acl_pipeline.rs`, `tests/synproxy_pipeline.rs`): a config of two
//! ports (`ext`, port [`EXT`], 10.0.0.1/24; `int`, port [`INT`], 172.16.0.1/24) followed by the
//! test's own sections, the snapshot built from it, a neighbour table, one pipeline and a sink
//! that keeps what was sent. Frames go in and come back as bare Ethernet frames: the rig adds
//! the (zero) virtio-net header and strips it again. Those tests include this file by
//! `#[path]`, not through `common/mod.rs`, so they do not compile the namespace harness.
#![allow(dead_code)]

use std::net::Ipv4Addr;

use modes::wire::vnet::VnetHdr;
use tapvs::control::table::Table;
use tapvs::datapath::ha::Standby;
use tapvs::datapath::neigh::{NeighCache, NeighTable};
use tapvs::datapath::persist::Templates;
use tapvs::datapath::pipeline::{Env, Pipeline, Sink, Verdict};
use tapvs::datapath::service::Snapshot;
use tapvs::datapath::stats::Drop;
use tapvs::datapath::tcp_state::Timeouts;
use tapvs::sys::tap::{MAX_FRAME, VNET_HDR_LEN};

/// The client-side port's index.
pub const EXT: usize = 0;
/// The server-side port's index.
pub const INT: usize = 1;
/// The client-side port's MAC address.
pub const EXT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
/// The server-side port's MAC address.
pub const INT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// The two ports' config, then `rest` (services, `[defence]`, ...).
pub fn config(rest: &str) -> String {
    format!(
        r#"
[[port]]
name = "ext"
tap = "tp0"
mac = "02:00:00:00:00:01"
addresses = ["10.0.0.1/24"]

[[port]]
name = "int"
tap = "tp1"
mac = "02:00:00:00:00:02"
addresses = ["172.16.0.1/24"]
{rest}"#
    )
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

/// One worker's pipeline with what it reads: snapshot, neighbours, templates, HA role, clock.
pub struct Rig {
    pub snap: Snapshot,
    pub neigh: NeighTable,
    pub templates: Templates,
    pub standby: Standby,
    /// The clock the next frame or tick sees (starts at 10 s).
    pub now_ms: u64,
    pub pipe: Pipeline,
    pub sink: Collect,
}

impl Rig {
    /// Parses `text` (as `t.toml`), builds its snapshot and a pipeline of `max_conns`
    /// connections, and knows each `(address, MAC, port)` of `neighbours`.
    pub fn new(text: &str, max_conns: usize, neighbours: &[(Ipv4Addr, [u8; 6], usize)]) -> Rig {
        let cfg = tapvs::config::parse(text, std::path::Path::new("t.toml")).expect("config");
        let (_, snap) = Table::from_config(&cfg).expect("snapshot");
        let mut cache = NeighCache::new(256, 3600);
        for &(addr, mac, port) in neighbours {
            cache.learn(addr, mac, port, 10);
        }
        let neigh = cache.take_update().expect("neighbour table");
        let mut pipe = Pipeline::new(0, 1, max_conns, Timeouts::default());
        pipe.reserve_dests(snap.dest_id_bound() as usize);
        Rig {
            snap,
            neigh,
            templates: Templates::default(),
            standby: Standby::default(),
            now_ms: 10_000,
            pipe,
            sink: Collect::default(),
        }
    }

    /// Runs `f` on the pipeline with the environment of now and the sink.
    fn with_env<R>(&mut self, f: impl FnOnce(&mut Pipeline, &Env, &mut Collect) -> R) -> R {
        let env = Env {
            snap: &self.snap,
            neigh: &self.neigh,
            templates: &self.templates,
            now_ms: self.now_ms,
            expire_nodest: false,
            host_stack: false,
            standby: &self.standby,
        };
        f(&mut self.pipe, &env, &mut self.sink)
    }

    /// Feeds the Ethernet frame `frame`, read from `port` with an empty virtio-net header.
    pub fn feed(&mut self, port: usize, frame: &[u8]) -> Verdict {
        self.feed_vnet(port, &VnetHdr::default(), frame)
    }

    /// Feeds `frame` read from `port` with the virtio-net header `hdr`.
    pub fn feed_vnet(&mut self, port: usize, hdr: &VnetHdr, frame: &[u8]) -> Verdict {
        let mut buf = vec![0u8; MAX_FRAME];
        hdr.write(&mut buf[..VNET_HDR_LEN]);
        buf[VNET_HDR_LEN..VNET_HDR_LEN + frame.len()].copy_from_slice(frame);
        let len = VNET_HDR_LEN + frame.len();
        self.with_env(|pipe, env, sink| pipe.process(env, port, &mut buf, len, false, sink))
    }

    /// One timer tick at `now_ms`.
    pub fn tick(&mut self) {
        self.with_env(|pipe, env, sink| pipe.tick(env, sink));
    }

    /// The frames sent since the last call, with their ports, without virtio-net headers.
    pub fn sent(&mut self) -> Vec<(usize, Vec<u8>)> {
        self.sent_vnet()
            .into_iter()
            .map(|(port, f)| (port, f[VNET_HDR_LEN..].to_vec()))
            .collect()
    }

    /// The frames sent since the last call, with their ports and virtio-net headers.
    pub fn sent_vnet(&mut self) -> Vec<(usize, Vec<u8>)> {
        std::mem::take(&mut self.sink.0)
    }

    /// The pipeline's count of drops for `d`.
    pub fn drops(&mut self, d: Drop) -> u64 {
        self.pipe.counters().drops[d as usize]
    }
}
