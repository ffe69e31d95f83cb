-- include: now fmt terminate holder
-- KEYS: job, log ; ARGV: worker, lease_s, default_max_attempts, events_channel
local h = redis.call('HMGET', KEYS[1], 'status', 'cancel_requested', 'attempts', 'max_attempts', 'expires_at',
                     'lease_until', 'worker')
local st = h[1]
if not st then return {'missing'} end
if st ~= 'queued' and st ~= 'running' then return {'done', st} end
if h[2] == '1' then
  terminate('cancelled', 'cancelled', 'cancelled on request')
  return {'cancelled'}
end
local att = tonumber(h[3] or '0')
local maxa = tonumber(h[4] or ARGV[3])
if st == 'queued' then
  local exp = tonumber(h[5] or '')
  if exp and now > exp then
    terminate('expired', 'expired', 'not started before its wait deadline')
    return {'expired'}
  end
else
  local lease = tonumber(h[6] or '0')
  local wait = lease > now and holder_wait(KEYS[1], lease)
  if wait then return {'busy', fmt(wait)} end
  if att >= maxa then
    terminate('failed', 'worker_lost', string.format(
      'worker lost during attempt %d of %d; giving up (max attempts %d)', att, maxa, maxa))
    return {'exhausted'}
  end
  redis.call('RPUSH', KEYS[2], fmt(now) .. ' lost ' .. (h[7] or ''))
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
