//! The network-namespace harness of tapvs, shared by the integration tests and `tapvs demo`.
//!
//! * [`netns`] — throw-away network namespaces, veth pairs and bridges (built with iproute2,
//!   removed on drop, also while a panic unwinds), running Rust code inside a namespace, the
//!   root/CI precheck and polling helpers.
//! * [`topology`] — the standard lab: a client, a director with one bridge per segment (where
//!   the appliance attaches its TAP ports) and N real servers, with their addresses.
//! * [`scaleout`] — the scale-out lab: a router with BIRD and ECMP, appliance instances each
//!   with a BIRD, real servers, a client; paced SHA-256-checked transfers.
//! * [`traffic`] — small HTTP, UDP and bulk-TCP (SHA-256 checked) servers and clients.
//!
//! The crate does not depend on the `tapvs` package: starting the daemon inside a topology is the
//! caller's business (run it in the director with [`netns::Netns::try_run`]; tapvs keeps that
//! glue in its binary-only `src/lab.rs`). All `unsafe` code lives in the private `sys` module.

#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod netns;
pub mod scaleout;
mod sys;
pub mod topology;
pub mod traffic;
