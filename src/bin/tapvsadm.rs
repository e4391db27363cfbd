//! `tapvsadm`: the ipvsadm-compatible administration command. It parses the command line with
//! ipvsadm's syntax (usage errors are reported here, without contacting the daemon), sends it
//! to the running `tapvs` over its control socket (`--socket PATH`, `TAPVS_SOCKET`, or
//! `/run/tapvs/tapvs.sock`), and prints the daemon's answer with its exit status.
//!
//! It uses only the `tapvs_adm` crate (parser, formats, socket messages), never the daemon's
//! library, so the binary carries none of the data path.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

use tapvs_adm::{self as adm, AdmError, Command, Request, Response};

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
    // Usage errors never reach the daemon, so they change nothing.
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
    }
    let resp = match call(&socket, &Request { args, stdin }) {
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
