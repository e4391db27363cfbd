//! tapvs binary entry point.
fn main() {}
