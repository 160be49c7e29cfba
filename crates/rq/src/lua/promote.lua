-- Move due scheduled jobs to their queues (no separate scheduler process).
-- ARGV[1] prefix, ARGV[2] now (unix s), ARGV[3] now (rq timestamp), ARGV[4] limit per queue,
-- ARGV[5..] queue names. Returns {promoted count, next due time as string or ''}.
local prefix = ARGV[1]
local n = 0
for qi = 5, #ARGV do
  local q = ARGV[qi]
  local sk = prefix .. ':scheduled:' .. q
  local ids = redis.call('ZRANGEBYSCORE', sk, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[4]))
  for _, id in ipairs(ids) do
    redis.call('ZREM', sk, id)
    local jk = prefix .. ':job:' .. id
    if redis.call('TYPE', jk).ok == 'hash' then
      local front = redis.call('HGET', jk, 'enqueue_at_front')
      redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', ARGV[3])
      local qk = prefix .. ':queue:' .. q
      if front == '1' then redis.call('LPUSH', qk, id) else redis.call('RPUSH', qk, id) end
      redis.call('SADD', prefix .. ':queues', qk)
      n = n + 1
    end
  end
end
local nxt = nil
for qi = 5, #ARGV do
  local r = redis.call('ZRANGE', prefix .. ':scheduled:' .. ARGV[qi], 0, 0, 'WITHSCORES')
  if r[2] then
    local s = tonumber(r[2])
    if s and (not nxt or s < nxt) then nxt = s end
  end
end
if nxt then return {n, string.format('%.6f', nxt)} end
return {n, ''}
