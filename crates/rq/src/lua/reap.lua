-- Requeue the in-flight jobs of workers whose liveness lease expired.
-- ARGV[1] prefix, ARGV[2] now (unix s), ARGV[3] now (rq timestamp), ARGV[4] max orphanings,
-- ARGV[5] failure ttl s (-1 forever), ARGV[6] the calling worker (never reaped).
-- Returns { {dead worker, ...}, {queue, id, ...} requeued, {queue, id, ...} failed as poison }.
-- Nothing a job hash holds may make a command fail after the first write (a script
-- error keeps earlier writes and would stop every later reap): the orphan counter is
-- read and checked instead of HINCRBY'd, a job key that is not a hash counts as gone.
local prefix, now, iso = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local maxc, fttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local dead, requeued, poisoned = {}, {}, {}
for _, w in ipairs(redis.call('SMEMBERS', 'forge:rq:inflight-workers')) do
  if w ~= ARGV[6] and redis.call('EXISTS', 'forge:rq:alive:' .. w) == 0 then
    local inflight = 'forge:rq:inflight:' .. w
    local h = redis.call('HGETALL', inflight)
    for i = 1, #h, 2 do
      local id = h[i]
      local sep = string.find(h[i + 1], '\t', 1, true)
      if sep then
        local q = string.sub(h[i + 1], 1, sep - 1)
        local composite = string.sub(h[i + 1], sep + 1)
        redis.call('ZREM', prefix .. ':wip:' .. q, composite)
        local jk = prefix .. ':job:' .. id
        if redis.call('TYPE', jk).ok == 'hash' then
          -- An unreadable counter (HINCRBY would fail mid-script) starts again.
          local c = tonumber(redis.call('HGET', jk, 'forge_orphaned') or '0')
          if c == nil or c ~= c or c < 0 or c > 1e9 or c ~= math.floor(c) then c = 0 end
          local n = c + 1
          redis.call('HSET', jk, 'forge_orphaned', string.format('%d', n))
          if n > maxc then
            local msg = 'forge_rq.PoisonJob: the worker running this job died ' .. n ..
              ' times (last: ' .. w .. '); not requeued again'
            redis.call('HSET', jk, 'status', 'failed', 'ended_at', iso, 'exc_info', msg)
            if fttl < 0 then
              redis.call('ZADD', prefix .. ':failed:' .. q, '+inf', id)
            else
              redis.call('ZADD', prefix .. ':failed:' .. q, now + fttl, id)
              redis.call('EXPIRE', jk, math.max(1, fttl))
            end
            poisoned[#poisoned + 1] = q
            poisoned[#poisoned + 1] = id
          else
            redis.call('HSET', jk, 'status', 'queued')
            redis.call('LPUSH', prefix .. ':queue:' .. q, id)
            redis.call('SADD', prefix .. ':queues', prefix .. ':queue:' .. q)
            requeued[#requeued + 1] = q
            requeued[#requeued + 1] = id
          end
        end
      end
    end
    redis.call('DEL', inflight)
    redis.call('SREM', 'forge:rq:inflight-workers', w)
    local wk = prefix .. ':worker:' .. w
    local qs = redis.call('HGET', wk, 'queues')
    if qs then
      for q in string.gmatch(qs, '[^,]+') do redis.call('SREM', prefix .. ':workers:' .. q, wk) end
    end
    redis.call('SREM', prefix .. ':workers', wk)
    redis.call('DEL', wk)
    dead[#dead + 1] = w
  end
end
return {dead, requeued, poisoned}
