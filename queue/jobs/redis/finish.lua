-- Completes jobs, four keys per job: its lane, result:<id>, job:<id> and
-- reply:<id>. ARGV: the group, the result ttl ms, the done channel prefix,
-- the calling instance, then per job: the stream entry id ('' when no lease
-- covers it), the result, and '1' when no lease covers it.
-- Per job: the entry is acknowledged and deleted; the result is stored
-- unless one is already (the first result wins) and published to every
-- other instance with a caller waiting for it. A result no lease covers (a
-- dispatcher's answer sent again after its stream was lost) is stored only
-- for a request id that is stored (its marker exists).
-- Returns how many results were stored, then the (0-based) numbers of the
-- jobs whose callers wait in the calling instance: it wakes them itself,
-- without a message to itself through Redis.
local stored = 0
-- {stored, numbers of the jobs woken here...}
local out = {0}
for i = 0, #KEYS / 4 - 1 do
  local lane, res, marker, reply = KEYS[4 * i + 1], KEYS[4 * i + 2], KEYS[4 * i + 3], KEYS[4 * i + 4]
  local entry, bytes, unleased = ARGV[5 + 3 * i], ARGV[6 + 3 * i], ARGV[7 + 3 * i]
  if entry ~= '' then
    redis.call('XACK', lane, ARGV[1], entry)
    redis.call('XDEL', lane, entry)
  end
  local known = unleased ~= '1' or redis.call('EXISTS', marker) == 1
  if known and redis.call('SET', res, bytes, 'PX', ARGV[2], 'NX') then
    stored = stored + 1
    for _, instance in ipairs(redis.call('SMEMBERS', reply)) do
      if instance == ARGV[4] then
        out[#out + 1] = i
      else
        redis.call('PUBLISH', ARGV[3] .. instance, bytes)
      end
    end
    redis.call('DEL', reply)
    -- (No-op when the marker is gone.)
    redis.call('PEXPIRE', marker, ARGV[2])
  end
end
out[1] = stored
return out
