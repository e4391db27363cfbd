//! The IPVS schedulers (placeholder until the crate lands).
