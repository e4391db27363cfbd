//! The `tapvs` command: `run` the daemon from a config file, `check` a config, `reload` or
//! `capture` from the running daemon, convert a keepalived.conf (`import-keepalived`), run the
//! self-contained `demo`, the real-server tools, and the hidden `tapfwd` benchmark forwarder.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tapvs::config::LogFormat;

mod capture;
mod demo;
mod lab;

/// Linux Virtual Server as a user-space TAP appliance.
#[derive(Parser)]
#[command(name = "tapvs", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the appliance from a TOML config until SIGTERM or SIGINT.
    Run {
        /// The configuration file.
        #[arg(short, long, env = "TAPVS_CONFIG")]
        config: PathBuf,
        /// Control socket for tapvsadm (overrides `[control] socket`).
        #[arg(long, env = "TAPVS_SOCKET")]
        socket: Option<String>,
    },
    /// Ask the running daemon to read its config file again and apply the difference
    /// (hitless: untouched services and connections are not disturbed). Changes that need a
    /// restart, and invalid configs, are refused and change nothing (exit 1).
    Reload {
        /// The configuration file (its `[control] socket` names the daemon's socket).
        #[arg(short, long, env = "TAPVS_CONFIG")]
        config: Option<PathBuf>,
        /// The daemon's control socket (overrides the config's).
        #[arg(long, env = "TAPVS_SOCKET")]
        socket: Option<String>,
    },
    /// Copy frames from the running daemon's data path, as received and as sent, to a pcap
    /// file (`-w FILE`, `-w -` for standard output) or as one summary line per frame, until
    /// --count frames, SIGINT or SIGTERM. Frames are cut at 2048 bytes (their length is kept).
    Capture {
        /// Only frames from or to this IPv4 VIP:PORT (TCP or UDP), and the frames of the same
        /// packets on the real servers' side.
        #[arg(long, value_name = "VIP:PORT", conflicts_with = "real")]
        service: Option<std::net::SocketAddrV4>,
        /// Only frames from or to this IPv4 address, and the frames of the same packets on the
        /// other side.
        #[arg(long, value_name = "ADDR")]
        real: Option<std::net::Ipv4Addr>,
        /// Stop after this many frames.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Write pcap to FILE (`-` for standard output) instead of printing lines.
        #[arg(short = 'w', value_name = "FILE")]
        write: Option<PathBuf>,
        /// The configuration file (its `[control] socket` names the daemon's socket).
        #[arg(short, long, env = "TAPVS_CONFIG")]
        config: Option<PathBuf>,
        /// The daemon's control socket (overrides the config's).
        #[arg(long, env = "TAPVS_SOCKET")]
        socket: Option<String>,
    },
    /// Validate a configuration file and exit.
    Check {
        /// The configuration file.
        #[arg(short, long)]
        config: PathBuf,
        /// Also print the service table the config gives at start, as `tapvsadm -L -n` lists
        /// it (before any health check has run).
        #[arg(long)]
        list: bool,
    },
    /// Print the tapvs TOML equivalent of a keepalived.conf (includes followed). Keywords
    /// without a tapvs equivalent are reported on stderr as FILE:LINE (exit 0, or 1 with
    /// --strict); a syntax error exits 2.
    ImportKeepalived {
        /// The keepalived.conf to convert.
        #[arg(required_unless_present = "list")]
        file: Option<PathBuf>,
        /// A TOML fragment with the [[port]] sections (and [[route]]s, ...), copied verbatim;
        /// port names must be the keepalived interface names. Without it the ports are
        /// commented placeholders.
        #[arg(long)]
        ports: Option<PathBuf>,
        /// Exit 1 when any keyword was ignored.
        #[arg(long)]
        strict: bool,
        /// Print the keepalived keywords the import converts, and exit.
        #[arg(long)]
        list: bool,
    },
    /// Build a throwaway netns topology (a client, two real servers), balance HTTP through a
    /// VIP in NAT mode with rr, print the split, and clean up. Needs root and /dev/net/tun.
    Demo {
        /// Number of HTTP requests to send.
        #[arg(long, default_value_t = 300)]
        requests: u32,
    },
    /// Configure this host (or network namespace) as an LVS real server for DR or TUN:
    /// an IPv4 VIP as /32 on lo with arp_ignore=1, arp_announce=2, rp_filter=0; an IPv6 VIP as
    /// /128 on lo (nodad); for TUN tunl0 / ip6tnl0 when the kernel has them, otherwise run
    /// `tapvs rs-decap`.
    RsSetup {
        /// Forwarding method: dr or tun.
        #[arg(long)]
        mode: tapvs::rs::RsMode,
        /// The virtual IP address (IPv4 or IPv6); repeat the option, or separate with commas,
        /// for several.
        #[arg(long, required = true, value_delimiter = ',')]
        vip: Vec<std::net::IpAddr>,
        /// Remove the VIP and reset arp_ignore/arp_announce to 0 (rp_filter stays 0).
        #[arg(long)]
        undo: bool,
    },
    /// Decapsulate IPIP and IPv6-in-IPv6 in user space into a TUN device (for kernels without
    /// the ipip and ip6_tunnel modules), until SIGINT or SIGTERM.
    RsDecap {
        /// The TUN device to create.
        #[arg(long, default_value = tapvs::rs::DEFAULT_DECAP_TUN)]
        tun: String,
    },
    /// Benchmark reference (bench/run's `tapfwd` peer): copy frames verbatim between two TAPs,
    /// no parsing, until SIGTERM or SIGINT; prints its counters as one JSON line at exit.
    #[command(hide = true)]
    Tapfwd {
        /// The first TAP device.
        #[arg(long)]
        a: String,
        /// The second TAP device.
        #[arg(long)]
        b: String,
        /// Forwarding threads (one queue of each TAP per thread).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
        threads: u16,
        /// Bridge to attach the first TAP to.
        #[arg(long, value_name = "BR", requires = "bridge_b")]
        bridge_a: Option<String>,
        /// Bridge to attach the second TAP to.
        #[arg(long, value_name = "BR", requires = "bridge_a")]
        bridge_b: Option<String>,
    },
}

/// Installs the stderr logger: level filter from `TAPVS_LOG` (default `info`), lines in
/// `format`, ANSI colour only for text on a terminal (and not when `NO_COLOR` is set).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TAPVS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
            builder
                .with_ansi(std::io::stderr().is_terminal() && !no_color)
                .init()
        }
        LogFormat::Json => builder.with_ansi(false).json().init(),
    }
}

/// `TAPVS_LOG_FORMAT`, if set: a bad value is a config error (exit 2).
fn log_format_env() -> Result<Option<LogFormat>, ExitCode> {
    let value = std::env::var(tapvs::config::LOG_FORMAT_ENV).ok();
    tapvs::config::log_format_override(value.as_deref()).map_err(|e| {
        eprintln!("tapvs: config error: {e}");
        ExitCode::from(2)
    })
}

/// Reads the config, then starts logging in the format the environment or the config asks
/// for, so that every log line has the chosen format. Config errors go to stderr (exit 2).
fn load_config_and_log(path: &Path) -> Result<tapvs::config::Config, ExitCode> {
    let env_format = log_format_env()?;
    match tapvs::config::load(path) {
        Ok(c) => {
            init_logging(env_format.unwrap_or(c.log_format));
            Ok(c)
        }
        Err(e) => {
            eprintln!("tapvs: config error: {e}");
            Err(ExitCode::from(2))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Check { .. } | Cmd::Run { .. }) {
        // No config file: the environment or the default decides.
        match log_format_env() {
            Ok(f) => init_logging(f.unwrap_or_default()),
            Err(code) => return code,
        }
    }
    match cli.cmd {
        Cmd::Check { config, list } => match load_config_and_log(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} ports, {} services, {} workers)",
                    config.display(),
                    c.ports.len(),
                    c.services.len(),
                    c.workers
                );
                if list {
                    match tapvs::control::table::Table::from_config(&c) {
                        Ok((table, _)) => {
                            let opts = tapvs_adm::ListOpts {
                                numeric: true,
                                ..Default::default()
                            };
                            print!("{}", tapvs_adm::format::list(&table.listing(), &opts));
                        }
                        Err(e) => {
                            eprintln!("{}: {e}", config.display());
                            return ExitCode::from(1);
                        }
                    }
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Cmd::Run { config, socket } => run(&config, socket),
        Cmd::ImportKeepalived {
            file,
            ports,
            strict,
            list,
        } => import_keepalived(file.as_deref(), ports.as_deref(), strict, list),
        Cmd::Reload { config, socket } => reload(config.as_deref(), socket),
        Cmd::Capture {
            service,
            real,
            count,
            write,
            config,
            socket,
        } => {
            let filter = match (service, real) {
                (Some(s), _) => tapvs::datapath::capture::Filter::Service(s),
                (None, Some(r)) => tapvs::datapath::capture::Filter::Real(r),
                (None, None) => tapvs::datapath::capture::Filter::All,
            };
            match daemon_socket("capture", config.as_deref(), socket) {
                Ok(s) => capture::run(&s, filter, count, write.as_deref()),
                Err(code) => code,
            }
        }
        Cmd::RsSetup { mode, vip, undo } => match tapvs::rs::setup_vips(mode, &vip, undo) {
            Ok(actions) => {
                for a in actions {
                    println!("rs-setup: {a}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tapvs rs-setup: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::RsDecap { tun } => match tapvs::rs::run_decap(&tun) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tapvs rs-decap: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Tapfwd {
            a,
            b,
            threads,
            bridge_a,
            bridge_b,
        } => tapfwd(tapvs::tapfwd::Options {
            a,
            b,
            threads: usize::from(threads),
            bridge_a,
            bridge_b,
        }),
        Cmd::Demo { requests } => match demo::run(requests) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tapvs demo: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `tapvs tapfwd`: forwards until SIGTERM/SIGINT, then prints the counters as JSON.
fn tapfwd(opts: tapvs::tapfwd::Options) -> ExitCode {
    // Blocked before the threads exist, so only the main thread's sigwait takes them.
    tapvs::sys::block_termination_signals();
    let fwd = match tapvs::tapfwd::Forwarder::start(&opts) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("tapvs tapfwd: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("tapfwd ready");
    let _ = tapvs::sys::wait_for_termination();
    let totals = fwd.stop();
    match serde_json::to_string(&totals) {
        Ok(j) => println!("{j}"),
        Err(e) => eprintln!("tapvs tapfwd: cannot encode counters: {e}"),
    }
    ExitCode::SUCCESS
}

fn import_keepalived(
    file: Option<&Path>,
    ports: Option<&Path>,
    strict: bool,
    list: bool,
) -> ExitCode {
    use tapvs::import;
    if list {
        for (block, kws) in import::SUPPORTED {
            println!("{block}: {kws}");
        }
        return ExitCode::SUCCESS;
    }
    let Some(file) = file else {
        eprintln!("tapvs: import-keepalived: a keepalived.conf is required");
        return ExitCode::from(2);
    };
    let ports_text = match ports {
        None => None,
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => match import::check_ports(p, &t) {
                Ok(()) => Some((p, t)),
                Err(e) => {
                    eprintln!("tapvs: import-keepalived: --ports {e}");
                    return ExitCode::from(2);
                }
            },
            Err(e) => {
                eprintln!("tapvs: import-keepalived: --ports {}: {e}", p.display());
                return ExitCode::from(2);
            }
        },
    };
    let given = ports_text.as_ref().map(|(p, t)| import::Ports {
        file: p,
        text: t.as_str(),
    });
    match import::import(file, given) {
        Ok(out) => {
            println!("{}", out.toml);
            let mut ignored = 0;
            for r in &out.reports {
                eprintln!("{r}");
                ignored += usize::from(r.unsupported);
            }
            if ignored > 0 {
                eprintln!("tapvs: import-keepalived: {ignored} keyword(s) ignored");
            }
            if strict && ignored > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("tapvs: import-keepalived: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(path: &Path, socket: Option<String>) -> ExitCode {
    let mut cfg = match load_config_and_log(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    tracing::info!(config = %path.display(), "starting");
    let file_socket = cfg.control.socket.clone();
    if let Some(s) = socket {
        cfg.control.socket = s;
    }
    // Block termination and reload signals before any thread exists so every thread inherits
    // the mask and the main thread can take them with sigwait.
    tapvs::sys::block_daemon_signals();
    let daemon = match tapvs::control::runtime::Daemon::start_from(&cfg, file_socket) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("tapvs: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        ports = cfg.ports.len(),
        services = cfg.services.len(),
        workers = cfg.workers,
        "tapvs ready"
    );
    // Type=notify: the TAPs, workers and control socket are up.
    if let Err(e) = tapvs::sys::notify::notify("READY=1") {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
    let sig = loop {
        match tapvs::sys::wait_for_daemon_signal() {
            tapvs::sys::DaemonSignal::Stop(name) => break name,
            tapvs::sys::DaemonSignal::Reload => {
                tracing::info!(signal = "SIGHUP", "reloading");
                let _ = tapvs::sys::notify::notify("RELOADING=1");
                // The outcome is logged by the reload itself.
                let _ = daemon.reload();
                let _ = tapvs::sys::notify::notify("READY=1");
            }
        }
    };
    tracing::info!(signal = sig, "shutting down");
    let _ = tapvs::sys::notify::notify("STOPPING=1");
    let stats = daemon.shutdown();
    match serde_json::to_string(&stats) {
        Ok(j) => println!("{j}"),
        Err(e) => eprintln!("tapvs: cannot encode stats: {e}"),
    }
    ExitCode::SUCCESS
}

/// The daemon's control socket for `tapvs what`: `socket`, else the config's, else the
/// default. A config that does not load is refused (exit 1).
fn daemon_socket(
    what: &str,
    config: Option<&Path>,
    socket: Option<String>,
) -> Result<String, ExitCode> {
    Ok(match (socket, config) {
        (Some(s), _) => s,
        (None, Some(c)) => match tapvs::config::load(c) {
            Ok(cfg) if !cfg.control.socket.is_empty() => cfg.control.socket,
            Ok(_) => tapvs_adm::DEFAULT_SOCKET.to_string(),
            // The daemon reports the error too, but refuse here, where it is clearest.
            Err(e) => {
                eprintln!("tapvs {what}: refused, nothing changed: config error: {e}");
                return Err(ExitCode::FAILURE);
            }
        },
        (None, None) => tapvs_adm::DEFAULT_SOCKET.to_string(),
    })
}

/// `tapvs reload`: sends the reload request to the daemon's control socket and prints its
/// answer. Exit 0 when the config was applied, 1 when it was refused, 2 when the daemon could
/// not be asked.
fn reload(config: Option<&Path>, socket: Option<String>) -> ExitCode {
    use std::io::{BufRead, BufReader, Write};
    let socket = match daemon_socket("reload", config, socket) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let ask = || -> std::io::Result<tapvs_adm::Response> {
        let mut s = std::os::unix::net::UnixStream::connect(&socket)?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
        let req = tapvs_adm::Request {
            args: vec![tapvs::control::reload::RELOAD_REQUEST.to_string()],
            stdin: String::new(),
            names: None,
        };
        let mut line = serde_json::to_string(&req).map_err(std::io::Error::other)?;
        line.push('\n');
        s.write_all(line.as_bytes())?;
        let mut answer = String::new();
        BufReader::new(&s).read_line(&mut answer)?;
        serde_json::from_str(&answer).map_err(std::io::Error::other)
    };
    match ask() {
        Ok(r) => {
            print!("{}", r.stdout);
            eprint!("{}", r.stderr);
            if r.code == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("tapvs reload: cannot reach the daemon at {socket}: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    /// clap's own checks of the command line's definition (no duplicate short options, ...).
    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn capture_arguments() {
        use clap::Parser;
        let cli = super::Cli::try_parse_from([
            "tapvs",
            "capture",
            "--service",
            "10.0.0.10:80",
            "--count",
            "5",
            "-w",
            "-",
        ])
        .expect("valid");
        assert!(matches!(
            cli.cmd,
            super::Cmd::Capture {
                count: Some(5),
                service: Some(_),
                real: None,
                ..
            }
        ));
        for bad in [
            &["tapvs", "capture", "--service", "10.0.0.10"][..],
            &[
                "tapvs",
                "capture",
                "--service",
                "10.0.0.10:80",
                "--real",
                "1.2.3.4",
            ],
            &["tapvs", "capture", "--real", "host"],
            &["tapvs", "capture", "--count", "x"],
        ] {
            assert!(super::Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
