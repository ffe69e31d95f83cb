local function terminate(status, code, err)
  redis.call('HSET', KEYS[1], 'status', status, 'finished_at', fmt(now), 'error', err, 'error_code', code)
  redis.call('HDEL', KEYS[1], 'lease_until')
  redis.call('RPUSH', KEYS[2], fmt(now) .. ' ' .. status .. ' ' .. err)
  redis.call('PUBLISH', ARGV[4], redis.call('HGET', KEYS[1], 'id') .. ' ' .. status)
end
