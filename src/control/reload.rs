//! Hitless reload (`tapvs reload`, SIGHUP, systemd's `ExecReload`): reads the config file
//! again and applies the difference to the live table as one batch of ipvsadm edits (services
//! and real servers added, edited or removed; schedulers, weights, thresholds; timeouts), then
//! publishes one snapshot, so untouched services keep their real servers' `Dest` objects,
//! scheduler state and connections. Health checks are handed to the health thread, which
//! keeps the state of real servers whose checks did not change. Settings that need the ports
//! or threads rebuilt are refused ("restart needed"), and an invalid config is refused with
//! its file, field and problem; a refused reload changes nothing. Every change is logged
//! through [`crate::control::changelog`] as made by `reload`.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tapvs_adm::{self as adm, Command, Response, ServerOpts, ServiceOpts};

use crate::config::Config;
use crate::control::shared::Shared;
use crate::control::table::{sock, SvcKey, Table};

/// The control-socket request that asks for a reload (`args` of a [`adm::Request`]); no
/// ipvsadm command line looks like it.
pub const RELOAD_REQUEST: &str = "--tapvs-reload";

/// Answers the control-socket request `args` if it is a reload request.
pub fn request(shared: &Shared, args: &[String]) -> Option<Response> {
    if args.len() != 1 || args[0] != RELOAD_REQUEST {
        return None;
    }
    Some(match reload(shared) {
        Ok(summary) => Response::out(format!("{summary}\n")),
        Err(e) => Response {
            stderr: format!("{e}\n"),
            code: 1,
            ..Response::default()
        },
    })
}

/// The first setting that differs between `old` and `new` and that only a restart applies.
fn restart_needed(old: &Config, new: &Config, checks_running: bool) -> Option<&'static str> {
    fn differ<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
        format!("{a:?}") != format!("{b:?}")
    }
    let fields: [(&'static str, bool); 16] = [
        ("workers", old.workers != new.workers),
        ("steering", old.steering != new.steering),
        (
            "max_connections",
            old.max_connections != new.max_connections,
        ),
        ("neighbour", differ(&old.neighbour, &new.neighbour)),
        // The ICMP limits apply live (`Table::set_defence`); the table-pressure settings are
        // the workers' own, set at start.
        (
            "defence.pressure_*",
            crate::datapath::conn::PressureConfig::from(&old.defence)
                != crate::datapath::conn::PressureConfig::from(&new.defence),
        ),
        ("control.socket", old.control.socket != new.control.socket),
        (
            "control.sloppy_tcp",
            old.control.sloppy_tcp != new.control.sloppy_tcp,
        ),
        ("metrics", old.metrics != new.metrics),
        ("log", old.log_format != new.log_format),
        ("port", differ(&old.ports, &new.ports)),
        ("route", differ(&old.routes, &new.routes)),
        ("scale_out", differ(&old.scale_out, &new.scale_out)),
        ("vrrp", differ(&old.vrrp, &new.vrrp)),
        (
            "vrrp_sync_group",
            differ(&old.vrrp_sync_groups, &new.vrrp_sync_groups),
        ),
        ("sync", differ(&old.sync, &new.sync)),
        ("io", old.io != new.io),
    ];
    if let Some((f, _)) = fields.iter().find(|(_, d)| *d) {
        return Some(f);
    }
    if !checks_running && crate::control::checks::wanted(new) {
        return Some("service.real.checks (no health checks were running)");
    }
    None
}

/// Checks what the health thread will build from `cfg`, so that a bad check is refused
/// before anything changes.
fn validate_checks(cfg: &Config) -> Result<(), String> {
    let mut rng = crate::health::engine::SplitMix64::new(1);
    let now = std::time::Instant::now();
    for s in &cfg.services {
        for r in s.reals.iter().filter(|r| !r.checks.is_empty()) {
            let Some(raddr) = r.addr4() else { continue };
            crate::health::config::real_server_health(
                &s.health, &r.health, &r.checks, raddr, r.weight, now, &mut rng,
            )
            .map_err(|(f, m)| {
                format!(
                    "{}: service {}: real {}: field `{f}`: {m}",
                    cfg.file.display(),
                    s.vip,
                    r.addr
                )
            })?;
        }
    }
    Ok(())
}

fn service_opts(s: &adm::ServiceEntry) -> ServiceOpts {
    ServiceOpts {
        service: s.spec(),
        scheduler: s.sched.clone(),
        sched_flags: s.flags.clone(),
        persistent: s.persistent,
        netmask: s.netmask.unwrap_or(adm::Netmask::full(s.addr.is_ipv6())),
        ops: s.ops,
        synproxy: s.synproxy,
    }
}

fn server_opts(s: &adm::ServiceEntry, d: &adm::DestEntry) -> ServerOpts {
    ServerOpts {
        service: s.spec(),
        server: SocketAddr::new(d.addr, d.port),
        forward: d.forward,
        weight: d.weight,
        u_threshold: d.u_threshold,
        l_threshold: d.l_threshold,
    }
}

fn key_of(s: &adm::ServiceEntry) -> SvcKey {
    (s.proto, sock(s.addr, s.port))
}

/// The ipvsadm edits that turn the configured table `have` into `want`: deletions first,
/// then additions and edits (a service before its real servers).
pub fn plan(have: &adm::Listing, want: &adm::Listing) -> Vec<Command> {
    let mut out = Vec::new();
    for h in &have.services {
        if !want.services.iter().any(|w| key_of(w) == key_of(h)) {
            out.push(Command::DeleteService(h.spec()));
        }
    }
    for w in &want.services {
        let Some(h) = have.services.iter().find(|h| key_of(h) == key_of(w)) else {
            out.push(Command::AddService(service_opts(w)));
            out.extend(
                w.dests
                    .iter()
                    .map(|d| Command::AddServer(server_opts(w, d))),
            );
            continue;
        };
        if service_opts(h) != service_opts(w) {
            out.push(Command::EditService(service_opts(w)));
        }
        for hd in &h.dests {
            let a = SocketAddr::new(hd.addr, hd.port);
            if w.dest(a).is_none() {
                out.push(Command::DeleteServer {
                    service: w.spec(),
                    server: a,
                });
            }
        }
        for wd in &w.dests {
            match h.dest(SocketAddr::new(wd.addr, wd.port)) {
                None => out.push(Command::AddServer(server_opts(w, wd))),
                Some(hd) if server_opts(h, hd) != server_opts(w, wd) => {
                    out.push(Command::EditServer(server_opts(w, wd)))
                }
                Some(_) => {}
            }
        }
    }
    if have.timeouts != want.timeouts {
        let (tcp, tcp_fin, udp) = want.timeouts;
        out.push(Command::SetTimeouts { tcp, tcp_fin, udp });
    }
    out
}

/// Reads the config file again and applies it; returns a summary of what changed, or why
/// nothing did.
pub fn reload(shared: &Shared) -> Result<String, String> {
    let mut running = shared
        .reload
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let refuse = |why: String| {
        tracing::warn!(target: "tapvs::change", who = "reload", error = %why, "reload refused");
        Err(why)
    };
    let new = match crate::config::load(&running.file) {
        Ok(c) => c,
        Err(e) => {
            return refuse(format!(
                "reload refused, nothing changed: config error: {e}"
            ))
        }
    };
    let checks_running = shared.host_enabled.load(Ordering::Relaxed);
    if let Some(field) = restart_needed(&running, &new, checks_running) {
        return refuse(format!(
            "reload refused, nothing changed: {}: field `{field}` changed: restart needed \
             (tapvs applies it only at start)",
            new.file.display()
        ));
    }
    if let Err(e) = validate_checks(&new) {
        return refuse(format!(
            "reload refused, nothing changed: config error: {e}"
        ));
    }
    // The new table built alone: proves every scheduler and service builds.
    let want = match Table::from_config(&new) {
        Ok((t, _)) => t.listing(),
        Err(e) => {
            return refuse(format!(
                "reload refused, nothing changed: config error: {}: field `service`: {e}",
                new.file.display()
            ))
        }
    };
    let mut table = shared.table.lock().unwrap_or_else(|e| e.into_inner());
    let have = table.listing();
    let cmds = plan(&have, &want);
    let mut extras_changed = Vec::new();
    for s in &new.services {
        let key = (s.proto, s.vip);
        if table.set_extras(key, s) && have.services.iter().any(|h| key_of(h) == key) {
            extras_changed.push(key);
        }
    }
    let mut errors = Vec::new();
    for cmd in &cmds {
        let applied = crate::control::changelog::logged("reload", &mut table, cmd, |t| {
            let changed = t.apply_quiet(cmd)?;
            if let Command::SetTimeouts { tcp, tcp_fin, udp } = *cmd {
                shared
                    .timeouts
                    .store(Arc::new(crate::datapath::tcp_state::Timeouts::new(
                        tcp, tcp_fin, udp,
                    )));
            }
            Ok(changed)
        });
        if let Err(e) = applied {
            errors.push(format!("{}: {e}", crate::control::changelog::describe(cmd)));
        }
    }
    for key in &extras_changed {
        if let Err(e) = table.refresh(*key) {
            errors.push(format!("service {}: {e}", key.1));
        } else {
            crate::control::changelog::change(
                "reload",
                &format!("settings of service {}", key.1),
                "-",
                "local_addresses/toa/mh/sloppy_tcp/access from the config",
            );
        }
    }
    let defence_changed = table.set_defence(&new.defence);
    if defence_changed {
        crate::control::changelog::change(
            "reload",
            "defence",
            &format!("{:?}", running.defence),
            &format!("{:?}", new.defence),
        );
    }
    crate::control::shared::publish_snapshot(shared, table.snapshot());
    drop(table);
    if running.control.expire_nodest_conn != new.control.expire_nodest_conn {
        shared
            .expire_nodest
            .store(new.control.expire_nodest_conn, Ordering::Relaxed);
        crate::control::changelog::change(
            "reload",
            "control.expire_nodest_conn",
            &running.control.expire_nodest_conn.to_string(),
            &new.control.expire_nodest_conn.to_string(),
        );
    }
    let new = Arc::new(new);
    if checks_running {
        shared.reload.hand_to_checks(new.clone());
        shared.host_wake.notify();
    }
    *running = (*new).clone();
    let summary = format!(
        "reloaded {}: {} change(s), {} services",
        new.file.display(),
        cmds.len() + extras_changed.len() + usize::from(defence_changed),
        new.services.len()
    );
    if errors.is_empty() {
        tracing::info!(target: "tapvs::change", who = "reload", "{summary}");
        Ok(summary)
    } else {
        // Not expected: the new table was built alone first.
        let e = format!("{summary}; failed: {}", errors.join("; "));
        tracing::error!(target: "tapvs::change", who = "reload", "{e}");
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(rules: &str) -> adm::Listing {
        let mut l = adm::Listing::default();
        for line in rules.lines() {
            if let Some(c) = adm::parse_restore_line(line).unwrap() {
                l.apply(&c).unwrap();
            }
        }
        l
    }

    #[test]
    fn plan_deletes_adds_and_edits_only_what_differs() {
        let have = listing(
            "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 1\n\
             -a -t 10.0.0.1:80 -r 10.1.0.2:80 -m -w 1\n-A -t 10.0.0.2:80 -s rr\n\
             -A -t 10.0.0.3:80 -s wlc\n-a -t 10.0.0.3:80 -r 10.1.0.1:80 -m -w 1",
        );
        let want = listing(
            "-A -t 10.0.0.1:80 -s wrr\n-a -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 5\n\
             -a -t 10.0.0.1:80 -r 10.1.0.3:80 -m -w 1\n-A -t 10.0.0.4:80 -s sh\n\
             -a -t 10.0.0.4:80 -r 10.1.0.4:80 -m -w 1\n\
             -A -t 10.0.0.3:80 -s wlc\n-a -t 10.0.0.3:80 -r 10.1.0.1:80 -m -w 1",
        );
        let got: Vec<String> = plan(&have, &want)
            .iter()
            .map(crate::control::changelog::describe)
            .collect();
        assert_eq!(
            got,
            vec![
                "-D -t 10.0.0.2:80",
                "-E -t 10.0.0.1:80 -s wrr",
                "-d -t 10.0.0.1:80 -r 10.1.0.2:80",
                "-e -t 10.0.0.1:80 -r 10.1.0.1:80 -m -w 5",
                "-a -t 10.0.0.1:80 -r 10.1.0.3:80 -m -w 1",
                "-A -t 10.0.0.4:80 -s sh",
                "-a -t 10.0.0.4:80 -r 10.1.0.4:80 -m -w 1",
            ]
        );
        let mut l = have.clone();
        for c in plan(&have, &want) {
            l.apply(&c).unwrap();
        }
        let sorted = |mut l: adm::Listing| {
            l.services.sort_by_key(key_of);
            adm::format::save(&l, true)
        };
        assert_eq!(sorted(l), sorted(want.clone()));
        assert!(plan(&want, &want).is_empty());
    }
}
