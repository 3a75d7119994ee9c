#!/usr/bin/env bash
# The fault table of BENCHMARKS.md: go-infer's documented layout (Redis from
# deploy/redis.conf with its AOF, two queue instances, two gateways behind
# nginx with deploy/nginx-least-conn.conf, four dispatchers with MaxWorkers 8
# on two queues, echo with sleep_ms 20), REQUESTS signed requests at
# concurrency 64 through nginx, each with an Idempotency-Key; 3 s in, one
# component is killed with SIGKILL and started again 3 s later: a queue
# instance, a dispatcher, redis-server, a gateway. It is tests/faults.rs, the
# fault suite of the test command, at full length: the same checks, and the
# table with throughput around the fault and the time to recover.
# usage: bench/faults.sh [REQUESTS]   (default 20000)
#        FAULTS=queue,redis bench/faults.sh   runs only those faults
#        BENCH_BIN=/path/to/inferq bench/faults.sh   puts that binary in the
#          layout (e.g. one built from an earlier commit: a before/after table)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-env.sh >/dev/null
export INFERQ_TEST_PYTHON="$PWD/.cache/venv/bin/python"
export INFERQ_FAULT_REQUESTS="${1:-20000}"
export INFERQ_FAULT_LOAD_SECS=600
export INFERQ_FAULTS="${FAULTS:-queue,dispatcher,redis,gateway}"
if [ -n "${BENCH_BIN:-}" ]; then export INFERQ_TEST_BIN="$BENCH_BIN"; fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --quiet --test faults every_request_is_answered -- --nocapture --test-threads 1 >"$log" 2>&1 || status=$?
# The table the test prints at the end, then its verdict.
awk '/^FAULT TABLE/ {on=1} on && (/^FAULT TABLE/ || /^\|/) {print} on && !/^FAULT TABLE/ && !/^\|/ {on=0}' "$log"
grep -E '^test result|panicked' "$log" || true
exit "$status"
