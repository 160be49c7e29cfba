-- Claim up to N jobs atomically into a worker's in-flight hash, scanning the
-- queues in priority order. A popped id is never "in thin air": in the same
-- script it lands in forge:rq:inflight:<worker> and rq:wip:<q>.
-- ARGV[1] prefix, ARGV[2] worker name, ARGV[3] max jobs, ARGV[4] now (unix s),
-- ARGV[5] now (rq timestamp), ARGV[6] default timeout s, ARGV[7] registry grace s,
-- ARGV[8] execution id base, ARGV[9..] queue names.
-- Returns { {queue, id, "<id>:<execution>", {hash field, value, ...}}, ... }.
local prefix, worker = ARGV[1], ARGV[2]
local max = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
local iso = ARGV[5]
local deftimeout = tonumber(ARGV[6])
local grace = tonumber(ARGV[7])
local base = ARGV[8]
local inflight = 'forge:rq:inflight:' .. worker
local out = {}
local n = 0
for qi = 9, #ARGV do
  local q = ARGV[qi]
  local qkey = prefix .. ':queue:' .. q
  while n < max do
    local id = redis.call('LPOP', qkey)
    if not id then break end
    local jk = prefix .. ':job:' .. id
    local h = redis.call('HGETALL', jk)
    if #h > 0 then
      local status, timeout = nil, nil
      for i = 1, #h, 2 do
        if h[i] == 'status' then status = h[i + 1]
        elseif h[i] == 'timeout' then timeout = tonumber(h[i + 1]) end
      end
      if status ~= 'canceled' then
        n = n + 1
        local composite = id .. ':' .. base .. '-' .. n
        local t = timeout or deftimeout
        if t < 0 then t = 31536000 end
        redis.call('ZADD', prefix .. ':wip:' .. q, now + t + grace, composite)
        redis.call('HSET', jk, 'status', 'started', 'worker_name', worker, 'started_at', iso, 'last_heartbeat', iso)
        redis.call('HSET', inflight, id, q .. '\t' .. composite)
        out[#out + 1] = {q, id, composite, h}
      end
    end
  end
end
if n > 0 then redis.call('SADD', 'forge:rq:inflight-workers', worker) end
return out
