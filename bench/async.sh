#!/usr/bin/env bash
# Asynchronous API benchmark (the pmmlasync example service: lr model), side
# by side in one run, on the memory backend (standalone) and on Redis (queue,
# dispatcher and gateway processes, a redis-server started here):
#  1. the eas-prediction SDK's own test module; its 2,000-item tests are
#     test_watch_async (2,000 puts into the sink while watching it) and
#     test_watch_with_inference_service_async (2,000 puts into the input queue
#     while watching the sink);
#  2. `inferq bench-async`: put/s and result/s at steady state with 1, 8 and 32
#     put clients and one watcher;
#  3. wrk (Debian package) putting alone, as an independent check of the put rate.
# usage: bench/async.sh [SECONDS]   (after scripts/setup-test-env.sh; needs wrk, redis-server)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
cargo build --release --quiet --bin inferq
bin=target/release/inferq
py=.cache/venv-eas/bin/python
dir=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
stop_all() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; pids=(); }
trap cleanup EXIT
redis_port=5399

settings() { # backend max_length
cat <<YAML
API: {Port: 5300, Addr: 127.0.0.1, GrpcPort: 5301, AppIdSecret: {}}
Server:
  Backend: $1
  RedisServer: 127.0.0.1:$redis_port
  QueueListen: 127.0.0.1:5310
  QueueEndpoints: ["http://127.0.0.1:5310"]
  DispatcherMetricsListen: ""
Models:
  lr: {Kind: lr, ApiPath: /api/lr, Coefficients: {age: 0.021, income: -0.00011, clicks: 0.35}, Intercept: -0.1}
AsyncServices:
  pmmlasync:
    model: /api/lr
    token: bench-token
    queue:
      memory_mb: 4096
      source: {max_length: $2}
      sink: {max_length: $2}
    rpc: {worker_threads: 64}
YAML
}
wait_port() { for _ in $(seq 1 100); do (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.1; done; echo "port $1 not up"; exit 1; }

start() { # backend max_length
  settings "$1" "$2" > "$dir/s.yaml"
  if [ "$1" = memory ]; then
    $bin standalone --yaml "$dir/s.yaml" >/dev/null 2>"$dir/sa.log" & pids+=($!)
  else
    $bin queue --yaml "$dir/s.yaml" >/dev/null 2>"$dir/q.log" & pids+=($!)
    wait_port 5310
    $bin dispatcher --yaml "$dir/s.yaml" >/dev/null 2>"$dir/d.log" & pids+=($!)
    $bin gateway --yaml "$dir/s.yaml" >/dev/null 2>"$dir/g.log" & pids+=($!)
  fi
  wait_port 5300
  sleep 1
}

for backend in memory redis; do
  if [ $backend = redis ]; then
    redis-server --port $redis_port --bind 127.0.0.1 --save "" --appendonly yes --appendfsync everysec \
      --dir "$dir" --daemonize no >/dev/null & redis_pid=$!
    wait_port $redis_port
  fi
  echo "== $backend: the SDK's test module"
  start $backend 20000
  $py tests/python/eas_sdk.py suite 127.0.0.1:5300 pmmlasync bench-token 2>/dev/null | grep -E '^timing|^ran'
  echo "== $backend: bench-async, one watcher"
  for c in 1 8 32; do
    echo -n "$backend c=$c: "
    $bin bench-async --url http://127.0.0.1:5300/api/predict/pmmlasync --token bench-token -c $c -d "$secs" --warmup 2 --json
  done
  stop_all
  if command -v wrk >/dev/null; then
    echo "== $backend: puts alone, inferq bench-async vs wrk (queues large enough for the run; the dispatcher drains the input into the sink)"
    start $backend 2000000
    echo -n "inferq bench-async --no-watch c=8: "
    $bin bench-async --url http://127.0.0.1:5300/api/predict/pmmlasync --token bench-token -c 8 -d "$secs" --warmup 1 --no-watch --json
    stop_all; start $backend 2000000
    TOKEN=bench-token wrk -t2 -c8 -d"${secs}s" -s bench/wrk-eas-put.lua http://127.0.0.1:5300/api/predict/pmmlasync | grep -E 'Requests/sec|wrk:'
    stop_all
  fi
  if [ $backend = redis ]; then kill $redis_pid; wait $redis_pid 2>/dev/null || true; fi
done
