-- Stores a job if the queue has room; returns the entry id or nil when full.
local n = redis.call('XLEN', KEYS[1]) + redis.call('XLEN', KEYS[2])
if n >= tonumber(ARGV[1]) then return false end
redis.call('SADD', KEYS[3], ARGV[4])
return redis.call('XADD', KEYS[tonumber(ARGV[2])], '*', 'job', ARGV[3])
