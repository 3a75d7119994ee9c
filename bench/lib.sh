# What the bench scripts share; sourced (`. bench/lib.sh`) from the repository
# root after `set -euo pipefail`.
#   bench_bin           sets $bin: $BENCH_BIN when given (another build, for a
#                       before/after table), else target/release/inferq, built
#   $dir, $pids         a scratch folder and the processes started; both are
#                       cleaned up on exit; stop_all stops the processes now
#   wait_port PORT [N]  waits up to N tenths of a second (100) for a listener
#   bench_api           the API section every bench uses: gateway on 5300
#                       (gRPC 5301), the example appId and secret
#   echo_settings FILE  the settings of the echo benches: bench_api,
#                       in-memory queue on 5310, MaxWorkers 64
#   callgrind_dump PID PREFIX   asks the callgrind process PID for a dump,
#                       waits for PREFIX.* to appear; sets $dump to the file
#                       and $ir to its instruction total

bench_bin() {
  if [ -n "${BENCH_BIN:-}" ]; then
    bin=$BENCH_BIN
  else
    cargo build --release --quiet --bin inferq
    bin=target/release/inferq
  fi
}

dir=$(mktemp -d)
pids=()
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
cleanup() { stop_all; rm -rf "$dir"; }
trap cleanup EXIT

wait_port() {
  for _ in $(seq 1 "${2:-100}"); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done
  echo "port $1 not up" >&2; exit 1
}

bench_api() {
  cat <<YAML
API:
  Port: 5300
  Addr: 127.0.0.1
  GrpcPort: 5301
  AppIdSecret: {"3EA25569454745D01219080B779F021F": "41DF0E6AE27B5282C07EF5124642A352"}
YAML
}

echo_settings() {
  { bench_api; cat <<YAML
Server:
  MaxWorkers: 64
  Backend: memory
  QueueListen: 127.0.0.1:5310
  QueueEndpoints: ["http://127.0.0.1:5310"]
YAML
  } > "$1"
}

callgrind_dump() {
  vgdb --pid="$1" dump >/dev/null 2>&1
  dump=""
  for _ in $(seq 1 100); do
    dump=$(ls "$2".* 2>/dev/null | head -1 || true)
    [ -n "$dump" ] && break; sleep 0.1
  done
  [ -n "$dump" ] || { echo "no callgrind dump from $1" >&2; exit 1; }
  sleep 1
  ir=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
}
