//! Maglev hashing across scale-out instances: several directors given the same real servers
//! must choose the same one for the same flow, whatever order the real servers were added in,
//! whatever was scheduled before, and after a rebuild. Without this, a flow that ECMP moves to
//! another instance mid-stream would land on a different real server.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use sched::{build, Dest, Input, SchedSpec, Scheduler};

fn dest(last: u8, weight: u32) -> Arc<Dest> {
    Arc::new(Dest::new(
        IpAddr::V4(Ipv4Addr::new(10, 88, 0, last)),
        80,
        weight,
    ))
}

fn input(i: u32) -> Input {
    Input {
        proto: 6,
        src: IpAddr::V4(Ipv4Addr::from(0x0a4d_0000 + i * 7919)),
        src_port: 20_000 + (i % 40_000) as u16,
        dst: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)),
        dst_port: 80,
        now_secs: 0,
    }
}

fn spec(flags: &[&str]) -> SchedSpec {
    SchedSpec {
        flags: flags.iter().map(|f| f.to_string()).collect(),
        ..SchedSpec::new("mh")
    }
}

/// The address each of `n` flows is sent to.
fn choices(s: &dyn Scheduler, dests: &[Arc<Dest>], n: u32) -> Vec<Ipv4Addr> {
    (0..n)
        .map(|i| {
            let k = s.schedule(dests, &input(i)).expect("a usable dest");
            match dests[k].addr() {
                IpAddr::V4(a) => a,
                IpAddr::V6(_) => unreachable!(),
            }
        })
        .collect()
}

#[test]
fn every_instance_with_the_same_real_servers_chooses_the_same_one() {
    for flags in [&[][..], &["mh-port"][..]] {
        // Instance A: added in order; instance B: the reverse; instance C: shuffled, built
        // with fresh Dest objects, after scheduling other flows first.
        let weights = [(2u8, 1u32), (3, 1), (4, 2), (5, 1)];
        let a: Vec<_> = weights.iter().map(|&(l, w)| dest(l, w)).collect();
        let b: Vec<_> = weights.iter().rev().map(|&(l, w)| dest(l, w)).collect();
        let c: Vec<_> = [2usize, 0, 3, 1]
            .iter()
            .map(|&i| dest(weights[i].0, weights[i].1))
            .collect();
        let sa = build(&spec(flags), &a).unwrap();
        let sb = build(&spec(flags), &b).unwrap();
        let sc = build(&spec(flags), &c).unwrap();
        let _ = choices(sc.as_ref(), &c, 500);
        let want = choices(sa.as_ref(), &a, 2000);
        assert_eq!(
            want,
            choices(sb.as_ref(), &b, 2000),
            "flags {flags:?}: reversed order"
        );
        assert_eq!(
            want,
            choices(sc.as_ref(), &c, 2000),
            "flags {flags:?}: shuffled order"
        );
        // A rebuild (what an ipvsadm edit or a health verdict triggers) keeps the table.
        let rb = sb.rebuild(&b);
        assert_eq!(
            want,
            choices(rb.as_ref(), &b, 2000),
            "flags {flags:?}: rebuilt"
        );
        // Every real server gets flows (the comparison is not trivially about one server).
        for (l, _) in weights {
            assert!(
                want.contains(&Ipv4Addr::new(10, 88, 0, l)),
                "10.88.0.{l} got none"
            );
        }
    }
}

#[test]
fn a_removed_and_readded_real_server_does_not_change_the_table() {
    let a: Vec<_> = [2u8, 3, 4].iter().map(|&l| dest(l, 1)).collect();
    // B had 10.88.0.2 deleted and added again: it is now last in B's list.
    let b = vec![a[1].clone(), a[2].clone(), dest(2, 1)];
    let sa = build(&spec(&[]), &a).unwrap();
    let sb = build(&spec(&[]), &b).unwrap();
    assert_eq!(
        choices(sa.as_ref(), &a, 3000),
        choices(sb.as_ref(), &b, 3000)
    );
}
