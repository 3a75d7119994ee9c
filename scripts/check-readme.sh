#!/usr/bin/env bash
# Checks README.md's two commands as written:
# - the run command (between <!-- run-command --> markers) starts inferq and a
#   signed request from the independent Python client is answered with code 0;
# - the test command (between <!-- test-command --> markers) is what .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."
py="${INFERQ_TEST_PYTHON:-$PWD/.cache/venv/bin/python}"

block() { # the first line of the fenced block after marker $1
  awk -v m="<!-- $1 -->" '$0 ~ m {f=1; next} f && /^```/ {if (in_block) exit; in_block=1; next} f && in_block {print; exit}' README.md
}
run_cmd=$(block run-command)
test_cmd=$(block test-command)
[ -n "$run_cmd" ] || { echo "check-readme: no run command in README.md"; exit 1; }
[ -n "$test_cmd" ] || { echo "check-readme: no test command in README.md"; exit 1; }
grep -qF -- "$test_cmd" .ci/run || { echo "check-readme: .ci/run does not run '$test_cmd'"; exit 1; }

log=$(mktemp)
setsid bash -c "$run_cmd" >"$log" 2>&1 &
pid=$!
cleanup() { kill -TERM -- "-$pid" 2>/dev/null || true; sleep 0.5; kill -KILL -- "-$pid" 2>/dev/null || true; rm -f "$log"; }
trap cleanup EXIT
# The run command builds inferq first (up to date when scripts/test.sh has
# just built it; minutes on two cores otherwise).
for _ in $(seq 1 1800); do
  grep -q "gateway-http listening on" "$log" && break
  kill -0 "$pid" 2>/dev/null || { echo "check-readme: run command exited:"; cat "$log"; exit 1; }
  sleep 0.5
done
grep -q "gateway-http listening on" "$log" || { echo "check-readme: run command did not start"; cat "$log"; exit 1; }
answer=$("$py" tests/python/goinfer_client.py http://127.0.0.1:5000/api/echo SHA256 '{"text":"hello from the README"}')
echo "$answer" | grep -q '"code":0,' || { echo "check-readme: unexpected answer: $answer"; exit 1; }
answer=$("$py" tests/python/goinfer_client.py http://127.0.0.1:5000/api/embedding SHA256 '{"text":"hello from the README"}')
"$py" -c 'import json,sys; v=json.loads(sys.argv[1]); assert v["code"]==0 and len(v["data"]["embeddings"])==384, v' "$answer" \
  || { echo "check-readme: /api/embedding: unexpected answer: ${answer:0:300}"; exit 1; }
"$py" - <<'PY' || { echo "check-readme: /v1/embeddings failed"; exit 1; }
import json, urllib.request
req = urllib.request.Request(
    "http://127.0.0.1:5000/v1/embeddings",
    data=json.dumps({"model": "all-MiniLM-L6-v2", "input": ["hello", "world"]}).encode(),
    headers={"Authorization": "Bearer sk-inferq-example-key", "Content-Type": "application/json"},
)
v = json.load(urllib.request.urlopen(req, timeout=30))
assert [len(d["embedding"]) for d in v["data"]] == [384, 384], v
PY
eas_py="$PWD/.cache/venv-eas/bin/python"
"$eas_py" - <<'PY' || { echo "check-readme: the asynchronous service pmmlasync failed"; exit 1; }
import json
from eas_prediction import QueueClient
inq = QueueClient('127.0.0.1:5000', 'pmmlasync'); inq.set_token('pmmlasync-example-token'); inq.init()
sink = QueueClient('127.0.0.1:5000', 'pmmlasync/sink'); sink.set_token('pmmlasync-example-token'); sink.init()
index, request_id = inq.put('[{"age": 30, "income": 5200}]')
found = sink.get(request_id=request_id, timeout='10s')
assert len(found) == 1, found
out = json.loads(found[0].data.decode())
assert set(out[0]) == {"p_0", "p_1"} and abs(out[0]["p_0"] + out[0]["p_1"] - 1) < 1e-9, out
PY
echo "check-readme: run command answered signed echo and embedding requests, /v1/embeddings and the asynchronous service; .ci/run runs the test command"
echo "2 passed, 0 failed"
