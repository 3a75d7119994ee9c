#!/usr/bin/env bash
# What one request costs on the split path, per process, in figures that hold
# on a shared, noisy machine. The layout: redis-server (requirepass,
# appendonly everysec), inferq queue, dispatcher (MaxWorkers 64) and gateway
# as four processes on loopback, echo without sleep.
#
# 1. CPU time per request: after a 2 s warm-up, `inferq bench` sends signed
#    requests at concurrency C for SECS s; each process's user + system time
#    (/proc/PID/stat) over that window, divided by the requests answered.
#    Wall-clock rates move with the machine's other load; CPU time per
#    request moves much less.
# 2. With CALLGRIND=1, instructions per request: each inferq component in
#    turn runs under valgrind --tool=callgrind (the others natively), its
#    counters zeroed after a warm-up and dumped after N_CALLGRIND requests'
#    worth of load; Ir / requests answered. Repeatable to a few per cent
#    whatever else the machine does.
#
# usage: bench/cost.sh [SECS] [C]        (default 10 64)
#        CALLGRIND=1 bench/cost.sh 10 64
#        BENCH_BIN=/path/to/inferq bench/cost.sh   (another build: before/after)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conc=${2:-64}
. bench/lib.sh
bench_bin
password=cost-bench-password
clk=$(getconf CLK_TCK)

redis-server --port 5390 --bind 127.0.0.1 --requirepass "$password" --appendonly yes \
  --appendfsync everysec --dir "$dir" --save "" --logfile "$dir/redis.log" &
redis_pid=$!
pids+=("$redis_pid")
wait_port 5390
{ bench_api; cat <<YAML
Server:
  Backend: redis
  RedisServer: "127.0.0.1:5390"
  RedisPasswd: "$password"
  MaxWorkers: 64
  QueueListen: 127.0.0.1:5310
  QueueEndpoints: ["http://127.0.0.1:5310"]
  QueueMetricsListen: ""
  DispatcherMetricsListen: ""
YAML
} > "$dir/settings.yaml"

# start NAME native|callgrind -> the process's pid in $started
start() {
  local name=$1 under=$2 args
  case $name in
    queue) args=(queue) ;;
    dispatcher) args=(dispatcher 0) ;;
    gateway) args=(gateway) ;;
  esac
  if [ "$under" = callgrind ]; then
    valgrind --tool=callgrind --callgrind-out-file="$dir/callgrind.$name.out" --dump-instr=no \
      "$bin" "${args[@]}" --yaml "$dir/settings.yaml" >/dev/null 2>"$dir/$name.log" &
  else
    "$bin" "${args[@]}" --yaml "$dir/settings.yaml" >/dev/null 2>"$dir/$name.log" &
  fi
  started=$!
  pids+=("$started")
}

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

load() { # seconds warmup -> requests answered
  "$bin" bench --url http://127.0.0.1:5300/api/echo -c "$conc" -d "$1" --warmup "$2" --json \
    | python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["ok"], d["req_per_s"], d["p50_ms"])'
}

layout() { # component under callgrind, or none
  local who=$1
  declare -gA pid_of
  for name in queue dispatcher gateway; do
    start "$name" "$([ "$name" = "$who" ] && echo callgrind || echo native)"
    pid_of[$name]=$started
    case $name in queue) wait_port 5310 300 ;; gateway) wait_port 5300 300 ;; esac
  done
}

stop_layout() {
  for name in gateway dispatcher queue; do kill "${pid_of[$name]}" 2>/dev/null || true; done
  for name in gateway dispatcher queue; do wait "${pid_of[$name]}" 2>/dev/null || true; done
}

echo "== CPU time per request (split on Redis, echo, c$conc, ${secs} s; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores)"
layout none
pid_of[redis]=$redis_pid
load 2 0 >/dev/null
declare -A before
for name in gateway queue redis dispatcher; do before[$name]=$(ticks "${pid_of[$name]}"); done
redis-cli -p 5390 -a "$password" --no-auth-warning CONFIG RESETSTAT >/dev/null
read -r n rate p50 < <(load "$secs" 0)
commands=$(redis-cli -p 5390 -a "$password" --no-auth-warning INFO commandstats)
total=0
line="| requests | req/s | p50 ms |"
sep="|---|---|---|"
vals="| $n | $rate | $p50 |"
for name in gateway queue redis dispatcher; do
  t=$(( $(ticks "${pid_of[$name]}") - ${before[$name]} ))
  total=$((total + t))
  line+=" $name ms/req |"
  sep+="---|"
  vals+=" $(python3 -c "print(f'{1000 * $t / $clk / $n:.4f}')") |"
done
echo "$line total ms/req |"
echo "$sep---|"
echo "$vals $(python3 -c "print(f'{1000 * $total / $clk / $n:.4f}')") |"
echo
echo "Redis commands per request (scripts count once, with the commands they run):"
echo "$commands" | python3 -c '
import re, sys
n = int(sys.argv[1])
rows = []
for line in sys.stdin:
    m = re.match(r"cmdstat_([^:]+):calls=(\d+),usec=(\d+)", line)
    if m and int(m.group(2)) >= n / 100:
        rows.append((int(m.group(2)) / n, m.group(1), int(m.group(3)) / n))
for calls, name, usec in sorted(rows, reverse=True):
    print(f"  {name:<16} {calls:6.2f} calls, {usec:6.2f} us")
' "$n"
stop_layout

if [ -n "${CALLGRIND:-}" ]; then
  command -v valgrind >/dev/null || { echo "needs valgrind (Debian package valgrind)" >&2; exit 1; }
  echo
  echo "== instructions per request (callgrind, one component at a time)"
  echo "| component | requests | instructions per request |"
  echo "|---|---|---|"
  for who in gateway queue dispatcher; do
    layout "$who"
    vg=${pid_of[$who]}
    load 3 0 >/dev/null
    vgdb --pid="$vg" zero >/dev/null 2>&1
    read -r n _ _ < <(load 6 0)
    callgrind_dump "$vg" "$dir/callgrind.$who.out"
    echo "| $who | $n | $((ir / n)) |"
    [ -z "${KEEP_CALLGRIND:-}" ] || cp "$dump" "${KEEP_CALLGRIND}.$who"
    stop_layout
    rm -f "$dir"/callgrind.*
  done
fi
