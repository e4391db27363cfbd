//! `tapvsadm`: the ipvsadm-compatible administration command. It parses the command line with
//! ipvsadm's syntax (usage errors are reported here, without contacting the daemon), sends it
//! to the running `tapvs` over its control socket (`--socket PATH`, `TAPVS_SOCKET`, or
//! `/run/tapvs/tapvs.sock`), and prints the daemon's answer with its exit status.
//!
//! Host and service names are this binary's business, as they are ipvsadm's: names in `-t`,
//! `-u` and `-r` values (and in `-R` input) are turned into numbers here before parsing (hosts
//! through the system resolver, services from `/etc/services`), and listings without `-n`
//! get the reverse maps of `/etc/hosts` and `/etc/services` with the request, so the daemon
//! prints the names this side knows. No DNS is asked for reverse lookups.
//!
//! It uses only the `tapvs_adm` crate (parser, formats, socket messages), never the daemon's
//! library, so the binary carries none of the data path.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use tapvs_adm::{self as adm, AdmError, Command, Names, Request, Resolver, Response, Services};

/// The hosts file reverse lookups read.
const HOSTS: &str = "/etc/hosts";
/// The services database.
const SERVICES: &str = "/etc/services";

/// Forward lookups as ipvsadm's: hosts through the system resolver (getaddrinfo: the hosts
/// file, DNS, ... as nsswitch says; the first IPv4 address, or the first IPv6 address for a
/// name in brackets), services from `/etc/services` (read on first use).
struct System {
    services: OnceLock<Services>,
}

impl Resolver for System {
    fn host(&self, name: &str) -> Option<Ipv4Addr> {
        (name, 0).to_socket_addrs().ok()?.find_map(|a| match a {
            SocketAddr::V4(v) => Some(*v.ip()),
            SocketAddr::V6(_) => None,
        })
    }

    fn host6(&self, name: &str) -> Option<Ipv6Addr> {
        (name, 0).to_socket_addrs().ok()?.find_map(|a| match a {
            SocketAddr::V6(v) => Some(*v.ip()),
            SocketAddr::V4(_) => None,
        })
    }

    fn service(&self, name: &str, proto: modes::Protocol) -> Option<u16> {
        self.services
            .get_or_init(|| Services::parse(&std::fs::read_to_string(SERVICES).unwrap_or_default()))
            .port(name, proto)
    }
}

/// The names a listing of `cmd` prints, if it prints names (no `-n`).
fn listing_names(cmd: &Command) -> Option<Names> {
    let wanted = match cmd {
        Command::List(o) => !o.numeric && !o.timeout && !o.daemon,
        Command::Save { numeric } => !numeric,
        _ => false,
    };
    wanted.then(|| {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Names::parse(&read(HOSTS), &read(SERVICES))
    })
}

/// `-R` input with the names of each command line turned into numbers; a line that does not
/// resolve is kept as written, for the daemon to report where the restore stops.
fn resolve_restore(input: &str, names: &dyn Resolver) -> String {
    let mut out = String::with_capacity(input.len());
    for line in input.lines() {
        let words: Vec<String> = line.split_whitespace().map(String::from).collect();
        match adm::resolve(&words, names) {
            Ok(w) if !line.trim_start().starts_with('#') && w != words => {
                out.push_str(&w.join(" "))
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Splits `--socket PATH` / `--socket=PATH` out of the arguments.
fn socket_arg(args: &mut Vec<String>) -> Result<Option<String>, String> {
    let mut i = 0;
    while i < args.len() {
        if let Some(p) = args[i].strip_prefix("--socket=") {
            let p = p.to_string();
            args.remove(i);
            return Ok(Some(p));
        }
        if args[i] == "--socket" {
            if i + 1 >= args.len() {
                return Err("--socket: missing argument".into());
            }
            let p = args.remove(i + 1);
            args.remove(i);
            return Ok(Some(p));
        }
        i += 1;
    }
    Ok(None)
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let socket = match socket_arg(&mut args) {
        Ok(s) => s
            .or_else(|| std::env::var("TAPVS_SOCKET").ok())
            .unwrap_or_else(|| adm::DEFAULT_SOCKET.to_string()),
        Err(e) => {
            eprintln!("{e}");
            return exit(adm::EXIT_USAGE);
        }
    };
    let system = System {
        services: OnceLock::new(),
    };
    // Usage errors (unknown names included) never reach the daemon, so they change nothing.
    let args = match adm::resolve(&args, &system) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return exit(e.exit_code());
        }
    };
    let cmd = match adm::parse(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return exit(e.exit_code());
        }
    };
    match cmd {
        Command::Help => {
            print!("{}", adm::format::usage());
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            print!("{}", adm::format::version(env!("CARGO_PKG_VERSION")));
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let mut stdin = String::new();
    if matches!(cmd, Command::Restore) {
        if let Err(e) = std::io::stdin().read_to_string(&mut stdin) {
            eprintln!("tapvsadm: reading standard input: {e}");
            return exit(adm::EXIT_RUNTIME);
        }
        stdin = resolve_restore(&stdin, &system);
    }
    let names = listing_names(&cmd);
    let resp = match call(&socket, &Request { args, stdin, names }) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("{}", AdmError::PermissionDenied);
            return exit(adm::EXIT_RUNTIME);
        }
        Err(e) => {
            eprintln!("tapvsadm: cannot talk to tapvs at {socket}: {e}");
            eprintln!("Is the tapvs daemon running? (tapvs run --config FILE)");
            return exit(adm::EXIT_RUNTIME);
        }
    };
    print!("{}", resp.stdout);
    eprint!("{}", resp.stderr);
    let _ = std::io::stdout().flush();
    exit(resp.code)
}

/// Sends `req` and returns the last response line; the standard output of the lines before
/// it (a streamed listing) is printed as it arrives.
fn call(socket: &str, req: &Request) -> std::io::Result<Response> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_string(req).map_err(std::io::Error::other)?;
    line.push('\n');
    if let Err(e) = s.write_all(line.as_bytes()) {
        // The daemon may have refused the request before reading all of it: its answer says
        // why.
        let mut answer = String::new();
        if BufReader::new(&s)
            .read_line(&mut answer)
            .is_ok_and(|n| n > 0)
        {
            if let Ok(resp) = serde_json::from_str::<Response>(&answer) {
                return Ok(resp);
            }
        }
        return Err(e);
    }
    let mut reader = BufReader::new(&s);
    let mut out = std::io::stdout().lock();
    loop {
        let mut answer = String::new();
        if reader.read_line(&mut answer)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection",
            ));
        }
        let resp: Response = serde_json::from_str(&answer).map_err(std::io::Error::other)?;
        if !resp.more {
            return Ok(resp);
        }
        out.write_all(resp.stdout.as_bytes())?;
    }
}
