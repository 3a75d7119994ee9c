-- wrk script: put one item into an asynchronous service's input queue
-- (POST with the service token), counting answers that are not 200.
wrk.method = "POST"
wrk.body = os.getenv("PAYLOAD") or '[{"age": 30, "income": 5200, "clicks": 3}]'
wrk.headers["Authorization"] = os.getenv("TOKEN") or "bench-token"

local bad = 0
function response(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end

function done(summary, latency, requests)
  io.write(string.format("wrk: p50 %.3f ms, p99 %.3f ms, non-200 %d\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.errors.status))
end
