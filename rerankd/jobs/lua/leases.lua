-- The lease index {prefix}:leases, a sorted set of running job ids scored by lease_until, read by
-- the reaper (rerankd/jobs/reaper.py, reap.lua).  claim and renew set a job's score, finish and
-- terminate remove it (until_ nil).
local function lease_index(key, until_)
  local p, id = string.match(key, '^(.*):job:([^:]+)$')
  if until_ then redis.call('ZADD', p .. ':leases', until_, id) else redis.call('ZREM', p .. ':leases', id) end
end
