//! The data path: everything a frame meets between the TAP read and the TAP write. The
//! per-worker I/O loop ([`worker`]) around a pure frame pipeline ([`pipeline`], with its one
//! output step for every transmitter), the connection table and its
//! index ([`conn`]), the TCP state table ([`tcp_state`]), persistence templates ([`persist`]),
//! neighbours ([`neigh`]), routes ([`route`]), the service snapshot the workers read
//! ([`service`]), per-worker counters ([`stats`]), the eBPF steering program ([`steer`]) and
//! the live capture's filter and rings ([`capture`]), and access control with the connection
//! and ICMP error rate limits ([`acl`]).
//! Nothing here depends on the control plane; the control plane builds and feeds it.

pub mod acl;
pub mod capture;
pub mod conn;
pub mod ha;
pub mod neigh;
pub mod persist;
pub mod pipeline;
pub mod route;
pub mod service;
pub mod stats;
pub mod steer;
pub mod tcp_state;
pub mod worker;
