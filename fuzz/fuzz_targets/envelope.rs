//! cargo-fuzz target: [`inferq::fuzzing::envelope`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| inferq::fuzzing::envelope(data));
