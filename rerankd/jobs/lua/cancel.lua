-- include: now fmt terminate
-- KEYS: job, log ; ARGV: owner, -, -, events_channel, cancel_channel
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return {'missing'} end
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'queued' then
  terminate('cancelled', 'cancelled', 'cancelled on request')
  return {'cancelled'}
end
if st == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  redis.call('RPUSH', KEYS[2], fmt(now) .. ' cancel requested')
  redis.call('PUBLISH', ARGV[5], redis.call('HGET', KEYS[1], 'id'))
  return {'cancelling'}
end
return {'final', st}
