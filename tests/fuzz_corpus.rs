//! The fuzz targets' harnesses (src/fuzzing.rs) over the stored corpus
//! (`fuzz/corpus/<target>/`: seeds and what `scripts/fuzz.sh` kept), so
//! every input that ever crashed a target stays fixed without a nightly
//! toolchain. A missing or empty corpus fails: the replay must not pass by
//! finding nothing.

use std::path::PathBuf;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target} fails on {}", path.display());
        n += 1;
    }
    assert!(n >= 3, "{target}: {n} inputs in {}", dir.display());
    println!("{target}: {n} inputs replayed");
}

#[test]
fn envelope_corpus() {
    replay("envelope", inferq::fuzzing::envelope);
}

#[test]
fn eas_request_corpus() {
    replay("eas_request", inferq::fuzzing::eas_request);
}

#[test]
fn dispatcher_messages_corpus() {
    replay("dispatcher_messages", inferq::fuzzing::dispatcher_messages);
}
