-- include: now fmt metrics counters leases outbox
-- KEYS: job, log, metric hashes... ;
-- ARGV: worker, attempt, status, events_channel, ttl, result, error, error_code, metric ops
local f = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempts', 'created_at', 'started_at')
if f[1] ~= 'running' or f[2] ~= ARGV[1] or f[3] ~= ARGV[2] then return {0} end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'finished_at', fmt(now), 'result', ARGV[6],
           'error', ARGV[7], 'error_code', ARGV[8])
redis.call('HDEL', KEYS[1], 'lease_until')
lease_index(KEYS[1], nil)
count_move('running', ARGV[3])
local ttl = tonumber(ARGV[5])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('RPUSH', KEYS[2], fmt(now) .. ' ' .. ARGV[3] .. ' ' .. ARGV[1])
redis.call('EXPIRE', KEYS[2], ttl)
-- A sync call's API process waits for this job: its record (less the request) goes straight to
-- that process's channel, before the event, so it answers without reading the record back.
local to = redis.call('HGET', KEYS[1], 'reply_to')
if to then
  local h, rec = redis.call('HGETALL', KEYS[1]), {}
  for i = 1, #h, 2 do
    if h[i] ~= 'request' and h[i] ~= 'msg' then rec[h[i]] = h[i + 1] end
  end
  redis.call('PUBLISH', to, cjson.encode(rec))
end
redis.call('PUBLISH', ARGV[4], redis.call('HGET', KEYS[1], 'id') .. ' ' .. ARGV[3])
outbox_add()
apply_metrics(9)
return {1, f[4], f[5], fmt(now)}
