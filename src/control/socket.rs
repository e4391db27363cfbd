//! The control socket: `tapvsadm` sends an ipvsadm command line (and, for `-R`, its standard
//! input) as one JSON line over a Unix socket; the daemon parses it with the same parser,
//! executes it against the live table, and answers with the text ipvsadm would print and its
//! exit status. The socket is created mode 0600, so only root (its owner) can connect. The
//! messages ([`Request`], [`Response`]) and the parser are the `tapvs_adm` crate's, shared with
//! tapvsadm.
//!
//! A capture request (`tapvs capture`) turns the connection into a frame stream, served by
//! [`crate::control::capture`].
//!
//! Also here: the folding of the workers' per-real-server counters into ipvsadm's statistics
//! (rates come from [`crate::control::estimator`]), and `-Z`.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tapvs_adm::{
    self as adm, format, AdmError, Command, ListOpts, Listing, Names, Request, Response,
};

use crate::control::shared::Shared;
use crate::control::table::sock;
use crate::datapath::stats::DestCounters;
use crate::datapath::tcp_state::Timeouts;

/// Largest request accepted on the socket: one JSON line, with the whole `-R` input in it (a
/// restore of 10,000 services of 10 real servers each is about 5 MiB). A longer one is
/// refused; at most this much is buffered per connection.
pub const MAX_REQUEST: usize = 16 << 20;
/// Request bytes buffered by all connections together while they are read: a request that
/// would take more is refused as "busy", so 16 clients sending without end hold 64 MiB, not
/// 16 x 16 MiB.
pub const MAX_BUFFERED: usize = 64 << 20;
/// Request bytes being read now, by all connections ([`MAX_BUFFERED`]).
static BUFFERED: AtomicUsize = AtomicUsize::new(0);
/// Time a client has to send its whole request (tapvsadm sends it at once); a slower one is
/// refused, however steadily its bytes trickle in.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// Time the whole answer may take to go out (a client that stops reading is cut off).
const ANSWER_DEADLINE: Duration = Duration::from_secs(60);

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

/// Services per page of a streamed listing: the table lock is held for one page at a time.
const PAGE: usize = 256;
/// Restore commands applied per hold of the table lock, so listings and health checks get
/// their turn during a long restore.
const RESTORE_CHUNK: usize = 256;
/// Connections served at once; more are answered "busy".
const MAX_CLIENTS: usize = 16;

/// What filling in a listing's counters needs, gathered once per listing.
struct CounterView {
    totals: Vec<DestCounters>,
}

impl CounterView {
    fn new(shared: &Shared) -> CounterView {
        CounterView {
            totals: dest_totals(shared),
        }
    }

    /// Fills in connection counts, statistics (since the last `-Z`) and rates of `services`.
    fn fill(
        &self,
        shared: &Shared,
        table: &crate::control::table::Table,
        services: &mut [adm::ServiceEntry],
    ) {
        let base = shared.zero_base.lock().unwrap_or_else(|e| e.into_inner());
        let est = shared.estimator.lock().unwrap_or_else(|e| e.into_inner());
        for s in services {
            let key = (s.proto, sock(s.addr, s.port));
            let mut ssum = DestCounters::default();
            let mut srate = adm::Rate::default();
            for d in &mut s.dests {
                let daddr = sock(d.addr, d.port);
                let (Some(id), Some(dest)) = (table.dest_id(key, daddr), table.dest(key, daddr))
                else {
                    continue;
                };
                d.active = dest.active_conns();
                d.inactive = dest.inactive_conns();
                d.persist = dest.persist_conns();
                let total = self.totals.get(id as usize).copied().unwrap_or_default();
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
    }
}

/// The listing's table-wide part: the live timeouts and the table size, no services.
fn meta(shared: &Shared) -> Listing {
    let mut l = shared
        .table
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .meta()
        .clone();
    let t = shared.timeouts.load();
    l.timeouts = (
        t.of(crate::datapath::tcp_state::State::Established),
        t.of(crate::datapath::tcp_state::State::FinWait),
        t.of(crate::datapath::tcp_state::State::Udp),
    );
    l
}

/// Calls `each` with the pages of the effective listing (counters filled in), in ipvsadm's
/// order (`sorted`) or the order of addition; the table lock is held for one page at a time.
fn pages(
    shared: &Shared,
    sorted: bool,
    mut each: impl FnMut(Vec<adm::ServiceEntry>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let view = CounterView::new(shared);
    let mut cursor = None;
    loop {
        let (mut page, next) = {
            let table = shared.table.lock().unwrap_or_else(|e| e.into_inner());
            let (mut page, next) = table.effective_page(sorted, cursor, PAGE);
            view.fill(shared, &table, &mut page);
            (std::mem::take(&mut page), next)
        };
        if !page.is_empty() {
            each(std::mem::take(&mut page))?;
        }
        match next {
            Some(c) => cursor = Some(c),
            None => return Ok(()),
        }
    }
}

/// The current listing with connection counts, statistics (since the last `-Z`) and rates,
/// in the order services were added. Built whole: long listings stream through [`pages`].
pub fn listing(shared: &Shared) -> Listing {
    let mut l = meta(shared);
    let _ = pages(shared, false, |mut p| {
        l.services.append(&mut p);
        Ok(())
    });
    l
}

/// One connection dump at a time (the workers have one page slot each).
static DUMP_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Walks every worker's connections page by page ([`crate::datapath::worker::DUMP_PAGE`]
/// each), calling `each` with every page; a worker that does not answer a page within 2 s
/// ends its part of the dump.
fn connections(
    shared: &Shared,
    mut each: impl FnMut(Vec<adm::ConnEntry>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let _one = DUMP_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for (w, slot) in shared.dumps.iter().enumerate() {
        let mut from = 0u32;
        loop {
            // The request first, then the doorbell: a worker that sees the new `dump_gen`
            // finds the request in its slot.
            let gen = {
                let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
                s.gen = s.gen.max(s.answered) + 1;
                s.from = from;
                s.gen
            };
            shared.dump_gen.fetch_add(1, Ordering::AcqRel);
            shared.wake[w].notify();
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            let page = loop {
                {
                    let mut s = slot.lock().unwrap_or_else(|e| e.into_inner());
                    if s.answered == gen {
                        break Some((std::mem::take(&mut s.conns), s.next));
                    }
                }
                if std::time::Instant::now() >= deadline {
                    break None;
                }
                let mut pfd = [crate::sys::poll_in(std::os::fd::AsRawFd::as_raw_fd(
                    &shared.dump_done,
                ))];
                let _ = crate::sys::poll(&mut pfd, 20);
                shared.dump_done.drain();
            };
            let Some((conns, next)) = page else { break };
            each(
                conns
                    .into_iter()
                    .map(|c| adm::ConnEntry {
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
                    })
                    .collect(),
            )?;
            match next {
                Some(n) => from = n,
                None => break,
            }
        }
    }
    Ok(())
}

/// `-L`: the service listing goes out page by page through `part`, the connection listing as
/// the workers hand out their pages; the returned response ends it.
fn list(
    shared: &Shared,
    o: &ListOpts,
    names: &Names,
    part: &mut dyn FnMut(String) -> std::io::Result<()>,
) -> Response {
    let no_names = Names::default();
    let names = if o.numeric { &no_names } else { names };
    if o.connection {
        let fmt = if o.persistent_conn {
            format::list_conns_persistent_with
        } else {
            format::list_conns_with
        };
        let mut out = fmt(&[], names);
        let res = connections(shared, |page| {
            let rows = fmt(&page, names);
            // Without the two header lines.
            let body = rows.split_once('\n').and_then(|(_, r)| r.split_once('\n'));
            out.push_str(body.map_or("", |(_, r)| r));
            part(std::mem::take(&mut out))
        });
        if res.is_err() {
            return Response::default();
        }
        return Response::out(out);
    }
    if o.daemon {
        return Response::out(crate::control::sync::list_daemons(shared));
    }
    if o.timeout {
        return Response::out(format::timeouts(meta(shared).timeouts));
    }
    if let Some(spec) = &o.service {
        let adm::ServiceSpec::Addr { proto, addr } = spec else {
            return Response::err(&AdmError::NoSuchService);
        };
        let mut l = meta(shared);
        let view = CounterView::new(shared);
        {
            let table = shared.table.lock().unwrap_or_else(|e| e.into_inner());
            let Some(one) = table.effective_one((*proto, *addr)) else {
                return Response::err(&AdmError::NoSuchService);
            };
            l.services.push(one);
            view.fill(shared, &table, &mut l.services);
        }
        return Response::out(format::list_with(&l, o, names));
    }
    let mut out = format::list_header(&meta(shared), o);
    let res = pages(shared, !o.nosort, |page| {
        for s in &page {
            format::list_service_with(&mut out, s, o, names);
        }
        part(std::mem::take(&mut out))
    });
    if res.is_err() {
        return Response::default();
    }
    Response::out(out)
}

/// Applies a configuration command to the locked live table; returns whether the services
/// changed (the caller publishes [`crate::control::table::Table::snapshot`]).
fn configure_locked(
    shared: &Shared,
    table: &mut crate::control::table::Table,
    cmd: &Command,
) -> Result<bool, AdmError> {
    crate::control::changelog::logged("tapvsadm", table, cmd, |t| {
        configure_unlogged(shared, t, cmd)
    })
}

fn configure_unlogged(
    shared: &Shared,
    table: &mut crate::control::table::Table,
    cmd: &Command,
) -> Result<bool, AdmError> {
    if let Command::SetTimeouts { tcp, tcp_fin, udp } = cmd {
        let cur = **shared.timeouts.load();
        let pick = |new: u32, old| if new == 0 { old } else { new };
        let t = Timeouts::new(
            pick(*tcp, cur.of(crate::datapath::tcp_state::State::Established)),
            pick(*tcp_fin, cur.of(crate::datapath::tcp_state::State::FinWait)),
            pick(*udp, cur.of(crate::datapath::tcp_state::State::Udp)),
        );
        table.apply_quiet(cmd)?;
        shared.timeouts.store(Arc::new(t));
        return Ok(false);
    }
    table.apply_quiet(cmd)
}

/// Applies a configuration command to the live table and publishes the result.
fn configure(shared: &Shared, cmd: &Command) -> Result<(), AdmError> {
    let mut table = shared.table.lock().unwrap_or_else(|e| e.into_inner());
    if configure_locked(shared, &mut table, cmd)? {
        crate::control::shared::publish_snapshot(shared, table.snapshot());
    }
    Ok(())
}

/// Executes one command line (`stdin` is the input of `-R`).
pub fn execute(shared: &Shared, args: &[String], stdin: &str) -> Response {
    let mut out = String::new();
    let mut r = execute_streamed(shared, args, stdin, None, &mut |p| {
        out.push_str(&p);
        Ok(())
    });
    out.push_str(&r.stdout);
    r.stdout = out;
    r
}

/// Executes one command line, handing parts of a long standard output to `part` as they are
/// ready; the returned response carries the rest. Listings without `-n` print host and service
/// names from `names` (the client's), numbers where it has none.
pub fn execute_streamed(
    shared: &Shared,
    args: &[String],
    stdin: &str,
    names: Option<&Names>,
    part: &mut dyn FnMut(String) -> std::io::Result<()>,
) -> Response {
    let no_names = Names::default();
    let names = names.unwrap_or(&no_names);
    if let Some(r) = crate::control::reload::request(shared, args) {
        return r;
    }
    let cmd = match adm::parse(args) {
        Ok(c) => c,
        Err(e) => return Response::err(&e),
    };
    match &cmd {
        Command::Help => Response::out(format::usage()),
        Command::Version => Response::out(format::version(env!("CARGO_PKG_VERSION"))),
        Command::List(o) => list(shared, o, names, part),
        Command::Save { numeric: true } => Response::out(format::save(&listing(shared), true)),
        Command::Save { numeric: false } => {
            Response::out(format::save_with(&listing(shared), names))
        }
        Command::Zero(spec) => {
            let totals = dest_totals(shared);
            let table = shared.table.lock().unwrap_or_else(|e| e.into_inner());
            let l = table.listing();
            if let Some(spec) = spec {
                if l.service(spec).is_none() {
                    return Response::err(&AdmError::NoSuchService);
                }
            }
            let mut base = shared.zero_base.lock().unwrap_or_else(|e| e.into_inner());
            for s in l
                .services
                .iter()
                .filter(|s| spec.as_ref().is_none_or(|sp| s.matches(sp)))
            {
                let key = (s.proto, sock(s.addr, s.port));
                for d in &s.dests {
                    if let Some(id) = table.dest_id(key, sock(d.addr, d.port)) {
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
///
/// The whole restore is one publication: the data path sees the table before it, then the
/// table after it. The table lock is taken for [`RESTORE_CHUNK`] commands at a time, and
/// between chunks the restore gives way to whoever waits for it
/// ([`crate::control::shared::TableLock::give_way`]), so
/// listings are answered during a long restore, and the daemon stopping (SIGTERM) ends it
/// within one chunk (what was applied stays, unpublished, as the daemon is going away).
fn restore(shared: &Shared, input: &str) -> Response {
    let mut r = Response::default();
    let mut changed = false;
    let mut lines = input.lines().peekable();
    'chunks: while lines.peek().is_some() {
        if shared.stop.load(Ordering::Relaxed) {
            r.stderr
                .push_str("restore interrupted: tapvs is stopping\n");
            r.code = adm::EXIT_RUNTIME;
            return r;
        }
        // Listings and other edits waiting for the table go first.
        shared.table.give_way();
        let mut table = shared.table.lock_bulk().unwrap_or_else(|e| e.into_inner());
        for line in lines.by_ref().take(RESTORE_CHUNK) {
            match adm::parse_restore_line(line) {
                Ok(None) => {}
                Ok(Some(cmd)) => match configure_locked(shared, &mut table, &cmd) {
                    Ok(c) => changed |= c,
                    Err(e) => {
                        r.stderr.push_str(&format!("{e}\n"));
                        r.code = e.exit_code();
                    }
                },
                Err(e) => {
                    r.stderr.push_str(&format!("{e}\n"));
                    r.code = e.exit_code();
                    break 'chunks;
                }
            }
        }
    }
    if changed {
        let table = shared.table.lock().unwrap_or_else(|e| e.into_inner());
        crate::control::shared::publish_snapshot(shared, table.snapshot());
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

/// Serves the socket until the daemon stops; removes it on exit. Each connection gets its own
/// thread (at most [`MAX_CLIENTS`] at once; more are told the daemon is busy), so a listing
/// is answered while a restore runs. Exits after its connection threads, which stop within a
/// restore chunk.
pub fn serve(shared: Arc<Shared>, listener: UnixListener, path: PathBuf) {
    let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    let busy = Arc::new(AtomicUsize::new(0));
    let mut threads: Vec<std::thread::JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        let mut pfd = [crate::sys::poll_in(fd)];
        if crate::sys::poll(&mut pfd, 100).unwrap_or(0) == 0 {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        threads.retain(|t| !t.is_finished());
        if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
            busy.fetch_sub(1, Ordering::AcqRel);
            let _ = stream.set_nonblocking(false);
            reply(
                &stream,
                &Response {
                    stderr: "tapvs is busy: too many concurrent requests; try again\n".into(),
                    code: adm::EXIT_RUNTIME,
                    ..Response::default()
                },
            );
            continue;
        }
        let (sh, b) = (shared.clone(), busy.clone());
        let spawned = std::thread::Builder::new()
            .name("tapvs-adm".into())
            .spawn(move || {
                handle(&sh, stream);
                b.fetch_sub(1, Ordering::AcqRel);
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(_) => {
                busy.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
    for t in threads {
        let _ = t.join();
    }
    let _ = std::fs::remove_file(path);
}

/// Writes one response line (by the connection's answer deadline, if it has one).
fn reply(stream: &UnixStream, resp: &Response) -> bool {
    let mut w = stream;
    match serde_json::to_string(resp) {
        Ok(mut j) => {
            j.push('\n');
            w.write_all(j.as_bytes()).is_ok()
        }
        Err(_) => false,
    }
}

/// What reading a request came to.
#[derive(Debug, PartialEq, Eq)]
enum Incoming {
    /// One line (without its newline).
    Line(Vec<u8>),
    /// No newline within [`MAX_REQUEST`] bytes.
    TooLarge,
    /// Not complete within [`REQUEST_DEADLINE`].
    TimedOut,
    /// The client went away.
    Gone,
    /// The bytes all connections are reading at once reached their bound.
    Busy,
}

/// Bytes counted in a shared pool ([`BUFFERED`]) until dropped.
struct Held<'a> {
    pool: &'a AtomicUsize,
    bytes: usize,
}

impl Held<'_> {
    /// Counts `n` more bytes unless the pool would pass `limit`.
    fn take(&mut self, n: usize, limit: usize) -> bool {
        if self.pool.fetch_add(n, Ordering::AcqRel) + n > limit {
            self.pool.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        self.bytes += n;
        true
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.pool.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Reads one request line by `deadline`, keeping at most `max` bytes, and counting them in
/// `pool` (at most `limit` for all readers together) while it reads: a client that trickles
/// bytes in is cut off at the deadline, one that sends without end at `max`.
fn read_request(
    stream: &UnixStream,
    max: usize,
    deadline: std::time::Instant,
    (pool, limit): (&AtomicUsize, usize),
) -> Incoming {
    use std::io::Read as _;
    let mut held = Held { pool, bytes: 0 };
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 64 << 10];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Incoming::TimedOut;
        }
        let room = (max + 1 - buf.len()).min(chunk.len());
        let mut r = stream;
        match r.read(&mut chunk[..room]) {
            Ok(0) => return Incoming::Gone,
            Ok(n) => {
                if !held.take(n, limit) {
                    return Incoming::Busy;
                }
                if let Some(i) = chunk[..n].iter().position(|&b| b == b'\n') {
                    buf.extend_from_slice(&chunk[..i]);
                    return if buf.len() > max {
                        Incoming::TooLarge
                    } else {
                        Incoming::Line(buf)
                    };
                }
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() > max {
                    return Incoming::TooLarge;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Incoming::TimedOut
            }
            Err(_) => return Incoming::Gone,
        }
    }
}

fn handle(shared: &Shared, stream: UnixStream) {
    let _ = stream.set_nonblocking(false);
    let refused = |m: String| Response {
        stderr: m,
        code: adm::EXIT_USAGE,
        ..Response::default()
    };
    let start = std::time::Instant::now();
    let resp = match read_request(
        &stream,
        MAX_REQUEST,
        start + REQUEST_DEADLINE,
        (&BUFFERED, MAX_BUFFERED),
    ) {
        Incoming::Gone => return,
        Incoming::Busy => Response {
            stderr: "tapvs is busy: too many large requests at once; try again\n".into(),
            code: adm::EXIT_RUNTIME,
            ..Response::default()
        },
        Incoming::TooLarge => refused(format!(
            "request refused: larger than {} MiB\n",
            MAX_REQUEST >> 20
        )),
        Incoming::TimedOut => refused(format!(
            "request refused: not received within {} s\n",
            REQUEST_DEADLINE.as_secs()
        )),
        Incoming::Line(line) => {
            let parsed = serde_json::from_slice::<Request>(&line);
            drop(line);
            let answer_by = std::time::Instant::now() + ANSWER_DEADLINE;
            match parsed {
                Ok(req) => {
                    if let Some(filter) = crate::control::capture::parse_request(&req.args) {
                        // The connection becomes the capture's frame stream.
                        let _ = stream.set_read_timeout(None);
                        crate::control::capture::serve(shared, stream, filter);
                        return;
                    }
                    execute_streamed(
                        shared,
                        &req.args,
                        &req.stdin,
                        req.names.as_ref(),
                        &mut |p| {
                            let left =
                                answer_by.saturating_duration_since(std::time::Instant::now());
                            if !left.is_zero()
                                && stream.set_write_timeout(Some(left)).is_ok()
                                && reply(&stream, &Response::part(p))
                            {
                                Ok(())
                            } else {
                                Err(std::io::Error::other("client gone or too slow"))
                            }
                        },
                    )
                }
                Err(e) => refused(format!("malformed request: {e}\n")),
            }
        }
    };
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    reply(&stream, &resp);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn later(ms: u64) -> std::time::Instant {
        std::time::Instant::now() + Duration::from_millis(ms)
    }

    #[test]
    fn requests_are_bounded_in_size_time_and_shared_memory() {
        let pool = AtomicUsize::new(0);
        // A line, read in pieces.
        let (mut c, s) = UnixStream::pair().unwrap();
        c.write_all(b"{\"args\":[]}\nmore").unwrap();
        assert_eq!(
            read_request(&s, 64, later(500), (&pool, 1000)),
            Incoming::Line(b"{\"args\":[]}".to_vec())
        );
        assert_eq!(pool.load(Ordering::Relaxed), 0, "released");
        // Over the size limit.
        let (mut c, s) = UnixStream::pair().unwrap();
        c.write_all(&[b'a'; 100]).unwrap();
        assert_eq!(
            read_request(&s, 64, later(500), (&pool, 1000)),
            Incoming::TooLarge
        );
        // Over the shared bound: other readers hold most of it.
        pool.store(950, Ordering::Relaxed);
        let (mut c, s) = UnixStream::pair().unwrap();
        c.write_all(&[b'a'; 100]).unwrap();
        assert_eq!(
            read_request(&s, 500, later(500), (&pool, 1000)),
            Incoming::Busy
        );
        assert_eq!(pool.load(Ordering::Relaxed), 950);
        pool.store(0, Ordering::Relaxed);
        // Too slow in all, though each byte comes well within the deadline of a read.
        let (c, s) = UnixStream::pair().unwrap();
        let w = std::thread::spawn(move || {
            for _ in 0..10 {
                if (&c).write_all(b"a").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let t0 = std::time::Instant::now();
        assert_eq!(
            read_request(&s, 64, later(300), (&pool, 1000)),
            Incoming::TimedOut
        );
        assert!(t0.elapsed() < Duration::from_millis(600));
        drop(s);
        let _ = w.join();
        assert_eq!(pool.load(Ordering::Relaxed), 0);
        // Gone.
        let (c, s) = UnixStream::pair().unwrap();
        drop(c);
        assert_eq!(
            read_request(&s, 64, later(300), (&pool, 1000)),
            Incoming::Gone
        );
    }
}
