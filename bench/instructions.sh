#!/usr/bin/env bash
# Instructions per request of one component of the split deployment (queue,
# dispatcher and gateway as three processes on loopback, in-memory queue,
# echo), counted by callgrind: a figure that holds on a shared, noisy
# machine, where req/s and CPU time do not. The named component runs under
# valgrind --tool=callgrind, the others natively; after 3 s of warm-up load
# its counters are zeroed, 6 s of load at concurrency 16 are sent, and the
# counters dumped: Ir / answered requests. (Background work between requests
# is included; idle, the queue runs about 0.1 M instructions per second.)
# usage: bench/instructions.sh queue|gateway|dispatcher
#        BENCH_BIN=/path/to/inferq bench/instructions.sh queue   (another build)
set -euo pipefail
cd "$(dirname "$0")/.."
who=${1:?usage: bench/instructions.sh queue|gateway|dispatcher}
case "$who" in queue|gateway|dispatcher) ;; *) echo "usage: bench/instructions.sh queue|gateway|dispatcher" >&2; exit 2;; esac
command -v valgrind >/dev/null || { echo "needs valgrind (Debian package valgrind)" >&2; exit 1; }
. bench/lib.sh
bench_bin
echo_settings "$dir/settings.yaml"
for port in 5300 5301 5310; do
  if (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null; then echo "port $port is taken" >&2; exit 1; fi
done
start() { # component args...
  if [ "$1" = "$who" ]; then
    valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.out" --dump-instr=no "$bin" "$@" >/dev/null 2>"$dir/$1.log" &
  else
    "$bin" "$@" >/dev/null 2>"$dir/$1.log" &
  fi
  pids+=($!)
}
start queue --yaml "$dir/settings.yaml"
wait_port 5310 300
start dispatcher 0 --yaml "$dir/settings.yaml"
start gateway --yaml "$dir/settings.yaml"
wait_port 5300 300
vg=""
for _ in $(seq 1 100); do
  vg=$(pgrep -f "valgrind.bin --tool=callgrind --callgrind-out-file=$dir/" | head -1 || true)
  [ -n "$vg" ] && break; sleep 0.1
done
[ -n "$vg" ] || { echo "no callgrind process" >&2; exit 1; }
sleep 2
"$bin" bench --url http://127.0.0.1:5300/api/echo -c 16 -d 3 --warmup 0 --json >/dev/null
vgdb --pid="$vg" zero >/dev/null 2>&1
n=$("$bin" bench --url http://127.0.0.1:5300/api/echo -c 16 -d 6 --warmup 0 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["ok"])')
callgrind_dump "$vg" "$dir/callgrind.out"
echo "$who: $n requests, $ir instructions, $((ir / n)) per request"
