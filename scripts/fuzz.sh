#!/usr/bin/env bash
# Runs the fuzz targets (fuzz/, harnesses in src/fuzzing.rs) with cargo-fuzz
# for SECONDS each, one after the other, and prints the executions of each.
#
#   scripts/fuzz.sh [SECONDS] [TARGET ...]     (default: 60 s, every target)
#
# Needs a nightly toolchain (rustup installs it if missing) and cargo-fuzz
# (installed from crates.io at a pinned version if missing). Inputs are read
# from fuzz/corpus/<target> (seeds and reproducers, committed) and what a run
# finds goes to fuzz/corpus-new/<target> (not committed); a crash stops its
# target and leaves the input in fuzz/artifacts/<target>. A summary line per
# target is appended to fuzz/runs.txt. Exits non-zero when a target crashed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(envelope eas_request dispatcher_messages)
case $seconds in '' | *[!0-9]*) echo "fuzz: SECONDS must be a number"; exit 2 ;; esac

CARGO_FUZZ_VERSION=0.13.2
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

cargo +nightly fuzz build -O
status=0
total=0
for t in "${targets[@]}"; do
  mkdir -p "corpus-new/$t" "corpus/$t"
  log=$(mktemp)
  set +e
  cargo +nightly fuzz run -O "$t" "corpus-new/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -1)
  runs=${runs:-0}
  total=$((total + runs))
  if [ $rc -ne 0 ]; then
    status=1
    echo "fuzz: $t CRASHED after $runs executions; see fuzz/artifacts/$t"
    tail -40 "$log"
  fi
  line="$(date -u +%FT%TZ) $t seconds=$seconds executions=$runs exit=$rc"
  echo "$line" | tee -a runs.txt
  rm -f "$log"
done
echo "fuzz: $total executions in all"
exit $status
