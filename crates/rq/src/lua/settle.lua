-- Record the outcome of a claimed job, only if this worker still holds it
-- (a worker presumed dead had its jobs requeued; its late outcome is dropped).
-- ARGV[1] prefix, ARGV[2] worker, ARGV[3] queue, ARGV[4] id, ARGV[5] "<id>:<execution>",
-- ARGV[6] mode (finished | failed | retry | handback), ARGV[7] now (unix s), ARGV[8] now (rq timestamp)
-- finished: ARGV[9] result JSON, ARGV[10] result base64 ('' = None), ARGV[11] result ttl (-1 forever),
--           ARGV[12] started (unix s), ARGV[13] duration s
-- failed:   ARGV[9] exc_info (zlib), ARGV[10] exc_string (base64 zlib), ARGV[11] failure ttl,
--           ARGV[12] started, ARGV[13] duration
-- retry:    ARGV[9] exc_info (zlib), ARGV[10] retries_left, ARGV[11] number_of_retries,
--           ARGV[12] run-at unix s or '', ARGV[13] at front '1'/'0'
-- Returns 1 recorded, 0 no longer ours, 2 job hash gone.
local prefix, worker, q, id, composite, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local now, iso = tonumber(ARGV[7]), ARGV[8]
local inflight = 'forge:rq:inflight:' .. worker
if redis.call('HGET', inflight, id) ~= q .. '\t' .. composite then return 0 end
redis.call('HDEL', inflight, id)
redis.call('ZREM', prefix .. ':wip:' .. q, composite)
local jk = prefix .. ':job:' .. id
if redis.call('EXISTS', jk) == 0 then return 2 end
local wk = prefix .. ':worker:' .. worker
local qkey = prefix .. ':queue:' .. q
local exec = string.sub(composite, #id + 2)
if mode == 'finished' then
  redis.call('HSET', jk, 'status', 'finished', 'ended_at', iso, 'result', ARGV[9])
  local rk = prefix .. ':results:' .. id
  local entry = {'type', '1', 'worker_name', worker, 'execution_id', exec,
    'execution_started_at', ARGV[12], 'execution_ended_at', ARGV[7]}
  if ARGV[10] ~= '' then entry[#entry + 1] = 'return_value'; entry[#entry + 1] = ARGV[10] end
  redis.call('XADD', rk, 'MAXLEN', '~', '10', '*', unpack(entry))
  local ttl = tonumber(ARGV[11])
  if ttl == 0 then
    redis.call('DEL', jk, rk)
  elseif ttl < 0 then
    redis.call('PERSIST', jk)
    redis.call('PERSIST', rk)
    redis.call('ZADD', prefix .. ':finished:' .. q, '+inf', id)
  else
    redis.call('EXPIRE', jk, math.ceil(ttl))
    redis.call('EXPIRE', rk, math.ceil(ttl))
    redis.call('ZADD', prefix .. ':finished:' .. q, now + ttl, id)
  end
  -- release dependents whose dependencies have all finished
  local depkey = jk .. ':dependents'
  for _, d in ipairs(redis.call('SMEMBERS', depkey)) do
    local dk = prefix .. ':job:' .. d
    local h = redis.call('HMGET', dk, 'status', 'origin', 'dependency_ids', 'dependency_id', 'enqueue_at_front')
    if h[1] == 'deferred' and h[2] then
      local ids = {}
      if h[3] then ids = cjson.decode(h[3]) elseif h[4] then ids = {h[4]} end
      local ready = true
      for _, x in ipairs(ids) do
        local st = redis.call('HGET', prefix .. ':job:' .. x, 'status')
        if st and st ~= 'finished' then ready = false end
      end
      if ready then
        redis.call('ZREM', prefix .. ':deferred:' .. h[2], d)
        redis.call('HSET', dk, 'status', 'queued', 'enqueued_at', iso)
        local dq = prefix .. ':queue:' .. h[2]
        if h[5] == '1' then redis.call('LPUSH', dq, d) else redis.call('RPUSH', dq, d) end
        redis.call('SADD', prefix .. ':queues', dq)
      end
    end
  end
  redis.call('DEL', depkey)
  redis.call('HINCRBY', wk, 'successful_job_count', 1)
  redis.call('HINCRBYFLOAT', wk, 'total_working_time', ARGV[13])
elseif mode == 'failed' then
  redis.call('HSET', jk, 'status', 'failed', 'ended_at', iso, 'exc_info', ARGV[9])
  local rk = prefix .. ':results:' .. id
  redis.call('XADD', rk, 'MAXLEN', '~', '10', '*', 'type', '2', 'worker_name', worker,
    'exc_string', ARGV[10], 'execution_id', exec, 'execution_started_at', ARGV[12], 'execution_ended_at', ARGV[7])
  local ttl = tonumber(ARGV[11])
  if ttl < 0 then
    redis.call('PERSIST', jk)
    redis.call('ZADD', prefix .. ':failed:' .. q, '+inf', id)
  else
    redis.call('EXPIRE', jk, math.max(1, math.ceil(ttl)))
    redis.call('EXPIRE', rk, math.max(1, math.ceil(ttl)))
    redis.call('ZADD', prefix .. ':failed:' .. q, now + ttl, id)
  end
  redis.call('HINCRBY', wk, 'failed_job_count', 1)
  redis.call('HINCRBYFLOAT', wk, 'total_working_time', ARGV[13])
elseif mode == 'retry' then
  redis.call('HSET', jk, 'exc_info', ARGV[9], 'retries_left', ARGV[10], 'number_of_retries', ARGV[11], 'ended_at', iso)
  if ARGV[12] ~= '' then
    redis.call('HSET', jk, 'status', 'scheduled')
    redis.call('ZADD', prefix .. ':scheduled:' .. q, ARGV[12], id)
  else
    redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', iso)
    if ARGV[13] == '1' then redis.call('LPUSH', qkey, id) else redis.call('RPUSH', qkey, id) end
  end
  redis.call('SADD', prefix .. ':queues', qkey)
  redis.call('HINCRBY', wk, 'failed_job_count', 1)
elseif mode == 'handback' then
  redis.call('HSET', jk, 'status', 'queued')
  redis.call('LPUSH', qkey, id)
  redis.call('SADD', prefix .. ':queues', qkey)
end
return 1
