-- The asynchronous queues' operations on Redis, one script so that each runs
-- atomically and they share their helpers. KEYS[1] is the queue's key prefix,
-- KEYS[2] its sink's (for take with backpressure and complete). ARGV[1] names
-- the operation; the rest are its arguments.
--
-- Per queue, under the prefix P:
--   P seq          counter of indexes
--   P d / P m      hashes index -> data / index -> JSON meta {r: request id, t: tags, p: priority, n: deliveries}
--   P all          zset of every index
--   P r0 / P r1    zsets of ready indexes, high / normal priority
--   P h            zset of held indexes, scored by the hold's end (unix ms)
--   P o            hash index -> holder;  P c:<holder>  set of its indexes;  P cs  set of holders
--   P id           hash request id -> index
--   P neg / P negq / P negn   negative commits: index -> JSON, their order, their count
--   P w            hash watching consumer -> its claim's end (unix ms)
local P = KEYS[1]
local S = KEYS[2]
local op = ARGV[1]

local function lane_of(meta)
  if tonumber(meta.p) > 0 then return 'r0' end
  return 'r1'
end

local function unhold(p, i)
  local o = redis.call('HGET', p .. 'o', i)
  if o then
    redis.call('SREM', p .. 'c:' .. o, i)
    if redis.call('SCARD', p .. 'c:' .. o) == 0 then redis.call('SREM', p .. 'cs', o) end
    redis.call('HDEL', p .. 'o', i)
  end
  redis.call('ZREM', p .. 'h', i)
end

local function delete(p, i)
  local m = redis.call('HGET', p .. 'm', i)
  if not m then return 0 end
  local meta = cjson.decode(m)
  unhold(p, i)
  redis.call('HDEL', p .. 'd', i)
  redis.call('HDEL', p .. 'm', i)
  redis.call('ZREM', p .. 'all', i)
  redis.call('ZREM', p .. 'r0', i)
  redis.call('ZREM', p .. 'r1', i)
  if meta.r ~= '' and redis.call('HGET', p .. 'id', meta.r) == tostring(i) then
    redis.call('HDEL', p .. 'id', meta.r)
  end
  return 1
end

local function oldest_ready(p)
  local a = redis.call('ZRANGE', p .. 'r0', 0, 0)[1]
  local b = redis.call('ZRANGE', p .. 'r1', 0, 0)[1]
  if a and b then
    if tonumber(a) < tonumber(b) then return a end
    return b
  end
  return a or b
end

-- Stores an item; its index, or -1 when the queue is full.
local function put(p, rid, tags, prio, data, maxlen, evict)
  while redis.call('HLEN', p .. 'd') >= maxlen do
    local victim = evict and oldest_ready(p)
    if not victim then return -1 end
    delete(p, victim)
  end
  local i = redis.call('INCR', p .. 'seq')
  redis.call('HSET', p .. 'd', i, data)
  redis.call('HSET', p .. 'm', i, cjson.encode({r = rid, t = tags, p = prio, n = 0}))
  redis.call('ZADD', p .. 'all', i, i)
  if prio > 0 then
    redis.call('ZADD', p .. 'r0', i, i)
  else
    redis.call('ZADD', p .. 'r1', i, i)
  end
  if rid ~= '' then redis.call('HSET', p .. 'id', rid, i) end
  return i
end

local function matches(meta, filter)
  for k, v in pairs(filter) do
    if type(meta.t) ~= 'table' or meta.t[k] ~= v then return false end
  end
  return true
end

local function has_filter(filter)
  return next(filter) ~= nil
end

-- Holds whose holder stopped renewing them are ready again.
local function reclaim(p, now)
  local expired = redis.call('ZRANGEBYSCORE', p .. 'h', '-inf', now, 'LIMIT', 0, 1000)
  for _, i in ipairs(expired) do
    unhold(p, i)
    local m = redis.call('HGET', p .. 'm', i)
    if m then
      local meta = cjson.decode(m)
      redis.call('ZADD', p .. lane_of(meta), i, i)
    end
  end
end

-- Visits indexes of zset `key` with a score from `from` on, in order (or in
-- reverse), until `visit` returns false; at most `budget` are looked at.
local function scan(key, from, reverse, budget, visit)
  local offset = 0
  while budget > 0 do
    local chunk
    if reverse then
      chunk = redis.call('ZREVRANGEBYSCORE', key, '+inf', from, 'LIMIT', offset, 100)
    else
      chunk = redis.call('ZRANGEBYSCORE', key, from, '+inf', 'LIMIT', offset, 100)
    end
    if #chunk == 0 then return end
    for _, i in ipairs(chunk) do
      budget = budget - 1
      if not visit(i) then return end
    end
    offset = offset + #chunk
  end
end

local function emit(out, p, i, meta)
  out[#out + 1] = i
  out[#out + 1] = cjson.encode(meta)
  out[#out + 1] = redis.call('HGET', p .. 'd', i)
end

if op == 'put' then
  -- rid, tags JSON, priority, data, max length, evict
  return put(P, ARGV[2], cjson.decode(ARGV[3]), tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6]), ARGV[7] == '1')

elseif op == 'get' then
  -- mode (from|newest|rid), from or rid, length, filter JSON, delete, max bytes
  local mode, length, filter, del = ARGV[2], tonumber(ARGV[4]), cjson.decode(ARGV[5]), ARGV[6] == '1'
  local max_bytes = tonumber(ARGV[7])
  local picked = {}
  local function consider(i)
    local m = redis.call('HGET', P .. 'm', i)
    if m then
      local meta = cjson.decode(m)
      if matches(meta, filter) then picked[#picked + 1] = {i, meta} end
    end
    return #picked < length
  end
  if mode == 'rid' then
    local i = redis.call('HGET', P .. 'id', ARGV[3])
    if i then consider(i) end
  elseif mode == 'newest' then
    scan(P .. 'all', '-inf', true, 10000, consider)
  else
    scan(P .. 'all', ARGV[3], false, 10000, consider)
  end
  local out, bytes = {}, 0
  for _, e in ipairs(picked) do
    local size = redis.call('HSTRLEN', P .. 'd', e[1])
    if #out > 0 and bytes + size > max_bytes then break end
    bytes = bytes + size
    emit(out, P, e[1], e[2])
    if del then delete(P, e[1]) end
  end
  return out

elseif op == 'take' then
  -- consumer, from, max, filter JSON, auto commit, hold until, now, sink room, sink max length
  local consumer, from, max = ARGV[2], ARGV[3], tonumber(ARGV[4])
  local filter, auto = cjson.decode(ARGV[5]), ARGV[6] == '1'
  local until_ms, now = ARGV[7], ARGV[8]
  reclaim(P, now)
  if ARGV[9] == '1' then
    local room = tonumber(ARGV[10]) - redis.call('HLEN', S .. 'd') - redis.call('ZCARD', P .. 'h')
    if room < max then max = room end
  end
  local out = {}
  if max <= 0 then return out end
  local taken = 0
  for _, lane in ipairs({'r0', 'r1'}) do
    if taken >= max then break end
    local chosen = {}
    if has_filter(filter) then
      scan(P .. lane, from, false, 10000, function(i)
        local meta = cjson.decode(redis.call('HGET', P .. 'm', i))
        if matches(meta, filter) then chosen[#chosen + 1] = i end
        return taken + #chosen < max
      end)
    else
      chosen = redis.call('ZRANGEBYSCORE', P .. lane, from, '+inf', 'LIMIT', 0, max - taken)
    end
    for _, i in ipairs(chosen) do
      local meta = cjson.decode(redis.call('HGET', P .. 'm', i))
      meta.n = meta.n + 1
      emit(out, P, i, meta)
      if auto then
        delete(P, i)
      else
        redis.call('HSET', P .. 'm', i, cjson.encode(meta))
        redis.call('ZREM', P .. lane, i)
        redis.call('ZADD', P .. 'h', until_ms, i)
        redis.call('HSET', P .. 'o', i, consumer)
        redis.call('SADD', P .. 'c:' .. consumer, i)
        redis.call('SADD', P .. 'cs', consumer)
      end
      taken = taken + 1
    end
  end
  return out

elseif op == 'remove' then
  local n = 0
  for k = 2, #ARGV do n = n + delete(P, ARGV[k]) end
  return n

elseif op == 'reject' then
  -- index, code, reason
  local i = ARGV[2]
  if delete(P, i) == 0 then return 0 end
  redis.call('HSET', P .. 'neg', i, cjson.encode({code = tonumber(ARGV[3]), reason = ARGV[4]}))
  redis.call('RPUSH', P .. 'negq', i)
  redis.call('INCR', P .. 'negn')
  while redis.call('LLEN', P .. 'negq') > 1000 do
    redis.call('HDEL', P .. 'neg', redis.call('LPOP', P .. 'negq'))
  end
  return 1

elseif op == 'truncate' then
  local n = 0
  while true do
    local chunk = redis.call('ZRANGEBYSCORE', P .. 'all', '-inf', '(' .. ARGV[2], 'LIMIT', 0, 1000)
    if #chunk == 0 then break end
    for _, i in ipairs(chunk) do n = n + delete(P, i) end
  end
  return n

elseif op == 'release' then
  local mine = redis.call('SMEMBERS', P .. 'c:' .. ARGV[2])
  for _, i in ipairs(mine) do
    unhold(P, i)
    local m = redis.call('HGET', P .. 'm', i)
    if m then redis.call('ZADD', P .. lane_of(cjson.decode(m)), i, i) end
  end
  redis.call('DEL', P .. 'c:' .. ARGV[2])
  redis.call('SREM', P .. 'cs', ARGV[2])
  return #mine

elseif op == 'held' then
  return redis.call('SCARD', P .. 'c:' .. ARGV[2])

elseif op == 'renew' then
  -- hold until, then consumers; also renews their watch claims
  local n = 0
  for k = 3, #ARGV do
    for _, i in ipairs(redis.call('SMEMBERS', P .. 'c:' .. ARGV[k])) do
      n = n + redis.call('ZADD', P .. 'h', 'XX', 'CH', ARGV[2], i)
    end
    if redis.call('HEXISTS', P .. 'w', ARGV[k]) == 1 then
      redis.call('HSET', P .. 'w', ARGV[k], ARGV[2])
    end
  end
  return n

elseif op == 'complete' then
  -- count, then per item: index, has result, rid, tags JSON, data
  local written = 0
  local k = 3
  for _ = 1, tonumber(ARGV[2]) do
    if delete(P, ARGV[k]) == 1 and ARGV[k + 1] == '1' then
      put(S, ARGV[k + 2], cjson.decode(ARGV[k + 3]), 0, ARGV[k + 4], 1e15, false)
      written = written + 1
    end
    k = k + 5
  end
  return written

elseif op == 'stats' then
  -- now
  local first = redis.call('ZRANGE', P .. 'all', 0, 0)[1] or ''
  local last = redis.call('ZRANGE', P .. 'all', -1, -1)[1] or ''
  local consumers = {}
  local count = 0
  for _, c in ipairs(redis.call('SMEMBERS', P .. 'cs')) do
    if not consumers[c] then consumers[c] = true; count = count + 1 end
  end
  local w = redis.call('HGETALL', P .. 'w')
  for k = 1, #w, 2 do
    if tonumber(w[k + 1]) > tonumber(ARGV[2]) and not consumers[w[k]] then
      consumers[w[k]] = true; count = count + 1
    end
  end
  local last_neg = redis.call('LINDEX', P .. 'negq', -1)
  local neg = ''
  if last_neg then neg = redis.call('HGET', P .. 'neg', last_neg) or '' end
  return {redis.call('HLEN', P .. 'd'), first, last, redis.call('ZCARD', P .. 'h'), count,
          tonumber(redis.call('GET', P .. 'negn') or '0'), last_neg or '', neg}

elseif op == 'search' then
  local i = ARGV[2]
  local neg = redis.call('HGET', P .. 'neg', i)
  if neg then return {'rejected', neg} end
  local m = redis.call('HGET', P .. 'm', i)
  if not m then return {'unknown'} end
  local o = redis.call('HGET', P .. 'o', i)
  if o then return {'held', o} end
  local ahead
  if lane_of(cjson.decode(m)) == 'r0' then
    ahead = redis.call('ZCOUNT', P .. 'r0', '-inf', '(' .. i)
  else
    ahead = redis.call('ZCARD', P .. 'r0') + redis.call('ZCOUNT', P .. 'r1', '-inf', '(' .. i)
  end
  return {'ready', tostring(ahead)}

elseif op == 'claim_watch' then
  -- consumer, until, now
  local w = redis.call('HGET', P .. 'w', ARGV[2])
  if w and tonumber(w) > tonumber(ARGV[4]) then return 0 end
  redis.call('HSET', P .. 'w', ARGV[2], ARGV[3])
  return 1

elseif op == 'end_watch' then
  return redis.call('HDEL', P .. 'w', ARGV[2])
end
return redis.error_reply('unknown operation ' .. tostring(op))
