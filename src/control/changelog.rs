//! The change log: one structured log line (target `tapvs::change`) for every change of the
//! live configuration, whoever makes it (`tapvsadm`, `reload`, `health`), with what changed
//! and its state before and after, in the daemon's log format (`[log] format = "json"` gives
//! one JSON object per change). Only the control plane logs here, never the data path.

use std::net::SocketAddr;

use tapvs_adm::{self as adm, format, AdmError, Command, Listing, ServiceSpec};

use crate::control::table::Table;

/// Logs one change: `who` made it, `what` it was, the state `before` and `after`.
pub fn change(who: &str, what: &str, before: &str, after: &str) {
    tracing::info!(
        target: "tapvs::change",
        who,
        what,
        before,
        after,
        "change"
    );
}

/// A command as an ipvsadm command line (the service, real server and settings it names).
pub fn describe(cmd: &Command) -> String {
    match cmd {
        Command::AddService(o) | Command::EditService(o) => {
            let c = if matches!(cmd, Command::AddService(_)) {
                "-A"
            } else {
                "-E"
            };
            let mut s = format!("{c} {} -s {}", o.service.rule(), o.scheduler);
            if !o.sched_flags.is_empty() {
                s.push_str(&format!(" -b {}", o.sched_flags.join(",")));
            }
            if let Some(p) = o.persistent {
                s.push_str(&format!(" -p {p}"));
            }
            s
        }
        Command::DeleteService(spec) => format!("-D {}", spec.rule()),
        Command::AddServer(o) | Command::EditServer(o) => {
            let c = if matches!(cmd, Command::AddServer(_)) {
                "-a"
            } else {
                "-e"
            };
            format!(
                "{c} {} -r {} {} -w {}",
                o.service.rule(),
                o.server,
                adm::cmd::forward_switch(o.forward),
                o.weight
            )
        }
        Command::DeleteServer { service, server } => {
            format!("-d {} -r {server}", service.rule())
        }
        Command::Clear => "-C".into(),
        Command::SetTimeouts { tcp, tcp_fin, udp } => format!("--set {tcp} {tcp_fin} {udp}"),
        other => format!("{other:?}"),
    }
}

/// The state a command changes, as `-S -n` rules joined by `; ` (`-` for none): the service it
/// names, the timeouts for `--set`, every service for `-C`.
fn state(table: &Table, cmd: &Command) -> String {
    let spec = match cmd {
        Command::SetTimeouts { .. } => {
            let (a, b, c) = table.meta().timeouts;
            return format!("--set {a} {b} {c}");
        }
        Command::Clear => {
            return rules(table.listing());
        }
        Command::AddService(o) | Command::EditService(o) => o.service,
        Command::AddServer(o) | Command::EditServer(o) => o.service,
        Command::DeleteService(spec) => *spec,
        Command::DeleteServer { service, .. } => *service,
        _ => return String::new(),
    };
    let ServiceSpec::Addr { proto, addr } = spec else {
        return "-".into();
    };
    let one: Option<&adm::ServiceEntry> = table.service((proto, addr));
    rules(Listing {
        services: one.into_iter().cloned().collect(),
        ..Listing::default()
    })
}

fn rules(l: Listing) -> String {
    let s = format::save(&l, true);
    let v: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join("; ")
    }
}

/// Runs `apply` (which applies `cmd` to `table`) and logs the change as made by `who` when it
/// succeeded and changed what `cmd` names.
pub fn logged<T>(
    who: &str,
    table: &mut Table,
    cmd: &Command,
    apply: impl FnOnce(&mut Table) -> Result<T, AdmError>,
) -> Result<T, AdmError> {
    let before = state(table, cmd);
    let r = apply(table)?;
    let after = state(table, cmd);
    if before != after {
        change(who, &describe(cmd), &before, &after);
    }
    Ok(r)
}

/// Logs a health verdict of real server `real` of `service`.
pub fn health(service: SocketAddr, real: SocketAddr, before: &str, after: &str) {
    change(
        "health",
        &format!("real server {real} of {service}"),
        before,
        after,
    );
}
