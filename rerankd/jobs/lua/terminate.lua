-- include: counters leases outbox queued fair
local function terminate(status, code, err)
  local prev = redis.call('HGET', KEYS[1], 'status')
  redis.call('HSET', KEYS[1], 'status', status, 'finished_at', fmt(now), 'error', err, 'error_code', code)
  redis.call('HDEL', KEYS[1], 'lease_until')
  lease_index(KEYS[1], nil)
  queued_index(KEYS[1], nil)
  fair_done(KEYS[1], false)
  count_move(prev, status)
  redis.call('RPUSH', KEYS[2], fmt(now) .. ' ' .. status .. ' ' .. err)
  redis.call('PUBLISH', ARGV[4], redis.call('HGET', KEYS[1], 'id') .. ' ' .. status)
  outbox_add()
end
