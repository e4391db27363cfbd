//! tapvs: Linux Virtual Server rebuilt as a user-space appliance on TAP devices.
//!
//! The crate holds the daemon: TAP ports ([`tap`]), the configuration ([`config`]), the
//! data-path workers ([`worker`]) with their connection tables ([`conn`], [`tcp_state`]),
//! neighbours and routes ([`neigh`], [`route`]), persistence templates ([`persist`]), the service snapshot ([`service`]), counters
//! ([`stats`]), the running daemon ([`daemon`]), the demo ([`demo`]), the real-server helpers ([`rs`]), the live service table and
//! its control socket ([`control`], [`ctl`], [`adm`]), the Prometheus endpoint ([`metrics`]) and the network-namespace
//! harness ([`netns`], [`traffic`]) that the demo and the integration tests share. Packet views
//! and rewrites live in the `modes` crate, schedulers in the `sched` crate.

pub mod adm;
pub mod checks;
pub mod config;
pub mod conn;
pub mod control;
pub mod ctl;
pub mod daemon;
pub mod demo;
pub mod health;
pub mod host;
pub mod lab;
pub mod metrics;
pub mod neigh;
pub mod netns;
pub mod persist;
pub mod route;
pub mod rs;
pub mod service;
pub mod stats;
pub mod steer;
pub mod sys;
pub mod tap;
pub mod tcp_state;
pub mod traffic;
pub mod worker;
