-- wrk script: POST the body in the file named by $BODY_FILE (written by
-- `inferq bench --write-body FILE`, valid for API.RequestTimestampDiff seconds).
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"

-- Count answers whose envelope code is not 0.
local bad = 0
function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"code":0,', 1, true) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  io.write(string.format("wrk: p50 %.3f ms, p90 %.3f ms, p99 %.3f ms\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000))
end
