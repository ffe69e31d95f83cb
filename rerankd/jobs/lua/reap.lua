-- include: now fmt broker
-- KEYS: leases, job, log, queue ; ARGV: id, message, recheck_s
-- Put the broker message of a running job whose lease expired (its worker is lost) back at the
-- consuming end of its queue, once per attempt (again after recheck_s if still unclaimed and that
-- message is no longer in the queue: a worker took it and was lost too).
local f = redis.call('HMGET', KEYS[2], 'status', 'lease_until', 'attempts', 'requeued_attempt',
                     'requeued_until', 'worker', 'requeued_msg')
if f[1] ~= 'running' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return {'gone'}
end
local lease = tonumber(f[2] or '0')
if lease > now then
  redis.call('ZADD', KEYS[1], lease, ARGV[1])
  return {'live'}
end
local pending = tonumber(f[5] or '0')
if f[4] == f[3] and pending > now then
  redis.call('ZADD', KEYS[1], pending, ARGV[1])
  return {'pending'}
end
local recheck = now + tonumber(ARGV[3])
if f[4] == f[3] and f[7] and message_waiting(KEYS[4], f[7]) then  -- still waiting in its queue
  redis.call('HSET', KEYS[2], 'requeued_until', fmt(recheck))
  redis.call('ZADD', KEYS[1], recheck, ARGV[1])
  return {'pending'}
end
redis.call('HSET', KEYS[2], 'requeued_attempt', f[3], 'requeued_until', fmt(recheck), 'requeued_msg', ARGV[2])
redis.call('ZADD', KEYS[1], recheck, ARGV[1])
requeue_message(KEYS[4], ARGV[2])
redis.call('RPUSH', KEYS[3], fmt(now) .. ' requeued (lease of ' .. (f[6] or '?') .. ' expired)')
return {'requeued', f[3]}
