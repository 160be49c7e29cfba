-- Enqueue one job atomically (python-rq layout).
-- KEYS[1] job hash, KEYS[2] queue list, KEYS[3] rq:queues, KEYS[4] scheduled zset, KEYS[5] deferred zset
-- ARGV[1] prefix, ARGV[2] job id, ARGV[3] unique ('1'/'0'), ARGV[4] at_front ('1'/'0'),
-- ARGV[5] run-at unix seconds or '', ARGV[6] number of dependencies, then the dependency ids,
-- then field/value pairs of the job hash.
-- Returns 0 duplicate, 1 queued, 2 scheduled, 3 deferred.
local prefix, id = ARGV[1], ARGV[2]
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local ndeps = tonumber(ARGV[6])
if not ndeps then return redis.error_reply('enqueue: bad dependency count') end
-- Read before the first write (a script error keeps earlier writes): a
-- dependency key that is not a job hash counts as a missing dependency.
local pending = {}
for i = 1, ndeps do
  local dep = ARGV[6 + i]
  local dk = prefix .. ':job:' .. dep
  if redis.call('TYPE', dk).ok == 'hash' then
    local st = redis.call('HGET', dk, 'status')
    if st and st ~= 'finished' then pending[#pending + 1] = dep end
  end
end
local fields = {}
for i = 7 + ndeps, #ARGV do fields[#fields + 1] = ARGV[i] end
if #fields > 0 then redis.call('HSET', KEYS[1], unpack(fields)) end
redis.call('SADD', KEYS[3], KEYS[2])
if #pending > 0 then
  redis.call('HSET', KEYS[1], 'status', 'deferred')
  for _, dep in ipairs(pending) do
    redis.call('SADD', prefix .. ':job:' .. dep .. ':dependents', id)
  end
  redis.call('ZADD', KEYS[5], '+inf', id)
  return 3
end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'status', 'scheduled')
  redis.call('ZADD', KEYS[4], ARGV[5], id)
  return 2
end
redis.call('HSET', KEYS[1], 'status', 'queued')
if ARGV[4] == '1' then
  redis.call('LPUSH', KEYS[2], id)
else
  redis.call('RPUSH', KEYS[2], id)
end
return 1
