//! cargo-fuzz target: [`inferq::fuzzing::eas_request`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| inferq::fuzzing::eas_request(data));
