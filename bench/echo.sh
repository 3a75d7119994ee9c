#!/usr/bin/env bash
# Echo benchmark, side by side in one run: inferq standalone, then the split
# deployment (queue, dispatcher, gateway as three processes on loopback) on the
# in-memory backend, on Redis (a redis-server started here, appendonly with
# fsync every second), and on Redis with two queue instances; each at
# concurrency 1, 16 and 64 with inferq's own load generator, and standalone
# again with wrk (Debian package) as an independent check.
# usage: bench/echo.sh [SECONDS]   (needs wrk and redis-server)
#        BENCH_ONLY=redis bench/echo.sh 5   runs only the Redis parts
#        BENCH_BIN=/path/to/inferq bench/echo.sh 5   measures that binary
#          (e.g. one built from an earlier commit, for a before/after table)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
. bench/lib.sh
bench_bin
echo_settings "$dir/settings.yaml"
run_bench() { # label
  for c in 1 16 64; do
    echo -n "$1 c=$c: "
    $bin bench --url http://127.0.0.1:5300/api/echo -c $c -d "$secs" --warmup 2 --json
  done
}

only="${BENCH_ONLY:-all}"
if [ "$only" = all ]; then
echo "== standalone (in-memory queue, one process)"
$bin standalone --yaml "$dir/settings.yaml" >/dev/null 2>"$dir/sa.log" & pids+=($!)
wait_port 5300
run_bench standalone
if command -v wrk >/dev/null; then
  $bin bench --write-body "$dir/body.json"
  for c in 1 64; do
    echo "wrk standalone c=$c:"
    t=$([ $c -eq 1 ] && echo 1 || echo 2)
    BODY_FILE="$dir/body.json" wrk -t$t -c$c -d"${secs}s" -s bench/wrk-post.lua http://127.0.0.1:5300/api/echo | grep -E 'Requests/sec|wrk: p50'
  done
fi
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true

echo "== split: queue + dispatcher + gateway processes (in-memory queue)"
$bin queue --yaml "$dir/settings.yaml" >/dev/null 2>"$dir/q.log" & pids+=($!)
wait_port 5310
$bin dispatcher 0 --yaml "$dir/settings.yaml" >/dev/null 2>"$dir/d.log" & pids+=($!)
$bin gateway --yaml "$dir/settings.yaml" >/dev/null 2>"$dir/g.log" & pids+=($!)
wait_port 5300
run_bench split
stop_all
fi

sed -e 's/Backend: memory/Backend: redis/' \
    -e 's|QueueEndpoints: .*|QueueEndpoints: ["http://127.0.0.1:5310", "http://127.0.0.1:5311"]\n  RedisServer: "127.0.0.1:5320"|' \
    "$dir/settings.yaml" > "$dir/redis.yaml"
sed -e 's|QueueEndpoints: .*|QueueEndpoints: ["http://127.0.0.1:5310"]|' "$dir/redis.yaml" > "$dir/redis1.yaml"
mkdir -p "$dir/redis"
redis-server --port 5320 --bind 127.0.0.1 --dir "$dir/redis" --appendonly yes --appendfsync everysec \
  --save "" --daemonize no --logfile redis.log & pids+=($!)
wait_port 5320

echo "== split on Redis: queue + dispatcher + gateway processes, one queue instance"
$bin queue --yaml "$dir/redis1.yaml" >/dev/null 2>"$dir/rq.log" & pids+=($!)
wait_port 5310
$bin dispatcher 0 --yaml "$dir/redis1.yaml" >/dev/null 2>"$dir/rd.log" & pids+=($!)
$bin gateway --yaml "$dir/redis1.yaml" >/dev/null 2>"$dir/rg.log" & pids+=($!)
wait_port 5300
run_bench split-redis
for p in "${pids[@]:1}"; do kill "$p" 2>/dev/null || true; done
for p in "${pids[@]:1}"; do wait "$p" 2>/dev/null || true; done
pids=("${pids[0]}")

echo "== split on Redis, two queue instances (gateway calls both; the dispatcher is on the first)"
$bin queue --yaml "$dir/redis.yaml" >/dev/null 2>"$dir/rq1.log" & pids+=($!)
$bin queue --yaml "$dir/redis.yaml" --listen 127.0.0.1:5311 >/dev/null 2>"$dir/rq2.log" & pids+=($!)
wait_port 5310; wait_port 5311
$bin dispatcher 0 --yaml "$dir/redis.yaml" >/dev/null 2>"$dir/rd2.log" & pids+=($!)
$bin gateway --yaml "$dir/redis.yaml" >/dev/null 2>"$dir/rg2.log" & pids+=($!)
wait_port 5300
run_bench split-redis-2q
