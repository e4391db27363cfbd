//! Fuzzing harnesses: the functions the fuzz targets in `fuzz/` call, and the corpus replay
//! test (`tests/fuzz_corpus.rs`) calls on stable Rust in CI. Each takes arbitrary bytes and
//! drives one input surface the way the daemon does: the frame pipeline (every forwarding
//! method, with connections that persist across the frames of one input), the config parser,
//! tapvsadm's command parser, the control socket's request decoder, and the decoders of what
//! peers send (VRRP adverts, IPVS sync messages). A harness never panics by itself; a panic is a
//! bug in the code it drives.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::config::Config;
use crate::control::table::Table;
use crate::datapath::ha::NO_STANDBY;
use crate::datapath::neigh::{NeighCache, NeighTable};
use crate::datapath::persist::Templates;
use crate::datapath::pipeline::{Env, Pipeline, Sink, Verdict};
use crate::datapath::service::Snapshot;
use crate::datapath::stats::Counters;
use crate::datapath::tcp_state::Timeouts;
use crate::sys::tap::{MAX_FRAME, VNET_HDR_LEN};

/// The config the pipeline harness runs: an external and an internal port, and a service per
/// forwarding method (NAT TCP and UDP, DR, TUN, FullNAT with TOA, a persistent one, a
/// one-packet UDP one) on VIP 192.0.2.1. The NAT TCP service on port 88 runs the SYN proxy
/// (the other services keep the handshake passing through).
pub const PIPELINE_CONFIG: &str = r#"
[[port]]
name = "ext"
tap = "fz0"
mac = "02:00:00:00:00:01"
addresses = ["10.0.0.1/24"]

[[port]]
name = "int"
tap = "fz1"
mac = "02:00:00:00:00:02"
addresses = ["172.16.0.1/24"]

[[service]]
protocol = "tcp"
address = "192.0.2.1:80"
scheduler = "rr"
[[service.real]]
address = "172.16.0.2:8080"
forward = "nat"
[[service.real]]
address = "172.16.0.6:8080"
forward = "nat"

[[service]]
protocol = "udp"
address = "192.0.2.1:53"
scheduler = "wrr"
[[service.real]]
address = "172.16.0.2:5353"
forward = "nat"

[[service]]
protocol = "udp"
address = "192.0.2.1:54"
scheduler = "rr"
ops = true
[[service.real]]
address = "172.16.0.2:54"
forward = "nat"

[[service]]
protocol = "tcp"
address = "192.0.2.1:81"
scheduler = "wlc"
[[service.real]]
address = "172.16.0.3:81"
forward = "dr"

[[service]]
protocol = "tcp"
address = "192.0.2.1:82"
scheduler = "sh"
[[service.real]]
address = "172.16.0.4:82"
forward = "tun"

[[service]]
protocol = "tcp"
address = "192.0.2.1:83"
scheduler = "lc"
local_addresses = ["172.16.0.100"]
toa = true
[[service.real]]
address = "172.16.0.5:8083"
forward = "fullnat"

[[service]]
protocol = "tcp"
address = "192.0.2.1:87"
scheduler = "rr"
persistent = 300
[[service.real]]
address = "172.16.0.2:87"
forward = "nat"
[[service.real]]
address = "172.16.0.6:87"
forward = "nat"

[[service]]
protocol = "tcp"
address = "192.0.2.1:88"
scheduler = "rr"
synproxy = true
[[service.real]]
address = "172.16.0.2:88"
forward = "nat"
"#;

/// The rig's clock at the start of an input (milliseconds).
const START_MS: u64 = 1_000;

/// Drops what the pipeline emits (it has been built and checksummed by then), remembering the
/// sequence number of the last SYN/ACK it sent (a SYNPROXY cookie) for the next record that
/// asks for it.
#[derive(Default)]
struct Discard {
    cookie: Option<u32>,
}

/// Where the TCP header of a frame (virtio-net header first) starts, if it is IPv4 TCP.
fn tcp_at(frame: &[u8]) -> Option<usize> {
    let eth = VNET_HDR_LEN;
    if frame.get(eth + 12..eth + 14)? != [0x08, 0x00] || *frame.get(eth + 14 + 9)? != 6 {
        return None;
    }
    let ihl = usize::from(frame.get(eth + 14)? & 0x0f) * 4;
    let tcp = eth + 14 + ihl;
    frame.get(tcp + 20 - 1)?;
    Some(tcp)
}

impl Sink for Discard {
    fn send(&mut self, _port: usize, frame: &[u8]) -> bool {
        if let Some(t) = tcp_at(frame) {
            if frame[t + 13] & 0x12 == 0x12 {
                let seq = [frame[t + 4], frame[t + 5], frame[t + 6], frame[t + 7]];
                self.cookie = Some(u32::from_be_bytes(seq));
            }
        }
        !frame.is_empty()
    }
}

/// The parsed [`PIPELINE_CONFIG`] and the neighbour table (every real server, the client
/// 10.0.0.2 and a few others), built once per process.
fn world() -> &'static (Config, NeighTable) {
    static WORLD: std::sync::OnceLock<(Config, NeighTable)> = std::sync::OnceLock::new();
    WORLD.get_or_init(|| {
        let cfg = crate::config::parse(PIPELINE_CONFIG, Path::new("fuzz.toml"))
            .unwrap_or_else(|e| panic!("the harness's own config: {e}"));
        let mut cache = NeighCache::new(64, 3600);
        for (last, port) in [(2, 0), (3, 0), (2, 1), (3, 1), (4, 1), (5, 1), (6, 1)] {
            let a = if port == 0 {
                Ipv4Addr::new(10, 0, 0, last)
            } else {
                Ipv4Addr::new(172, 16, 0, last)
            };
            let o = a.octets();
            cache.learn(a, [0x02, 0x5e, o[0], o[1], o[2], o[3]], port, 0);
        }
        (cfg, cache.take_update().unwrap_or_default())
    })
}

/// A fresh snapshot of `cfg`: new schedulers and real servers (about 40 µs).
fn snapshot(cfg: &Config) -> Snapshot {
    Table::from_config(cfg)
        .unwrap_or_else(|e| panic!("table: {e}"))
        .1
}

/// A pipeline with [`PIPELINE_CONFIG`] and its world, kept across the frames of one input.
pub struct PipelineRig {
    snap: Snapshot,
    neigh: NeighTable,
    templates: Templates,
    pipeline: Pipeline,
    now_ms: u64,
    buf: Box<[u8]>,
}

impl Default for PipelineRig {
    fn default() -> Self {
        Self::new()
    }
}

impl PipelineRig {
    /// A fresh rig: empty connection table (1,024 entries), every real server, the client
    /// 10.0.0.2 and a few others already in the neighbour table, so frames are sent, not held.
    pub fn new() -> PipelineRig {
        let (cfg, neigh) = world();
        PipelineRig {
            snap: snapshot(cfg),
            neigh: neigh.clone(),
            templates: Templates::default(),
            pipeline: Pipeline::new(0, 1, 1024, Timeouts::default()),
            now_ms: START_MS,
            buf: vec![0u8; MAX_FRAME].into_boxed_slice(),
        }
    }

    /// Back to the state [`PipelineRig::new`] gives, keeping the frame buffers (most of what
    /// building a rig costs): the pipeline reset (its connections released), no templates,
    /// the clock at its start; and, if the last input made a connection, a fresh snapshot,
    /// since scheduling it moved a scheduler's state (such as a round robin's position) and
    /// the real servers' counters. Without connections nothing in the snapshot changed.
    pub fn reset(&mut self) {
        if self.pipeline.table().counts().created > 0 {
            self.snap = snapshot(&world().0);
        }
        self.pipeline.reset();
        self.templates = Templates::default();
        self.now_ms = START_MS;
    }

    /// Runs `data` as a sequence of records: a control byte (bit 0: the port, bit 1: the frame
    /// was handed over by another worker, bit 2: run the timers after it, bits 3-7: seconds to
    /// advance the clock; bit 7 also: a TCP frame's ack becomes the last SYN/ACK's sequence
    /// number + 1, so that inputs can complete a SYNPROXY handshake whatever the cookie key), a
    /// 2-byte big-endian length, and that many bytes of frame (virtio-net header first, as read
    /// from the TAP device). A short last record takes what is left.
    pub fn run(&mut self, data: &[u8]) -> Option<Verdict> {
        let mut sink = Discard::default();
        let mut last = None;
        let mut rest = data;
        while let [ctl, rest_after_ctl @ ..] = rest {
            let (len, body) = match rest_after_ctl {
                [a, b, body @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), body),
                _ => (0, &[][..]),
            };
            let len = len.min(body.len()).min(self.buf.len());
            self.now_ms += u64::from(ctl >> 3) * 1000;
            self.buf[..len].copy_from_slice(&body[..len]);
            if let (true, Some(cookie), Some(t)) =
                (ctl & 0x80 != 0, sink.cookie, tcp_at(&self.buf[..len]))
            {
                self.buf[t + 8..t + 12].copy_from_slice(&cookie.wrapping_add(1).to_be_bytes());
            }
            let env = Env {
                snap: &self.snap,
                neigh: &self.neigh,
                templates: &self.templates,
                now_ms: self.now_ms,
                expire_nodest: ctl & 0x40 != 0,
                host_stack: false,
                standby: &NO_STANDBY,
            };
            let port = usize::from(ctl & 1);
            last = Some(self.pipeline.process(
                &env,
                port,
                &mut self.buf,
                len,
                ctl & 2 != 0,
                &mut sink,
            ));
            if ctl & 4 != 0 {
                self.pipeline.tick(&env, &mut sink);
            }
            rest = body.get(len..).unwrap_or_default();
        }
        last
    }

    /// The pipeline's counters (frames, drops by reason, connections made and expired).
    pub fn counters(&mut self) -> Counters {
        *self.pipeline.counters()
    }

    /// Runs `data` ([`PipelineRig::run`]); whether its last frame was transmitted.
    pub fn forwards(&mut self, data: &[u8]) -> bool {
        matches!(self.run(data), Some(Verdict::Transmit { .. }))
    }
}

/// One input through a [`PipelineRig`] as good as fresh: each thread keeps one rig and
/// [resets](PipelineRig::reset) it after each input, since building one (its pipeline's frame
/// buffers) costs far more than running a typical input. Resetting after the input, not
/// before, frees within the input what it allocated (connections, templates, held frames):
/// libFuzzer runs a costly leak check after any input that leaves more allocations than it
/// found.
pub fn pipeline(data: &[u8]) {
    thread_local! {
        static RIG: std::cell::RefCell<PipelineRig> = std::cell::RefCell::new(PipelineRig::new());
    }
    RIG.with_borrow_mut(|rig| {
        let _ = rig.run(data);
        rig.reset();
    });
}

/// The config parser, and the table and snapshot a valid config gives.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(cfg) = crate::config::parse(&text, Path::new("fuzz.toml")) {
        let _ = Table::from_config(&cfg);
    }
}

/// tapvsadm's command parser: the input as one command line (whitespace-separated words) and,
/// line by line, as `-R` input.
pub fn adm_command(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let args: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    let _ = tapvs_adm::cmd::parse(&args);
    for line in text.lines() {
        let _ = tapvs_adm::cmd::parse_restore_line(line);
    }
}

/// The control socket's request decoder (one JSON line), and the command it carries.
pub fn request(data: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<tapvs_adm::Request>(data) {
        let _ = tapvs_adm::cmd::parse(&req.args);
        for line in req.stdin.lines() {
            let _ = tapvs_adm::cmd::parse_restore_line(line);
        }
    }
}

/// What peers send: the input as a VRRP advert (checked against a v2 and a v3 instance) and as
/// an IPVS sync message (every entry decoded).
pub fn peer(data: &[u8]) {
    use crate::vrrp::check::{validate, Expect};
    let src = Ipv4Addr::new(10, 0, 0, 3);
    let dst = Ipv4Addr::new(224, 0, 0, 18);
    for (version, auth) in [(2, Some(*b"secret\0\0")), (3, None)] {
        let exp = Expect {
            version,
            vrid: data.get(1).copied().unwrap_or(51),
            auth,
            advert_int_cs: 100,
            addrs: vec![Ipv4Addr::new(192, 0, 2, 1).into()],
        };
        let _ = validate(&exp, 255, src.into(), dst.into(), data);
    }
    // Over IPv6 (version 3 only): from a link-local source to ff02::12.
    let exp6 = Expect {
        version: 3,
        vrid: data.get(1).copied().unwrap_or(51),
        auth: None,
        advert_int_cs: 100,
        addrs: vec![std::net::Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, 0x80).into()],
    };
    let src6 = std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 3);
    let _ = validate(
        &exp6,
        255,
        src6.into(),
        modes::wire::vrrp::MCAST_GROUP6.into(),
        data,
    );
    if let Ok(msg) = modes::wire::ipvs_sync::SyncMessage::new_checked(data) {
        let _ = (msg.syncid(), msg.size(), msg.count(), msg.version());
        for c in msg.conns().take(256) {
            let _ = c;
        }
    }
}
