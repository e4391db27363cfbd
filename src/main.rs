//! The `tapvs` command: `run` the daemon from a config file, `check` a config, or run the
//! self-contained `demo`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Validate a configuration file and exit.
    Check {
        /// The configuration file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Build a throwaway netns topology (a client, two real servers), balance HTTP through a
    /// VIP in NAT mode with rr, print the split, and clean up. Needs root and /dev/net/tun.
    Demo {
        /// Number of HTTP requests to send.
        #[arg(long, default_value_t = 300)]
        requests: u32,
    },
    /// Configure this host (or network namespace) as an LVS real server for DR or TUN:
    /// VIP/32 on lo, arp_ignore=1, arp_announce=2, rp_filter=0 (tunl0 for TUN when the kernel
    /// has ipip; otherwise run `tapvs rs-decap`).
    RsSetup {
        /// Forwarding method: dr or tun.
        #[arg(long)]
        mode: tapvs::rs::RsMode,
        /// The virtual IP address.
        #[arg(long)]
        vip: std::net::Ipv4Addr,
        /// Remove the VIP and reset arp_ignore/arp_announce to 0 (rp_filter stays 0).
        #[arg(long)]
        undo: bool,
    },
    /// Decapsulate IPIP in user space into a TUN device (for kernels without the ipip
    /// module), until SIGINT or SIGTERM.
    RsDecap {
        /// The TUN device to create.
        #[arg(long, default_value = tapvs::rs::DEFAULT_DECAP_TUN)]
        tun: String,
    },
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TAPVS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.cmd {
        Cmd::Check { config } => match tapvs::config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} ports, {} services, {} workers)",
                    config.display(),
                    c.ports.len(),
                    c.services.len(),
                    c.workers
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tapvs: config error: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Run { config, socket } => run(&config, socket),
        Cmd::RsSetup { mode, vip, undo } => match tapvs::rs::setup(mode, vip, undo) {
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
        Cmd::Demo { requests } => match demo::run(requests) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("tapvs demo: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn run(path: &std::path::Path, socket: Option<String>) -> ExitCode {
    let mut cfg = match tapvs::config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tapvs: config error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(s) = socket {
        cfg.control.socket = s;
    }
    // Block termination signals before any thread exists so every thread inherits the mask
    // and the main thread can take them with sigwait.
    tapvs::sys::block_termination_signals();
    let daemon = match tapvs::control::runtime::Daemon::start(&cfg) {
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
    let sig = tapvs::sys::wait_for_termination();
    tracing::info!(signal = sig, "shutting down");
    let stats = daemon.shutdown();
    match serde_json::to_string(&stats) {
        Ok(j) => println!("{j}"),
        Err(e) => eprintln!("tapvs: cannot encode stats: {e}"),
    }
    ExitCode::SUCCESS
}
