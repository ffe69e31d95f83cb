-- include: now
-- Whether the worker holding a running job's lease is alive: its heartbeat hash
-- {prefix}:worker:{id} (rerankd/jobs/workers.py: written every 2 s, expiring after 7 s) exists.
-- Returns how long a redelivered message should wait before it claims again (until the lease or
-- the heartbeat runs out, whichever comes first), or nil when the holder is lost (kill -9, host
-- down: its heartbeat is gone and it claimed the job over HEARTBEAT_S ago, so it had time to write
-- one): the claim then takes the job over at once instead of waiting for the lease.  Fencing
-- stays: the old attempt's renew and finish are refused (they check the attempt).
local HEARTBEAT_S = 7
local function holder_wait(jk, lease)
  local f = redis.call('HMGET', jk, 'worker', 'started_at')
  if not f[1] then return lease - now end
  local p = string.match(jk, '^(.*):job:[^:]+$')
  local ttl = tonumber(redis.call('PTTL', p .. ':worker:' .. f[1]))
  if ttl == -1 then return lease - now end
  if ttl >= 0 then return math.min(lease - now, ttl / 1000 + 0.05) end
  local young = tonumber(f[2] or '0') + HEARTBEAT_S - now
  if young > 0 then return math.min(lease - now, young + 0.05) end
  return nil
end
