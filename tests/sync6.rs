//! Connection sync (IPVS sync v1) of IPv6 connections through the frame pipeline, frames in
//! and entries out (no root, no TAP). Master: an IPv6 NAT connection entering ESTABLISHED is
//! queued as an IPv6 entry (type 1, 16-byte addresses) that survives the wire format, and
//! nothing is counted as skipped; a NAT64 connection (mixed families) is not queued and is
//! counted. Backup: IPv6 NAT and FullNAT entries become connections
//! without scheduling, with the synced real server and local address, and the client's next
//! packets are forwarded to them. An independent decoder: tshark's IPVS dissector reads a
//! message of IPv6 entries (NAT and FullNAT) with their addresses, ports and sizes.

#[path = "common/rig6.rs"]
mod rig6;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use etherparse::PacketBuilder;
use modes::wire::ipvs_sync::{flags, MessageBuilder, SyncConn, SyncMessage};
use modes::Forward;
use rig6::{client, ip, vip6, Rig, CLIENT_MAC, EXT, EXT_MAC, INT, INT_MAC};
use tapvs::datapath::conn::{FlowKey, Xmit};
use tapvs::datapath::ha::Standby;
use tapvs::datapath::pipeline::Verdict;
use tapvs::datapath::service::Service;
use tapvs::datapath::tcp_state::State;

const RS_MAC: [u8; 6] = [0x02, 0x5e, 0, 0, 0, 0x02];

fn rs() -> Ipv6Addr {
    ip("2001:db8:5::2")
}
fn lip6() -> Ipv6Addr {
    ip("2001:db8:5::100")
}

/// A TCP service on `[VIP6]:vport` with the real server `[rs]:8080` by `fwd`.
fn service(vport: u16, fwd: Forward, id: u32) -> Service {
    rig6::one_real(vport, rs(), 8080, fwd, id)
}

impl Rig {
    /// The rig with a NAT (port 80) and a FullNAT (port 82, IPv6 local address) service, the
    /// real server resolved; the sync master's role when `sync_master`, else the backup's.
    fn new(sync_master: bool) -> Rig {
        let mut fnat = service(82, Forward::FullNat, 1);
        fnat.local_addresses = Arc::from(vec![IpAddr::V6(lip6())]);
        let mut rig = Rig::build(1500, vec![service(80, Forward::Nat, 0), fnat]);
        rig.learn(rs(), INT, RS_MAC);
        rig.standby = Standby {
            sync_master,
            sync_port: 8848,
            ..tapvs::datapath::ha::NO_STANDBY.clone()
        };
        rig
    }
}

/// A TCP segment as a frame: `flags` "S" (SYN), "SA" (SYN-ACK) or "A" (ACK).
fn tcp(eth: ([u8; 6], [u8; 6]), src: (Ipv6Addr, u16), dst: (Ipv6Addr, u16), f: &str) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(eth.1, eth.0)
        .ipv6(src.0.octets(), dst.0.octets(), 64)
        .tcp(src.1, dst.1, 1000, 64240);
    let b = match f {
        "S" => b.syn(),
        "SA" => b.syn().ack(1001),
        _ => b.ack(5001),
    };
    let mut out = Vec::new();
    b.write(&mut out, &[]).unwrap();
    out
}

fn entry(vport: u16, fwd: u32, cport: u16) -> SyncConn {
    SyncConn {
        protocol: 6,
        flags: fwd,
        state: 1,
        cport,
        vport,
        dport: 8080,
        fwmark: 0,
        timeout: 900,
        caddr: client().into(),
        vaddr: vip6().into(),
        daddr: rs().into(),
        fullnat: None,
    }
}

#[test]
fn master_queues_ipv6_connections_as_ipv6_entries() {
    let mut rig = Rig::new(true);
    let to_vip = (EXT_MAC, CLIENT_MAC);
    let syn = tcp(to_vip, (client(), 40000), (vip6(), 80), "S");
    assert!(matches!(
        rig.feed(EXT, &syn),
        Verdict::Transmit { port: INT, .. }
    ));
    let synack = tcp((INT_MAC, RS_MAC), (rs(), 8080), (client(), 40000), "SA");
    assert!(matches!(
        rig.feed(INT, &synack),
        Verdict::Transmit { port: EXT, .. }
    ));
    let ack = tcp(to_vip, (client(), 40000), (vip6(), 80), "A");
    assert!(matches!(
        rig.feed(EXT, &ack),
        Verdict::Transmit { port: INT, .. }
    ));
    let (q, lost) = rig.pipe.drain_sync();
    let got: Vec<SyncConn> = q.collect();
    assert_eq!(lost, 0);
    assert_eq!(got, vec![entry(80, flags::MASQ, 40000)], "ESTABLISHED");
    assert_eq!(rig.pipe.counters().traffic.sync_skipped_v6, 0);
    // On the wire: an IPv6 entry (type 1, 72 bytes) that decodes to the same.
    let mut buf = [0u8; 200];
    let mut m = MessageBuilder::new(&mut buf, 9);
    assert!(m.push(&got[0]));
    let n = m.finish();
    assert_eq!(n, 8 + 72);
    assert_eq!(&buf[8..12], &[1, 6, 0, 72]);
    let msg = SyncMessage::new_checked(&buf[..n]).unwrap();
    assert_eq!(msg.conns().next(), Some(Ok(got[0])));
}

#[test]
fn backup_installs_ipv6_entries_without_scheduling() {
    let mut rig = Rig::new(false);
    // NAT: a connection to the synced real server, ESTABLISHED; the client's next segment
    // (no SYN) goes to it.
    let e = entry(80, flags::MASQ, 40000);
    assert_eq!(rig.apply(&e), Ok(()));
    let key = FlowKey::new(6, IpAddr::V6(client()), 40000, IpAddr::V6(vip6()), 80);
    let c = rig.pipe.table().lookup(&key).expect("synced connection");
    let c = rig.pipe.table().get(c.slot);
    assert_eq!(
        (c.daddr, c.dport, c.state),
        (IpAddr::V6(rs()), 8080, State::Established)
    );
    let ack = tcp((EXT_MAC, CLIENT_MAC), (client(), 40000), (vip6(), 80), "A");
    assert_eq!(
        rig.feed(EXT, &ack),
        Verdict::Transmit {
            port: INT,
            hop: IpAddr::V6(rs())
        }
    );
    // An update refreshes the same connection (FIN_WAIT).
    let fin = SyncConn { state: 4, ..e };
    assert_eq!(rig.apply(&fin), Ok(()));
    assert_eq!(rig.pipe.table().len(), 1);
    // FullNAT: the IPv6 local address and port come from the entry.
    let f = SyncConn {
        fullnat: Some((lip6().into(), 5000)),
        ..entry(82, flags::FULLNAT, 40001)
    };
    assert_eq!(rig.apply(&f), Ok(()));
    let key = FlowKey::new(6, IpAddr::V6(client()), 40001, IpAddr::V6(vip6()), 82);
    let s = rig.pipe.table().lookup(&key).expect("fullnat entry").slot;
    assert!(matches!(
        rig.pipe.table().get(s).xmit,
        Xmit::FullNat { lip, lport: 5000, .. } if lip == IpAddr::V6(lip6())
    ));
    // Another real server, or an IPv4 entry for the IPv6 VIP's port: refused.
    let other = SyncConn {
        daddr: ip("2001:db8:5::9").into(),
        cport: 40002,
        ..e
    };
    assert!(rig.apply(&other).is_err());
    assert_eq!(rig.pipe.table().len(), 2);
}

/// The frame of a sync message `msg` as the master sends it: Ethernet, IPv4 from 172.16.0.11 to
/// 224.0.0.81, UDP 8848 (checksum 0, "none", allowed over IPv4), in a one-frame pcap file.
fn sync_pcap(msg: &[u8], path: &std::path::Path) {
    let udp_len = 8 + msg.len();
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 1, 0, 0, 1, 17, 0, 0, 172, 16, 0, 11, 224, 0, 0, 81,
    ];
    ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    let sum = ip
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    let mut frame = vec![
        0x01, 0x00, 0x5e, 0, 0, 0x51, 0x02, 0x74, 0x76, 0, 1, 2, 0x08, 0,
    ];
    frame.extend_from_slice(&ip);
    frame.extend_from_slice(&8848u16.to_be_bytes());
    frame.extend_from_slice(&8848u16.to_be_bytes());
    frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(msg);
    let mut pcap = Vec::new();
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, 1, 0, 0] {
        pcap.extend_from_slice(&v.to_le_bytes());
    }
    // The header's version fields are two u16s (2, 4): little-endian u32 0x00040002 above.
    pcap.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    pcap.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    pcap.extend_from_slice(&frame);
    std::fs::write(path, pcap).unwrap();
}

/// An independent decoder: tshark's IPVS dissector reads the IPv6 entries (plain and FullNAT,
/// whose option it skips by the entry size) with the right addresses, ports and sizes.
#[test]
fn tshark_decodes_the_ipv6_entries() {
    let have = std::process::Command::new("tshark")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        tapvs_lab::netns::skip_or_fail("tshark is needed (scripts/deps)");
        return;
    }
    let nat = entry(80, flags::MASQ, 40000);
    let fnat = SyncConn {
        fullnat: Some((lip6().into(), 5000)),
        ..entry(82, flags::FULLNAT, 40001)
    };
    let mut buf = [0u8; 300];
    let mut m = MessageBuilder::new(&mut buf, 9);
    assert!(m.push(&nat) && m.push(&fnat));
    let n = m.finish();
    let path = std::env::temp_dir().join(format!("tapvs-sync6-{}.pcap", std::process::id()));
    sync_pcap(&buf[..n], &path);
    // The verbose tree: this dissector's IPv6 client and virtual address fields do not
    // come out with `-T fields`.
    let out = std::process::Command::new("tshark")
        .args(["-r"])
        .arg(&path)
        .args(["-d", "udp.port==8848,ipvs", "-V"])
        .output()
        .expect("tshark");
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    let ipvs = text
        .split("IP Virtual Services Sync Daemon")
        .nth(1)
        .unwrap_or_else(|| panic!("no IPVS layer: {text}"));
    let lines: Vec<&str> = ipvs.lines().map(str::trim).collect();
    let count = |l: &str| lines.iter().filter(|x| **x == l).count();
    assert_eq!(count("Connection Count: 2"), 1, "{ipvs}");
    assert_eq!(count("Type: Unknown (1)"), 2, "{ipvs}");
    assert_eq!(count("Client Address: 2001:db8:c::2"), 2, "{ipvs}");
    assert_eq!(count("Virtual Address: 2001:db8:f::80"), 2, "{ipvs}");
    assert_eq!(count("Destination Address: 2001:db8:5::2"), 2, "{ipvs}");
    assert_eq!(count("Client Port: 40000"), 1, "{ipvs}");
    assert_eq!(count("Client Port: 40001"), 1, "{ipvs}");
    assert_eq!(count("Virtual Port: 82"), 1, "{ipvs}");
    assert_eq!(count("Destination Port: 8080"), 2, "{ipvs}");
    assert_eq!(count("Timeout: 900"), 2, "{ipvs}");
    assert_eq!(count("Flags: 0x00000005"), 1, "FullNAT: {ipvs}");
    assert!(lines.iter().any(|l| l.ends_with("= Size: 72")), "{ipvs}");
    assert!(lines.iter().any(|l| l.ends_with("= Size: 92")), "{ipvs}");
    assert!(!ipvs.contains("Malformed"), "{ipvs}");
}

/// NAT64 (an IPv6 client and VIP, an IPv4 real server through an IPv4 local address): sync v1
/// has one family per entry, so the master queues nothing for it and counts it skipped.
#[test]
fn master_skips_and_counts_nat64_connections() {
    let mut rig = Rig::new(true);
    let rs4 = std::net::Ipv4Addr::new(172, 16, 0, 5);
    let lip4 = std::net::Ipv4Addr::new(172, 16, 0, 100);
    let dests = vec![Arc::new(sched::Dest::new(IpAddr::V4(rs4), 8080, 1))];
    let mut svc = service(83, Forward::FullNat, 2);
    svc.sched = sched::build(&sched::SchedSpec::new("rr".to_string()), &dests)
        .unwrap()
        .into();
    svc.dests = dests;
    svc.local_addresses = Arc::from(vec![IpAddr::V4(lip4)]);
    rig.snap.with_service(Arc::new(svc));
    rig.pipe.reserve_dests(3);
    rig.learn(rs4, INT, RS_MAC);
    let to_vip = (EXT_MAC, CLIENT_MAC);
    let syn = tcp(to_vip, (client(), 40000), (vip6(), 83), "S");
    assert!(matches!(
        rig.feed(EXT, &syn),
        Verdict::Transmit { port: INT, .. }
    ));
    let key = FlowKey::new(6, IpAddr::V6(client()), 40000, IpAddr::V6(vip6()), 83);
    let slot = rig
        .pipe
        .table()
        .lookup(&key)
        .expect("NAT64 connection")
        .slot;
    let Xmit::FullNat { lport, .. } = rig.pipe.table().get(slot).xmit else {
        panic!("not FullNAT");
    };
    let mut synack = Vec::new();
    PacketBuilder::ethernet2(RS_MAC, INT_MAC)
        .ipv4(rs4.octets(), lip4.octets(), 64)
        .tcp(8080, lport, 7000, 64240)
        .syn()
        .ack(1001)
        .write(&mut synack, &[])
        .unwrap();
    assert!(matches!(
        rig.feed(INT, &synack),
        Verdict::Transmit { port: EXT, .. }
    ));
    let ack = tcp(to_vip, (client(), 40000), (vip6(), 83), "A");
    assert!(matches!(
        rig.feed(EXT, &ack),
        Verdict::Transmit { port: INT, .. }
    ));
    assert_eq!(rig.pipe.table().get(slot).state, State::Established);
    let (q, lost) = rig.pipe.drain_sync();
    assert_eq!((q.count(), lost), (0, 0));
    assert_eq!(rig.pipe.counters().traffic.sync_skipped_v6, 1);
}
