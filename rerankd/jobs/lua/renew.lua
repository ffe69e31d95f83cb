-- include: now fmt leases
-- KEYS: jobs ; ARGV: worker, lease_s, attempt per job.  Per job: -1 lost, 0 ok, 1 cancel requested
local out = {}
for i, key in ipairs(KEYS) do
  local f = redis.call('HMGET', key, 'status', 'worker', 'attempts', 'cancel_requested')
  if f[1] ~= 'running' or f[2] ~= ARGV[1] or f[3] ~= ARGV[2 + i] then
    out[i] = -1
  else
    redis.call('HSET', key, 'lease_until', fmt(now + tonumber(ARGV[2])))
    lease_index(key, now + tonumber(ARGV[2]))
    if f[4] == '1' then out[i] = 1 else out[i] = 0 end
  end
end
return out
