#!/usr/bin/env bash
# Embedding benchmark, side by side in one run on this machine:
#   1. the bare model in process (`inferq bench-model`: tokenize + ONNX Runtime
#      + pooling, no serving), batch sizes 1, 8, 32;
#   2. end to end: signed REST requests (one text each) through the gateway,
#      the queue on Redis and one dispatcher with dynamic batching, as three
#      processes, at concurrency 1, 8, 32;
#   3. Python onnxruntime on the same files, for context.
# Each for a short (~14-token) and a medium (~70-token) sentence.
# usage: bench/embedding.sh [SECONDS]   (needs redis-server; fetches the model)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-10}"
scripts/fetch-models.sh >/dev/null
cargo build --release --quiet --bin inferq
bin=target/release/inferq
. bench/lib.sh

short="The quick brown fox jumps over the lazy dog near the river."
medium="Dynamic batching groups the requests that wait in a dispatcher into one call of the model, so that the matrix multiplications run on larger tiles and the fixed cost of each call is shared; requests of similar length are grouped so that short texts are not padded to the length of a long one, which would waste most of the work."

sed -e "s|\.\./\.cache|$PWD/.cache|g" \
    -e 's/^    Port: 5000/    Port: 5300/' -e 's/^    GrpcPort: 5001 /    GrpcPort: 5301 /' \
    -e 's/Backend: auto /Backend: redis/' -e 's/RedisServer: "127.0.0.1:6379"/RedisServer: "127.0.0.1:5320"/' \
    -e 's/127.0.0.1:5100/127.0.0.1:5310/g' -e 's/127.0.0.1:5200/127.0.0.1:5311/' \
    config/settings.yaml > "$dir/settings.yaml"

echo "== bare model, in process"
for t in "$short" "$medium"; do
  $bin bench-model --yaml "$dir/settings.yaml" --model all-MiniLM-L6-v2 --text "$t" -d "$secs" --json 2>/dev/null
done

mkdir -p "$dir/redis"
redis-server --port 5320 --bind 127.0.0.1 --dir "$dir/redis" --appendonly yes --appendfsync everysec \
  --save "" --daemonize no --logfile redis.log & pids+=($!)
wait_port 5320 200
$bin queue --yaml "$dir/settings.yaml" >/dev/null 2>"$dir/q.log" & pids+=($!)
wait_port 5310 200
$bin dispatcher 0 --yaml "$dir/settings.yaml" >/dev/null 2>"$dir/d.log" & pids+=($!)
$bin gateway --yaml "$dir/settings.yaml" >/dev/null 2>"$dir/g.log" & pids+=($!)
wait_port 5300 200
wait_port 5311 200
echo "== end to end: gateway -> queue (Redis) -> dispatcher, REST, SHA256-signed, one text per request"
for label in short medium; do
  t=$([ $label = short ] && echo "$short" || echo "$medium")
  data=$(python3 -c 'import json,sys; print(json.dumps({"text": sys.argv[1]}))' "$t")
  for c in 1 8 32; do
    echo -n "e2e $label c=$c: "
    $bin bench --url http://127.0.0.1:5300/api/embedding -c $c -d "$secs" --warmup 3 --data "$data" --json
  done
done
stop_all

py=.cache/venv/bin/python
if [ -x "$py" ]; then
  echo "== Python onnxruntime, same files (reference implementation, for context)"
  m=.cache/models/all-minilm-l6-v2
  for t in "$short" "$medium"; do
    python3 -c 'import json,sys; print(json.dumps([sys.argv[1]]*32))' "$t" \
      | $py tests/python/embed_reference.py $m/model.onnx $m/tokenizer.json 256 --bench "$secs"
  done
fi
