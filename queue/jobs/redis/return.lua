-- Moves held entries to the tail of the back lane, which every read takes
-- before new jobs: those of one consumer (ARGV[2]: its session ended), or,
-- when ARGV[2] is '', those of any consumer idle at least ARGV[3] ms (their
-- queue instance died and stopped renewing them). At most ARGV[4] entries.
-- KEYS: back, hi, lo lanes. ARGV[1]: the group; ARGV[5]: the result key
-- prefix. An entry keeps its deliveries in the field `d`. One whose result
-- is stored already (its dispatcher answered through another stream) is
-- only acknowledged and deleted. One script, so no entry is in two places.
-- Returns {moved, dropped}.
local moved, dropped, budget = 0, 0, tonumber(ARGV[4])
for _, lane in ipairs({2, 3, 1}) do
  if budget <= 0 then break end
  local key = KEYS[lane]
  local pending
  if ARGV[2] ~= '' then
    pending = redis.call('XPENDING', key, ARGV[1], '-', '+', budget, ARGV[2])
  else
    pending = redis.call('XPENDING', key, ARGV[1], 'IDLE', ARGV[3], '-', '+', budget)
  end
  for _, p in ipairs(pending) do
    local id, count = p[1], p[4]
    local e = redis.call('XRANGE', key, id, id)[1]
    if e then
      local fields, rid, d = e[2], nil, 0
      local args = {'XADD', KEYS[1], '*'}
      for j = 1, #fields, 2 do
        local k, v = fields[j], fields[j + 1]
        if k == 'd' then
          d = tonumber(v) or 0
        else
          if k == 'rid' then rid = v end
          args[#args + 1] = k
          args[#args + 1] = v
        end
      end
      if rid and redis.call('EXISTS', ARGV[5] .. rid) == 1 then
        dropped = dropped + 1
      else
        args[#args + 1] = 'd'
        args[#args + 1] = d + count
        redis.call(unpack(args))
        moved = moved + 1
      end
    end
    redis.call('XACK', key, ARGV[1], id)
    redis.call('XDEL', key, id)
    budget = budget - 1
  end
end
if ARGV[2] ~= '' then
  for lane = 1, 3 do
    if redis.call('XPENDING', KEYS[lane], ARGV[1], '-', '+', 1, ARGV[2])[1] == nil then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[lane], ARGV[1], ARGV[2])
    end
  end
end
return {moved, dropped}
