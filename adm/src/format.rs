//! ipvsadm 1.31 output, byte for byte: `-L -n` and its `--stats`, `--rate`, `--thresholds`,
//! `--persistent-conn`, `--tun-info` and `--exact` variants, `-c`, `--timeout` and `-S`.
//!
//! The layouts follow ipvsadm's published format strings: service names are `%-4s %s`
//! (protocol, `addr:port`) cut at 33 characters, real servers `%-28s` after `"  -> "` cut at 28,
//! counters go through [`print_largenum`] (9 columns, K/M/G/T above 10^8, or exact with
//! `--exact`). IPv6 addresses are written `[addr]:port` and never cut (they overflow the
//! columns, as ipvsadm's do); a fwmark service is `FWM  mark` (`FWM  mark IPv6`), saved as
//! `-f mark` (`-f mark -6`); an IPv6 persistence mask is a prefix length (`mask 64`, `-M 64`).
//! Services are sorted as libipvs sorts them: address services before fwmark ones (by mark),
//! IPv4 before IPv6, then by protocol number, address and port; real servers by family,
//! address and port; unless `--nosort`. Without `-n` the `_with` variants print host and
//! service names from the [`Names`] they are given (`localhost:http`, `[ip6-localhost]:http`),
//! each part falling back to its number, as ipvsadm's `addrport_to_anyname`; the plain
//! functions print numbers.

use std::fmt::Write as _;
use std::net::IpAddr;

use modes::Forward;

use super::cmd::{forward_switch, proto_switch, ListOpts};
use super::model::{forward_name, AccessEntry, ConnEntry, DestEntry, Listing, ServiceEntry, LOCAL};
use super::names::Names;
use super::PROGRAM;

/// IPVS version shown in the listing header.
pub const IPVS_VERSION: &str = "1.2.1";

/// The method a real server is listed and saved with: a local one stands for direct routing.
fn method(d: &DestEntry) -> Forward {
    if d.local {
        Forward::Dr
    } else {
        d.forward
    }
}

/// What the Forward column shows for `d`.
fn forward_column(d: &DestEntry) -> &'static str {
    if d.local {
        LOCAL
    } else {
        forward_name(d.forward)
    }
}

/// One counter in 9 columns as ipvsadm's `print_largenum`: `%9llu` below 10^8, then
/// `%8lluK` (/10^3) below 10^9, `%8lluM` (/10^6) below 10^11, `%8lluG` (/10^9) below 10^14,
/// else `%8lluT` (/10^12); with `exact` the full number right-aligned in max(9, digits + 1).
pub fn print_largenum(n: u64, exact: bool) -> String {
    if exact {
        let digits = n.to_string().len();
        let width = if digits <= 8 { 9 } else { digits + 1 };
        return format!("{n:>width$}");
    }
    match n {
        0..=99_999_999 => format!("{n:9}"),
        100_000_000..=999_999_999 => format!("{:8}K", n / 1_000),
        1_000_000_000..=99_999_999_999 => format!("{:8}M", n / 1_000_000),
        100_000_000_000..=99_999_999_999_999 => format!("{:8}G", n / 1_000_000_000),
        _ => format!("{:8}T", n / 1_000_000_000_000),
    }
}

/// Which table layout the list options select (ipvsadm's precedence).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    TunInfo,
    Plain,
}

fn layout(opts: &ListOpts) -> Layout {
    if opts.stats {
        Layout::Stats
    } else if opts.rate {
        Layout::Rate
    } else if opts.thresholds {
        Layout::Thresholds
    } else if opts.persistent_conn {
        Layout::PersistentConn
    } else if opts.tun_info {
        Layout::TunInfo
    } else {
        Layout::Plain
    }
}

fn title(out: &mut String, layout: Layout) {
    let stats_like = |out: &mut String, cols: [&str; 5]| {
        let _ = writeln!(
            out,
            "{:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port",
            "Prot LocalAddress:Port", cols[0], cols[1], cols[2], cols[3], cols[4]
        );
    };
    match layout {
        Layout::Stats => stats_like(out, ["Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"]),
        Layout::Rate => stats_like(out, ["CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"]),
        Layout::Thresholds => {
            let _ = writeln!(
                out,
                "{:<33} {:<10} {:<10} {:<10} {:<10}\n  -> RemoteAddress:Port",
                "Prot LocalAddress:Port", "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
            );
        }
        Layout::PersistentConn => {
            let _ = writeln!(
                out,
                "{:<33} {:<9} {:<11} {:<10} {:<10}\n  -> RemoteAddress:Port",
                "Prot LocalAddress:Port", "Weight", "PersistConn", "ActiveConn", "InActConn"
            );
        }
        Layout::TunInfo => out.push_str(
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           \
             Forward TunnelInfo    Weight ActiveConn InActConn\n",
        ),
        Layout::Plain => out.push_str(
            "Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           \
             Forward Weight ActiveConn InActConn\n",
        ),
    }
}

/// `s` cut to at most `n` bytes (ipvsadm truncates IPv4 names in listings; IPv6 ones are
/// left whole), at a character boundary.
fn cut(mut s: String, n: usize, addr: IpAddr) -> String {
    if addr.is_ipv4() && s.len() > n {
        let mut end = n;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// An address as a sort key: IPv4 before IPv6, each by value.
fn addr_key(a: IpAddr) -> (bool, u128) {
    match a {
        IpAddr::V4(v4) => (false, u32::from(v4).into()),
        IpAddr::V6(v6) => (true, u128::from(v6)),
    }
}

/// libipvs's service order: fwmark (address services, mark 0, first), family, protocol,
/// address, port.
fn service_key(s: &ServiceEntry) -> (u32, bool, u8, u128, u16) {
    let (v6, a) = addr_key(s.addr);
    (s.fwmark.unwrap_or(0), v6, s.proto.number(), a, s.port)
}

fn sorted_services<'a>(listing: &'a Listing, opts: &ListOpts) -> Vec<&'a ServiceEntry> {
    let mut v: Vec<&ServiceEntry> = listing
        .services
        .iter()
        .filter(|s| opts.service.as_ref().is_none_or(|spec| s.matches(spec)))
        .collect();
    if !opts.nosort {
        v.sort_by_key(|s| service_key(s));
    }
    v
}

fn sorted_dests(s: &ServiceEntry, nosort: bool) -> Vec<&DestEntry> {
    let mut v: Vec<&DestEntry> = s.dests.iter().collect();
    if !nosort {
        v.sort_by_key(|d| (addr_key(d.addr), d.port));
    }
    v
}

/// No names: numbers only.
static NUMERIC: std::sync::LazyLock<Names> = std::sync::LazyLock::new(Names::default);

/// A service's name in listings: `TCP  addr:port` (cut at 33 for IPv4), `FWM  mark`,
/// `FWM  mark IPv6`.
fn service_name(s: &ServiceEntry, names: &Names) -> String {
    match s.fwmark {
        Some(mark) if s.addr.is_ipv6() => format!("FWM  {mark} IPv6"),
        Some(mark) => format!("FWM  {mark}"),
        None => cut(
            format!(
                "{:<4} {}",
                s.proto.name(),
                names.addr_port(s.addr, s.port, s.proto)
            ),
            33,
            s.addr,
        ),
    }
}

/// A service in `-S` lines: `-t addr:port`, `-f mark`, `-f mark -6`.
fn service_rule(s: &ServiceEntry, names: &Names) -> String {
    match s.fwmark {
        Some(mark) if s.addr.is_ipv6() => format!("-f {mark} -6"),
        Some(mark) => format!("-f {mark}"),
        None => format!(
            "{} {}",
            proto_switch(s.proto),
            names.addr_port(s.addr, s.port, s.proto)
        ),
    }
}

fn service_row(out: &mut String, s: &ServiceEntry, layout: Layout, exact: bool, names: &Names) {
    let name = service_name(s, names);
    match layout {
        Layout::Stats | Layout::Rate => {
            let _ = write!(out, "{name:<33}");
            let v = if layout == Layout::Stats {
                let t = &s.stats;
                [t.conns, t.inpkts, t.outpkts, t.inbytes, t.outbytes]
            } else {
                let r = &s.rate;
                [r.cps, r.inpps, r.outpps, r.inbps, r.outbps]
            };
            for n in v {
                out.push_str(&print_largenum(n, exact));
            }
        }
        _ => {
            let _ = write!(out, "{name} {}", s.sched);
            if !s.flags.is_empty() {
                let _ = write!(out, " ({})", s.flags.join(","));
            }
            if let Some(t) = s.persistent {
                let _ = write!(out, " persistent {t}");
                if let Some(m) = s.effective_netmask() {
                    let _ = write!(out, " mask {m}");
                }
            }
            if s.ops {
                out.push_str(" ops");
            }
            if s.synproxy {
                out.push_str(" synproxy");
            }
            if let Some(a) = s.access.as_ref().filter(|a| !a.is_empty()) {
                access_words(out, a);
            }
        }
    }
    out.push('\n');
}

/// Prefixes of an access list `-L` shows before "+N more".
const ACCESS_SHOWN: usize = 4;

/// tapvs's access control after the service's flags: `deny P,P allow P conn-limit N
/// conn-rate N/LEN` (lists cut after [`ACCESS_SHOWN`] prefixes).
fn access_words(out: &mut String, a: &AccessEntry) {
    for (word, list) in [("deny", &a.deny), ("allow", &a.allow)] {
        if list.is_empty() {
            continue;
        }
        let shown: Vec<&str> = list.iter().take(ACCESS_SHOWN).map(String::as_str).collect();
        let _ = write!(out, " {word} {}", shown.join(","));
        if list.len() > ACCESS_SHOWN {
            let _ = write!(out, ",+{} more", list.len() - ACCESS_SHOWN);
        }
    }
    if a.conn_limit > 0 {
        let _ = write!(out, " conn-limit {}", a.conn_limit);
    }
    if a.conn_rate > 0 {
        let _ = write!(out, " conn-rate {}/{}", a.conn_rate, a.conn_rate_prefix);
    }
}

fn dest_row(
    out: &mut String,
    d: &DestEntry,
    proto: modes::Protocol,
    layout: Layout,
    exact: bool,
    names: &Names,
) {
    let name = cut(names.addr_port(d.addr, d.port, proto), 28, d.addr);
    let _ = match layout {
        Layout::Stats => {
            let t = &d.stats;
            let _ = write!(out, "  -> {name:<28}");
            for n in [t.conns, t.inpkts, t.outpkts, t.inbytes, t.outbytes] {
                out.push_str(&print_largenum(n, exact));
            }
            writeln!(out)
        }
        Layout::Rate => {
            let r = &d.rate;
            let _ = write!(
                out,
                "  -> {name:<28} {:8} {:8} {:8}",
                r.cps, r.inpps, r.outpps
            );
            for n in [r.inbps, r.outbps] {
                out.push_str(&print_largenum(n, exact));
            }
            writeln!(out)
        }
        Layout::Thresholds => writeln!(
            out,
            "  -> {name:<28} {:<10} {:<10} {:<10} {:<10}",
            d.u_threshold, d.l_threshold, d.active, d.inactive
        ),
        Layout::PersistentConn => writeln!(
            out,
            "  -> {name:<28} {:<9} {:<11} {:<10} {:<10}",
            d.weight, d.persist, d.active, d.inactive
        ),
        Layout::TunInfo => {
            let info = if method(d) == Forward::Tun {
                "ipip"
            } else {
                "n/a"
            };
            writeln!(
                out,
                "  -> {name:<28} {:<7} {info:<13} {:<6} {:<10} {:<10}",
                forward_column(d),
                d.weight,
                d.active,
                d.inactive
            )
        }
        Layout::Plain => writeln!(
            out,
            "  -> {name:<28} {:<7} {:<6} {:<10} {:<10}",
            forward_column(d),
            d.weight,
            d.active,
            d.inactive
        ),
    };
}

/// The service table as `ipvsadm -L -n [--stats|--rate|--thresholds|--persistent-conn]
/// [--exact] [--nosort] [service]` prints it.
///
/// With `opts.service` set only that service is printed and the version line is left out, as
/// ipvsadm; the caller reports "No such service" when it does not exist (see
/// [`Listing::service`]). `-c`, `--timeout` and `--daemon` are other functions
/// ([`list_conns`], [`timeouts`]; the daemon listing is the appliance's own).
pub fn list(listing: &Listing, opts: &ListOpts) -> String {
    list_with(listing, opts, &NUMERIC)
}

/// [`list`] with host and service names from `names` unless `opts.numeric`.
pub fn list_with(listing: &Listing, opts: &ListOpts, names: &Names) -> String {
    let mut out = list_header(listing, opts);
    for s in sorted_services(listing, opts) {
        list_service_with(&mut out, s, opts, names);
    }
    out
}

/// The lines [`list`] prints before the services (`listing`'s services are not read).
pub fn list_header(listing: &Listing, opts: &ListOpts) -> String {
    let mut out = String::new();
    if opts.service.is_none() {
        let _ = writeln!(
            out,
            "IP Virtual Server version {IPVS_VERSION} (size={})",
            listing.conn_table_size
        );
    }
    title(&mut out, layout(opts));
    out
}

/// Appends one service and its real servers as [`list`] prints them, so a long listing can be
/// produced service by service (in the order `list` would: by protocol, address and port
/// unless `--nosort`).
pub fn list_service(out: &mut String, s: &ServiceEntry, opts: &ListOpts) {
    list_service_with(out, s, opts, &NUMERIC)
}

/// [`list_service`] with host and service names from `names` unless `opts.numeric`.
pub fn list_service_with(out: &mut String, s: &ServiceEntry, opts: &ListOpts, names: &Names) {
    let names = if opts.numeric { &NUMERIC } else { names };
    let layout = layout(opts);
    service_row(out, s, layout, opts.exact, names);
    for d in sorted_dests(s, opts.nosort) {
        dest_row(out, d, s.proto, layout, opts.exact, names);
    }
}

fn conn_row(out: &mut String, c: &ConnEntry, names: &Names) {
    let expire = format!("{:02}:{:02}", c.expire_secs / 60, c.expire_secs % 60);
    let _ = writeln!(
        out,
        "{:<3} {expire:<6} {:<11} {:<18} {:<18} {}",
        c.proto.name(),
        c.state,
        names.addr_port(c.client.ip(), c.client.port(), c.proto),
        names.addr_port(c.vip.ip(), c.vip.port(), c.proto),
        names.addr_port(c.dest.ip(), c.dest.port(), c.proto)
    );
}

/// The connection table as `ipvsadm -L -n -c` prints it (entries in the order given).
pub fn list_conns(conns: &[ConnEntry]) -> String {
    list_conns_with(conns, &NUMERIC)
}

/// [`list_conns`] with host and service names from `names` (`-L -c` without `-n`).
pub fn list_conns_with(conns: &[ConnEntry], names: &Names) -> String {
    let mut out = String::from("IPVS connection entries\n");
    let _ = writeln!(
        out,
        "pro expire {:<11} {:<18} {:<18} destination",
        "state", "source", "virtual"
    );
    conns.iter().for_each(|c| conn_row(&mut out, c, names));
    out
}

/// The connection table as `ipvsadm -L -n -c --persistent-conn` prints it: the header gains
/// `pe name` and `pe_data` columns; rows stay as in [`list_conns`] since tapvs has no
/// persistence engines.
pub fn list_conns_persistent(conns: &[ConnEntry]) -> String {
    list_conns_persistent_with(conns, &NUMERIC)
}

/// [`list_conns_persistent`] with host and service names from `names`.
pub fn list_conns_persistent_with(conns: &[ConnEntry], names: &Names) -> String {
    let mut out = String::from("IPVS connection entries\n");
    let _ = writeln!(
        out,
        "pro expire {:<11} {:<18} {:<18} {:<18} {:<16} pe_data",
        "state", "source", "virtual", "destination", "pe name"
    );
    conns.iter().for_each(|c| conn_row(&mut out, c, names));
    out
}

/// `ipvsadm -L --timeout`: `Timeout (tcp tcpfin udp): 900 120 300`.
pub fn timeouts(t: (u32, u32, u32)) -> String {
    format!("Timeout (tcp tcpfin udp): {} {} {}\n", t.0, t.1, t.2)
}

/// The table as `ipvsadm -S [-n]` prints it, in restore format and sorted: per service
/// `-A -t addr:port -s sched[ -p T[ -M mask]][ -o][ -b flags]`, then per real server
/// `-a -t addr:port -r addr:port -m|-g|-i|-b -w W` (`-i` adds ` --tun-type ipip`); IPv6
/// addresses as `[addr]:port`, fwmark services as `-f mark[ -6]`, an IPv6 mask as `-M len`.
/// Thresholds are not saved, as ipvsadm. Addresses are numeric (`-S -n`); `numeric` is kept
/// for the callers' clarity, [`save_with`] prints names.
pub fn save(listing: &Listing, numeric: bool) -> String {
    let _ = numeric;
    save_with(listing, &NUMERIC)
}

/// [`save`] with host and service names from `names` (`-S` without `-n`; `-R` takes them back
/// through [`crate::cmd::resolve`]).
pub fn save_with(listing: &Listing, names: &Names) -> String {
    let mut out = String::new();
    for s in sorted_services(listing, &ListOpts::default()) {
        let svc = service_rule(s, names);
        let _ = write!(out, "-A {svc} -s {}", s.sched);
        if let Some(t) = s.persistent {
            let _ = write!(out, " -p {t}");
            if let Some(m) = s.effective_netmask() {
                let _ = write!(out, " -M {m}");
            }
        }
        if s.ops {
            out.push_str(" -o");
        }
        if !s.flags.is_empty() {
            let _ = write!(out, " -b {}", s.flags.join(","));
        }
        if s.synproxy {
            out.push_str(" -j enable");
        }
        out.push('\n');
        for d in sorted_dests(s, false) {
            let _ = write!(
                out,
                "-a {svc} -r {} {} -w {}",
                names.addr_port(d.addr, d.port, s.proto),
                forward_switch(method(d)),
                d.weight
            );
            if method(d) == Forward::Tun {
                out.push_str(" --tun-type ipip");
            }
            out.push('\n');
        }
    }
    out
}

/// The `-v` line, in ipvsadm's shape (`ipvsadm v1.31 2019/12/24 (compiled with popt and IPVS
/// v1.2.1)`) without the release date: tapvsadm's version, what it follows, the IPVS version.
pub fn version(pkg_version: &str) -> String {
    format!(
        "{PROGRAM} v{pkg_version} (compiled with ipvsadm v1.31 compatibility and IPVS v{IPVS_VERSION})\n"
    )
}

/// The `-h` text: the ipvsadm synopsis and every option ipvsadm's `-h` lists (plus `-b` as
/// FullNAT and `-v`), those tapvs refuses marked "(not supported)".
pub fn usage() -> String {
    let p = PROGRAM;
    let mut s = String::from("Usage:\n");
    for line in [
        "-A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [--pe engine] [-b sched-flags] [-o]",
        "-D virtual-service",
        "-C",
        "-R",
        "-S [-n]",
        "-a|e virtual-service -r server-address [-g|-m|-i|-b] [-w weight] [-x upper] [-y lower] [--tun-type ipip]",
        "-d virtual-service -r server-address",
        "-L|l [virtual-service] [options]",
        "-Z [virtual-service]",
        "--set tcp tcpfin udp",
        "--start-daemon {master|backup} [daemon-options]",
        "--stop-daemon {master|backup}",
        "-h",
    ] {
        let _ = writeln!(s, "  {p} {line}");
    }
    s.push_str(
        "\nCommands (long or short form):\n\
         \x20 --add-service     -A        add a virtual service\n\
         \x20 --edit-service    -E        edit a virtual service (unset options get their defaults)\n\
         \x20 --delete-service  -D        delete a virtual service\n\
         \x20 --clear           -C        clear the whole table\n\
         \x20 --restore         -R        run the commands on stdin (blank and # lines skipped)\n\
         \x20 --save            -S        print the table as commands for -R\n\
         \x20 --add-server      -a        add a real server\n\
         \x20 --edit-server     -e        edit a real server (unset options get their defaults)\n\
         \x20 --delete-server   -d        delete a real server\n\
         \x20 --list            -L|-l     list the table\n\
         \x20 --zero            -Z        zero the counters of one or all services\n\
         \x20 --set tcp tcpfin udp        set the connection timeouts (0 keeps a value)\n\
         \x20 --start-daemon              start the connection sync daemon\n\
         \x20 --stop-daemon               stop the connection sync daemon\n\
         \x20 --help            -h        print this help\n\
         \x20 --version         -v        print the version\n\
         \nvirtual-service:\n\
         \x20 --tcp-service|-t host[:port]     TCP service (IPv4 address or host name, port or service name;\n\
         \x20                                  IPv6 as [addr]:port or [name]:port, or a bare addr for port 0)\n\
         \x20 --udp-service|-u addr[:port]     UDP service\n\
         \x20 --sctp-service addr[:port]       SCTP service (not supported)\n\
         \x20 --fwmark-service|-f mark         firewall-mark service (not supported)\n\
         \nOptions:\n\
         \x20 --ipv6          -6              after -f: IPv6 fwmark service (not supported)\n\
         \x20 --scheduler     -s NAME         rr wrr lc wlc lblc lblcr dh sh sed nq fo ovf mh twos (default wlc)\n\
         \x20 --pe            ENGINE          persistence engine such as sip (not supported)\n\
         \x20 --persistent    -p [SECS]       persistent service (default 300)\n\
         \x20 --netmask       -M MASK         persistence granularity (default 255.255.255.255; IPv6: prefix length, default 128)\n\
         \x20 --sched-flags   -b LIST         on -A/-E: sh-fallback,sh-port,mh-fallback,mh-port,flag-1..3\n\
         \x20 --ops           -o              one-packet scheduling (UDP)\n\
         \x20 --synproxy      -j enable|disable on -A/-E: SYN proxy with syncookies (TCP; -m/-b real servers)\n\
         \x20 --real-server   -r ADDR[:PORT]  real server (the service's family; -b: IPv4 for an IPv6 service)\n\
         \x20 --gatewaying    -g              direct routing (default)\n\
         \x20 --masquerading  -m              NAT\n\
         \x20 --ipip          -i              IPIP tunnel\n\
         \x20 --fullnat       -b              on -a/-e/-d: FullNAT (as in DPVS)\n\
         \x20 --tun-type      TYPE            ipip (default); gue and gre: not supported\n\
         \x20 --tun-port      PORT            GUE destination port (not supported)\n\
         \x20 --tun-nocsum                    GUE without checksum (not supported)\n\
         \x20 --tun-csum                      GUE with checksum (not supported)\n\
         \x20 --tun-remcsum                   GUE with remote checksum (not supported)\n\
         \x20 --weight        -w N            0..65535 (default 1)\n\
         \x20 --u-threshold   -x N            upper connection threshold, 0..65535 (0: none)\n\
         \x20 --l-threshold   -y N            lower connection threshold, at most the upper\n\
         \x20 --numeric       -n              numeric output (no host or service names)\n\
         \x20 --connection    -c              list the connections\n\
         \x20 --timeout                       list the timeouts (tcp tcpfin udp)\n\
         \x20 --daemon                        list the connection sync daemons\n\
         \x20 --stats                         list statistics\n\
         \x20 --rate                          list rates\n\
         \x20 --exact         -X              exact numbers in --stats and --rate\n\
         \x20 --thresholds                    list thresholds\n\
         \x20 --persistent-conn               list persistent connections\n\
         \x20 --tun-info                      list tunnel information\n\
         \x20 --nosort                        do not sort services and servers\n\
         \x20 --sort                          sort (the default, accepted for compatibility)\n\
         \nDaemon options:\n\
         \x20 --syncid ID                     sync id (0..255, 0 = accept any)\n\
         \x20 --sync-maxlen LEN               largest sync message (default: MTU - 28)\n\
         \x20 --mcast-interface PORT          the tapvs port of the sync traffic\n\
         \x20 --mcast-group ADDR              sync group (224.0.0.81)\n\
         \x20 --mcast-port PORT               sync port (8848)\n\
         \x20 --mcast-ttl TTL                 sync TTL (1 only)\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::super::cmd::{parse, Command, ServerOpts, ServiceOpts, ServiceSpec};
    use super::*;
    use crate::cmd::Netmask;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

    // The expected files were produced by adm/tests/golden/gen.py, an independent rendering of the
    // same data with ipvsadm's printf format strings (see its docstring).
    fn fixture() -> Listing {
        serde_json::from_str(include_str!("../tests/golden/listing.json")).unwrap()
    }

    fn conns() -> Vec<ConnEntry> {
        serde_json::from_str(include_str!("../tests/golden/conns.json")).unwrap()
    }

    fn opts(f: impl FnOnce(&mut ListOpts)) -> ListOpts {
        let mut o = ListOpts {
            numeric: true,
            ..ListOpts::default()
        };
        f(&mut o);
        o
    }

    fn same(got: &str, want: &str) {
        if got != want {
            for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
                assert_eq!(g, w, "first difference at line {}", i + 1);
            }
            assert_eq!(got, want);
        }
    }

    #[test]
    fn largenum_thresholds() {
        let cases: [(u64, &str, &str); 14] = [
            (0, "        0", "        0"),
            (99_999_999, " 99999999", " 99999999"),
            (100_000_000, "  100000K", " 100000000"),
            (100_000_999, "  100000K", " 100000999"),
            (999_999_999, "  999999K", " 999999999"),
            (1_000_000_000, "    1000M", " 1000000000"),
            (99_999_999_999, "   99999M", " 99999999999"),
            (100_000_000_000, "     100G", " 100000000000"),
            (99_999_999_999_999, "   99999G", " 99999999999999"),
            (100_000_000_000_000, "     100T", " 100000000000000"),
            (u64::MAX, "18446744T", " 18446744073709551615"),
            (12_345_678, " 12345678", " 12345678"),
            (123_456_789, "  123456K", " 123456789"),
            (1_234_567_890, "    1234M", " 1234567890"),
        ];
        for (n, short, exact) in cases {
            assert_eq!(print_largenum(n, false), short, "{n}");
            assert_eq!(print_largenum(n, true), exact, "{n} exact");
        }
    }

    #[test]
    fn access_control_follows_the_service_flags_and_is_not_saved() {
        let mut l = fixture();
        l.services.truncate(1);
        let plain = list(&l, &opts(|_| {}));
        let save_before = save(&l, true);
        l.services[0].access = Some(AccessEntry {
            deny: (1..=6).map(|i| format!("10.0.{i}.0/24")).collect(),
            allow: vec!["10.0.0.0/8".into()],
            conn_limit: 100,
            conn_rate: 20,
            conn_rate_prefix: 24,
        });
        let with = list(&l, &opts(|_| {}));
        let row = plain.lines().nth(3).unwrap();
        let want = format!(
            "{row} deny 10.0.1.0/24,10.0.2.0/24,10.0.3.0/24,10.0.4.0/24,+2 more \
             allow 10.0.0.0/8 conn-limit 100 conn-rate 20/24"
        );
        assert_eq!(with.lines().nth(3).unwrap(), want);
        assert_eq!(save(&l, true), save_before, "-S has no such options");
        // The statistics layouts have no room for it.
        assert_eq!(
            list(&l, &opts(|o| o.stats = true)),
            list(
                &Listing {
                    services: vec![ServiceEntry {
                        access: None,
                        ..l.services[0].clone()
                    }],
                    ..l.clone()
                },
                &opts(|o| o.stats = true)
            )
        );
    }

    #[test]
    fn golden_plain() {
        let l = fixture();
        same(
            &list(&l, &opts(|_| {})),
            include_str!("../tests/golden/list_plain.txt"),
        );
        // -n changes nothing: names are never resolved.
        same(
            &list(&l, &ListOpts::default()),
            include_str!("../tests/golden/list_plain.txt"),
        );
    }

    #[test]
    fn golden_reference_example() {
        // lvs.md §1.6 example, typed by hand (ipvsadm pads the last column, hence the spaces).
        let mut l = fixture();
        l.services.retain(|s| s.port == 80 && s.sched == "rr");
        l.services[0].port = 8080;
        l.services[0]
            .dests
            .retain(|d| d.port == 8080 && d.weight == 1);
        let want = "IP Virtual Server version 1.2.1 (size=4096)\n\
                    Prot LocalAddress:Port Scheduler Flags\n\
                    \x20 -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n\
                    TCP  207.175.44.110:8080 rr\n\
                    \x20 -> 172.16.0.2:8080              Masq    1      0          1         \n";
        same(&list(&l, &opts(|_| {})), want);
    }

    #[test]
    fn golden_nosort_keeps_table_order() {
        let l = fixture();
        let o = opts(|o| o.nosort = true);
        same(
            &list(&l, &o),
            include_str!("../tests/golden/list_nosort.txt"),
        );
    }

    #[test]
    fn golden_stats_and_rate() {
        let l = fixture();
        let g = |f: fn(&mut ListOpts)| list(&l, &opts(f));
        same(
            &g(|o| o.stats = true),
            include_str!("../tests/golden/list_stats.txt"),
        );
        same(
            &g(|o| {
                o.stats = true;
                o.exact = true
            }),
            include_str!("../tests/golden/list_stats_exact.txt"),
        );
        same(
            &g(|o| o.rate = true),
            include_str!("../tests/golden/list_rate.txt"),
        );
        same(
            &g(|o| {
                o.rate = true;
                o.exact = true
            }),
            include_str!("../tests/golden/list_rate_exact.txt"),
        );
        // --stats wins over --rate and the others, as in ipvsadm.
        same(
            &g(|o| {
                o.stats = true;
                o.rate = true;
                o.thresholds = true
            }),
            include_str!("../tests/golden/list_stats.txt"),
        );
    }

    #[test]
    fn golden_thresholds_persistent_tun() {
        let l = fixture();
        let g = |f: fn(&mut ListOpts)| list(&l, &opts(f));
        same(
            &g(|o| o.thresholds = true),
            include_str!("../tests/golden/list_thresholds.txt"),
        );
        same(
            &g(|o| o.persistent_conn = true),
            include_str!("../tests/golden/list_persistent_conn.txt"),
        );
        same(
            &g(|o| o.tun_info = true),
            include_str!("../tests/golden/list_tun_info.txt"),
        );
    }

    #[test]
    fn golden_single_service() {
        let l = fixture();
        let spec: ServiceSpec = match parse(&["-L".into(), "-t".into(), "207.175.44.110:80".into()])
        {
            Ok(Command::List(o)) => o.service.unwrap(),
            other => panic!("{other:?}"),
        };
        let o = opts(|o| o.service = Some(spec));
        same(
            &list(&l, &o),
            include_str!("../tests/golden/list_service.txt"),
        );
        let o = opts(|o| {
            o.service = Some(spec);
            o.stats = true
        });
        same(
            &list(&l, &o),
            include_str!("../tests/golden/list_service_stats.txt"),
        );
        assert!(l.service(&spec).is_some());
    }

    #[test]
    fn golden_conns_and_timeout() {
        same(
            &list_conns(&conns()),
            include_str!("../tests/golden/conns.txt"),
        );
        same(
            &list_conns_persistent(&conns()),
            include_str!("../tests/golden/conns_persistent.txt"),
        );
        same(&list_conns(&[]), "IPVS connection entries\npro expire state       source             virtual            destination\n");
        same(
            &timeouts(fixture().timeouts),
            include_str!("../tests/golden/timeout.txt"),
        );
        same(
            &timeouts((1, 0, 2678400)),
            "Timeout (tcp tcpfin udp): 1 0 2678400\n",
        );
    }

    #[test]
    fn golden_save() {
        let l = fixture();
        same(&save(&l, true), include_str!("../tests/golden/save.txt"));
        same(&save(&l, false), include_str!("../tests/golden/save.txt"));
        same(&save(&Listing::default(), true), "");
        same(&list(&Listing::default(), &ListOpts::default()), "IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n");
    }

    /// The commands `-S` output stands for, built from the listing (not from the text).
    fn expected_commands(l: &Listing) -> Vec<Command> {
        let mut svcs: Vec<&ServiceEntry> = l.services.iter().collect();
        svcs.sort_by_key(|s| service_key(s));
        let mut out = Vec::new();
        for s in svcs {
            out.push(Command::AddService(ServiceOpts {
                service: s.spec(),
                scheduler: s.sched.clone(),
                sched_flags: s.flags.clone(),
                persistent: s.persistent,
                netmask: s.netmask.unwrap_or(Netmask::full(s.addr.is_ipv6())),
                ops: s.ops,
                synproxy: s.synproxy,
            }));
            let mut ds: Vec<&DestEntry> = s.dests.iter().collect();
            ds.sort_by_key(|d| (addr_key(d.addr), d.port));
            for d in ds {
                out.push(Command::AddServer(ServerOpts {
                    service: s.spec(),
                    server: SocketAddr::new(d.addr, d.port),
                    // Local is saved as -g; thresholds are not saved (as ipvsadm).
                    forward: if d.local { Forward::Dr } else { d.forward },
                    weight: d.weight,
                    u_threshold: 0,
                    l_threshold: 0,
                }));
            }
        }
        out
    }

    #[test]
    fn synproxy_is_listed_saved_and_refused_with_bypassing_real_servers() {
        let cmds = [
            "-A -t 10.0.0.1:80 -s rr -j enable",
            "-a -t 10.0.0.1:80 -r 10.0.1.1:80 -m",
            "-a -t 10.0.0.1:80 -r 10.0.1.2:8080 -b",
            "-A -t 10.0.0.1:81 -s rr",
            "-a -t 10.0.0.1:81 -r 10.0.1.3:81 -g",
        ];
        let mut l = Listing::default();
        for c in cmds {
            let args: Vec<String> = c.split_whitespace().map(String::from).collect();
            l.apply(&parse(&args).unwrap()).unwrap();
        }
        let text = list(
            &l,
            &ListOpts {
                numeric: true,
                ..ListOpts::default()
            },
        );
        assert!(text.contains("TCP  10.0.0.1:80 rr synproxy\n"), "{text}");
        assert!(text.contains("TCP  10.0.0.1:81 rr\n"), "{text}");
        let saved = save(&l, true);
        assert!(
            saved.contains("-A -t 10.0.0.1:80 -s rr -j enable\n"),
            "{saved}"
        );
        let mut rebuilt = Listing::default();
        for line in saved.lines() {
            let args: Vec<String> = line.split_whitespace().map(String::from).collect();
            rebuilt.apply(&parse(&args).unwrap()).unwrap();
        }
        assert_eq!(rebuilt, l);
        // DR or TUN with SYNPROXY: refused either way round, nothing changed.
        let before = l.clone();
        for c in [
            "-a -t 10.0.0.1:80 -r 10.0.1.4 -g",
            "-a -t 10.0.0.1:80 -r 10.0.1.4 -i",
            "-e -t 10.0.0.1:80 -r 10.0.1.1:80 -g",
            "-E -t 10.0.0.1:81 -s rr -j enable",
        ] {
            let args: Vec<String> = c.split_whitespace().map(String::from).collect();
            let e = l.apply(&parse(&args).unwrap()).unwrap_err();
            assert_eq!(e, crate::AdmError::SynproxyForward, "{c}");
            assert_eq!(e.exit_code(), 1);
        }
        assert_eq!(l, before);
    }

    #[test]
    fn save_parse_round_trip() {
        let l = fixture();
        let text = save(&l, true);
        let parsed: Vec<Command> = text
            .lines()
            .map(|line| {
                let args: Vec<String> = line.split_whitespace().map(String::from).collect();
                parse(&args).unwrap_or_else(|e| panic!("{line}: {e}"))
            })
            .collect();
        assert_eq!(parsed, expected_commands(&l));

        // Replaying the commands rebuilds a table that saves to the same text.
        let mut rebuilt = Listing::default();
        for c in &parsed {
            rebuilt.apply(c).unwrap();
        }
        same(&save(&rebuilt, true), &text);
        // And restore-style lines with the leading "ipvsadm" give the same commands.
        let again: Vec<Command> = text
            .lines()
            .filter_map(|line| {
                super::super::cmd::parse_restore_line(&format!("ipvsadm {line}")).unwrap()
            })
            .collect();
        assert_eq!(again, parsed);
    }

    /// Forward lookups from the same texts the names came from (for the `-S` round trip).
    struct FromTexts(Vec<(IpAddr, Vec<String>)>, crate::names::Services);

    impl crate::names::Resolver for FromTexts {
        fn host(&self, name: &str) -> Option<Ipv4Addr> {
            self.0.iter().find_map(|(a, n)| match a {
                IpAddr::V4(a) if n.iter().any(|x| x == name) => Some(*a),
                _ => None,
            })
        }

        fn host6(&self, name: &str) -> Option<Ipv6Addr> {
            self.0.iter().find_map(|(a, n)| match a {
                IpAddr::V6(a) if n.iter().any(|x| x == name) => Some(*a),
                _ => None,
            })
        }

        fn service(&self, name: &str, proto: modes::Protocol) -> Option<u16> {
            self.1.port(name, proto)
        }
    }

    const HOSTS: &str =
        "127.0.0.1 localhost\n172.16.0.2 rs1\n207.175.44.110 a-rather-long-virtual-host-name\n";
    const SERVICES: &str = "http 80/tcp www\nhttp-alt 8080/tcp\ndomain 53/udp\ndomain 53/tcp\n";

    #[test]
    fn names_without_numeric() {
        let l = fixture();
        let names = Names::parse(HOSTS, SERVICES);
        let named = list_with(&l, &opts(|o| o.numeric = false), &names);
        let lines: Vec<&str> = named.lines().collect();
        for want in [
            "TCP  10.0.0.1:http wlc persistent 300",
            // Cut at 33 characters, as ipvsadm's buffer.
            "TCP  a-rather-long-virtual-host-n rr",
            "  -> rs1:http                     Masq    1      0          0         ",
            "  -> rs1:http-alt                 Masq    1      0          1         ",
            "  -> 172.16.0.10:http-alt         Masq    3      12         0         ",
            "  -> localhost:65535              Local   2      0          0         ",
            "UDP  10.0.0.1:domain rr ops",
            "  -> 172.16.0.3:domain            Masq    1      0          7         ",
        ] {
            assert!(lines.contains(&want), "{want:?} not in\n{named}");
        }
        assert_eq!(
            named.lines().count(),
            list(&l, &opts(|_| {})).lines().count()
        );
        // -n wins; no names print numbers.
        same(
            &list_with(&l, &opts(|_| {}), &names),
            &list(&l, &opts(|_| {})),
        );
        same(
            &list_with(&l, &opts(|o| o.numeric = false), &Names::default()),
            &list(&l, &opts(|_| {})),
        );
        same(
            &list_conns_with(&conns(), &Names::default()),
            &list_conns(&conns()),
        );
        let c = list_conns_with(&conns(), &names);
        assert_eq!(c.lines().count(), list_conns(&conns()).lines().count());
    }

    #[test]
    fn save_with_names_restores_through_resolve() {
        let l = fixture();
        let names = Names::parse(HOSTS, SERVICES);
        let text = save_with(&l, &names);
        assert!(
            text.contains("-A -t a-rather-long-virtual-host-name:http -s rr\n"),
            "{text}"
        );
        assert!(
            text.contains("-a -u 10.0.0.1:domain -r 172.16.0.3:domain -m -w 1\n"),
            "{text}"
        );
        assert!(text.contains("-r localhost:65535 -g -w 2\n"), "{text}");
        // Resolved back, the lines are the numeric save's commands.
        let back = FromTexts(
            crate::names::parse_hosts(HOSTS),
            crate::names::Services::parse(SERVICES),
        );
        let numeric = save(&l, true);
        for (named, plain) in text.lines().zip(numeric.lines()) {
            let words: Vec<String> = named.split_whitespace().map(String::from).collect();
            let resolved = crate::cmd::resolve(&words, &back).unwrap();
            let want: Vec<String> = plain.split_whitespace().map(String::from).collect();
            assert_eq!(parse(&resolved), parse(&want), "{named}");
        }
        assert_eq!(text.lines().count(), numeric.lines().count());
    }

    /// The dual-stack fixture: IPv4 and IPv6 services, a NAT64 FullNAT real server, fwmark
    /// services of both families, addresses too long for ipvsadm's columns.
    fn fixture6() -> Listing {
        serde_json::from_str(include_str!("../tests/golden/listing6.json")).unwrap()
    }

    fn conns6() -> Vec<ConnEntry> {
        serde_json::from_str(include_str!("../tests/golden/conns6.json")).unwrap()
    }

    fn list_spec(line: &str) -> ServiceSpec {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        match parse(&args) {
            Ok(Command::List(o)) => o.service.unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn golden_ipv6_listings() {
        let l = fixture6();
        let g = |f: fn(&mut ListOpts)| list(&l, &opts(f));
        for (got, want) in [
            (g(|_| {}), include_str!("../tests/golden/list6_plain.txt")),
            (
                g(|o| o.nosort = true),
                include_str!("../tests/golden/list6_nosort.txt"),
            ),
            (
                g(|o| o.stats = true),
                include_str!("../tests/golden/list6_stats.txt"),
            ),
            (
                g(|o| {
                    o.stats = true;
                    o.exact = true
                }),
                include_str!("../tests/golden/list6_stats_exact.txt"),
            ),
            (
                g(|o| o.rate = true),
                include_str!("../tests/golden/list6_rate.txt"),
            ),
            (
                g(|o| o.thresholds = true),
                include_str!("../tests/golden/list6_thresholds.txt"),
            ),
            (
                g(|o| o.persistent_conn = true),
                include_str!("../tests/golden/list6_persistent_conn.txt"),
            ),
            (
                g(|o| o.tun_info = true),
                include_str!("../tests/golden/list6_tun_info.txt"),
            ),
        ] {
            same(&got, want);
        }
        // One service: by address, and an IPv6 fwmark service by -f 7 -6 (not the IPv4 one).
        let one = |line: &str| {
            let spec = list_spec(line);
            assert!(l.service(&spec).is_some(), "{line}");
            list(&l, &opts(|o| o.service = Some(spec)))
        };
        same(
            &one("-L -t [2001:db8:f::80]:80"),
            include_str!("../tests/golden/list6_service.txt"),
        );
        same(
            &one("-L -f 7 -6"),
            include_str!("../tests/golden/list6_fwmark6.txt"),
        );
        assert!(
            l.service(&list_spec("-L -f 3")).is_none(),
            "-f 3 is IPv6 only"
        );
        assert!(l.service(&list_spec("-L -u [2001:db8:f::80]:80")).is_none());
        // The widths overflow for long IPv6 addresses, as ipvsadm's do (never cut).
        let plain = g(|_| {});
        assert!(plain.contains(
            "\n  -> [2001:db8:5:ffff:ffff:ffff:ffff:fffe]:80 Route   65535  4294967295 0 "
        ));
        assert!(plain.contains("\nTCP  [ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe]:65535 wrr"));
    }

    #[test]
    fn golden_ipv6_conns_and_save() {
        same(
            &list_conns(&conns6()),
            include_str!("../tests/golden/conns6.txt"),
        );
        same(
            &list_conns_persistent(&conns6()),
            include_str!("../tests/golden/conns6_persistent.txt"),
        );
        same(
            &save(&fixture6(), true),
            include_str!("../tests/golden/save6.txt"),
        );
    }

    /// -S, then -R of its output into an empty table, then -S again: the same text, for a
    /// table mixing IPv4 and IPv6 (NAT64 and fwmark services included); and the commands
    /// are the ones the listing stands for.
    #[test]
    fn ipv6_save_restore_save_round_trip() {
        let l = fixture6();
        let text = save(&l, true);
        let mut rebuilt = Listing::default();
        let mut parsed = Vec::new();
        for line in text.lines() {
            let c = super::super::cmd::parse_restore_line(&format!("ipvsadm {line}"))
                .unwrap_or_else(|e| panic!("{line}: {e}"))
                .unwrap();
            rebuilt.apply(&c).unwrap_or_else(|e| panic!("{line}: {e}"));
            parsed.push(c);
        }
        assert_eq!(parsed, expected_commands(&l));
        same(&save(&rebuilt, true), &text);
        // The rebuilt table lists as the original but for counters and thresholds.
        let strip = |mut l: Listing| {
            for s in &mut l.services {
                (s.stats, s.rate) = (Default::default(), Default::default());
                for d in &mut s.dests {
                    (d.stats, d.rate) = (Default::default(), Default::default());
                    (d.active, d.inactive, d.persist) = (0, 0, 0);
                    (d.u_threshold, d.l_threshold) = (0, 0);
                }
            }
            l
        };
        same(
            &list(&strip(rebuilt.clone()), &opts(|_| {})),
            &list(&strip(l.clone()), &opts(|_| {})),
        );
        // Deleting by the spelling -S uses finds every service and server.
        for s in &l.services {
            for d in &s.dests {
                let line = format!(
                    "-d {} -r {}",
                    s.spec().rule(),
                    Names::default().addr_port(d.addr, d.port, s.proto)
                );
                let args: Vec<String> = line.split_whitespace().map(String::from).collect();
                rebuilt
                    .apply(&parse(&args).unwrap())
                    .unwrap_or_else(|e| panic!("{line}: {e}"));
            }
            let args: Vec<String> = format!("-D {}", s.spec().rule())
                .split_whitespace()
                .map(String::from)
                .collect();
            rebuilt.apply(&parse(&args).unwrap()).unwrap();
        }
        assert!(rebuilt.services.is_empty());
    }

    #[test]
    fn ipv6_runtime_rules_in_memory() {
        let mut l = Listing::default();
        let run = |l: &mut Listing, line: &str| {
            let args: Vec<String> = line.split_whitespace().map(String::from).collect();
            l.apply(&parse(&args).unwrap())
        };
        run(&mut l, "-A -t [2001:db8:f::80]:80 -s rr").unwrap();
        // The same address and port in IPv4 and IPv6, and TCP and UDP, are distinct services.
        run(&mut l, "-A -u [2001:db8:f::80]:80 -s rr").unwrap();
        run(&mut l, "-A -f 1 -s rr").unwrap();
        run(&mut l, "-A -f 1 -6 -s rr").unwrap();
        assert_eq!(
            run(&mut l, "-A -t [2001:db8:f:0::80]:80"),
            Err(crate::AdmError::ServiceExists)
        );
        assert_eq!(
            run(&mut l, "-A -f 1 -6"),
            Err(crate::AdmError::ServiceExists)
        );
        run(&mut l, "-a -t [2001:db8:f::80]:80 -r [2001:db8:5::2]:80 -m").unwrap();
        run(&mut l, "-a -t [2001:db8:f::80]:80 -r 172.16.0.2:80 -b").unwrap();
        assert_eq!(
            run(
                &mut l,
                "-a -t [2001:db8:f::80]:80 -r [2001:db8:5:0::2]:80 -b"
            ),
            Err(crate::AdmError::DestExists)
        );
        assert_eq!(
            run(&mut l, "-d -t [2001:db8:f::80]:80 -r [2001:db8:5::3]:80"),
            Err(crate::AdmError::NoSuchDest)
        );
        assert_eq!(
            run(&mut l, "-a -t [2001:db8:f::81]:80 -r [2001:db8:5::3]:80"),
            Err(crate::AdmError::ServiceNotDefined)
        );
        assert_eq!(
            run(&mut l, "-D -f 2 -6"),
            Err(crate::AdmError::NoSuchService)
        );
        run(&mut l, "-E -t [2001:db8:f::80]:80 -s rr -p 60 -M 64").unwrap();
        let s = l.service(&list_spec("-L -t [2001:db8:f::80]:80")).unwrap();
        assert_eq!(s.netmask, Some(Netmask::V6(64)));
        assert_eq!(s.dests.len(), 2);
        // -M 128 is the default: not kept, not listed.
        run(&mut l, "-E -t [2001:db8:f::80]:80 -s rr -p 60 -M 128").unwrap();
        let s = l.service(&list_spec("-L -t [2001:db8:f::80]:80")).unwrap();
        assert_eq!(s.netmask, None);
        run(&mut l, "-d -t [2001:db8:f::80]:80 -r 172.16.0.2:80").unwrap();
        run(&mut l, "-D -f 1").unwrap();
        assert!(l.service(&list_spec("-L -f 1 -6")).is_some());
        assert!(l.service(&list_spec("-L -f 1")).is_none());
    }

    const HOSTS6: &str = "127.0.0.1 localhost\n::1 localhost ip6-localhost\n\
                          2001:db8:5::2 rs6\n2001:db8:f::80 web6\n172.16.0.2 rs1\n";

    #[test]
    fn ipv6_names_without_numeric() {
        let l = fixture6();
        let names = Names::parse(HOSTS6, SERVICES);
        let named = list_with(&l, &opts(|o| o.numeric = false), &names);
        let lines: Vec<&str> = named.lines().collect();
        for want in [
            "TCP  [web6]:http rr".to_string(),
            format!("  -> {:<28} Masq    1      0          1 ", "[rs6]:http"),
            format!("  -> {:<28} FullNat 1      0          0 ", "rs1:http-alt"),
            format!("  -> {:<28} Masq    1      0          9 ", "[rs6]:5353"),
            "  -> [2001:db8:5:ffff:ffff:ffff:ffff:fffe]:http Route ".to_string(),
            "UDP  [web6]:domain sh (sh-port) persistent 600 mask 64 ops".to_string(),
        ] {
            assert!(
                lines.iter().any(|l| l.starts_with(&want)),
                "{want:?} not in\n{named}"
            );
        }
        assert_eq!(
            named.lines().count(),
            list(&l, &opts(|_| {})).lines().count()
        );
        let c = list_conns_with(&conns6(), &names);
        assert!(
            c.contains(
                "\nTCP 14:59  ESTABLISHED [2001:db8:c::2]:41234 [web6]:http        [rs6]:http\n"
            ),
            "{c}"
        );
        // -S with names, resolved back (brackets: IPv6 lookups), gives the numeric commands.
        let text = save_with(&l, &names);
        assert!(text.contains("-A -t [web6]:http -s rr\n"), "{text}");
        assert!(
            text.contains("-a -t [web6]:http -r rs1:http-alt -b -w 1\n"),
            "{text}"
        );
        let back = FromTexts(
            crate::names::parse_hosts(HOSTS6),
            crate::names::Services::parse(SERVICES),
        );
        let numeric = save(&l, true);
        assert_eq!(text.lines().count(), numeric.lines().count());
        for (named, plain) in text.lines().zip(numeric.lines()) {
            let words: Vec<String> = named.split_whitespace().map(String::from).collect();
            let resolved = crate::cmd::resolve(&words, &back).unwrap();
            let want: Vec<String> = plain.split_whitespace().map(String::from).collect();
            assert_eq!(parse(&resolved), parse(&want), "{named}");
        }
    }

    #[test]
    fn usage_and_version() {
        assert!(usage().starts_with("Usage:\n  tapvsadm -A|E virtual-service"));
        assert!(usage().contains("--set tcp tcpfin udp"));
        assert_eq!(
            version("0.1.0"),
            "tapvsadm v0.1.0 (compiled with ipvsadm v1.31 compatibility and IPVS v1.2.1)\n"
        );
    }
}
