-- include: now fmt
-- KEYS: due ; ARGV: job_id, holder, attempt, outcome (delivered|retrying|failed), retry_in_s, prefix
-- Records the outcome of an attempt if the caller still holds it (else 0: its lease ran out and
-- another dispatcher took the delivery over).
local jk = ARGV[6] .. ':job:' .. ARGV[1]
local f = redis.call('HMGET', jk, 'callback_holder', 'callback_attempts')
if f[1] ~= ARGV[2] or f[2] ~= ARGV[3] then return 0 end
redis.call('HSET', jk, 'callback_status', ARGV[4])
redis.call('HDEL', jk, 'callback_holder')
if ARGV[4] == 'retrying' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[5]), ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
if redis.call('EXISTS', jk .. ':log') == 1 then
  redis.call('RPUSH', jk .. ':log', fmt(now) .. ' callback ' .. ARGV[4] .. ' attempt ' .. ARGV[3])
end
return 1
