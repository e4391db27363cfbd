//! Packet views and per-mode rewrites (placeholder until the crate lands).
