//! SYNPROXY end to end in network namespaces: clean handshakes (the real server sees exactly
//! one SYN, one SYN/ACK and one handshake ACK per connection, no RST, checked with tshark on
//! a capture of its interface), and 200 MB downloads through NAT + SYNPROXY and FullNAT +
//! SYNPROXY (TOA on) with the client's SACK, timestamps and window scaling on, clean and with
//! 1 % random loss both ways on the client's link (iptables-nft `statistic` rules in the
//! client namespace), each with the same SHA-256 at both ends.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::lab::{self, Lab};
use common::stream::{expected_digest, fill};
use common::tshark::{self, Capture};
use common::{any, http_servers, scrape, tapvsadm, wait_stats};
use sha2::Digest;
use tapvs_lab::netns::{precheck, Netns};

const MB200: u64 = 200 * 1024 * 1024;
/// Local address of the FullNAT service (on the real servers' segment).
const LIP: &str = "172.16.0.100";

fn synproxy_service(vport: u16, rport: u16, forward: &str, extra: &str) -> String {
    format!(
        "\n[[service]]\nprotocol = \"tcp\"\naddress = \"{}:{vport}\"\nscheduler = \"rr\"\nsynproxy = true\n{extra}\n[[service.real]]\naddress = \"{}:{rport}\"\nforward = \"{forward}\"\n",
        lab::VIP,
        lab::real_addr(0)
    )
}

/// A scratch file removed when dropped (also on panic).
struct RmOnDrop(std::path::PathBuf);

impl Drop for RmOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A server's SYN/ACK, or a client segment with SACK blocks (the bulk ports).
fn sack_or_syn_ack(f: &[u8]) -> bool {
    let Ok(p) = modes::packet::parse(f) else {
        return false;
    };
    if !p.is_tcp() {
        return false;
    }
    if matches!(p.sport, 5001 | 5002) {
        return p.tcp_flags & 0x12 == 0x12;
    }
    matches!(p.dport, 5001 | 5002)
        && f.get(p.l4 + 20..p.payload_offset())
            .is_some_and(|o| modes::synproxy::options(o).sack.is_some())
}

/// tshark's `tcp.flags` ("0x0012").
fn tcp_flags(field: &str) -> u16 {
    u16::from_str_radix(field.trim_start_matches("0x"), 16).expect("tcp.flags")
}

/// TCP to or from port 80.
fn http_frame(f: &[u8]) -> bool {
    let Ok(p) = modes::packet::parse(f) else {
        return false;
    };
    p.is_tcp() && (p.sport == 80 || p.dport == 80)
}

#[test]
fn clean_handshakes_reach_the_real_server_once() {
    if !precheck() {
        return;
    }
    let mut lab = Lab::build(1).expect("build lab");
    lab.start(&format!(
        "{}{}",
        lab::base_config(2),
        synproxy_service(80, 80, "nat", "")
    ))
    .expect("start tapvs");
    let _servers = http_servers(&lab, 80);
    let cap = Capture::start(&lab.reals[0], "eth0", http_frame);
    let split = lab
        .client
        .run(|| tapvs_lab::traffic::http_split(lab::vip(80), 20, Duration::from_secs(5)))
        .expect("20 requests through the SYNPROXY service");
    assert_eq!(split.get("rs1"), Some(&20), "{split:?}");
    let stats = wait_stats(&lab, |s| s.synproxy_established >= 20);
    assert_eq!(stats.synproxy_syn_cookies_sent, 20, "{stats:?}");
    assert_eq!(stats.synproxy_ack_valid, 20, "{stats:?}");
    assert_eq!(stats.synproxy_established, 20, "{stats:?}");
    assert_eq!(stats.synproxy_syn_retries, 0, "{stats:?}");
    assert_eq!(stats.dropped("synproxy_ack_bad"), 0, "{stats:?}");
    // Every connection closed (its last frame forwarded to the real server), then decode.
    let closed = wait_stats(&lab, |s| {
        s.connections
            .keys()
            .all(|k| k == "TIME_WAIT" || k == "CLOSE")
    });
    assert!(closed.live_connections() >= 20, "{closed:?}");
    let pcap =
        RmOnDrop(std::env::temp_dir().join(format!("tapvs-synproxy-{}.pcap", std::process::id())));
    assert!(cap.finish(&pcap.0) > 0, "frames captured");
    let lines = tshark::fields(
        &pcap.0,
        &[],
        &[
            "tcp.stream",
            "tcp.srcport",
            "tcp.flags",
            "tcp.len",
            "tcp.seq_raw",
            "tcp.ack_raw",
        ],
    );
    #[derive(Default, Debug)]
    struct Conn {
        syn: usize,
        syn_ack: usize,
        rst: usize,
        synack_seq: Option<u64>,
        handshake_acks: usize,
    }
    let mut conns: BTreeMap<u64, Conn> = BTreeMap::new();
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| l.split('\t').map(str::to_string).collect())
        .collect();
    for r in &rows {
        let stream: u64 = r[0].parse().unwrap();
        let flags = tcp_flags(&r[2]);
        let c = conns.entry(stream).or_default();
        match flags & 0x17 {
            0x02 => c.syn += 1,
            0x12 => {
                c.syn_ack += 1;
                c.synack_seq = r[4].parse().ok();
            }
            _ => {}
        }
        if flags & 0x04 != 0 {
            c.rst += 1;
        }
    }
    for r in &rows {
        let stream: u64 = r[0].parse().unwrap();
        let flags = tcp_flags(&r[2]);
        let len: u64 = r[3].parse().unwrap_or(0);
        let ack: u64 = r[5].parse().unwrap_or(0);
        let c = conns.get_mut(&stream).unwrap();
        if r[1] != "80"
            && flags == 0x010
            && len == 0
            && c.synack_seq.map(|s| (s + 1) % (1 << 32)) == Some(ack)
        {
            c.handshake_acks += 1;
        }
    }
    // The counters in /metrics; the flag through tapvsadm (listed, saved, DR/TUN refused).
    let (status, body) = scrape(&lab);
    assert_eq!(status, 200);
    for line in [
        "tapvs_synproxy_syn_cookies_sent_total 20",
        "tapvs_synproxy_established_total 20",
        "tapvs_drops_total{reason=\"synproxy_ack_bad\"} 0",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} not in:\n{body}");
    }
    let sock = lab.socket();
    let out = tapvsadm(&sock, "-L -n", None);
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        list.contains(&format!("TCP  {}:80 rr synproxy\n", lab::VIP)),
        "{list}"
    );
    let saved = String::from_utf8_lossy(&tapvsadm(&sock, "-S -n", None).stdout).to_string();
    assert!(
        saved.contains(&format!("-A -t {}:80 -s rr -j enable\n", lab::VIP)),
        "{saved}"
    );
    let out = tapvsadm(
        &sock,
        &format!(
            "-a -t {}:80 -r {}:80 -g",
            lab::VIP,
            // Another host on the real servers' segment (reachable, so only SYNPROXY refuses).
            std::net::Ipv4Addr::from(u32::from(lab::INT_ADDR) + 50)
        ),
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("SYNPROXY needs replies through the director"),
        "{out:?}"
    );
    let out = tapvsadm(
        &sock,
        &format!("-E -t {}:80 -s rr -j bogus", lab::VIP),
        None,
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let after = String::from_utf8_lossy(&tapvsadm(&sock, "-L -n", None).stdout).to_string();
    assert_eq!(after, list, "nothing changed");
    assert_eq!(conns.len(), 20, "{conns:?}");
    for (s, c) in &conns {
        assert_eq!(
            (c.syn, c.syn_ack, c.handshake_acks, c.rst),
            (1, 1, 1, 0),
            "stream {s}: {c:?}\n{}",
            rows.iter()
                .filter(|r| r[0] == s.to_string())
                .map(|r| r.join(" "))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Serves one download on `port` in `rs`: waits for the client's 3-byte request, sends
/// `bytes` of the stream for `seed`, closes.
fn download_server(rs: &Netns, port: u16, bytes: u64, seed: u64) -> std::thread::JoinHandle<()> {
    let listener = rs
        .run(move || TcpListener::bind(any(port)))
        .expect("bind download port");
    std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("no client: {e}"),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut req = [0u8; 3];
        s.read_exact(&mut req).expect("request");
        let mut st = seed;
        let mut buf = vec![0u8; 65536];
        let mut left = bytes;
        while left > 0 {
            fill(&mut st, &mut buf);
            let n = left.min(buf.len() as u64) as usize;
            s.write_all(&buf[..n]).expect("send");
            left -= n as u64;
        }
    })
}

/// Downloads from `vip` (a 3-byte request first, so the handshake completes even if the
/// client's ACK is lost): byte count and SHA-256.
fn download(vip: SocketAddr) -> (u64, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&vip, Duration::from_secs(10)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"go\n").expect("request");
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 65536];
    let mut n = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) => panic!("download from {vip} after {n} bytes: {e}"),
        }
    }
    (n, h.finalize().to_vec())
}

fn transfer(lab: &Lab, vport: u16, seed: u64, what: &str) {
    let server = download_server(&lab.reals[0], vport, MB200, seed);
    let t0 = Instant::now();
    let (n, digest) = lab.client.run(move || download(lab::vip(vport)));
    server.join().expect("server");
    assert_eq!(n, MB200, "{what}");
    assert_eq!(
        digest,
        expected_digest(MB200, seed),
        "{what}: SHA-256 differs"
    );
    let secs = t0.elapsed().as_secs_f64();
    eprintln!(
        "{what}: 200 MB in {secs:.1} s ({:.2} Gbit/s)",
        MB200 as f64 * 8.0 / secs / 1e9
    );
}

#[test]
fn bulk_through_nat_and_fullnat_with_and_without_loss() {
    if !precheck() {
        return;
    }
    let mut lab = Lab::build(1).expect("build lab");
    let services = format!(
        "{}{}",
        synproxy_service(5001, 5001, "nat", ""),
        synproxy_service(
            5002,
            5002,
            "fullnat",
            &format!("local_addresses = [\"{LIP}\"]\n")
        )
    );
    lab.start(&format!("{}{services}", lab::base_config(2)))
        .expect("start tapvs");
    for (k, v) in [
        ("net.ipv4.tcp_sack", "1"),
        ("net.ipv4.tcp_timestamps", "1"),
        ("net.ipv4.tcp_window_scaling", "1"),
    ] {
        lab.client
            .exec(&["sysctl", "-qw", &format!("{k}={v}")])
            .expect("sysctl");
    }
    transfer(&lab, 5001, 11, "NAT + SYNPROXY");
    transfer(&lab, 5002, 12, "FullNAT + SYNPROXY");
    // 1 % loss each way on the client's link.
    for chain in ["INPUT", "OUTPUT"] {
        lab.client
            .exec(&[
                "iptables-nft",
                "-A",
                chain,
                "-p",
                "tcp",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                "0.01",
                "-j",
                "DROP",
            ])
            .expect("loss rule");
    }
    // The real server's view of the lossy transfers: its SYN/ACKs and the client's segments
    // carrying SACK blocks, which must name bytes of the server's own sequence space.
    let cap = Capture::start(&lab.reals[0], "eth0", sack_or_syn_ack);
    transfer(&lab, 5001, 13, "NAT + SYNPROXY, 1 % loss");
    transfer(&lab, 5002, 14, "FullNAT + SYNPROXY, 1 % loss");
    let pcap = RmOnDrop(
        std::env::temp_dir().join(format!("tapvs-synproxy-sack-{}.pcap", std::process::id())),
    );
    cap.finish(&pcap.0);
    let rows = tshark::fields(
        &pcap.0,
        &["-o", "tcp.relative_sequence_numbers:FALSE"],
        &[
            "tcp.stream",
            "tcp.flags",
            "tcp.seq",
            "tcp.options.sack_le",
            "tcp.options.sack_re",
        ],
    );
    let mut isn: BTreeMap<String, u64> = BTreeMap::new();
    let mut sack_frames = 0;
    for r in &rows {
        let f: Vec<&str> = r.split('\t').collect();
        if tcp_flags(f[1]) & 0x12 == 0x12 {
            isn.insert(f[0].to_string(), f[2].parse().unwrap());
            continue;
        }
        let base = *isn.get(f[0]).expect("SYN/ACK before SACK");
        for edge in f[3]
            .split(',')
            .chain(f[4].split(','))
            .filter(|e| !e.is_empty())
        {
            let off = (edge.parse::<u64>().unwrap() + (1 << 32) - base) % (1 << 32);
            // The data is ISN+1 ..= ISN+200 MB and the FIN ISN+200 MB+1: a block that SACKs
            // the FIN (data before it lost) ends at ISN+200 MB+2.
            assert!(
                off <= MB200 + 2,
                "SACK edge {edge} is {off} bytes from the server's ISN {base}: not shifted"
            );
        }
        sack_frames += 1;
    }
    assert_eq!(isn.len(), 2, "both lossy transfers seen: {rows:?}");
    assert!(sack_frames > 0, "losses recovered with SACK: {rows:?}");
    eprintln!("{sack_frames} client segments with SACK blocks reached the real server");
    let counted = lab
        .client
        .exec(&["iptables-nft", "-L", "-v", "-n", "-x"])
        .expect("rule counters");
    let text = String::from_utf8_lossy(&counted.stdout).to_string();
    let dropped: u64 = text
        .lines()
        .filter(|l| l.contains("DROP"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    // Packets here are often GSO super-frames of up to 64 KiB: fewer, larger drops.
    assert!(
        dropped >= 20,
        "the loss rules dropped {dropped} packets:\n{text}"
    );
    let stats = wait_stats(&lab, |s| s.synproxy_established >= 4);
    assert!(stats.synproxy_established >= 4, "{stats:?}");
    assert!(
        stats.toa_added >= 2,
        "TOA on the FullNAT handshakes: {stats:?}"
    );
    eprintln!("loss rules dropped {dropped} packets; {stats:?}");
}
