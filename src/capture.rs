//! `tapvs capture`, the client: asks the daemon for a capture over its control socket, writes
//! the frames it streams as pcap or as summary lines, and ends the capture after `--count`
//! frames or at SIGINT/SIGTERM by shutting down its side of the socket; the daemon then sends
//! what its workers had captured and the frame and drop counts. The protocol, the pcap writer
//! and the line format are `tapvs::control::capture`'s.

use std::io::{self, BufRead, BufReader, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;

use tapvs::control::capture::{self as wire, PcapWriter, Record};
use tapvs::datapath::capture::Filter;

/// Where the frames go.
enum Out {
    Pcap(PcapWriter<Box<dyn Write>>),
    Lines(io::BufWriter<io::Stdout>),
}

/// Runs a capture against the daemon at `socket`. Exit 0 when it ended normally, 1 when the
/// daemon refused it or went away, 2 when it could not be asked.
pub fn run(socket: &str, filter: Filter, count: Option<u64>, write: Option<&Path>) -> ExitCode {
    // Before any thread: the signal thread takes SIGINT/SIGTERM synchronously.
    tapvs::sys::block_daemon_signals();
    // The output first: a file that cannot be created starts no capture.
    let sink = match sink(write) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tapvs capture: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tapvs capture: cannot reach the daemon at {socket}: {e}");
            return ExitCode::from(2);
        }
    };
    let mut req = serde_json::to_string(&tapvs_adm::Request {
        args: wire::request_args(filter),
        stdin: String::new(),
        names: None,
    })
    .unwrap_or_default();
    req.push('\n');
    if let Err(e) = (&stream).write_all(req.as_bytes()) {
        eprintln!("tapvs capture: cannot reach the daemon at {socket}: {e}");
        return ExitCode::from(2);
    }
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    let answer = reader
        .read_line(&mut line)
        .ok()
        .and_then(|_| serde_json::from_str::<tapvs_adm::Response>(&line).ok());
    let Some(answer) = answer else {
        eprintln!("tapvs capture: no answer from the daemon at {socket}");
        return ExitCode::FAILURE;
    };
    if answer.code != 0 {
        eprint!("{}", answer.stderr);
        return ExitCode::FAILURE;
    }
    let ports: Vec<String> = answer.stdout.lines().map(str::to_string).collect();
    let mut out = match sink {
        None => Out::Lines(io::BufWriter::new(io::stdout())),
        Some(w) => match PcapWriter::new(w) {
            Ok(p) => Out::Pcap(p),
            Err(e) => {
                eprintln!("tapvs capture: writing the output: {e}");
                let _ = stream.shutdown(Shutdown::Both);
                return ExitCode::FAILURE;
            }
        },
    };
    if let Ok(s) = stream.try_clone() {
        // Ends the capture at SIGINT/SIGTERM; the process exits without waiting for it.
        let _ = std::thread::Builder::new()
            .name("capture-signals".into())
            .spawn(move || loop {
                if let tapvs::sys::DaemonSignal::Stop(_) = tapvs::sys::wait_for_daemon_signal() {
                    let _ = s.shutdown(Shutdown::Write);
                }
            });
    }
    eprintln!(
        "tapvs capture: capturing {}, snapshot length {} bytes",
        describe(filter),
        tapvs::datapath::capture::SNAP
    );
    let mut written = 0u64;
    let mut asked_end = false;
    let mut failed = None;
    let end = loop {
        match wire::read_record(&mut reader) {
            Ok(Some(Record::Frame {
                dir,
                port,
                ts_ns,
                orig_len,
                data,
            })) => {
                if count.is_some_and(|n| written >= n) || failed.is_some() {
                    continue;
                }
                let res = match &mut out {
                    Out::Pcap(w) => w.frame(ts_ns, orig_len, &data),
                    Out::Lines(w) => {
                        let name = ports.get(usize::from(port)).map_or("?", String::as_str);
                        writeln!(w, "{}", wire::summary(ts_ns, name, dir, orig_len, &data))
                    }
                };
                match res {
                    Ok(()) => written += 1,
                    Err(e) => failed = Some(e),
                }
                if (count.is_some_and(|n| written >= n) || failed.is_some()) && !asked_end {
                    let _ = stream.shutdown(Shutdown::Write);
                    asked_end = true;
                }
            }
            Ok(Some(Record::End { dropped, .. })) => break Some(dropped),
            Ok(None) => break None,
            Err(e) => {
                eprintln!("tapvs capture: {e}");
                break None;
            }
        }
    };
    let flushed = match out {
        Out::Pcap(w) => w.finish().map(|_| ()),
        Out::Lines(mut w) => w.flush(),
    };
    if let Some(e) = failed.or(flushed.err()) {
        if e.kind() != io::ErrorKind::BrokenPipe {
            eprintln!("tapvs capture: writing the output: {e}");
            return ExitCode::FAILURE;
        }
    }
    eprintln!("{written} frames captured");
    match end {
        Some(dropped) => {
            eprintln!("{dropped} frames dropped by tapvs");
            ExitCode::SUCCESS
        }
        None => {
            eprintln!("tapvs capture: the daemon closed the connection");
            ExitCode::FAILURE
        }
    }
}

fn describe(f: Filter) -> String {
    match f {
        Filter::All => "every frame".into(),
        Filter::Service(a) => format!("service {a}"),
        Filter::Real(a) => format!("address {a}"),
    }
}

/// Where pcap goes for `-w FILE` or `-w -`; `None`: summary lines on standard output.
fn sink(write: Option<&Path>) -> io::Result<Option<Box<dyn Write>>> {
    Ok(match write {
        None => None,
        Some(p) if p == Path::new("-") => Some(Box::new(io::BufWriter::new(io::stdout()))),
        Some(p) => {
            let f = std::fs::File::create(p)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
            Some(Box::new(io::BufWriter::new(f)))
        }
    })
}
