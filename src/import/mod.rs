//! `tapvs import-keepalived`: a keepalived.conf (with its includes) turned into the equivalent
//! tapvs TOML. [`parse`] reads the block syntax into a tree with file and line on every node;
//! this module walks the tree and writes the TOML text: `virtual_server` (and the members of a
//! `virtual_server_group`, one service each) with scheduler, forwarding method, persistence,
//! quorum, sorry server, health timing, every checker tapvs has and the real servers'
//! `notify_up`/`notify_down`; `vrrp_instance` as `[[vrrp]]`; `lvs_timeouts` and
//! `lvs_sync_daemon` from `global_defs`. Addresses may be IPv4 or IPv6 (written bracketed with
//! a port, `[2001:db8::1]:80`); a group, an instance and a service have one family. Every
//! keyword without a tapvs equivalent becomes a [`Report`] line with its file and line, never
//! silently dropped. keepalived names interfaces where tapvs has `[[port]]` sections: the
//! caller passes a TOML fragment with the ports (copied verbatim), or commented placeholders
//! are written. Pure apart from reading the input files.

pub mod parse;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use parse::{Node, Word};

/// What an import found that the TOML does not carry, or that the reader should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `file:line`.
    pub at: String,
    /// The message (without the place).
    pub message: String,
    /// True for a keyword (or value) tapvs has no equivalent for; `--strict` fails on these.
    pub unsupported: bool,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.message)
    }
}

/// The result of an import.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The tapvs configuration text.
    pub toml: String,
    /// Unsupported keywords and notes, in file order.
    pub reports: Vec<Report>,
}

/// The `[[port]]` sections to copy into the output (`--ports FILE`).
pub struct Ports<'a> {
    /// Where they came from (named in messages).
    pub file: &'a Path,
    /// The TOML fragment, copied verbatim.
    pub text: &'a str,
}

/// The keywords the import converts, by block (printed by `--list`).
pub const SUPPORTED: &[(&str, &str)] = &[
    ("top level", "global_defs virtual_server virtual_server_group vrrp_instance local_address_group include"),
    ("global_defs", "lvs_timeouts lvs_sync_daemon (id maxlen port group) vrrp_version"),
    ("virtual_server", "lb_algo lvs_sched lb_kind lvs_method (NAT DR TUN [type ipip] FNAT FULLNAT) protocol (TCP UDP) persistence_timeout persistence_granularity ops flag-1 flag-2 sh-port sh-fallback mh-port mh-fallback quorum hysteresis quorum_up quorum_down sorry_server delay_loop connect_timeout retry delay_before_retry warmup alpha inhibit_on_failure virtualhost laddr_group_name real_server"),
    ("real_server", "weight lb_kind lvs_method uthreshold lthreshold notify_up notify_down inhibit_on_failure alpha delay_loop connect_timeout retry delay_before_retry warmup virtualhost TCP_CHECK HTTP_GET SSL_GET UDP_CHECK PING_CHECK MISC_CHECK"),
    ("checkers", "connect_ip connect_port delay_loop connect_timeout retry nb_get_retry delay_before_retry warmup alpha"),
    ("HTTP_GET SSL_GET", "url { path digest status_code virtualhost } virtualhost enable_sni sni_name"),
    ("UDP_CHECK", "payload require_reply (hex, no X wildcards)"),
    ("MISC_CHECK", "misc_path misc_timeout misc_dynamic"),
    ("vrrp_instance", "state interface virtual_router_id priority advert_int version nopreempt preempt preempt_delay authentication { auth_type PASS auth_pass } unicast_peer virtual_ipaddress track_interface (with weight) notify notify_master notify_backup notify_fault"),
    ("vrrp_sync_group", "group notify_master notify_backup notify_fault"),
];

/// An import that cannot go on: a syntax error, or a value the output cannot be built from.
pub type Error = parse::Error;

/// Imports `path` (and what it includes).
pub fn import(path: &Path, ports: Option<Ports<'_>>) -> Result<Imported, Error> {
    let (nodes, notices) = parse::parse_file(path)?;
    convert(&nodes, notices, path, ports)
}

/// Converts a parsed tree that came from `path`.
fn convert(
    nodes: &[Node],
    notices: Vec<parse::Notice>,
    path: &Path,
    ports: Option<Ports<'_>>,
) -> Result<Imported, Error> {
    let mut c = Conv::default();
    for n in notices {
        c.reports.push(Report {
            at: n.at,
            message: n.message,
            unsupported: false,
        });
    }
    c.top(nodes)?;
    let mut out = c.finish(path, ports);
    // File order: by file, then line (numerically).
    out.reports.sort_by_key(|r| {
        let (file, line) = r.at.rsplit_once(':').unwrap_or((r.at.as_str(), ""));
        (file.to_string(), line.parse::<usize>().unwrap_or(0))
    });
    Ok(out)
}

/// A TOML table being written: keys and rendered values, in order.
#[derive(Debug, Clone, Default)]
struct Kv(Vec<(String, String)>);

impl Kv {
    fn set(&mut self, k: &str, v: String) {
        self.0.retain(|(key, _)| key != k);
        self.0.push((k.to_string(), v));
    }
    fn has(&self, k: &str) -> bool {
        self.0.iter().any(|(key, _)| key == k)
    }
    fn lines(&self, out: &mut String) {
        for (k, v) in &self.0 {
            let _ = writeln!(out, "{k} = {v}");
        }
    }
    fn inline(&self) -> String {
        let items: Vec<String> = self.0.iter().map(|(k, v)| format!("{k} = {v}")).collect();
        format!("{{ {} }}", items.join(", "))
    }
}

/// A TOML basic string.
fn q(s: &str) -> String {
    let mut o = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\t' => o.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn q_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| q(s)).collect();
    format!("[{}]", items.join(", "))
}

#[derive(Debug, Clone, Default)]
struct Check {
    at: String,
    kv: Kv,
    urls: Vec<Kv>,
    /// The real server's or virtual server's `virtualhost`, used when the check has none.
    inherited_host: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Real {
    at: String,
    /// The real server's address as keepalived wrote it (`ADDR PORT`), for messages.
    what: String,
    /// Whether its address is IPv6.
    v6: bool,
    kv: Kv,
    health: Kv,
    checks: Vec<Check>,
    forward: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Svc {
    at: String,
    protocol: String,
    address: String,
    kv: Kv,
    health: Kv,
    reals: Vec<Real>,
    forward: String,
    /// Its `laddr_group_name`'s addresses.
    local_addresses: Vec<IpAddr>,
}

/// A `virtual_ipaddress` entry or a `unicast_peer` of a vrrp_instance.
struct Vip {
    /// Where it was written.
    at: String,
    /// As written (for messages).
    text: String,
    ip: IpAddr,
    /// A prefix length that is not a host's, dropped with a note.
    prefix: Option<u8>,
}

/// A member of a virtual_server_group: address and port (none: port 0).
type Member = (IpAddr, Option<u16>);

#[derive(Default)]
struct Conv {
    reports: Vec<Report>,
    services: Vec<Svc>,
    vrrp: Vec<(String, Kv)>,
    sync_groups: Vec<(String, Kv)>,
    timeouts: Kv,
    sync: Kv,
    /// `vrrp_version` from global_defs: the default version of the instances.
    vrrp_version: Option<String>,
    groups: Vec<(String, Vec<Member>)>,
    laddr_groups: Vec<(String, Vec<IpAddr>)>,
    /// Interfaces named (vrrp, tracking, sync) and where first.
    interfaces: Vec<(String, String)>,
}

fn err(n: &Node, message: String) -> Error {
    Error {
        file: n.file.to_path_buf(),
        line: n.line,
        message,
    }
}

/// keepalived's <BOOL>; a bare keyword is true.
fn boolean(n: &Node) -> Result<bool, Error> {
    match n
        .args
        .first()
        .map(|w| w.text.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("on" | "true" | "yes") => Ok(true),
        Some("off" | "false" | "no") => Ok(false),
        Some(o) => Err(err(
            n,
            format!("'{}': {o:?} is not on|off|true|false|yes|no", n.keyword),
        )),
    }
}

fn one_arg(n: &Node) -> Result<&str, Error> {
    match n.args.as_slice() {
        [w] => Ok(&w.text),
        _ => Err(err(n, format!("'{}' takes one value", n.keyword))),
    }
}

fn integer(n: &Node, max: u64) -> Result<u64, Error> {
    let a = one_arg(n)?;
    a.parse::<u64>().ok().filter(|v| *v <= max).ok_or_else(|| {
        err(
            n,
            format!("'{}': {a:?} is not an integer 0..={max}", n.keyword),
        )
    })
}

/// A <TIMER>: seconds, fractions allowed; rendered as a TOML number.
fn timer(n: &Node) -> Result<String, Error> {
    let a = one_arg(n)?;
    match a.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(if v.fract() == 0.0 && v < 1e15 {
            format!("{}", v as u64)
        } else {
            format!("{v}")
        }),
        _ => Err(err(
            n,
            format!("'{}': {a:?} is not a number of seconds", n.keyword),
        )),
    }
}

fn ipv4(n: &Node, s: &str) -> Result<Ipv4Addr, Error> {
    s.parse()
        .map_err(|_| err(n, format!("'{}': {s:?} is not an IPv4 address", n.keyword)))
}

/// An IPv4 or IPv6 address, as keepalived writes them (IPv6 without brackets).
fn ip(n: &Node, s: &str) -> Result<IpAddr, Error> {
    s.parse().map_err(|_| {
        err(
            n,
            format!("'{}': {s:?} is not an IPv4 or IPv6 address", n.keyword),
        )
    })
}

/// An address with an optional port in tapvs syntax: `a.b.c.d:port`, `[v6]:port`, or without
/// the port `a.b.c.d`, `[v6]`.
fn endpoint(ip: IpAddr, port: Option<u16>) -> String {
    match (ip, port) {
        (IpAddr::V4(a), Some(p)) => format!("{a}:{p}"),
        (IpAddr::V4(a), None) => a.to_string(),
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (IpAddr::V6(a), None) => format!("[{a}]"),
    }
}

/// The family of an address, for messages.
fn family(v6: bool) -> &'static str {
    if v6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

fn port(n: &Node, s: &str) -> Result<u16, Error> {
    s.parse()
        .map_err(|_| err(n, format!("'{}': {s:?} is not a port", n.keyword)))
}

/// A script: a quoted string (then optional user and group, which tapvs does not have), or
/// the unquoted words joined.
fn script(c: &mut Conv, n: &Node) -> Result<String, Error> {
    match n.args.as_slice() {
        [] => Err(err(n, format!("'{}' needs a script", n.keyword))),
        [first, rest @ ..] if first.quoted => {
            if !rest.is_empty() {
                c.unsupported_value(n, "username/groupname");
            }
            Ok(first.text.clone())
        }
        words => Ok(words
            .iter()
            .map(|w| w.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")),
    }
}

/// keepalived's free-format hex (`Ab12f 3 456` is AB 12 0F 03 45 06) as plain hex digits.
fn hex(n: &Node, words: &[Word]) -> Result<String, Error> {
    let mut out = String::new();
    for w in words {
        let t = w.text.trim_start_matches("0x");
        if !t.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(err(
                n,
                format!(
                    "'{}': {:?} is not hex (X wildcards have no tapvs equivalent)",
                    n.keyword, w.text
                ),
            ));
        }
        let b = t.as_bytes();
        for pair in b.chunks(2) {
            if pair.len() == 2 {
                out.push(char::from(pair[0]));
                out.push(char::from(pair[1]));
            } else {
                out.push('0');
                out.push(char::from(pair[0]));
            }
        }
    }
    Ok(out)
}

/// Addresses of a group member: `a.b.c.d`, `a.b.c.d-e`, `a.b.c.d-e.f.g.h`, `a.b.c.d/nn`, and
/// for IPv6 (as keepalived) `v6`, `v6-x` (`x` the last 16-bit group, hex: `2001:db8::10-1f`),
/// `v6-v6` and `v6/nn`. At most 1024 addresses.
fn address_range(n: &Node, s: &str) -> Result<Vec<IpAddr>, Error> {
    const MAX: u128 = 1024;
    let first = s.split(['/', '-']).next().unwrap_or_default();
    let v6 = ip(n, first)?.is_ipv6();
    let bits: u32 = if v6 { 128 } else { 32 };
    let num = |a: IpAddr| match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    };
    let same = |a: IpAddr| -> Result<u128, Error> {
        if a.is_ipv6() != v6 {
            return Err(err(n, format!("{s:?}: the range mixes IPv4 and IPv6")));
        }
        Ok(num(a))
    };
    let (lo, hi) = if let Some((a, p)) = s.split_once('/') {
        let a = same(ip(n, a)?)?;
        let p: u32 = p
            .parse()
            .ok()
            .filter(|p| *p <= bits)
            .ok_or_else(|| err(n, format!("{s:?}: bad prefix length")))?;
        let host = if p == 0 {
            u128::MAX
        } else {
            (1u128 << (bits - p)).wrapping_sub(1)
        } & (u128::MAX >> (128 - bits));
        (a & !host, (a & !host) | host)
    } else if let Some((a, b)) = s.split_once('-') {
        let lo = same(ip(n, a)?)?;
        let hi = if b.contains(if v6 { ':' } else { '.' }) {
            same(ip(n, b)?)?
        } else if v6 {
            let last = u16::from_str_radix(b, 16)
                .map_err(|_| err(n, format!("{s:?}: bad range end (hex)")))?;
            (lo & !0xffff) | u128::from(last)
        } else {
            let last: u8 = b
                .parse()
                .map_err(|_| err(n, format!("{s:?}: bad range end")))?;
            (lo & !0xff) | u128::from(last)
        };
        (lo, hi)
    } else {
        let a = num(ip(n, s)?);
        (a, a)
    };
    if hi < lo || hi - lo >= MAX {
        return Err(err(
            n,
            format!("{s:?}: the range must be ascending and at most {MAX} addresses"),
        ));
    }
    Ok((lo..=hi)
        .map(|a| {
            if v6 {
                IpAddr::V6(Ipv6Addr::from(a))
            } else {
                IpAddr::V4(Ipv4Addr::from(a as u32))
            }
        })
        .collect())
}

impl Conv {
    fn unsupported(&mut self, n: &Node) {
        let what = match &n.block {
            Some(b) if !b.is_empty() => format!(
                "'{}' has no tapvs equivalent (ignored, with the {} line(s) of its block)",
                n.keyword,
                count(b)
            ),
            _ => format!("'{}' has no tapvs equivalent (ignored)", n.keyword),
        };
        self.reports.push(Report {
            at: n.at(),
            message: what,
            unsupported: true,
        });
    }

    fn unsupported_value(&mut self, n: &Node, what: &str) {
        self.reports.push(Report {
            at: n.at(),
            message: format!("'{}' {what} has no tapvs equivalent (ignored)", n.keyword),
            unsupported: true,
        });
    }

    fn note(&mut self, n: &Node, message: String) {
        self.reports.push(Report {
            at: n.at(),
            message,
            unsupported: false,
        });
    }

    fn interface(&mut self, n: &Node, name: &str) {
        if !self.interfaces.iter().any(|(i, _)| i == name) {
            self.interfaces.push((name.to_string(), n.at()));
        }
    }

    fn top(&mut self, nodes: &[Node]) -> Result<(), Error> {
        // Groups first: a virtual_server may name a group defined after it.
        for n in nodes {
            match n.keyword.as_str() {
                "virtual_server_group" => self.group(n)?,
                "local_address_group" => self.laddr_group(n)?,
                _ => {}
            }
        }
        for n in nodes {
            match n.keyword.as_str() {
                "virtual_server_group" | "local_address_group" => {}
                "global_defs" => self.global_defs(n)?,
                "virtual_server" => self.virtual_server(n)?,
                "vrrp_instance" => self.vrrp_instance(n)?,
                "vrrp_sync_group" => self.vrrp_sync_group(n)?,
                _ => self.unsupported(n),
            }
        }
        Ok(())
    }

    fn global_defs(&mut self, n: &Node) -> Result<(), Error> {
        for c in n.block.as_deref().unwrap_or_default() {
            match c.keyword.as_str() {
                "lvs_timeouts" => {
                    let a = c.arg_texts();
                    let mut i = 0;
                    while i < a.len() {
                        let key = match a[i] {
                            "tcp" => "tcp",
                            "tcpfin" => "tcp_fin",
                            "udp" => "udp",
                            o => {
                                return Err(err(
                                    c,
                                    format!("'lvs_timeouts': {o:?} is not tcp, tcpfin or udp"),
                                ))
                            }
                        };
                        let v = a
                            .get(i + 1)
                            .and_then(|v| v.parse::<u32>().ok())
                            .ok_or_else(|| {
                                err(
                                    c,
                                    format!("'lvs_timeouts': {key} needs a number of seconds"),
                                )
                            })?;
                        self.timeouts.set(key, v.to_string());
                        i += 2;
                    }
                }
                "lvs_sync_daemon" => self.sync_daemon(c)?,
                "vrrp_version" => self.vrrp_version = Some(integer(c, 3)?.to_string()),
                _ => self.unsupported(c),
            }
        }
        Ok(())
    }

    fn sync_daemon(&mut self, c: &Node) -> Result<(), Error> {
        let a = c.arg_texts();
        let Some(ifname) = a.first() else {
            return Err(err(c, "'lvs_sync_daemon' needs an interface".into()));
        };
        self.interface(c, ifname);
        self.sync.set("master", "true".into());
        self.sync.set("backup", "true".into());
        self.sync.set("mcast_interface", q(ifname));
        let mut i = 1;
        while i < a.len() {
            let v = a.get(i + 1).copied().unwrap_or_default();
            let num = || {
                v.parse::<u32>()
                    .map_err(|_| err(c, format!("'lvs_sync_daemon': {} needs a number", a[i])))
            };
            match a[i] {
                "id" => self.sync.set("syncid", num()?.to_string()),
                "maxlen" => self.sync.set("sync_maxlen", num()?.to_string()),
                "port" => self.sync.set("mcast_port", num()?.to_string()),
                "group" => match ip(c, v)? {
                    IpAddr::V4(g) => self.sync.set("mcast_group", q(&g.to_string())),
                    // tapvs's sync daemon speaks IPv4 multicast (it carries IPv6 entries).
                    IpAddr::V6(_) => self.unsupported_value(c, "option 'group' with an IPv6 group"),
                },
                "ttl" => {
                    self.unsupported_value(c, "option 'ttl'");
                }
                _ if i == 1 => {
                    // The VRRP instance whose state picks the role: tapvs runs both roles.
                    self.note(c, format!(
                        "'lvs_sync_daemon': tapvs runs the master and backup roles at once, not following VRRP instance {:?}",
                        a[i]
                    ));
                    i += 1;
                    continue;
                }
                o => return Err(err(c, format!("'lvs_sync_daemon': unknown option {o:?}"))),
            }
            i += 2;
        }
        Ok(())
    }

    fn group(&mut self, n: &Node) -> Result<(), Error> {
        let name = one_arg(n)?.to_string();
        let mut members: Vec<Member> = Vec::new();
        for m in n.block.as_deref().unwrap_or_default() {
            if m.keyword == "fwmark" {
                self.unsupported_value(m, "(fwmark services)");
                continue;
            }
            let p = match m.args.as_slice() {
                [] => None,
                [p] => Some(port(m, &p.text)?),
                _ => {
                    return Err(err(
                        m,
                        "a group member is an address or range and a port".into(),
                    ))
                }
            };
            let addrs = address_range(m, &m.keyword)?;
            // One family per group, as keepalived: the first address member's.
            if let (Some((g, _)), Some(a)) = (members.first(), addrs.first()) {
                if g.is_ipv6() != a.is_ipv6() {
                    self.unsupported_value(
                        m,
                        &format!(
                            "({} in a group of {} addresses: one family per group)",
                            family(a.is_ipv6()),
                            family(g.is_ipv6())
                        ),
                    );
                    continue;
                }
            }
            members.extend(addrs.into_iter().map(|a| (a, p)));
        }
        self.groups.push((name, members));
        Ok(())
    }

    fn laddr_group(&mut self, n: &Node) -> Result<(), Error> {
        let name = one_arg(n)?.to_string();
        let mut addrs = Vec::new();
        for m in n.block.as_deref().unwrap_or_default() {
            let mut words = vec![m.keyword.as_str()];
            words.extend(m.arg_texts());
            for w in words {
                addrs.extend(address_range(m, w)?);
            }
        }
        self.laddr_groups.push((name, addrs));
        Ok(())
    }

    /// A forwarding method: NAT, DR, TUN [type ipip], FNAT/FULLNAT.
    fn method(&mut self, n: &Node) -> Result<String, Error> {
        let a = n.arg_texts();
        let m = match a.first().map(|s| s.to_ascii_uppercase()).as_deref() {
            Some("NAT") => "nat",
            Some("DR") => "dr",
            Some("TUN") => "tun",
            Some("FNAT" | "FULLNAT") => "fullnat",
            _ => {
                return Err(err(
                    n,
                    format!(
                        "'{}': {:?} is not NAT, DR, TUN or FNAT",
                        n.keyword,
                        a.first().unwrap_or(&"")
                    ),
                ))
            }
        };
        match &a[1..] {
            [] | ["type", "ipip"] => {}
            _ => self.unsupported_value(n, &format!("tunnel options {:?}", a[1..].join(" "))),
        }
        Ok(m.to_string())
    }

    fn virtual_server(&mut self, n: &Node) -> Result<(), Error> {
        let a = n.arg_texts();
        let members: Vec<Member> = match a.as_slice() {
            ["fwmark", ..] => {
                self.unsupported_value(n, "fwmark (fwmark services; the whole virtual_server)");
                return Ok(());
            }
            ["group", name] => match self.groups.iter().find(|(g, _)| g == name) {
                Some((_, m)) => m.clone(),
                None => return Err(err(n, format!("no virtual_server_group named {name:?}"))),
            },
            [a, rest @ ..] if rest.len() <= 1 => {
                let a = ip(n, a)?;
                let p = rest.first().map(|p| port(n, p)).transpose()?;
                vec![(a, p)]
            }
            _ => {
                return Err(err(
                    n,
                    "'virtual_server' takes an address and port, 'fwmark N' or 'group NAME'".into(),
                ))
            }
        };
        let mut svc = Svc {
            at: n.at(),
            protocol: "tcp".into(),
            forward: "nat".into(),
            ..Default::default()
        };
        // A group has one family, so the service's is its first member's.
        let v6 = members.first().is_some_and(|(a, _)| a.is_ipv6());
        let mut vhost = None;
        let mut flags: Vec<String> = Vec::new();
        for c in n.block.as_deref().unwrap_or_default() {
            let k = c.keyword.as_str();
            match k {
                "lb_algo" | "lvs_sched" => {
                    let s = one_arg(c)?.to_ascii_lowercase();
                    if sched::build(&sched::SchedSpec::new(s.clone()), &[]).is_err() {
                        return Err(err(c, format!("'{k}': {s:?} is not a scheduler tapvs has")));
                    }
                    svc.kv.set("scheduler", q(&s));
                }
                "lb_kind" | "lvs_method" => svc.forward = self.method(c)?,
                "protocol" => match one_arg(c)?.to_ascii_uppercase().as_str() {
                    "TCP" => svc.protocol = "tcp".into(),
                    "UDP" => svc.protocol = "udp".into(),
                    o => {
                        self.unsupported_value(c, &format!("{o} (the whole virtual_server)"));
                        return Ok(());
                    }
                },
                "persistence_timeout" => {
                    // keepalived's default when given without a value: 6 minutes.
                    let v = if c.args.is_empty() {
                        360
                    } else {
                        integer(c, 2_592_000)?
                    };
                    svc.kv.set("persistent", v.to_string());
                }
                "persistence_granularity" if v6 => {
                    // An IPv6 service's granularity is a prefix length, tapvs's too.
                    let m = one_arg(c)?;
                    match m.trim_start_matches('/').parse::<u32>() {
                        Ok(p) if (1..=128).contains(&p) => svc.kv.set("netmask", p.to_string()),
                        _ => {
                            return Err(err(
                                c,
                                format!("'{k}': {m:?} is not a prefix length 1..=128 (an IPv6 virtual_server)"),
                            ))
                        }
                    }
                }
                "persistence_granularity" => {
                    let m = one_arg(c)?;
                    let mask = match m.parse::<u32>() {
                        Ok(p) if p <= 32 => {
                            Ipv4Addr::from(if p == 0 { 0 } else { u32::MAX << (32 - p) })
                        }
                        _ => ipv4(c, m)?,
                    };
                    svc.kv.set("netmask", q(&mask.to_string()));
                }
                "ops" => svc.kv.set("ops", "true".into()),
                "flag-1" | "flag-2" | "sh-port" | "sh-fallback" | "mh-port" | "mh-fallback" => {
                    flags.push(k.to_string())
                }
                "quorum" | "hysteresis" => svc
                    .health
                    .set(k, integer(c, u64::from(u32::MAX))?.to_string()),
                "quorum_up" | "quorum_down" => {
                    let s = script(self, c)?;
                    svc.health.set(k, q(&s));
                }
                "sorry_server" => {
                    let (a, p) = match c.arg_texts().as_slice() {
                        [a] => (ip(c, a)?, None),
                        [a, p] => (ip(c, a)?, Some(port(c, p)?)),
                        _ => {
                            return Err(err(c, "'sorry_server' takes an address and a port".into()))
                        }
                    };
                    if v6 != a.is_ipv6() {
                        // tapvs takes a sorry server of the service's family (an IPv4 one of
                        // an IPv6 service only as NAT64, which this block cannot tell yet).
                        let why = if v6 {
                            "(an IPv4 sorry server of an IPv6 virtual_server)"
                        } else {
                            "(an IPv6 sorry server of an IPv4 virtual_server)"
                        };
                        self.unsupported_value(c, why);
                    } else {
                        svc.health.set("sorry_server", q(&endpoint(a, p)));
                    }
                }
                "delay_loop" | "connect_timeout" | "delay_before_retry" | "warmup" => {
                    svc.health.set(k, timer(c)?)
                }
                "retry" => svc
                    .health
                    .set(k, integer(c, u64::from(u32::MAX))?.to_string()),
                "alpha" | "inhibit_on_failure" => svc.health.set(k, boolean(c)?.to_string()),
                "virtualhost" => vhost = Some(one_arg(c)?.to_string()),
                "laddr_group_name" => {
                    let name = one_arg(c)?;
                    let Some((_, addrs)) = self.laddr_groups.iter().find(|(g, _)| g == name) else {
                        return Err(err(c, format!("no local_address_group named {name:?}")));
                    };
                    svc.local_addresses.clone_from(addrs);
                    let addrs: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
                    svc.kv.set("local_addresses", q_list(&addrs));
                }
                "real_server" => {
                    let r = self.real_server(c, vhost.as_deref())?;
                    svc.reals.push(r);
                }
                _ => self.unsupported(c),
            }
        }
        if !flags.is_empty() {
            svc.kv.set("flags", q_list(&flags));
        }
        self.families(&mut svc, v6);
        if svc.forward == "fullnat" && !svc.kv.has("local_addresses") {
            self.note(
                n,
                "FullNAT needs local_addresses (keepalived: laddr_group_name); tapvs check will refuse the service until it has them".into(),
            );
        }
        for (a, p) in members {
            let mut s = svc.clone();
            s.address = endpoint(a, Some(p.unwrap_or(0)));
            self.services.push(s);
        }
        Ok(())
    }

    /// Leaves out (and reports) the real servers of the other family than the service that
    /// tapvs cannot forward to: all but NAT64, an IPv4 FullNAT real server of an IPv6 service
    /// with an IPv4 local address (`laddr_group_name`) to speak from.
    fn families(&mut self, svc: &mut Svc, v6: bool) {
        let lip4 = svc.local_addresses.iter().any(IpAddr::is_ipv4);
        let mut kept = Vec::new();
        for r in std::mem::take(&mut svc.reals) {
            if r.v6 == v6 {
                kept.push(r);
                continue;
            }
            let fullnat = r.forward.as_deref().unwrap_or(&svc.forward) == "fullnat";
            let nat64 = v6 && fullnat && lip4;
            let message = if nat64 {
                format!(
                    "'real_server' {}: an IPv4 real server of an IPv6 virtual_server, kept as NAT64 (FullNAT from the IPv4 local addresses)",
                    r.what
                )
            } else if v6 {
                format!(
                    "'real_server' {} (an IPv4 real server of an IPv6 virtual_server: tapvs needs FNAT with an IPv4 local address for that, NAT64) has no tapvs equivalent (ignored)",
                    r.what
                )
            } else {
                format!(
                    "'real_server' {} (an IPv6 real server of an IPv4 virtual_server) has no tapvs equivalent (ignored)",
                    r.what
                )
            };
            self.reports.push(Report {
                at: r.at.clone(),
                message,
                unsupported: !nat64,
            });
            if nat64 {
                kept.push(r);
            }
        }
        svc.reals = kept;
    }

    fn real_server(&mut self, n: &Node, vs_host: Option<&str>) -> Result<Real, Error> {
        let (a, p) = match n.arg_texts().as_slice() {
            [a] => (ip(n, a)?, None),
            [a, p] => (ip(n, a)?, Some(port(n, p)?)),
            _ => return Err(err(n, "'real_server' takes an address and a port".into())),
        };
        let mut r = Real {
            at: n.at(),
            what: n.arg_texts().join(" "),
            v6: a.is_ipv6(),
            ..Default::default()
        };
        r.kv.set("address", q(&endpoint(a, p)));
        let mut host = vs_host.map(String::from);
        for c in n.block.as_deref().unwrap_or_default() {
            let k = c.keyword.as_str();
            match k {
                "weight" => r.kv.set("weight", integer(c, 65_535)?.to_string()),
                "lb_kind" | "lvs_method" => r.forward = Some(self.method(c)?),
                "uthreshold" => r.kv.set("u_threshold", integer(c, 65_535)?.to_string()),
                "lthreshold" => r.kv.set("l_threshold", integer(c, 65_535)?.to_string()),
                "notify_up" | "notify_down" => {
                    let s = script(self, c)?;
                    r.kv.set(k, q(&s));
                }
                "delay_loop" | "connect_timeout" | "delay_before_retry" | "warmup" => {
                    r.health.set(k, timer(c)?)
                }
                "retry" => r
                    .health
                    .set(k, integer(c, u64::from(u32::MAX))?.to_string()),
                "alpha" | "inhibit_on_failure" => r.health.set(k, boolean(c)?.to_string()),
                "virtualhost" => host = Some(one_arg(c)?.to_string()),
                "TCP_CHECK" | "HTTP_GET" | "SSL_GET" | "UDP_CHECK" | "PING_CHECK"
                | "MISC_CHECK" => {
                    let mut ch = self.checker(c)?;
                    ch.inherited_host = host.clone();
                    r.checks.push(ch);
                }
                _ => self.unsupported(c),
            }
        }
        for ch in &mut r.checks {
            // The real server's virtualhost may come after its checkers.
            ch.inherited_host = ch.inherited_host.take().or(host.clone());
        }
        Ok(r)
    }

    fn checker(&mut self, n: &Node) -> Result<Check, Error> {
        let kind = n.keyword.as_str();
        let mut ch = Check {
            at: n.at(),
            ..Default::default()
        };
        let ty = match kind {
            "TCP_CHECK" => "tcp",
            "HTTP_GET" => "http_get",
            "SSL_GET" => "ssl_get",
            "UDP_CHECK" => "udp",
            "PING_CHECK" => "ping",
            _ => "misc",
        };
        ch.kv.set("type", q(ty));
        let http = matches!(ty, "http_get" | "ssl_get");
        for c in n.block.as_deref().unwrap_or_default() {
            let k = c.keyword.as_str();
            match k {
                "connect_ip" if ty != "misc" => ch.kv.set(k, q(&ip(c, one_arg(c)?)?.to_string())),
                "connect_port" if !matches!(ty, "misc" | "ping") => {
                    ch.kv.set(k, port(c, one_arg(c)?)?.to_string())
                }
                "connect_timeout" if ty != "misc" => ch.kv.set(k, timer(c)?),
                "delay_loop" | "delay_before_retry" | "warmup" => ch.kv.set(k, timer(c)?),
                "retry" | "nb_get_retry" => ch
                    .kv
                    .set("retry", integer(c, u64::from(u32::MAX))?.to_string()),
                "alpha" => ch.kv.set(k, boolean(c)?.to_string()),
                "url" if http => ch.urls.push(self.url(c)?),
                "virtualhost" if http => ch.kv.set(k, q(one_arg(c)?)),
                "sni_name" if ty == "ssl_get" => ch.kv.set("sni", q(one_arg(c)?)),
                // tapvs sends the virtualhost as SNI when it is a name: what enable_sni asks.
                "enable_sni" if ty == "ssl_get" => {}
                "payload" if ty == "udp" => ch.kv.set(k, q(&hex(c, &c.args)?)),
                "require_reply" if ty == "udp" => {
                    if c.args.is_empty() {
                        self.unsupported_value(c, "without data (any reply)");
                    } else {
                        ch.kv.set(k, q(&hex(c, &c.args)?));
                    }
                }
                "misc_path" if ty == "misc" => {
                    let s = script(self, c)?;
                    ch.kv.set(k, q(&s));
                }
                "misc_timeout" if ty == "misc" => ch.kv.set(k, timer(c)?),
                "misc_dynamic" if ty == "misc" => ch.kv.set(k, "true".into()),
                _ => self.unsupported(c),
            }
        }
        if http && ch.urls.is_empty() {
            return Err(err(n, format!("'{kind}' has no url")));
        }
        Ok(ch)
    }

    fn url(&mut self, n: &Node) -> Result<Kv, Error> {
        let mut u = Kv::default();
        for c in n.block.as_deref().unwrap_or_default() {
            let k = c.keyword.as_str();
            match k {
                "path" | "digest" | "virtualhost" => u.set(k, q(one_arg(c)?)),
                "status_code" => {
                    if c.args.is_empty() {
                        return Err(err(c, "'status_code' needs codes".into()));
                    }
                    u.set(k, q(&c.arg_texts().join(", ")))
                }
                _ => self.unsupported(c),
            }
        }
        if !u.has("path") {
            return Err(err(n, "'url' has no path".into()));
        }
        Ok(u)
    }

    fn vrrp_instance(&mut self, n: &Node) -> Result<(), Error> {
        let name = one_arg(n)?.to_string();
        let mut kv = Kv::default();
        kv.set("name", q(&name));
        // Addresses and peers with their places: the family is known at the end.
        let mut addrs: Vec<Vip> = Vec::new();
        let mut peers: Vec<Vip> = Vec::new();
        let mut track = Vec::new();
        let mut version_at = None;
        let mut auth_at = None;
        for c in n.block.as_deref().unwrap_or_default() {
            let k = c.keyword.as_str();
            match k {
                "state" => kv.set(k, q(&one_arg(c)?.to_ascii_uppercase())),
                "interface" => {
                    let i = one_arg(c)?;
                    self.interface(c, i);
                    kv.set("port", q(i));
                }
                "virtual_router_id" | "priority" => kv.set(k, integer(c, 255)?.to_string()),
                "advert_int" => kv.set(k, timer(c)?),
                "version" => {
                    kv.set(k, integer(c, 3)?.to_string());
                    version_at = Some(c.at());
                }
                "nopreempt" | "no_preempt" => kv.set("nopreempt", "true".into()),
                "preempt" => {}
                "preempt_delay" => kv.set(k, integer(c, 1000)?.to_string()),
                "authentication" => {
                    auth_at = Some(c.at());
                    for a in c.block.as_deref().unwrap_or_default() {
                        match (a.keyword.as_str(), a.arg_texts().as_slice()) {
                            ("auth_type", ["PASS"]) => {}
                            ("auth_pass", [p]) => {
                                if p.chars().count() > 8 {
                                    self.note(a, "'auth_pass' longer than 8 characters: only the first 8 are used (as keepalived)".into());
                                }
                                kv.set("auth_pass", q(&p.chars().take(8).collect::<String>()))
                            }
                            _ => self.unsupported(a),
                        }
                    }
                }
                "unicast_peer" => {
                    for p in c.block.as_deref().unwrap_or_default() {
                        peers.push(Vip {
                            at: p.at(),
                            text: p.keyword.clone(),
                            ip: ip(p, &p.keyword)?,
                            prefix: None,
                        });
                        if !p.args.is_empty() {
                            self.unsupported_value(p, "options (min_ttl/max_ttl)");
                        }
                    }
                }
                "virtual_ipaddress" => {
                    for a in c.block.as_deref().unwrap_or_default() {
                        let (text, mask) = match a.keyword.split_once('/') {
                            Some((t, m)) => (t, Some(m)),
                            None => (a.keyword.as_str(), None),
                        };
                        let addr = ip(a, text)?;
                        let host = if addr.is_ipv6() { 128 } else { 32 };
                        let prefix = match mask.map(|m| m.parse::<u8>()) {
                            None => None,
                            Some(Ok(p)) if p <= host => Some(p).filter(|p| *p != host),
                            Some(_) => {
                                return Err(err(a, format!("{:?}: bad prefix length", a.keyword)))
                            }
                        };
                        addrs.push(Vip {
                            at: a.at(),
                            text: a.keyword.clone(),
                            ip: addr,
                            prefix,
                        });
                        if !a.args.is_empty() {
                            self.unsupported_value(
                                a,
                                &format!("options {:?}", a.arg_texts().join(" ")),
                            );
                        }
                    }
                }
                "track_interface" => {
                    for t in c.block.as_deref().unwrap_or_default() {
                        self.interface(t, &t.keyword);
                        match t.arg_texts().as_slice() {
                            [] => track.push(q(&t.keyword)),
                            ["weight", w] => match w.parse::<i32>() {
                                Ok(w) if (-254..=254).contains(&w) => {
                                    track.push(format!(
                                        "{{ port = {}, weight = {w} }}",
                                        q(&t.keyword)
                                    ));
                                }
                                _ => {
                                    return Err(err(
                                        t,
                                        format!("'weight {w}': not an integer in -254..=254"),
                                    ))
                                }
                            },
                            _ => {
                                track.push(q(&t.keyword));
                                self.unsupported_value(t, "options (only 'weight N' is known)");
                            }
                        }
                    }
                }
                "notify" | "notify_master" | "notify_backup" | "notify_fault" => {
                    let s = script(self, c)?;
                    kv.set(k, q(&s));
                }
                _ => self.unsupported(c),
            }
        }
        // One family per instance, its first virtual address's (as keepalived, which also
        // ignores the addresses of the other family).
        let v6 = addrs.first().is_some_and(|a| a.ip.is_ipv6());
        let keep = |what: &str, list: Vec<Vip>, reports: &mut Vec<Report>| {
            let mut out = Vec::new();
            for a in list {
                let text = &a.text;
                if a.ip.is_ipv6() != v6 {
                    reports.push(Report {
                        at: a.at,
                        message: format!(
                            "'{text}' ({} {what} of an {} vrrp_instance: one family per instance) has no tapvs equivalent (ignored)",
                            family(a.ip.is_ipv6()),
                            family(v6)
                        ),
                        unsupported: true,
                    });
                    continue;
                }
                if let Some(p) = a.prefix {
                    reports.push(Report {
                        at: a.at,
                        message: format!("'{text}': the prefix length /{p} is dropped (tapvs virtual addresses are host addresses)"),
                        unsupported: false,
                    });
                }
                out.push(a.ip.to_string());
            }
            out
        };
        let addrs = keep("virtual address", addrs, &mut self.reports);
        let peers = keep("unicast peer", peers, &mut self.reports);
        match (v6, kv.0.iter().find(|(k, _)| k == "version")) {
            (true, Some((_, v))) if v == "2" => {
                // keepalived runs an IPv6 instance with version 3 whatever it was told.
                self.reports.push(Report {
                    at: version_at.unwrap_or_else(|| n.at()),
                    message:
                        "'version 2': an IPv6 instance runs VRRP version 3 (as keepalived does)"
                            .into(),
                    unsupported: false,
                });
                kv.set("version", "3".into());
            }
            (_, Some(_)) => {}
            (_, None) => {
                // The global vrrp_version, except 2 for an IPv6 instance (version 3 then).
                if let Some(v) = self.vrrp_version.as_ref().filter(|v| !(v6 && *v == "2")) {
                    kv.set("version", v.clone());
                }
            }
        }
        let v3 = v6 || kv.0.iter().any(|(k, v)| k == "version" && v == "3");
        if let (true, Some(at)) = (v3 && kv.has("auth_pass"), auth_at) {
            kv.0.retain(|(k, _)| k != "auth_pass");
            self.reports.push(Report {
                at,
                message: "'authentication' (with VRRP version 3, which has none) has no tapvs equivalent (ignored)".into(),
                unsupported: true,
            });
        }
        if !peers.is_empty() {
            kv.set("unicast_peers", q_list(&peers));
        }
        kv.set("virtual_addresses", q_list(&addrs));
        if !track.is_empty() {
            kv.set("track_ports", format!("[{}]", track.join(", ")));
        }
        if !kv.has("port") {
            return Err(err(
                n,
                format!("vrrp_instance {name:?} has no interface (tapvs needs the port)"),
            ));
        }
        self.vrrp.push((n.at(), kv));
        Ok(())
    }

    fn vrrp_sync_group(&mut self, n: &Node) -> Result<(), Error> {
        let name = one_arg(n)?.to_string();
        let mut kv = Kv::default();
        kv.set("name", q(&name));
        let mut members = Vec::new();
        for c in n.block.as_deref().unwrap_or_default() {
            let k = c.keyword.as_str();
            match k {
                "group" => {
                    for m in c.block.as_deref().unwrap_or_default() {
                        members.push(m.keyword.clone());
                        if !m.args.is_empty() {
                            self.unsupported_value(m, "options");
                        }
                    }
                }
                "notify_master" | "notify_backup" | "notify_fault" => {
                    let s = script(self, c)?;
                    kv.set(k, q(&s));
                }
                _ => self.unsupported(c),
            }
        }
        kv.set("group", q_list(&members));
        self.sync_groups.push((n.at(), kv));
        Ok(())
    }

    fn finish(mut self, path: &Path, ports: Option<Ports<'_>>) -> Imported {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "# tapvs configuration imported from {} by `tapvs import-keepalived`.",
            path.display()
        );
        match &ports {
            Some(p) => {
                let _ = writeln!(o, "# Ports from {}:", p.file.display());
                o.push_str(p.text.trim_end());
                o.push_str("\n\n");
                let names = port_names(p.text);
                let missing: Vec<(String, String)> = self
                    .interfaces
                    .iter()
                    .filter(|(i, _)| !names.contains(i))
                    .cloned()
                    .collect();
                for (i, at) in missing {
                    self.reports.push(Report {
                        at,
                        message: format!(
                            "interface {i:?} is not a port name in {} (tapvs check will refuse it)",
                            p.file.display()
                        ),
                        unsupported: false,
                    });
                }
            }
            None => {
                o.push_str(
                    "# keepalived names interfaces; tapvs needs a [[port]] (a TAP device) for each\n\
                     # segment. Fill these in (or import again with --ports FILE):\n",
                );
                let mut names: Vec<String> =
                    self.interfaces.iter().map(|(i, _)| i.clone()).collect();
                if names.is_empty() {
                    names.push("ext".into());
                    names.push("int".into());
                }
                for i in &names {
                    let _ = writeln!(
                        o,
                        "# [[port]]\n# name = {}\n# tap = {}\n# addresses = [\"a.b.c.d/len\"]\n# bridge = {}\n",
                        q(i),
                        q(&format!("tv-{}", i.chars().take(12).collect::<String>())),
                        q(&format!("br-{}", i.chars().take(12).collect::<String>())),
                    );
                }
                self.reports.push(Report {
                    at: path.display().to_string(),
                    message: format!(
                        "no --ports given: the [[port]] sections for {} are commented placeholders (tapvs check fails until they are filled in)",
                        names.join(", ")
                    ),
                    unsupported: false,
                });
            }
        }
        if !self.timeouts.0.is_empty() {
            o.push_str("[timeouts]\n");
            self.timeouts.lines(&mut o);
            o.push('\n');
        }
        if !self.sync.0.is_empty() {
            o.push_str("[sync]\n");
            self.sync.lines(&mut o);
            o.push('\n');
        }
        for s in &self.services {
            let _ = writeln!(o, "# {}", s.at);
            o.push_str("[[service]]\n");
            let _ = writeln!(o, "protocol = {}", q(&s.protocol));
            let _ = writeln!(o, "address = {}", q(&s.address));
            s.kv.lines(&mut o);
            if !s.health.0.is_empty() {
                let _ = writeln!(o, "health = {}", s.health.inline());
            }
            for r in &s.reals {
                let _ = writeln!(o, "\n# {}", r.at);
                o.push_str("[[service.real]]\n");
                r.kv.lines(&mut o);
                let _ = writeln!(
                    o,
                    "forward = {}",
                    q(r.forward.as_deref().unwrap_or(&s.forward))
                );
                if !r.health.0.is_empty() {
                    let _ = writeln!(o, "health = {}", r.health.inline());
                }
                for c in &r.checks {
                    let _ = writeln!(o, "\n# {}", c.at);
                    o.push_str("[[service.real.check]]\n");
                    let mut kv = c.kv.clone();
                    if let (false, Some(h)) = (kv.has("virtualhost"), &c.inherited_host) {
                        if !c.urls.is_empty() {
                            kv.set("virtualhost", q(h));
                        }
                    }
                    kv.lines(&mut o);
                    if !c.urls.is_empty() {
                        let urls: Vec<String> = c.urls.iter().map(Kv::inline).collect();
                        let _ = writeln!(o, "url = [{}]", urls.join(", "));
                    }
                }
            }
            o.push('\n');
        }
        for (at, kv) in &self.vrrp {
            let _ = writeln!(o, "# {at}");
            o.push_str("[[vrrp]]\n");
            kv.lines(&mut o);
            o.push('\n');
        }
        for (at, kv) in &self.sync_groups {
            let _ = writeln!(o, "# {at}");
            o.push_str("[[vrrp_sync_group]]\n");
            kv.lines(&mut o);
            o.push('\n');
        }
        while o.ends_with("\n\n") {
            o.pop();
        }
        Imported {
            toml: o,
            reports: self.reports,
        }
    }
}

/// Lines of a block, nested blocks included.
fn count(b: &[Node]) -> usize {
    b.iter()
        .map(|n| 1 + n.block.as_deref().map_or(0, count))
        .sum()
}

/// The `name`s of the `[[port]]` sections of a fragment (empty if it is not TOML).
fn port_names(text: &str) -> BTreeSet<String> {
    let Ok(t) = text.parse::<toml::Table>() else {
        return BTreeSet::new();
    };
    t.get("port")
        .and_then(|p| p.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|p| p.get("name")?.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks a `--ports` fragment: it must be TOML.
pub fn check_ports(file: &Path, text: &str) -> Result<(), String> {
    text.parse::<toml::Table>()
        .map(|_| ())
        .map_err(|e| format!("{}: not TOML: {}", file.display(), e.message().trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(text: &str) -> Result<Imported, Error> {
        conv_with(text, None)
    }

    /// Converts `text` (as the file `k.conf`), with a `--ports` fragment if given.
    fn conv_with(text: &str, ports: Option<&str>) -> Result<Imported, Error> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("tapvs-import-unit-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("k.conf");
        std::fs::write(&f, text).unwrap();
        let r = import(
            &f,
            ports.map(|text| Ports {
                file: Path::new("ports.toml"),
                text,
            }),
        );
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    /// The reports as `line|message`.
    fn reports(out: &Imported) -> Vec<String> {
        out.reports
            .iter()
            .map(|r| format!("{}|{}", r.at.rsplit(':').next().unwrap(), r.message))
            .collect()
    }

    const PORTS6: &str = "[[port]]\nname = \"eth0\"\ntap = \"t0\"\naddresses = [\"10.0.0.1/24\", \"2001:db8:c::1/64\"]\n\n\
        [[port]]\nname = \"eth1\"\ntap = \"t1\"\naddresses = [\"172.16.0.1/24\", \"2001:db8:5::fd/64\"]\n";

    /// Random statements from keepalived's vocabulary (and junk) never panic the parser or
    /// the converter: every outcome is a TOML text or an error with a place.
    #[test]
    fn random_input_never_panics() {
        const WORDS: &[&str] = &[
            "virtual_server",
            "real_server",
            "virtual_server_group",
            "group",
            "fwmark",
            "vrrp_instance",
            "global_defs",
            "lvs_timeouts",
            "lvs_sync_daemon",
            "tcp",
            "udp",
            "HTTP_GET",
            "SSL_GET",
            "TCP_CHECK",
            "UDP_CHECK",
            "MISC_CHECK",
            "PING_CHECK",
            "url",
            "path",
            "status_code",
            "digest",
            "payload",
            "require_reply",
            "misc_path",
            "lb_algo",
            "lb_kind",
            "NAT",
            "DR",
            "TUN",
            "FNAT",
            "type",
            "gre",
            "sorry_server",
            "quorum",
            "weight",
            "persistence_timeout",
            "persistence_granularity",
            "interface",
            "virtual_ipaddress",
            "unicast_peer",
            "track_interface",
            "authentication",
            "auth_pass",
            "notify_up",
            "include",
            "local_address_group",
            "laddr_group_name",
            "1.2.3.4",
            "1.2.3.4-9",
            "10.0.0.0/30",
            "10.0.0.0/0",
            "80",
            "0",
            "-1",
            "99999",
            "1e9",
            "nan",
            "x",
            "{",
            "}",
            "\"",
            "'",
            "#",
            "!",
            "\n",
            "\n",
            "\n",
            "ab\\x",
            "::1",
            "2001:db8::1",
            "2001:db8::1-ff",
            "2001:db8::ff-1",
            "2001:db8::/120",
            "2001:db8::1-10.0.0.9",
            "fe80::1/64",
            "255.255.255.0",
            "24",
            "rr",
            "on",
            "off",
            "X1",
            "0x",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..3000 {
            let n = (next() % 60) as usize;
            let text: Vec<&str> = (0..n)
                .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
                .collect();
            let text = text.join(" ");
            if let Ok((nodes, notices)) = parse::parse_text(&text, Path::new("/nonexistent/r.conf"))
            {
                let _ = convert(&nodes, notices, Path::new("r.conf"), None);
            }
        }
    }

    #[test]
    fn hex_is_keepalived_free_format() {
        let n = parse::parse_text("payload Ab12f 3 456\n", Path::new("x"))
            .unwrap()
            .0;
        assert_eq!(hex(&n[0], &n[0].args).unwrap(), "Ab120f034506");
        let n = parse::parse_text("payload 12XX\n", Path::new("x"))
            .unwrap()
            .0;
        assert!(hex(&n[0], &n[0].args).is_err());
    }

    #[test]
    fn ranges_expand() {
        let n = parse::parse_text("m\n", Path::new("x")).unwrap().0;
        let r = |s| address_range(&n[0], s).map(|v| v.len());
        assert_eq!(r("10.0.0.1-10").unwrap(), 10);
        assert_eq!(r("10.0.0.250-10.0.1.10").unwrap(), 17);
        assert_eq!(r("10.0.0.8/29").unwrap(), 8);
        assert!(r("10.0.0.9-1").is_err());
        assert!(r("10.0.0.0/8").is_err());
        // IPv6: the short range end is the last 16-bit group, in hex (as keepalived).
        assert_eq!(r("2001:db8::10-1f").unwrap(), 16);
        assert_eq!(r("2001:db8::fff0-2001:db8::1:f").unwrap(), 32);
        assert_eq!(r("2001:db8::/120").unwrap(), 256);
        assert_eq!(r("2001:db8::7/128").unwrap(), 1);
        assert!(r("2001:db8::/64").is_err());
        assert!(r("2001:db8::1f-10").is_err());
        assert!(r("2001:db8::1-10.0.0.1").is_err());
        assert!(r("10.0.0.1-2001:db8::1").is_err());
        assert!(r("2001:db8::1-xyz").is_err());
        let n6 = address_range(&n[0], "2001:db8::fffe-2001:db8::1:1").unwrap();
        assert_eq!(
            n6.iter().map(IpAddr::to_string).collect::<Vec<_>>(),
            [
                "2001:db8::fffe",
                "2001:db8::ffff",
                "2001:db8::1:0",
                "2001:db8::1:1"
            ]
        );
    }

    /// IPv6 as keepalived writes it comes over in tapvs's bracketed syntax, and the output
    /// is a configuration tapvs accepts.
    #[test]
    fn ipv6_converts_to_a_config_tapvs_accepts() {
        let out = conv_with(
            "local_address_group lips {\n 2001:db8:5::100-101\n 172.16.0.100\n}\n\
             virtual_server_group g6 {\n 2001:db8:f::81 443\n 2001:db8:f::90-91 443\n}\n\
             virtual_server 2001:db8:f::80 80 {\n lb_algo wlc\n lb_kind NAT\n persistence_timeout 60\n persistence_granularity 48\n\
              sorry_server 2001:db8:5::9 8080\n\
              real_server 2001:db8:5::2 8080 {\n  weight 3\n  TCP_CHECK {\n   connect_ip 2001:db8:5::12\n   connect_port 81\n  }\n }\n}\n\
             virtual_server group g6 {\n lb_kind DR\n real_server 2001:db8:5::3 443 {\n }\n}\n\
             virtual_server 2001:db8:f::80 53 {\n protocol UDP\n lb_kind FNAT\n laddr_group_name lips\n\
              real_server 2001:db8:5::4 53 {\n }\n real_server 172.16.0.4 53 {\n }\n}\n\
             virtual_server 2001:db8:f::80 8000 {\n lb_kind TUN\n real_server 2001:db8:5::5 {\n }\n}\n\
             vrrp_instance V6 {\n interface eth0\n virtual_router_id 6\n unicast_peer {\n  2001:db8:c::3\n }\n\
              virtual_ipaddress {\n  2001:db8:f::80/64\n  2001:db8:f::81/128\n  fe80::1/64 dev eth0 scope link\n }\n}\n",
            Some(PORTS6),
        )
        .unwrap();
        let t = &out.toml;
        for want in [
            "address = \"[2001:db8:f::80]:80\"\nscheduler = \"wlc\"\npersistent = 60\nnetmask = 48\n",
            "address = \"[2001:db8:5::2]:8080\"\nweight = 3\nforward = \"nat\"\n",
            "connect_ip = \"2001:db8:5::12\"\nconnect_port = 81\n",
            "sorry_server = \"[2001:db8:5::9]:8080\"",
            "address = \"[2001:db8:f::81]:443\"",
            "address = \"[2001:db8:f::90]:443\"",
            "address = \"[2001:db8:f::91]:443\"",
            "address = \"[2001:db8:5::3]:443\"\nforward = \"dr\"\n",
            "local_addresses = [\"2001:db8:5::100\", \"2001:db8:5::101\", \"172.16.0.100\"]",
            "address = \"[2001:db8:5::4]:53\"\nforward = \"fullnat\"\n",
            "address = \"172.16.0.4:53\"\nforward = \"fullnat\"\n",
            "address = \"[2001:db8:5::5]\"\nforward = \"tun\"\n",
            "unicast_peers = [\"2001:db8:c::3\"]\nvirtual_addresses = [\"2001:db8:f::80\", \"2001:db8:f::81\", \"fe80::1\"]\n",
        ] {
            assert!(t.contains(want), "{want:?} not in\n{t}");
        }
        assert_eq!(t.matches("[[service]]").count(), 6, "{t}");
        let cfg =
            crate::config::parse(t, Path::new("out.toml")).unwrap_or_else(|e| panic!("{e}\n{t}"));
        assert_eq!(cfg.services.len(), 6);
        let nat64 = cfg.services.iter().find(|s| s.vip.port() == 53).unwrap();
        assert!(nat64.vip.is_ipv6() && nat64.reals.iter().any(|r| r.addr.is_ipv4()));
        let r = reports(&out);
        assert!(
            r.contains(&"34|'real_server' 172.16.0.4 53: an IPv4 real server of an IPv6 virtual_server, kept as NAT64 (FullNAT from the IPv4 local addresses)".to_string()),
            "{r:#?}"
        );
        assert!(
            r.contains(&"49|'2001:db8:f::80/64': the prefix length /64 is dropped (tapvs virtual addresses are host addresses)".to_string())
                && !r.iter().any(|m| m.contains("/128")),
            "{r:#?}"
        );
        assert!(
            r.contains(&"51|'fe80::1/64' options \"dev eth0 scope link\" has no tapvs equivalent (ignored)".to_string()),
            "{r:#?}"
        );
    }

    /// The sync daemon's multicast group is IPv4 in tapvs: an IPv6 one is reported, the rest
    /// of the line converts.
    #[test]
    fn an_ipv6_sync_group_is_reported() {
        let out =
            conv("global_defs {\n lvs_sync_daemon eth0 VI id 5 group ff02::1:2\n}\n").unwrap();
        assert!(
            reports(&out).contains(
                &"2|'lvs_sync_daemon' option 'group' with an IPv6 group has no tapvs equivalent (ignored)"
                    .to_string()
            ),
            "{:#?}",
            out.reports
        );
        assert!(out.toml.contains("syncid = 5\n") && !out.toml.contains("mcast_group"));
        let out = conv("global_defs {\n lvs_sync_daemon eth0 VI group 239.1.2.3\n}\n").unwrap();
        assert!(
            out.toml.contains("mcast_group = \"239.1.2.3\"\n"),
            "{}",
            out.toml
        );
        let e = conv("global_defs {\n lvs_sync_daemon eth0 VI group ff02::x\n}\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    /// What tapvs cannot run in one family is reported on its line and left out; the rest of
    /// the block still converts and the output still parses.
    #[test]
    fn the_other_family_is_reported_and_left_out() {
        let out = conv_with(
            "global_defs {\n vrrp_version 2\n}\n\
             virtual_server_group g {\n 2001:db8:f::81 80\n 192.0.2.9 80\n fwmark 3\n}\n\
             virtual_server 2001:db8:f::80 80 {\n sorry_server 172.16.0.9 80\n\
              real_server 172.16.0.2 80 {\n }\n real_server 2001:db8:5::2 80 {\n }\n}\n\
             virtual_server 192.0.2.1 80 {\n sorry_server 2001:db8:5::9 80\n real_server 2001:db8:5::2 80 {\n }\n real_server 172.16.0.2 80 {\n }\n}\n\
             virtual_server 2001:db8:f::80 53 {\n protocol UDP\n lb_kind FNAT\n laddr_group_name l6\n real_server 172.16.0.3 53 {\n }\n}\n\
             local_address_group l6 {\n 2001:db8:5::100\n}\n\
             virtual_server group g {\n real_server 2001:db8:5::3 80 {\n }\n}\n\
             vrrp_instance A {\n interface eth0\n virtual_router_id 1\n version 2\n authentication {\n  auth_type PASS\n  auth_pass x\n }\n\
              unicast_peer {\n  10.0.0.3\n  2001:db8:c::3\n }\n virtual_ipaddress {\n  2001:db8:f::80\n  10.0.0.100/24\n }\n\
              virtual_ipaddress_excluded {\n  192.0.2.1\n }\n}\n\
             vrrp_instance B {\n interface eth1\n virtual_router_id 2\n virtual_ipaddress {\n  172.16.0.254\n  2001:db8:5::1\n }\n}\n",
            Some(PORTS6),
        )
        .unwrap();
        let unsupported: Vec<String> = reports(&out)
            .into_iter()
            .zip(&out.reports)
            .filter(|(_, r)| r.unsupported)
            .map(|(m, _)| m)
            .collect();
        assert_eq!(
            unsupported,
            [
                "6|'192.0.2.9' (IPv4 in a group of IPv6 addresses: one family per group) has no tapvs equivalent (ignored)",
                "7|'fwmark' (fwmark services) has no tapvs equivalent (ignored)",
                "10|'sorry_server' (an IPv4 sorry server of an IPv6 virtual_server) has no tapvs equivalent (ignored)",
                "11|'real_server' 172.16.0.2 80 (an IPv4 real server of an IPv6 virtual_server: tapvs needs FNAT with an IPv4 local address for that, NAT64) has no tapvs equivalent (ignored)",
                "17|'sorry_server' (an IPv6 sorry server of an IPv4 virtual_server) has no tapvs equivalent (ignored)",
                "18|'real_server' 2001:db8:5::2 80 (an IPv6 real server of an IPv4 virtual_server) has no tapvs equivalent (ignored)",
                "27|'real_server' 172.16.0.3 53 (an IPv4 real server of an IPv6 virtual_server: tapvs needs FNAT with an IPv4 local address for that, NAT64) has no tapvs equivalent (ignored)",
                "41|'authentication' (with VRRP version 3, which has none) has no tapvs equivalent (ignored)",
                "46|'10.0.0.3' (IPv4 unicast peer of an IPv6 vrrp_instance: one family per instance) has no tapvs equivalent (ignored)",
                "51|'10.0.0.100/24' (IPv4 virtual address of an IPv6 vrrp_instance: one family per instance) has no tapvs equivalent (ignored)",
                "53|'virtual_ipaddress_excluded' has no tapvs equivalent (ignored, with the 1 line(s) of its block)",
                "62|'2001:db8:5::1' (IPv6 virtual address of an IPv4 vrrp_instance: one family per instance) has no tapvs equivalent (ignored)",
            ]
        );
        let t = &out.toml;
        assert!(
            reports(&out).contains(
                &"40|'version 2': an IPv6 instance runs VRRP version 3 (as keepalived does)"
                    .to_string()
            ),
            "{:#?}",
            out.reports
        );
        for want in [
            "name = \"A\"\nport = \"eth0\"\nvirtual_router_id = 1\nversion = 3\nunicast_peers = [\"2001:db8:c::3\"]\nvirtual_addresses = [\"2001:db8:f::80\"]\n",
            // The global vrrp_version 2 still applies to IPv4 instances.
            "name = \"B\"\nport = \"eth1\"\nvirtual_router_id = 2\nversion = 2\nvirtual_addresses = [\"172.16.0.254\"]\n",
            "address = \"[2001:db8:5::2]:80\"",
            "address = \"172.16.0.2:80\"",
            "address = \"[2001:db8:5::3]:80\"",
        ] {
            assert!(t.contains(want), "{want:?} not in\n{t}");
        }
        assert!(
            !t.contains("auth_pass") && !t.contains("sorry_server") && !t.contains("192.0.2.9"),
            "{t}"
        );
        crate::config::parse(t, Path::new("out.toml")).unwrap_or_else(|e| panic!("{e}\n{t}"));
    }

    #[test]
    fn unsupported_keywords_are_reported_with_their_lines() {
        let out = conv(
            "global_defs {\n router_id X\n lvs_timeouts tcp 100 tcpfin 10 udp 30\n}\n\
             vrrp_script chk { script \"true\"\n interval 2 }\n\
             virtual_server 1.2.3.4 80 {\n lb_algo wrr\n omega\n real_server 10.0.0.2 80 {\n  SMTP_CHECK {\n  }\n }\n}\n",
        )
        .unwrap();
        let msgs: Vec<String> = out
            .reports
            .iter()
            .filter(|r| r.unsupported)
            .map(|r| format!("{}|{}", r.at.rsplit('/').next().unwrap(), r.message))
            .collect();
        assert_eq!(
            msgs,
            [
                "k.conf:2|'router_id' has no tapvs equivalent (ignored)",
                "k.conf:5|'vrrp_script' has no tapvs equivalent (ignored, with the 2 line(s) of its block)",
                "k.conf:9|'omega' has no tapvs equivalent (ignored)",
                "k.conf:11|'SMTP_CHECK' has no tapvs equivalent (ignored)",
            ]
        );
        assert!(out
            .toml
            .contains("[timeouts]\ntcp = 100\ntcp_fin = 10\nudp = 30\n"));
        assert!(out.toml.contains("scheduler = \"wrr\""));
    }

    #[test]
    fn bad_values_name_file_and_line() {
        for (text, line, needle) in [
            ("virtual_server 1.2.3.4 80 {\n lb_algo nope\n}\n", 2, "not a scheduler"),
            ("virtual_server 1.2.3.999 80 {\n}\n", 1, "not an IPv4"),
            ("virtual_server 2001:db8::g 80 {\n}\n", 1, "not an IPv4 or IPv6 address"),
            ("virtual_server 2001:db8::1 80 {\n persistence_granularity 255.255.255.0\n}\n", 2, "not a prefix length 1..=128"),
            ("virtual_server 2001:db8::1 80 {\n persistence_granularity 129\n}\n", 2, "not a prefix length"),
            ("virtual_server 2001:db8::1 80 {\n real_server 2001:db8::2:: 80 {\n }\n}\n", 2, "not an IPv4 or IPv6 address"),
            ("virtual_server_group g {\n 2001:db8::1-2001:db9::1 80\n}\n", 2, "at most 1024"),
            ("vrrp_instance V {\n interface e\n unicast_peer {\n  fe80::1::2\n }\n}\n", 4, "not an IPv4 or IPv6"),
            ("vrrp_instance V {\n interface e\n virtual_ipaddress {\n  2001:db8::1/64/1\n }\n}\n", 4, "bad prefix length"),
            ("vrrp_instance V {\n interface e\n virtual_ipaddress {\n  10.0.0.1/33\n }\n}\n", 4, "bad prefix length"),
            ("virtual_server group g {\n}\n", 1, "no virtual_server_group"),
            ("virtual_server 1.2.3.4 80 {\n real_server 1.1.1.1 80 {\n  weight x\n }\n}\n", 3, "not an integer"),
            ("virtual_server 1.2.3.4 80 {\n real_server 1.1.1.1 80 {\n  HTTP_GET {\n  }\n }\n}\n", 3, "no url"),
            ("vrrp_instance V {\n priority 1\n}\n", 1, "no interface"),
        ] {
            let e = conv(text).unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.message.contains(needle), "{text}: {e}");
        }
    }
}
