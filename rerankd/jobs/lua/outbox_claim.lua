-- include: now fmt
-- KEYS: due ; ARGV: holder, lease_s, limit, max_attempts, prefix
-- Claims up to `limit` due deliveries: attempt + 1, holder recorded, score moved to now + lease (so a
-- delivery whose dispatcher died comes due again).  Returns {job_id, attempt, ...}; attempt 0: the
-- delivery had used all its attempts and is now failed.  Entries of gone or settled jobs are dropped.
local out = {}
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local jk = ARGV[5] .. ':job:' .. id
  local f = redis.call('HMGET', jk, 'status', 'callback_url', 'callback_status', 'callback_attempts')
  if not f[1] or not f[2] or f[3] == 'delivered' or f[3] == 'failed' then
    redis.call('ZREM', KEYS[1], id)
  elseif tonumber(f[4] or '0') >= tonumber(ARGV[4]) then
    redis.call('HSET', jk, 'callback_status', 'failed')
    redis.call('HDEL', jk, 'callback_holder')
    redis.call('ZREM', KEYS[1], id)
    out[#out + 1] = id
    out[#out + 1] = '0'
  else
    local att = redis.call('HINCRBY', jk, 'callback_attempts', 1)
    redis.call('HSET', jk, 'callback_holder', ARGV[1])
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
    out[#out + 1] = id
    out[#out + 1] = tostring(att)
  end
end
return out
