-- include: now fmt queued
-- KEYS: queued index, job, log, lane, unacked ; ARGV: id, fresh message, older_than_s
-- A queued job whose message was pushed more than older_than_s ago and is neither waiting in its
-- lane nor held by a worker (kombu's unacked hash): a worker popped it (BRPOP) and died before
-- recording it.  Push a fresh message at the consuming end of the lane.  Found messages are
-- re-scored (looked at again older_than_s later).
local f = redis.call('HMGET', KEYS[2], 'status', 'msg')
if f[1] ~= 'queued' or not f[2] or ARGV[2] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 'gone'
end
local pushed = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')
if pushed > now - tonumber(ARGV[3]) then return 'recent' end
if redis.call('LLEN', KEYS[4]) > 0 and redis.call('LPOS', KEYS[4], f[2]) then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  return 'waiting'
end
local tag = string.match(f[2], '"delivery_tag":%s*"([^"]+)"')
if tag and redis.call('HEXISTS', KEYS[5], tag) == 1 then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  return 'held'
end
redis.call('RPUSH', KEYS[4], ARGV[2])
queued_index(KEYS[2], ARGV[2])
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('RPUSH', KEYS[3], fmt(now) .. ' requeued (message lost by a worker)')
end
return 'requeued'
