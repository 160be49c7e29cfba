-- Empty a queue like python-rq's Queue.empty: delete each queued job and the list.
-- KEYS[1] queue list. ARGV[1] prefix. Returns the number of jobs removed.
local prefix = ARGV[1]
local n = 0
while true do
  local id = redis.call('LPOP', KEYS[1])
  if not id then break end
  redis.call('DEL', prefix .. ':job:' .. id, prefix .. ':job:' .. id .. ':dependents', prefix .. ':results:' .. id)
  n = n + 1
end
return n
