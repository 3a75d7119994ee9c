-- Reads up to ARGV[3] new entries, high lane first, without blocking.
-- Returns a flat list: lane, id, job, lane, id, job, ...
local out = {}
local n = tonumber(ARGV[3])
for i = 1, 2 do
  if n <= 0 then break end
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', n, 'STREAMS', KEYS[i], '>')
  if r then
    for _, e in ipairs(r[1][2]) do
      out[#out + 1] = i - 1
      out[#out + 1] = e[1]
      out[#out + 1] = e[2][2]
      n = n - 1
    end
  end
end
return out
