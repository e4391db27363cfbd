//! Fuzz target `request`: arbitrary bytes through `tapvs::fuzz::request` (see that function).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tapvs::fuzz::request(data);
});
