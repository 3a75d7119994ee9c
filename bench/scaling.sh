#!/usr/bin/env bash
# The scaling table of BENCHMARKS.md: does throughput grow with dispatchers?
# Echo with sleep_ms 50, so one job holds a credit 50 ms and a dispatcher
# with MaxWorkers 8 can finish at most 8 × 20 = 160 jobs/s: the bound for D
# dispatchers is D × 160 req/s. The layout is go-infer's, on loopback: nginx
# (deploy/nginx-least-conn.conf) over two gateways, two queue instances on
# one Redis (requirepass, AOF), D dispatchers on the one queue. For D = 1, 2,
# 4, interleaved over ROUNDS rounds, `inferq bench` sends signed requests
# through nginx for SECS s at concurrency 2 × D × 8 (every credit always has
# a job waiting); the table gives the median rate, its share of the bound,
# and p50 / p99.
# usage: bench/scaling.sh [SECS] [ROUNDS]   (default 10 3)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
scripts/setup-test-env.sh >/dev/null
bench_bin
secs=${1:-10}
rounds=${2:-3}
password=scaling-bench-password
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)

redis-server --port 5390 --bind 127.0.0.1 --requirepass "$password" --appendonly yes \
  --appendfsync everysec --dir "$dir" --save "" --logfile "$dir/redis.log" &
pids+=($!)
wait_port 5390

for q in 0 1; do
  { bench_api | sed -e "s/5300/53${q}0/; s/5301/53${q}1/"; cat <<YAML
Server:
  Backend: redis
  RedisServer: "127.0.0.1:5390"
  RedisPasswd: "$password"
  QueueName: "scaling"
  MessageTimeout: 20
  MaxWorkers: 8
  QueueListen: "127.0.0.1:53${q}5"
  QueueMetricsListen: ""
  DispatcherMetricsListen: ""
  QueueEndpoints: ["http://127.0.0.1:5305", "http://127.0.0.1:5315"]
YAML
  } > "$dir/settings-$q.yaml"
  "$bin" queue --yaml "$dir/settings-$q.yaml" > "$dir/queue-$q.log" 2>&1 &
  pids+=($!)
  wait_port "53${q}5"
  "$bin" gateway --yaml "$dir/settings-$q.yaml" > "$dir/gateway-$q.log" 2>&1 &
  pids+=($!)
  wait_port "53${q}0"
done

mkdir -p "$dir/nginx"
sed -e "s/127.0.0.1:5000/127.0.0.1:5300/; s/127.0.0.1:5010/127.0.0.1:5310/" \
    -e "s/127.0.0.1:5001/127.0.0.1:5301/; s/127.0.0.1:5011/127.0.0.1:5311/" \
    -e "s/listen 8080;/listen 127.0.0.1:5380;/; s/listen 8081 http2;/listen 127.0.0.1:5381 http2;/" \
    deploy/nginx-least-conn.conf > "$dir/nginx/site.conf"
cat > "$dir/nginx/nginx.conf" <<NGINX
worker_processes 1;
pid $dir/nginx/nginx.pid;
error_log $dir/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/nginx/body;
    proxy_temp_path $dir/nginx/proxy;
    include $dir/nginx/site.conf;
}
NGINX
"$nginx_bin" -c "$dir/nginx/nginx.conf" -g "daemon off;" &
pids+=($!)
wait_port 5380

declare -A rates p50s p99s
dispatchers=()
for round in $(seq 1 "$rounds"); do
  for d in 1 2 4; do
    while [ ${#dispatchers[@]} -lt "$d" ]; do
      n=${#dispatchers[@]}
      "$bin" dispatcher 0 --yaml "$dir/settings-$((n % 2)).yaml" --node-id "d$n" > "$dir/dispatcher-$n.log" 2>&1 &
      dispatchers+=($!)
    done
    while [ ${#dispatchers[@]} -gt "$d" ]; do
      last=$((${#dispatchers[@]} - 1))
      kill -TERM "${dispatchers[$last]}"
      wait "${dispatchers[$last]}" 2>/dev/null || true
      unset "dispatchers[$last]"
    done
    sleep 1
    out=$("$bin" bench --yaml "$dir/settings-0.yaml" --url http://127.0.0.1:5380/api/echo \
      --data '{"sleep_ms":50}' -c $((2 * d * 8)) -d "$secs" --warmup 2 --json)
    read -r rate p50 p99 errors < <(echo "$out" | python3 -c 'import json, sys
d = json.load(sys.stdin)
print(d["req_per_s"], d["p50_ms"], d["p99_ms"], d["http_errors"] + d["transport_errors"] + sum(d["code_errors"].values()))')
    rates[$d]+="$rate "; p50s[$d]+="$p50 "; p99s[$d]+="$p99 "
    echo "round $round, $d dispatcher(s): $out" >&2
    [ "$errors" = 0 ] || { echo "errors in the run above" >&2; exit 1; }
  done
done
for p in "${dispatchers[@]}"; do kill -TERM "$p" 2>/dev/null || true; done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
echo "| dispatchers (MaxWorkers 8) | concurrency | bound (req/s) | median req/s | of the bound | p50 ms | p99 ms |"
echo "|---|---|---|---|---|---|---|"
for d in 1 2 4; do
  bound=$((d * 8 * 20))
  rate=$(echo "${rates[$d]}" | median)
  printf "| %d | %d | %d | %.0f | %.1f %% | %s | %s |\n" "$d" $((2 * d * 8)) "$bound" "$rate" \
    "$(python3 -c "print(100 * $rate / $bound)")" "$(echo "${p50s[$d]}" | median)" "$(echo "${p99s[$d]}" | median)"
done
