//! Fuzz target `adm_command`: arbitrary bytes through `tapvs::fuzz::adm_command` (see that function).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tapvs::fuzz::adm_command(data);
});
