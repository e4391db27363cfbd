//! tapvs in the `tapvs-lab` topology: the small glue between the namespace harness and the
//! daemon. It writes the config for the topology's ports and NAT services, starts the
//! [`Daemon`] in-process inside the director namespace and keeps it (for its stats, snapshot and
//! control socket) until the [`Lab`] is dropped, before the namespaces go.
//!
//! Not part of the tapvs library, which stays free of the harness: `src/main.rs` declares it
//! (`mod lab;`, for `tapvs demo`), and the integration tests (`tests/common`) and the forwarding
//! bench include this same file with `#[path]`. Each of them uses only part of it.
#![allow(dead_code)]

use std::io;
use std::ops::{Deref, DerefMut};
use std::path::Path;

use tapvs::config::{self, Config};
use tapvs::control::runtime::Daemon;

/// The [`Topology`] and its names and addresses (`lab::VIP`, `lab::real_addr(i)`, ...).
pub use tapvs_lab::topology::*;

/// The port sections of the lab's config, with a control socket of its own; services are
/// appended by the caller.
pub fn base_config(workers: usize) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let socket = std::env::temp_dir().join(format!("tapvs-lab-{}-{n}.sock", std::process::id()));
    format!(
        r#"workers = {workers}
max_connections = 100000

[control]
socket = "{socket}"

[[port]]
name = "ext"
tap = "{EXT_TAP}"
mac = "{EXT_MAC}"
addresses = ["{EXT_ADDR}/24"]
bridge = "{EXT_BRIDGE}"

[[port]]
name = "int"
tap = "{INT_TAP}"
mac = "{INT_MAC}"
addresses = ["{INT_ADDR}/24"]
bridge = "{INT_BRIDGE}"
"#,
        socket = socket.display()
    )
}

/// A `[[service]]` section with `reals` real servers `(index, port, weight)` in NAT mode.
pub fn nat_service(proto: &str, vport: u16, sched: &str, reals: &[(usize, u16, u32)]) -> String {
    let mut s = format!(
        "\n[[service]]\nprotocol = \"{proto}\"\naddress = \"{VIP}:{vport}\"\nscheduler = \"{sched}\"\n"
    );
    for &(i, port, weight) in reals {
        s.push_str(&format!(
            "\n[[service.real]]\naddress = \"{}:{port}\"\nweight = {weight}\nforward = \"nat\"\n",
            real_addr(i)
        ));
    }
    s
}

/// The topology plus the appliance running in its director. Dereferences to the [`Topology`]
/// (`lab.client`, `lab.reals`, `lab.add_clients(n)`, ...). Fields drop in order: the daemon
/// first, then the namespaces.
pub struct Lab {
    /// The appliance, once started by [`Lab::start`].
    daemon: Option<Daemon>,
    /// Its control socket.
    socket: String,
    /// The namespaces.
    net: Topology,
}

impl Lab {
    /// Builds the namespaces, links and addresses for `n_reals` real servers (no tapvs yet).
    pub fn build(n_reals: usize) -> io::Result<Lab> {
        Ok(Lab {
            daemon: None,
            socket: String::new(),
            net: Topology::build(n_reals)?,
        })
    }

    /// [`Lab::build`] dual-stack ([`Topology::build_dual`]): the IPv6 plan of
    /// `tapvs_lab::topology` on the client and the real servers too.
    pub fn build_dual(n_reals: usize) -> io::Result<Lab> {
        Ok(Lab {
            daemon: None,
            socket: String::new(),
            net: Topology::build_dual(n_reals)?,
        })
    }

    /// Validates `config_text` (as if read from `lab.toml`) and starts tapvs in-process inside
    /// the director namespace. Returns once the ports are up and the workers run.
    pub fn start(&mut self, config_text: &str) -> io::Result<Config> {
        let cfg = config::parse(config_text, Path::new("lab.toml"))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        self.launch(cfg)
    }

    /// [`Lab::start`] with the config read from `path`, so [`Daemon::reload`] reads it again.
    pub fn start_file(&mut self, path: &Path) -> io::Result<Config> {
        let cfg = config::load(path)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        self.launch(cfg)
    }

    /// Starts tapvs with a validated `cfg` inside the director namespace.
    fn launch(&mut self, cfg: Config) -> io::Result<Config> {
        let c = cfg.clone();
        let d = self
            .net
            .director
            .try_run(move || Daemon::start(&c))?
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.daemon = Some(d);
        self.socket = cfg.control.socket.clone();
        Ok(cfg)
    }

    /// The control socket of the running daemon (for `tapvsadm --socket`).
    pub fn socket(&self) -> String {
        self.socket.clone()
    }

    /// The running in-process daemon.
    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("Lab::start was not called")
    }
}

impl Deref for Lab {
    type Target = Topology;

    fn deref(&self) -> &Topology {
        &self.net
    }
}

impl DerefMut for Lab {
    fn deref_mut(&mut self) -> &mut Topology {
        &mut self.net
    }
}
