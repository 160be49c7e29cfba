-- Claim up to N jobs atomically into a worker's in-flight hash, scanning the
-- queues in priority order. A popped id is never "in thin air": in the same
-- script it lands in forge:rq:inflight:<worker> and rq:wip:<q>.
-- ARGV[1] prefix, ARGV[2] worker name, ARGV[3] max jobs, ARGV[4] now (unix s),
-- ARGV[5] now (rq timestamp), ARGV[6] default timeout s, ARGV[7] registry grace s,
-- ARGV[8] execution id base, ARGV[9] largest field returned (bytes), ARGV[10..] queue names.
-- Returns { {queue, id, "<id>:<execution>", {hash field, value, ...}}, ... } with the
-- fields the worker reads; a field longer than ARGV[9] is left out and named in
-- forge_oversized ("<field> <bytes>") so the worker fails the job without loading it.
--
-- A script error keeps the writes made before it (a popped job would be lost and
-- its batch-mates left started), so nothing a job hash holds may make a command
-- below fail: arguments and key types are checked before the first write, the
-- timeout is read defensively (nan, inf, 1e300 and junk give the default score;
-- the worker fails such jobs), and a job key that is not a hash is skipped like a
-- missing job.
local prefix, worker = ARGV[1], ARGV[2]
local max = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local iso = ARGV[5]
local deftimeout = tonumber(ARGV[6])
local grace = tonumber(ARGV[7])
local base = ARGV[8]
local maxfield = tonumber(ARGV[9])
if not (max and now and deftimeout and grace and maxfield) then
  return redis.error_reply('claim: bad arguments')
end
local YEAR = 31536000
local FIELDS = {'data', 'status', 'timeout', 'result_ttl', 'failure_ttl', 'retries_left',
  'number_of_retries', 'retry_intervals', 'forge_retry_intervals_ms', 'forge_backoff',
  'enqueue_at_front_on_retry', 'enqueued_at'}
local UNITS = {s = 1, m = 60, h = 3600, d = 86400}

local function key_ok(key, want)
  local t = redis.call('TYPE', key).ok
  return t == want or t == 'none'
end

-- Seconds the job may run, for its started-registry score: always finite.
local function timeout_secs(raw)
  if not raw or raw == '' then return deftimeout end
  local t = tonumber(raw)
  if t == nil then
    local n, unit = string.match(raw, '^%s*(-?%d+)([smhdSMHD])%s*$')
    if n then t = tonumber(n) * UNITS[string.lower(unit)] end
  end
  if t == nil or t ~= t or t == math.huge or t == -math.huge then return deftimeout end
  if t < 0 then return YEAR end
  if t == 0 or t > YEAR then return deftimeout end
  return t
end

local inflight = 'forge:rq:inflight:' .. worker
if not key_ok(inflight, 'hash') or not key_ok('forge:rq:inflight-workers', 'set') then
  return redis.error_reply('claim: ' .. inflight .. ' or forge:rq:inflight-workers has the wrong type')
end
for qi = 10, #ARGV do
  local q = ARGV[qi]
  if not key_ok(prefix .. ':queue:' .. q, 'list') or not key_ok(prefix .. ':wip:' .. q, 'zset') then
    return redis.error_reply('claim: a key of queue ' .. q .. ' has the wrong type')
  end
end

local out = {}
local n = 0
for qi = 10, #ARGV do
  local q = ARGV[qi]
  local qkey = prefix .. ':queue:' .. q
  while n < max do
    local id = redis.call('LPOP', qkey)
    if not id then break end
    local jk = prefix .. ':job:' .. id
    if redis.call('TYPE', jk).ok == 'hash' then
      local h, status, timeout = {}, nil, nil
      for _, f in ipairs(FIELDS) do
        local len = redis.call('HSTRLEN', jk, f)
        if len > maxfield then
          h[#h + 1] = 'forge_oversized'
          h[#h + 1] = f .. ' ' .. len
        elseif len > 0 then
          local v = redis.call('HGET', jk, f)
          h[#h + 1] = f
          h[#h + 1] = v
          if f == 'status' then status = v elseif f == 'timeout' then timeout = v end
        end
      end
      if status ~= 'canceled' then
        n = n + 1
        local composite = id .. ':' .. base .. '-' .. n
        redis.call('ZADD', prefix .. ':wip:' .. q, now + timeout_secs(timeout) + grace, composite)
        redis.call('HSET', jk, 'status', 'started', 'worker_name', worker, 'started_at', iso, 'last_heartbeat', iso)
        redis.call('HSET', inflight, id, q .. '\t' .. composite)
        out[#out + 1] = {q, id, composite, h}
      end
    end
  end
end
if n > 0 then redis.call('SADD', 'forge:rq:inflight-workers', worker) end
return out
