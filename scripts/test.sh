#!/usr/bin/env bash
# Runs every test of inferq: unit tests, integration tests that start the real
# binaries on loopback ports and talk to them as clients do (HTTP, gRPC, the
# independent gmssl SM2 client), the example build, and the README's run
# command as written. Installs what it needs first (scripts/setup-test-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-env.sh
export INFERQ_TEST_PYTHON="$PWD/.cache/venv/bin/python"
cargo build --release --bins --examples
cargo test --release
scripts/check-readme.sh
