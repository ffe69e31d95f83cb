-- include: now fmt terminate
-- KEYS: job, log ; ARGV: -, -, -, events_channel
if redis.call('HGET', KEYS[1], 'status') == 'queued' then
  terminate('expired', 'expired', 'nobody waited for it any more')
  return 1
end
return 0
