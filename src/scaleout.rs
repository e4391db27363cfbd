//! Scale-out: several tapvs instances active at once behind a router that spreads flows over
//! them by ECMP. This module owns the `[scale_out]` config section and its validation (an
//! active-active NAT service is refused), and the format of the file tapvs writes for BIRD: a
//! `protocol static tapvs_vips` with one `route VIP/32 blackhole;` per IPv4 VIP it serves and a
//! `protocol static tapvs_vips6` with one `route VIP6/128 blackhole;` per IPv6 VIP, which the
//! config of the BIRD running beside the instance includes. The thread that decides what to
//! announce, and the watchdog process that withdraws when tapvs dies, are in
//! `control::announce`.

use std::fmt::Write as _;
use std::net::IpAddr;

use modes::Forward;
use serde::Deserialize;

/// `[scale_out]`: this instance is one of several active ones behind ECMP; its VIPs are
/// announced through the BIRD beside it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleOutConfig {
    /// The file tapvs (re)writes with the routes to announce (`protocol static tapvs_vips`
    /// for IPv4, `tapvs_vips6` for IPv6); BIRD's config includes it at top level. Absolute
    /// path.
    pub bird_include: String,
    /// The command that makes BIRD reread its config; tapvs appends `configure`. Default
    /// `["birdc"]` (add `"-s", "/path/bird.ctl"` for another control socket).
    #[serde(default = "default_birdc")]
    pub birdc: Vec<String>,
    /// How often (milliseconds) the announced set is re-evaluated: real-server health, port
    /// state. Default 200.
    #[serde(default = "default_interval")]
    pub interval_ms: u64,
}

fn default_birdc() -> Vec<String> {
    vec!["birdc".into()]
}

fn default_interval() -> u64 {
    200
}

/// Checks a `[scale_out]` section against the services: `services` holds, per service index,
/// its address and the forwarding method of each real server. Errors are (field, problem).
pub fn validate(
    so: &ScaleOutConfig,
    services: &[(std::net::SocketAddr, Vec<Forward>)],
) -> Result<(), (String, String)> {
    if !so.bird_include.starts_with('/') {
        return Err((
            "scale_out.bird_include".into(),
            format!("{:?} must be an absolute path", so.bird_include),
        ));
    }
    if so.birdc.is_empty() || so.birdc[0].is_empty() {
        return Err((
            "scale_out.birdc".into(),
            "must name a command (e.g. [\"birdc\", \"-s\", \"/run/bird/bird.ctl\"])".into(),
        ));
    }
    if !(10..=60_000).contains(&so.interval_ms) {
        return Err(("scale_out.interval_ms".into(), "must be 10..=60000".into()));
    }
    for (i, (vip, forwards)) in services.iter().enumerate() {
        for (j, f) in forwards.iter().enumerate() {
            if *f == Forward::Nat {
                return Err((
                    format!("service[{i}].real[{j}].forward"),
                    format!(
                        "nat is refused with [scale_out] (active-active): the real server's replies \
                         would go back to its one default gateway, not to the instance that owns the \
                         connection; use dr, tun or fullnat (with local addresses per instance) for {}",
                        vip
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The name of the BIRD protocol in the include file that carries the IPv4 VIPs; BGP exports
/// select it (`ipv4 { export where proto = "tapvs_vips"; };`).
pub const BIRD_PROTOCOL: &str = "tapvs_vips";

/// The name of the BIRD protocol in the include file that carries the IPv6 VIPs; an IPv6
/// channel selects it (`ipv6 { export where proto = "tapvs_vips6"; };`).
pub const BIRD_PROTOCOL6: &str = "tapvs_vips6";

/// The include file's text for `vips` (sorted, deduplicated by the caller): a BIRD `protocol
/// static` named [`BIRD_PROTOCOL`] with one `/32` blackhole route per IPv4 VIP, then one named
/// [`BIRD_PROTOCOL6`] with one `/128` blackhole route per IPv6 VIP (the next hop the router
/// sees is set by the BGP export). Both protocols are always present, without routes when
/// there is nothing of their family to announce.
pub fn bird_routes(vips: &[IpAddr]) -> String {
    let mut s = format!(
        "# written by tapvs: the VIPs this instance serves\nprotocol static {BIRD_PROTOCOL} {{\n  ipv4;\n"
    );
    for v in vips.iter().filter(|v| v.is_ipv4()) {
        let _ = writeln!(s, "  route {v}/32 blackhole;");
    }
    let _ = write!(s, "}}\nprotocol static {BIRD_PROTOCOL6} {{\n  ipv6;\n");
    for v in vips.iter().filter(|v| v.is_ipv6()) {
        let _ = writeln!(s, "  route {v}/128 blackhole;");
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_file_lists_each_vip_in_its_family() {
        let vips: Vec<IpAddr> = ["192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8:f::80"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let f = bird_routes(&vips);
        assert!(f.starts_with("# written by tapvs"), "{f}");
        assert!(
            f.ends_with(
                "protocol static tapvs_vips {\n  ipv4;\n  route 192.0.2.1/32 blackhole;\n  \
                 route 192.0.2.2/32 blackhole;\n}\nprotocol static tapvs_vips6 {\n  ipv6;\n  \
                 route 2001:db8::1/128 blackhole;\n  route 2001:db8:f::80/128 blackhole;\n}\n"
            ),
            "{f}"
        );
    }

    #[test]
    fn routes_file_keeps_both_protocols_when_a_family_is_empty() {
        // Nothing at all: the watchdog's "withdraw everything" text empties both.
        assert!(bird_routes(&[]).ends_with(
            "protocol static tapvs_vips {\n  ipv4;\n}\nprotocol static tapvs_vips6 {\n  ipv6;\n}\n"
        ));
        let only6 = bird_routes(&["2001:db8::1".parse().unwrap()]);
        assert!(
            only6.contains("protocol static tapvs_vips {\n  ipv4;\n}\n"),
            "{only6}"
        );
        assert!(
            only6.contains("  route 2001:db8::1/128 blackhole;\n}\n"),
            "{only6}"
        );
        let only4 = bird_routes(&["192.0.2.1".parse().unwrap()]);
        assert!(
            only4.ends_with("protocol static tapvs_vips6 {\n  ipv6;\n}\n"),
            "{only4}"
        );
        assert!(!only4.contains("/128"), "{only4}");
        // One route line per VIP, each in the protocol of its family.
        assert_eq!(only4.matches("route ").count(), 1);
    }
}

#[cfg(test)]
mod config_tests {
    use std::path::Path;

    const BASE: &str = r#"
[control]
socket = ""

[[port]]
name = "seg"
tap = "tp0"
addresses = ["10.88.0.11/24"]

[scale_out]
bird_include = "/run/tapvs/vips.conf"
birdc = ["birdc", "-s", "/run/bird.ctl"]

[[service]]
protocol = "tcp"
address = "198.51.100.10:80"
scheduler = "mh"
local_addresses = ["10.88.0.31"]
"#;

    fn parse(extra: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        crate::config::parse(&format!("{BASE}{extra}"), Path::new("so.toml"))
    }

    #[test]
    fn active_active_nat_is_refused_with_the_field_named() {
        let e = parse("[[service.real]]\naddress = \"10.88.0.101:80\"\nforward = \"dr\"\n[[service.real]]\naddress = \"10.88.0.102:8080\"\n")
            .unwrap_err();
        assert_eq!(e.field, "service[0].real[1].forward");
        assert!(
            e.message.contains("nat is refused with [scale_out]"),
            "{}",
            e.message
        );
        for fwd in ["dr", "tun", "fullnat"] {
            let c = parse(&format!(
                "[[service.real]]\naddress = \"10.88.0.101:80\"\nforward = \"{fwd}\"\n"
            ))
            .unwrap();
            let so = c.scale_out.unwrap();
            assert_eq!(so.birdc, ["birdc", "-s", "/run/bird.ctl"]);
            assert_eq!(so.interval_ms, 200);
        }
    }

    #[test]
    fn bad_scale_out_fields_are_named() {
        let bad = BASE.replace("/run/tapvs/vips.conf", "vips.conf");
        let e = crate::config::parse(&bad, Path::new("so.toml")).unwrap_err();
        assert_eq!(e.field, "scale_out.bird_include");
        let bad = BASE.replace(
            "birdc = [\"birdc\", \"-s\", \"/run/bird.ctl\"]",
            "birdc = []",
        );
        let e = crate::config::parse(&bad, Path::new("so.toml")).unwrap_err();
        assert_eq!(e.field, "scale_out.birdc");
        let bad = BASE.replace("[scale_out]\n", "[scale_out]\nspeaker = \"bgp\"\n");
        let e = crate::config::parse(&bad, Path::new("so.toml")).unwrap_err();
        assert!(e.field.starts_with("scale_out"), "{e}");
    }

    #[test]
    fn sloppy_tcp_global_and_per_service() {
        let c = parse("sloppy_tcp = true\n").unwrap();
        assert_eq!(c.services[0].sloppy_tcp, Some(true));
        assert!(!c.control.sloppy_tcp);
        let c = crate::config::parse(
            &BASE.replace("socket = \"\"", "socket = \"\"\nsloppy_tcp = true"),
            Path::new("so.toml"),
        )
        .unwrap();
        assert!(c.control.sloppy_tcp);
        assert_eq!(c.services[0].sloppy_tcp, None);
    }
}
