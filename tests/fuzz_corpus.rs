//! The fuzz corpus replayed on stable Rust: every input committed under `fuzz/corpus/<target>/`
//! runs through its harness in `tapvs::fuzz` (what the fuzz targets in `fuzz/` call), so a
//! crash the fuzzer once found, and the seeds, stay covered in CI without a nightly toolchain.
//! `TAPVS_FUZZ_SEEDS=1` (re)writes the hand-made seeds (`seed-*` files) the corpus starts from.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use etherparse::PacketBuilder;
use modes::wire::ipvs_sync::{MessageBuilder, SyncConn};
use modes::wire::vnet::VNET_HDR_LEN;
use modes::wire::vrrp::{VrrpPacket, VrrpRepr};
use tapvs::datapath::pipeline::Verdict;

/// A harness of `tapvs::fuzz`.
type Harness = fn(&[u8]);

const TARGETS: [(&str, Harness); 5] = [
    ("pipeline", tapvs::fuzz::pipeline),
    ("config", tapvs::fuzz::config),
    ("adm_command", tapvs::fuzz::adm_command),
    ("request", tapvs::fuzz::request),
    ("peer", tapvs::fuzz::peer),
];

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

const CLIENT: [u8; 4] = [10, 0, 0, 2];
const VIP: [u8; 4] = [192, 0, 2, 1];
const EXT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const INT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const CLIENT_MAC: [u8; 6] = [0x02, 0x5e, 10, 0, 0, 2];

/// One pipeline record: control byte, length, virtio-net header and frame.
fn record(ctl: u8, frame: &[u8]) -> Vec<u8> {
    let len = (VNET_HDR_LEN + frame.len()) as u16;
    let mut r = vec![ctl];
    r.extend_from_slice(&len.to_be_bytes());
    r.extend_from_slice(&[0u8; VNET_HDR_LEN]);
    r.extend_from_slice(frame);
    r
}

/// A client's TCP segment to the VIP.
fn tcp_in(dport: u16, seq: u32, syn: bool, fin: bool, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, EXT_MAC)
        .ipv4(CLIENT, VIP, 64)
        .tcp(40000, dport, seq, 64240);
    let b = if syn { b.syn() } else { b.ack(1) };
    let b = if fin { b.fin() } else { b };
    let mut f = Vec::new();
    b.write(&mut f, payload).expect("frame");
    f
}

/// A real server's reply (NAT) to the client.
fn tcp_back(src: [u8; 4], sport: u16, syn: bool) -> Vec<u8> {
    let o = src;
    let b = PacketBuilder::ethernet2([0x02, 0x5e, o[0], o[1], o[2], o[3]], INT_MAC)
        .ipv4(src, CLIENT, 64)
        .tcp(sport, 40000, 7, 64240)
        .ack(1);
    let b = if syn { b.syn() } else { b };
    let mut f = Vec::new();
    b.write(&mut f, b"HTTP/1.0 200 OK\r\n\r\n").expect("frame");
    f
}

/// A SYNPROXY handshake on the port-88 service: the client's SYN (ISN 1, answered with a
/// cookie), its ACK (control bit 7: the harness puts the cookie + 1 in it), the real server's
/// SYN/ACK (acking the client's ISN), then a request and the server's answer.
fn synproxy_seed() -> Vec<u8> {
    let mut s = record(0, &tcp_in(88, 1, true, false, b""));
    s.extend(record(0x80, &tcp_in(88, 2, false, false, b"")));
    let mut syn_ack = Vec::new();
    PacketBuilder::ethernet2([0x02, 0x5e, 172, 16, 0, 2], INT_MAC)
        .ipv4([172, 16, 0, 2], CLIENT, 64)
        .tcp(88, 40000, 5000, 64240)
        .syn()
        .ack(2)
        .write(&mut syn_ack, b"")
        .expect("frame");
    s.extend(record(1, &syn_ack));
    s.extend(record(
        0x80,
        &tcp_in(88, 2, false, false, b"GET / HTTP/1.0\r\n\r\n"),
    ));
    s.extend(record(1, &tcp_back([172, 16, 0, 2], 88, false)));
    s
}

fn udp_in(dport: u16) -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, EXT_MAC)
        .ipv4(CLIENT, VIP, 64)
        .udp(40001, dport)
        .write(&mut f, b"query")
        .expect("frame");
    f
}

fn pipeline_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for dport in [80u16, 81, 82, 83, 87] {
        let mut s = record(0, &tcp_in(dport, 1, true, false, b""));
        if dport == 80 {
            s.extend(record(1, &tcp_back([172, 16, 0, 2], 8080, true)));
        }
        s.extend(record(
            0,
            &tcp_in(dport, 2, false, false, b"GET / HTTP/1.0\r\n\r\n"),
        ));
        s.extend(record(0x0c, &tcp_in(dport, 20, false, true, b"")));
        seeds.push(s);
    }
    seeds.push(synproxy_seed());
    let mut s = record(0, &udp_in(53));
    s.extend(record(4, &udp_in(54)));
    seeds.push(s);
    let mut arp = Vec::new();
    arp.extend_from_slice(&[0xff; 6]);
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&CLIENT);
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&VIP);
    seeds.push(record(0, &arp));
    let mut ping = Vec::new();
    PacketBuilder::ethernet2(CLIENT_MAC, EXT_MAC)
        .ipv4(CLIENT, VIP, 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut ping, b"ping")
        .expect("frame");
    seeds.push(record(0, &ping));
    seeds
}

fn peer_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let vip = Ipv4Addr::new(192, 0, 2, 1);
    for version in [2u8, 3] {
        let repr = VrrpRepr {
            version,
            vrid: 51,
            priority: 150,
            naddr: 1,
            auth_type: if version == 2 { 1 } else { 0 },
            adver_int_cs: 100,
            auth: *b"secret\0\0",
        };
        let mut buf = vec![0u8; if version == 2 { 20 + 8 } else { 12 }];
        let mut p = VrrpPacket::new_unchecked(&mut buf[..]);
        repr.emit(
            &mut p,
            &[vip],
            Ipv4Addr::new(10, 0, 0, 3),
            Ipv4Addr::new(224, 0, 0, 18),
        );
        out.push(buf);
    }
    let mut buf = vec![0u8; 1500];
    let mut m = MessageBuilder::new(&mut buf, 9);
    for (state, flags) in [(1u16, 0u32), (4, 0), (0, 0x1000)] {
        m.push(&SyncConn {
            protocol: 6,
            flags,
            state,
            cport: 40000,
            vport: 80,
            dport: 8080,
            fwmark: 0,
            timeout: 900,
            caddr: Ipv4Addr::from(CLIENT).into(),
            vaddr: vip.into(),
            daddr: Ipv4Addr::new(172, 16, 0, 2).into(),
            fullnat: None,
        });
    }
    let n = m.finish();
    buf.truncate(n);
    out.push(buf);
    out
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match target {
        "pipeline" => pipeline_seeds(),
        "config" => {
            let mut v = vec![tapvs::fuzz::PIPELINE_CONFIG.as_bytes().to_vec()];
            for f in ["packaging/tapvs.toml", "tests/import/5.toml"] {
                v.push(std::fs::read(root.join(f)).expect("seed config"));
            }
            v
        }
        "adm_command" => [
            "-A -t 192.0.2.1:80 -s wrr -p 300 -M 255.255.255.0",
            "-a -t 192.0.2.1:80 -r 172.16.0.2:8080 -m -w 3 -x 100 -y 10",
            "-L -n --stats --rate --exact -t 192.0.2.1:80",
            "-E -u 192.0.2.1:53 -s mh -b mh-port,mh-fallback",
            "--start-daemon master --mcast-interface ext --syncid 9",
            "--set 900 120 300",
            "# a comment\n-A -t 192.0.2.1:81 -s rr\n-a -t 192.0.2.1:81 -r 172.16.0.3 -g",
        ]
        .map(|s| s.as_bytes().to_vec())
        .to_vec(),
        "request" => [
            r#"{"args":["-L","-n"],"stdin":""}"#,
            r#"{"args":["-R"],"stdin":"-A -t 192.0.2.1:80 -s rr\n-a -t 192.0.2.1:80 -r 172.16.0.2 -m\n"}"#,
            r#"{"args":["-L"],"stdin":"","names":{"hosts":[["192.0.2.1","web"]],"services":[[80,"http"]]}}"#,
        ]
        .map(|s| s.as_bytes().to_vec())
        .to_vec(),
        "peer" => peer_seeds(),
        _ => Vec::new(),
    }
}

/// `TAPVS_FUZZ_SEEDS=1`: writes the seeds; otherwise checks that each seed is in the corpus.
#[test]
fn the_seeds_are_in_the_corpus() {
    let write = std::env::var("TAPVS_FUZZ_SEEDS").as_deref() == Ok("1");
    for (target, _) in TARGETS {
        let dir = corpus(target);
        for (i, seed) in seeds(target).iter().enumerate() {
            let path = dir.join(format!("seed-{i}"));
            if write {
                std::fs::create_dir_all(&dir).expect("corpus dir");
                std::fs::write(&path, seed).expect("seed");
            } else {
                let got = std::fs::read(&path).unwrap_or_else(|e| {
                    panic!("{}: {e} (TAPVS_FUZZ_SEEDS=1 writes it)", path.display())
                });
                assert_eq!(
                    &got,
                    seed,
                    "{} is stale (TAPVS_FUZZ_SEEDS=1)",
                    path.display()
                );
            }
        }
    }
}

/// Every committed input of every target runs through its harness without a panic.
#[test]
fn the_corpus_replays_without_a_panic() {
    for (target, harness) in TARGETS {
        let dir = corpus(target);
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = e.expect("entry").path();
            let data = std::fs::read(&path).expect("input");
            harness(&data);
            n += 1;
        }
        assert!(n > 0, "{}: empty corpus", dir.display());
    }
}

/// The pipeline harness's seeds really reach the forwarding paths: its own config is valid,
/// and a SYN to each service is forwarded (not dropped) by a fresh rig.
#[test]
fn the_pipeline_harness_forwards_its_seeds() {
    tapvs::fuzz::config(tapvs::fuzz::PIPELINE_CONFIG.as_bytes());
    let cfg = tapvs::config::parse(tapvs::fuzz::PIPELINE_CONFIG, Path::new("fuzz.toml"));
    assert!(cfg.is_ok(), "{cfg:?}");
    let mut rig = tapvs::fuzz::PipelineRig::new();
    for dport in [80u16, 81, 82, 83, 87] {
        assert!(
            rig.forwards(&record(0, &tcp_in(dport, 1, true, false, b""))),
            "SYN to port {dport} not forwarded"
        );
    }
    assert!(rig.forwards(&record(0, &udp_in(53))));
    // The SYNPROXY seed completes both handshakes and forwards its data both ways.
    let mut rig = tapvs::fuzz::PipelineRig::new();
    let last = rig.run(&synproxy_seed());
    assert!(matches!(last, Some(Verdict::Transmit { .. })), "{last:?}");
    let c = rig.counters();
    assert_eq!((c.synproxy_syn_cookies_sent, c.synproxy_ack_valid), (1, 1));
    assert_eq!(c.synproxy_established, 1);
    assert!(c.fwd_in >= 2 && c.fwd_out >= 1, "{c:?}");
}

/// The pipeline harness reuses one rig, reset, for every input: a reset rig, after any other
/// inputs, ends an input with the same last verdict and counters as a fresh one (nothing of a
/// previous input's connections, templates, held frames or clock is left).
#[test]
fn a_reset_pipeline_rig_runs_an_input_as_a_fresh_one() {
    let mut inputs: Vec<Vec<u8>> = pipeline_seeds();
    for e in std::fs::read_dir(corpus("pipeline")).expect("corpus") {
        inputs.push(std::fs::read(e.expect("entry").path()).expect("input"));
    }
    let mut reused = tapvs::fuzz::PipelineRig::new();
    // Each input twice in a row, then in order: the second run follows its own connections.
    for data in inputs.iter().flat_map(|d| [d, d]) {
        let mut fresh = tapvs::fuzz::PipelineRig::new();
        let want = fresh.run(data).map(|v| std::mem::discriminant(&v));
        reused.reset();
        let got = reused.run(data).map(|v| std::mem::discriminant(&v));
        assert_eq!(got, want, "last verdict of {data:02x?}");
        assert_eq!(
            reused.counters(),
            fresh.counters(),
            "counters of {data:02x?}"
        );
    }
}
