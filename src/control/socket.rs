//! The control socket: `tapvsadm` sends an ipvsadm command line (and, for `-R`, its standard
//! input) as one JSON line over a Unix socket; the daemon parses it with the same parser,
//! executes it against the live table, and answers with the text ipvsadm would print and its
//! exit status. The socket is created mode 0600, so only root (its owner) can connect. The
//! messages ([`Request`], [`Response`]) and the parser are the `tapvs_adm` crate's, shared with
//! tapvsadm.
//!
//! Also here: the folding of the workers' per-real-server counters into ipvsadm's statistics
//! (rates come from [`crate::control::estimator`]), and `-Z`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddrV4;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tapvs_adm::{self as adm, format, AdmError, Command, ListOpts, Listing, Request, Response};

use crate::control::shared::Shared;
use crate::datapath::stats::DestCounters;
use crate::datapath::tcp_state::Timeouts;

/// Largest request accepted on the socket.
const MAX_REQUEST: usize = 16 << 20;

/// Sums the workers' published per-real-server counters, indexed by real-server id.
pub fn dest_totals(shared: &Shared) -> Vec<DestCounters> {
    let mut out: Vec<DestCounters> = Vec::new();
    for w in &shared.dest_published {
        let v = w.lock().unwrap_or_else(|e| e.into_inner());
        if out.len() < v.len() {
            out.resize(v.len(), DestCounters::default());
        }
        for (a, b) in out.iter_mut().zip(v.iter()) {
            a.add(b);
        }
    }
    out
}

fn to_stats(c: &DestCounters) -> adm::Stats {
    adm::Stats {
        conns: c.conns,
        inpkts: c.in_pkts,
        outpkts: c.out_pkts,
        inbytes: c.in_bytes,
        outbytes: c.out_bytes,
    }
}

/// The current listing with connection counts, statistics (since the last `-Z`) and rates.
pub fn listing(shared: &Shared) -> Listing {
    let table = shared.table.lock().unwrap_or_else(|e| e.into_inner());
    let mut l = table.effective();
    let t = shared.timeouts.load();
    l.timeouts = (
        t.of(crate::datapath::tcp_state::State::Established),
        t.of(crate::datapath::tcp_state::State::FinWait),
        t.of(crate::datapath::tcp_state::State::Udp),
    );
    let totals = dest_totals(shared);
    let base = shared.zero_base.lock().unwrap_or_else(|e| e.into_inner());
    let est = shared.estimator.lock().unwrap_or_else(|e| e.into_inner());
    for s in &mut l.services {
        let key = (s.proto, SocketAddrV4::new(s.addr, s.port));
        let mut ssum = DestCounters::default();
        let mut srate = adm::Rate::default();
        for d in &mut s.dests {
            let daddr = SocketAddrV4::new(d.addr, d.port);
            let (Some(id), Some(dest)) = (table.dest_id(key, daddr), table.dest(key, daddr)) else {
                continue;
            };
            d.active = dest.active_conns();
            d.inactive = dest.inactive_conns();
            d.persist = dest.persist_conns();
            let total = totals.get(id as usize).copied().unwrap_or_default();
            let zero = base.get(&id).copied().unwrap_or_default();
            let c = total.since(&zero);
            ssum.add(&c);
            d.stats = to_stats(&c);
            d.rate = est.rate(id);
            srate.cps += d.rate.cps;
            srate.inpps += d.rate.inpps;
            srate.outpps += d.rate.outpps;
            srate.inbps += d.rate.inbps;
            srate.outbps += d.rate.outbps;
        }
        s.stats = to_stats(&ssum);
        s.rate = srate;
    }
    l
}

/// Asks every worker for its connections and waits (bounded) for all of them.
fn connections(shared: &Shared) -> Vec<adm::ConnEntry> {
    let gen = shared.dump_gen.fetch_add(1, Ordering::AcqRel) + 1;
    for w in &shared.wake {
        w.notify();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut out = Vec::new();
    for slot in &shared.dumps {
        loop {
            {
                let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
                if s.0 >= gen {
                    out.extend(s.1.drain(..).map(|c| adm::ConnEntry {
                        proto: if c.proto == 17 {
                            modes::Protocol::Udp
                        } else {
                            modes::Protocol::Tcp
                        },
                        expire_secs: c.expire_secs,
                        state: c.state.to_string(),
                        client: c.client,
                        vip: c.vip,
                        dest: c.dest,
                    }));
                    break;
                }
            }
            if std::time::Instant::now() >= deadline {
                break;
            }
            let mut pfd = [crate::sys::poll_in(std::os::fd::AsRawFd::as_raw_fd(
                &shared.dump_done,
            ))];
            let _ = crate::sys::poll(&mut pfd, 20);
            shared.dump_done.drain();
        }
    }
    out
}

fn list(shared: &Shared, o: &ListOpts) -> Response {
    if o.connection {
        let conns = connections(shared);
        return Response::out(if o.persistent_conn {
            format::list_conns_persistent(&conns)
        } else {
            format::list_conns(&conns)
        });
    }
    if o.daemon {
        return Response::out(crate::control::sync::list_daemons(shared));
    }
    let l = listing(shared);
    if o.timeout {
        return Response::out(format::timeouts(l.timeouts));
    }
    if let Some(spec) = &o.service {
        if l.service(spec).is_none() {
            return Response::err(&AdmError::NoSuchService);
        }
    }
    Response::out(format::list(&l, o))
}

/// Applies a configuration command to the live table and publishes the result.
fn configure(shared: &Shared, cmd: &Command) -> Result<(), AdmError> {
    let mut table = shared.table.lock().unwrap_or_else(|e| e.into_inner());
    if let Command::SetTimeouts { tcp, tcp_fin, udp } = cmd {
        let cur = **shared.timeouts.load();
        let pick = |new: u32, old| if new == 0 { old } else { new };
        let t = Timeouts::new(
            pick(*tcp, cur.of(crate::datapath::tcp_state::State::Established)),
            pick(*tcp_fin, cur.of(crate::datapath::tcp_state::State::FinWait)),
            pick(*udp, cur.of(crate::datapath::tcp_state::State::Udp)),
        );
        table.apply(cmd)?;
        shared.timeouts.store(Arc::new(t));
        return Ok(());
    }
    if let Some(snap) = table.apply(cmd)? {
        crate::control::shared::publish_snapshot(shared, snap);
    }
    Ok(())
}

/// Executes one command line (`stdin` is the input of `-R`).
pub fn execute(shared: &Shared, args: &[String], stdin: &str) -> Response {
    let cmd = match adm::parse(args) {
        Ok(c) => c,
        Err(e) => return Response::err(&e),
    };
    match &cmd {
        Command::Help => Response::out(format::usage()),
        Command::Version => Response::out(format::version(env!("CARGO_PKG_VERSION"))),
        Command::List(o) => list(shared, o),
        Command::Save { numeric } => Response::out(format::save(&listing(shared), *numeric)),
        Command::Zero(spec) => {
            let l = listing(shared);
            if let Some(spec) = spec {
                if l.service(spec).is_none() {
                    return Response::err(&AdmError::NoSuchService);
                }
            }
            let table = shared.table.lock().unwrap_or_else(|e| e.into_inner());
            let totals = dest_totals(shared);
            let mut base = shared.zero_base.lock().unwrap_or_else(|e| e.into_inner());
            for s in l
                .services
                .iter()
                .filter(|s| spec.as_ref().is_none_or(|sp| s.matches(sp)))
            {
                let key = (s.proto, SocketAddrV4::new(s.addr, s.port));
                for d in &s.dests {
                    if let Some(id) = table.dest_id(key, SocketAddrV4::new(d.addr, d.port)) {
                        base.insert(id, totals.get(id as usize).copied().unwrap_or_default());
                    }
                }
            }
            shared
                .estimator
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .zero();
            Response::default()
        }
        Command::Restore => restore(shared, stdin),
        Command::StartDaemon(o) => crate::control::sync::start_daemon(shared, o),
        Command::StopDaemon(role) => crate::control::sync::stop_daemon(shared, *role),
        other => match configure(shared, other) {
            Ok(()) => Response::default(),
            Err(e) => Response::err(&e),
        },
    }
}

/// `-R`: one command per line (blank and `#` comment lines skipped, as ipvsadm); a line that
/// does not parse stops the restore (exit 2), a command that fails is reported and the restore
/// goes on (as ipvsadm does).
fn restore(shared: &Shared, input: &str) -> Response {
    let mut r = Response::default();
    for line in input.lines() {
        match adm::parse_restore_line(line) {
            Ok(None) => {}
            Ok(Some(cmd)) => {
                if let Err(e) = configure(shared, &cmd) {
                    r.stderr.push_str(&format!("{e}\n"));
                    r.code = e.exit_code();
                }
            }
            Err(e) => {
                r.stderr.push_str(&format!("{e}\n"));
                r.code = e.exit_code();
                return r;
            }
        }
    }
    r
}

/// Creates the socket (and its directory), mode 0600.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        // A stale socket from a daemon that is gone; a live one refuses to be replaced.
        if UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by another tapvs", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves the socket until the daemon stops; removes it on exit.
pub fn serve(shared: Arc<Shared>, listener: UnixListener, path: PathBuf) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    while !shared.stop.load(Ordering::Relaxed) {
        let mut pfd = [crate::sys::poll_in(fd)];
        if crate::sys::poll(&mut pfd, 100).unwrap_or(0) == 0 {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        handle(&shared, stream);
    }
    let _ = std::fs::remove_file(path);
}

fn handle(shared: &Shared, stream: UnixStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&stream).take(MAX_REQUEST as u64);
    let mut line = String::new();
    let resp = match reader.read_line(&mut line) {
        Ok(0) | Err(_) => return,
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(req) => execute(shared, &req.args, &req.stdin),
            Err(e) => Response {
                stderr: format!("malformed request: {e}\n"),
                code: 2,
                ..Response::default()
            },
        },
    };
    let mut w = &stream;
    if let Ok(mut j) = serde_json::to_string(&resp) {
        j.push('\n');
        let _ = w.write_all(j.as_bytes());
    }
}

use std::io::Read as _;
