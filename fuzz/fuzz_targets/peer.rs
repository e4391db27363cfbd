//! Fuzz target `peer`: arbitrary bytes through `tapvs::fuzz::peer` (see that function).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tapvs::fuzz::peer(data);
});
