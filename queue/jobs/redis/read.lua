-- Reads up to ARGV[3] new entries for consumer ARGV[2] of group ARGV[1],
-- without blocking: the back lane first (jobs handed back), then high, then
-- low. KEYS: back, hi, lo lanes. An entry of the back lane whose result is
-- stored already (ARGV[4]: the result key prefix) is acknowledged and
-- deleted instead. Returns a flat list: lane (0-2), id, deliveries before,
-- has a job field (0/1), the job; ...
local out = {}
local n = tonumber(ARGV[3])
for i = 1, 3 do
  if n <= 0 then break end
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', n, 'STREAMS', KEYS[i], '>')
  if r then
    for _, e in ipairs(r[1][2]) do
      local fields, job, rid, d = e[2], nil, nil, 0
      for j = 1, #fields, 2 do
        local k, v = fields[j], fields[j + 1]
        if k == 'job' then job = v elseif k == 'rid' then rid = v elseif k == 'd' then d = tonumber(v) or 0 end
      end
      if i == 1 and rid and redis.call('EXISTS', ARGV[4] .. rid) == 1 then
        redis.call('XACK', KEYS[i], ARGV[1], e[1])
        redis.call('XDEL', KEYS[i], e[1])
      else
        out[#out + 1] = i - 1
        out[#out + 1] = e[1]
        out[#out + 1] = d
        out[#out + 1] = job and 1 or 0
        out[#out + 1] = job or ''
        n = n - 1
      end
    end
  end
end
return out
