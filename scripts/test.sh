#!/usr/bin/env bash
# Runs every test of inferq: formatting and lints, the layout's boundaries,
# unit tests (in the release build, whose overflow checks are on for inferq's
# own code: Cargo.toml), integration tests that
# start the real binaries on loopback ports and talk to them as clients do
# (HTTP, gRPC, the independent gmssl SM2 client, the eas-prediction SDK), the
# example build, and the README's run command as written. Installs what it
# needs first (scripts/setup-test-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-env.sh
export INFERQ_TEST_PYTHON="$PWD/.cache/venv/bin/python"
cargo fmt --check
cargo clippy --all-targets -- -D warnings
scripts/check-layout.sh
cargo build --release --bins --examples
# Before the release tests: the run command's build is the one just made.
# (`cargo test` builds inferq again with the dev-dependencies' features and
# puts that binary at target/release/inferq, which a later `cargo build`
# would build over once more.)
scripts/check-readme.sh
cargo test --release
