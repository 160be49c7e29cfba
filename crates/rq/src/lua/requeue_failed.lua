-- Move failed jobs back to their queue, with fresh retry/orphan counters.
-- KEYS[1] failed zset, KEYS[2] queue list. ARGV[1] prefix, ARGV[2] now (rq timestamp),
-- ARGV[3..] job ids ('*' = all). Returns the number requeued.
local prefix = ARGV[1]
local ids = {}
if ARGV[3] == '*' then
  ids = redis.call('ZRANGE', KEYS[1], 0, -1)
else
  for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local n = 0
for _, id in ipairs(ids) do
  if redis.call('ZREM', KEYS[1], id) == 1 then
    local jk = prefix .. ':job:' .. id
    if redis.call('TYPE', jk).ok == 'hash' then
      redis.call('PERSIST', jk)
      redis.call('HDEL', jk, 'forge_orphaned', 'ended_at')
      redis.call('HSET', jk, 'status', 'queued', 'enqueued_at', ARGV[2])
      redis.call('RPUSH', KEYS[2], id)
      n = n + 1
    end
  end
end
if n > 0 then redis.call('SADD', prefix .. ':queues', KEYS[2]) end
return n
