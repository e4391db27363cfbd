//! Fuzz target `config`: arbitrary bytes through `tapvs::fuzz::config` (see that function).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tapvs::fuzz::config(data);
});
