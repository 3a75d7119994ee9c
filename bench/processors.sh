#!/usr/bin/env bash
# Models in any language, measured side by side in one run:
# - the HTTP processor's overhead: wrk straight at a Python model server
#   (tests/python/model_server.py, the standard library's ThreadingHTTPServer)
#   and wrk at inferq standalone serving that same server (Kind: http), at
#   concurrency 1 and 8;
# - PMML scoring: inferq's in-process scorer (examples/pmml_score.rs) against
#   jpmml-evaluator (Java, through py4j) on the same files and rows.
# usage: bench/processors.sh [SECONDS]   (BENCH_ONLY=http|pmml for one half;
#        needs wrk, python3, the PMML venv
#        from scripts/setup-test-env.sh and Java)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-5}"
cargo build --release --quiet --bin inferq --example pmml_score
bin=target/release/inferq
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
pmml_python=.cache/venv-pmml/bin/python
[ -x "$pmml_python" ] || bash scripts/setup-test-env.sh
. bench/lib.sh
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"

only="${BENCH_ONLY:-all}"
if [ "$only" != pmml ]; then
echo "== HTTP processor"
python3 tests/python/model_server.py 5400 >/dev/null 2>&1 & pids+=($!)
wait_port 5400
{ bench_api; cat <<YAML
Server:
  MaxWorkers: 16
  Backend: memory
  QueueListen: 127.0.0.1:5310
Models:
  py:
    Kind: http
    ApiPath: /api/py
    Url: http://127.0.0.1:5400/data/model
YAML
} > "$dir/settings.yaml"
$bin standalone --yaml "$dir/settings.yaml" >/dev/null 2>"$dir/sa.log" & pids+=($!)
wait_port 5300
echo '{"x": 1}' > "$dir/direct.json"
$bin bench --write-body "$dir/body.json" --data '{"x": 1}'
for c in 1 8; do
  for round in 1 2 3; do
    echo -n "direct c=$c round $round: "
    BODY_FILE="$dir/direct.json" wrk -t1 -c$c -d"${secs}s" -s bench/wrk-post.lua http://127.0.0.1:5400/data/model \
      | grep -E 'Requests/sec|wrk: p50' | tr '\n' ' '; echo
    echo -n "inferq c=$c round $round: "
    BODY_FILE="$dir/body.json" wrk -t1 -c$c -d"${secs}s" -s bench/wrk-post.lua http://127.0.0.1:5300/api/py \
      | grep -E 'Requests/sec|wrk: p50' | tr '\n' ' '; echo
  done
done
stop_all
fi
[ "$only" = http ] && exit 0

echo "== PMML scoring"
"$pmml_python" tests/python/pmml_reference.py "$dir/pmml" >/dev/null 2>&1
for m in lr dt rf gb gb3; do
  "$pmml_python" -c "import json; r=json.load(open('$dir/pmml/reference.json')); json.dump(r['$m']['rows'], open('$dir/$m.rows.json','w'))"
  target/release/examples/pmml_score "$dir/pmml/$m.pmml" "$dir/$m.rows.json" 3
  "$pmml_python" tests/python/pmml_rate.py "$dir/pmml/$m.pmml" "$dir/$m.rows.json" 3 2>/dev/null
done
