-- Stores a job unless its request id is stored already: idempotent by id.
-- KEYS: back, hi, lo lanes; the queues set; job:<id> (the id's marker, its
-- value the job's fingerprint); result:<id>; reply:<id> (the instances whose
-- callers wait).
-- ARGV: max length, lane (1-3), job, queue name, request id, fingerprint,
-- marker ttl ms, this instance, reply ttl ms, join only ('1'), the consumer
-- group.
-- Returns {'stored'}, {'joined'}, {'done', result}, {'full'}, {'conflict'}
-- or {'missing'} (join only, nothing stored under the id).
local marker = redis.call('GET', KEYS[5])
if marker and marker ~= ARGV[6] then return {'conflict'} end
local result = redis.call('GET', KEYS[6])
if result then return {'done', result} end
if marker then
  redis.call('SADD', KEYS[7], ARGV[8])
  redis.call('PEXPIRE', KEYS[7], ARGV[9])
  return {'joined'}
end
if ARGV[10] == '1' then return {'missing'} end
local n = redis.call('XLEN', KEYS[1]) + redis.call('XLEN', KEYS[2]) + redis.call('XLEN', KEYS[3])
if n >= tonumber(ARGV[1]) then return {'full'} end
-- The queue's first job (or the first after Redis lost its data) makes the
-- three lanes with their group, so that what watches the group from
-- outside (KEDA's lag) sees the job before any dispatcher has read.
-- The queues set (for stats) learns the name then too: a queue with jobs
-- had none at its first.
if n == 0 then
  redis.call('SADD', KEYS[4], ARGV[4])
  if redis.call('EXISTS', KEYS[1], KEYS[2], KEYS[3]) < 3 then
    for i = 1, 3 do
      if redis.call('EXISTS', KEYS[i]) == 0 then
        redis.call('XGROUP', 'CREATE', KEYS[i], ARGV[11], '0', 'MKSTREAM')
      end
    end
  end
end
redis.call('XADD', KEYS[tonumber(ARGV[2])], '*', 'job', ARGV[3], 'rid', ARGV[5])
redis.call('SET', KEYS[5], ARGV[6], 'PX', ARGV[7])
redis.call('SADD', KEYS[7], ARGV[8])
redis.call('PEXPIRE', KEYS[7], ARGV[9])
return {'stored'}
