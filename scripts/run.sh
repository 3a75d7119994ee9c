#!/usr/bin/env bash
# Builds inferq and runs it standalone: gateway + in-memory queue + dispatcher
# in one process, no Redis, with config/settings.yaml (REST on :5000, gRPC on
# :5001). Extra arguments go to `inferq standalone` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin inferq
exec target/release/inferq standalone --yaml config/settings.yaml "$@"
