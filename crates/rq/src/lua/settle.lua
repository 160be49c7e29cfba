-- Record the outcome of a claimed job, only if this worker still holds it
-- (a worker presumed dead had its jobs requeued; its late outcome is dropped).
-- ARGV[1] prefix, ARGV[2] worker, ARGV[3] queue, ARGV[4] id, ARGV[5] "<id>:<execution>",
-- ARGV[6] mode (finished | failed | retry | handback), ARGV[7] now (unix s), ARGV[8] now (rq timestamp)
-- finished: ARGV[9] result JSON, ARGV[10] result base64 ('' = None), ARGV[11] result ttl (-1 forever),
--           ARGV[12] started (unix s), ARGV[13] duration s, ARGV[14] failure ttl of dependents
--           whose dependency list is unreadable (-1 forever)
-- failed:   ARGV[9] exc_info (zlib), ARGV[10] exc_string (base64 zlib), ARGV[11] failure ttl,
--           ARGV[12] started, ARGV[13] duration
-- retry:    ARGV[9] exc_info (zlib), ARGV[10] retries_left, ARGV[11] number_of_retries,
--           ARGV[12] run-at unix s or '', ARGV[13] at front '1'/'0'
-- Returns 1 recorded, 0 no longer ours, 2 job hash gone.
--
-- A script error keeps the writes made before it, so everything is read and checked
-- first (arguments, key types, the dependents' dependency lists) and written after;
-- a dependent whose dependency list is unreadable is failed with a clear exc_info
-- instead of breaking its parent's settle.
local prefix, worker, q, id, composite, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local now, iso = tonumber(ARGV[7]), ARGV[8]
local function bad(what) return redis.error_reply('settle: bad argument: ' .. what) end
if not now then return bad('now') end
local function key_ok(key, want)
  local t = redis.call('TYPE', key).ok
  return t == want or t == 'none'
end
local inflight = 'forge:rq:inflight:' .. worker
if not key_ok(inflight, 'hash') then return bad('in-flight hash has the wrong type') end
if redis.call('HGET', inflight, id) ~= q .. '\t' .. composite then return 0 end
local jk = prefix .. ':job:' .. id
local rk = prefix .. ':results:' .. id
local wk = prefix .. ':worker:' .. worker
local qkey = prefix .. ':queue:' .. q
local exec = string.sub(composite, #id + 2)

-- The dependency ids of a dependent: a JSON list of strings, or the single
-- dependency_id; nil when unreadable.
local function dependency_list(raw, single)
  if not raw then
    if single then return {single} end
    return {}
  end
  local ok, v = pcall(cjson.decode, raw)
  if not ok or type(v) ~= 'table' then return nil end
  local count = 0
  for k, x in pairs(v) do
    if type(k) ~= 'number' or type(x) ~= 'string' then return nil end
    count = count + 1
  end
  if count ~= #v then return nil end
  return v
end

-- Read and check everything before the first write.
local ttl, fttl_dep, runat = nil, nil, nil
local release, broken = {}, {}
local depkey = jk .. ':dependents'
if mode == 'finished' then
  ttl, fttl_dep = tonumber(ARGV[11]), tonumber(ARGV[14])
  if not ttl or not fttl_dep then return bad('ttl') end
  if not key_ok(prefix .. ':finished:' .. q, 'zset') then return bad('finished registry has the wrong type') end
  if redis.call('TYPE', depkey).ok == 'set' then
    for _, d in ipairs(redis.call('SMEMBERS', depkey)) do
      local dk = prefix .. ':job:' .. d
      if redis.call('TYPE', dk).ok == 'hash' then
        local h = redis.call('HMGET', dk, 'status', 'origin', 'dependency_ids', 'dependency_id', 'enqueue_at_front')
        local origin = h[2]
        if h[1] == 'deferred' and origin and key_ok(prefix .. ':deferred:' .. origin, 'zset')
          and key_ok(prefix .. ':queue:' .. origin, 'list') and key_ok(prefix .. ':failed:' .. origin, 'zset') then
          local ids = dependency_list(h[3], h[4])
          if not ids then
            broken[#broken + 1] = {d, origin, h[3]}
          else
            local ready = true
            for _, x in ipairs(ids) do
              if x ~= id then
                local xk = prefix .. ':job:' .. x
                if redis.call('TYPE', xk).ok == 'hash' then
                  local st = redis.call('HGET', xk, 'status')
                  if st and st ~= 'finished' then ready = false end
                end
              end
            end
            if ready then release[#release + 1] = {d, origin, h[5]} end
          end
        end
      end
    end
  end
elseif mode == 'failed' then
  ttl = tonumber(ARGV[11])
  if not ttl then return bad('ttl') end
  if not key_ok(prefix .. ':failed:' .. q, 'zset') then return bad('failed registry has the wrong type') end
elseif mode == 'retry' then
  if not tonumber(ARGV[10]) or not tonumber(ARGV[11]) then return bad('retry counters') end
  if ARGV[12] ~= '' then
    runat = tonumber(ARGV[12])
    if not runat then return bad('run-at') end
  end
  if not key_ok(prefix .. ':scheduled:' .. q, 'zset') then return bad('scheduled registry has the wrong type') end
elseif mode ~= 'handback' then
  return bad('mode')
end
if (mode == 'retry' or mode == 'handback') and not key_ok(qkey, 'list') then
  return bad('queue has the wrong type')
end
if not key_ok(prefix .. ':wip:' .. q, 'zset') then return bad('started registry has the wrong type') end

-- Writes.
redis.call('HDEL', inflight, id)
redis.call('ZREM', prefix .. ':wip:' .. q, composite)
if redis.call('TYPE', jk).ok ~= 'hash' then return 2 end
local results_ok = key_ok(rk, 'stream')
if mode == 'finished' then
  redis.call('HSET', jk, 'status', 'finished', 'ended_at', iso, 'result', ARGV[9])
  if results_ok then
    local entry = {'type', '1', 'worker_name', worker, 'execution_id', exec,
      'execution_started_at', ARGV[12], 'execution_ended_at', ARGV[7]}
    if ARGV[10] ~= '' then entry[#entry + 1] = 'return_value'; entry[#entry + 1] = ARGV[10] end
    redis.call('XADD', rk, 'MAXLEN', '~', '10', '*', unpack(entry))
  end
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
  for _, r in ipairs(release) do
    local d, origin = r[1], r[2]
    redis.call('ZREM', prefix .. ':deferred:' .. origin, d)
    redis.call('HSET', prefix .. ':job:' .. d, 'status', 'queued', 'enqueued_at', iso)
    local dq = prefix .. ':queue:' .. origin
    if r[3] == '1' then redis.call('LPUSH', dq, d) else redis.call('RPUSH', dq, d) end
    redis.call('SADD', prefix .. ':queues', dq)
  end
  -- fail dependents whose dependency list cannot be read
  for _, r in ipairs(broken) do
    local d, origin = r[1], r[2]
    local dk = prefix .. ':job:' .. d
    local msg = 'forge_rq.InvalidJob: field "dependency_ids" = ' .. string.format('%q', string.sub(r[3], 1, 64)) ..
      ': not a JSON list of job ids (its dependency ' .. id .. ' finished)'
    redis.call('ZREM', prefix .. ':deferred:' .. origin, d)
    redis.call('HSET', dk, 'status', 'failed', 'ended_at', iso, 'exc_info', msg)
    if fttl_dep < 0 then
      redis.call('PERSIST', dk)
      redis.call('ZADD', prefix .. ':failed:' .. origin, '+inf', d)
    else
      redis.call('EXPIRE', dk, math.max(1, math.ceil(fttl_dep)))
      redis.call('ZADD', prefix .. ':failed:' .. origin, now + fttl_dep, d)
    end
  end
  redis.call('DEL', depkey)
  redis.pcall('HINCRBY', wk, 'successful_job_count', 1)
  redis.pcall('HINCRBYFLOAT', wk, 'total_working_time', ARGV[13])
elseif mode == 'failed' then
  redis.call('HSET', jk, 'status', 'failed', 'ended_at', iso, 'exc_info', ARGV[9])
  if results_ok then
    redis.call('XADD', rk, 'MAXLEN', '~', '10', '*', 'type', '2', 'worker_name', worker,
      'exc_string', ARGV[10], 'execution_id', exec, 'execution_started_at', ARGV[12], 'execution_ended_at', ARGV[7])
  end
  if ttl < 0 then
    redis.call('PERSIST', jk)
    redis.call('ZADD', prefix .. ':failed:' .. q, '+inf', id)
  else
    redis.call('EXPIRE', jk, math.max(1, math.ceil(ttl)))
    redis.call('EXPIRE', rk, math.max(1, math.ceil(ttl)))
    redis.call('ZADD', prefix .. ':failed:' .. q, now + ttl, id)
  end
  redis.pcall('HINCRBY', wk, 'failed_job_count', 1)
  redis.pcall('HINCRBYFLOAT', wk, 'total_working_time', ARGV[13])
elseif mode == 'retry' then
  redis.call('HSET', jk, 'exc_info', ARGV[9], 'retries_left', ARGV[10], 'number_of_retries', ARGV[11], 'ended_at', iso)
  if runat then
    redis.call('HSET', jk, 'status', 'scheduled')
    redis.call('ZADD', prefix .. ':scheduled:' .. q, ARGV[12], id)
  else
    redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', iso)
    if ARGV[13] == '1' then redis.call('LPUSH', qkey, id) else redis.call('RPUSH', qkey, id) end
  end
  redis.call('SADD', prefix .. ':queues', qkey)
  redis.pcall('HINCRBY', wk, 'failed_job_count', 1)
elseif mode == 'handback' then
  redis.call('HSET', jk, 'status', 'queued')
  redis.call('LPUSH', qkey, id)
  redis.call('SADD', prefix .. ':queues', qkey)
end
return 1
