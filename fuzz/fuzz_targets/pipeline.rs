//! Fuzz target `pipeline`: arbitrary bytes through `tapvs::fuzz::pipeline` (see that function).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tapvs::fuzz::pipeline(data);
});
