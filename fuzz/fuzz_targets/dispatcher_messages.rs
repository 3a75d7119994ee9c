//! cargo-fuzz target: [`inferq::fuzzing::dispatcher_messages`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| inferq::fuzzing::dispatcher_messages(data));
