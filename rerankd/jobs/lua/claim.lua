-- include: now fmt terminate holder
-- KEYS: job, log ; ARGV: worker, lease_s, default_max_attempts, events_channel
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'queued' and st ~= 'running' then return {'done', st} end
if redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then
  terminate('cancelled', 'cancelled', 'cancelled on request')
  return {'cancelled'}
end
local att = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
local maxa = tonumber(redis.call('HGET', KEYS[1], 'max_attempts') or ARGV[3])
if st == 'queued' then
  local exp = tonumber(redis.call('HGET', KEYS[1], 'expires_at') or '')
  if exp and now > exp then
    terminate('expired', 'expired', 'not started before its wait deadline')
    return {'expired'}
  end
else
  local lease = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
  local wait = lease > now and holder_wait(KEYS[1], lease)
  if wait then return {'busy', fmt(wait)} end
  if att >= maxa then
    terminate('failed', 'worker_lost', string.format(
      'worker lost during attempt %d of %d; giving up (max attempts %d)', att, maxa, maxa))
    return {'exhausted'}
  end
  redis.call('RPUSH', KEYS[2], fmt(now) .. ' lost ' .. (redis.call('HGET', KEYS[1], 'worker') or ''))
  redis.call('HDEL', KEYS[1], 'requeued_msg')
end
att = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if st == 'queued' then
  count_move('queued', 'running')
  queued_index(KEYS[1], nil)
  fair_done(KEYS[1], true)
end
redis.call('HSET', KEYS[1], 'status', 'running', 'worker', ARGV[1], 'started_at', fmt(now),
           'lease_until', fmt(now + tonumber(ARGV[2])))
lease_index(KEYS[1], now + tonumber(ARGV[2]))
redis.call('RPUSH', KEYS[2], fmt(now) .. ' running ' .. ARGV[1] .. ' attempt ' .. att)
local f = redis.call('HMGET', KEYS[1], 'request', 'deadline_s', 'created_at', 'model', 'strategy',
                     'callback_url')
return {'claimed', tostring(att), f[1], f[2], f[3], fmt(now), f[4], f[5], f[6] or ''}
