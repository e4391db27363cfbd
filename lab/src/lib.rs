//! The network-namespace harness of tapvs, shared by the integration tests and `tapvs demo`.
//!
//! * [`netns`] — throw-away network namespaces, veth pairs and bridges (built with iproute2,
//!   removed on drop, also while a panic unwinds), running Rust code inside a namespace, the
//!   root/CI precheck and polling helpers.
//! * [`traffic`] — small HTTP, UDP and bulk-TCP (SHA-256 checked) servers and clients.
//!
//! The crate knows nothing about the daemon: it does not depend on the `tapvs` package. Starting
//! tapvs inside a topology is the caller's business (run it with [`netns::Netns::try_run`]).
//! All `unsafe` code lives in the private `sys` module.

#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod netns;
mod sys;
pub mod traffic;
