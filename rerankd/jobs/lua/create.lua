-- include: now fmt metrics counters quotas queued fair broker
-- KEYS: job, log, queue, idem, metric hashes... ;
-- ARGV: max_depth, ttl, use_idem, idem_hash, id, message, n, k1, v1, ..., then metric ops (see MetricsWriter)
if ARGV[3] == '1' then
  local v = redis.call('GET', KEYS[4])
  if v then
    local sep = string.find(v, '|', 1, true)
    local h = string.sub(v, 1, sep - 1)
    local id = string.sub(v, sep + 1)
    if h == ARGV[4] then return {'existing', id} end
    return {'conflict', id}
  end
end
local qb = 9 + 2 * tonumber(ARGV[7]) + 4 * tonumber(ARGV[8 + 2 * tonumber(ARGV[7])] or '0')
local over = quota_check(qb)
if over then return over end
local maxd = tonumber(ARGV[1])
if maxd >= 0 then
  local q, lane = '', '0'
  for i = 8, 7 + 2 * tonumber(ARGV[7]), 2 do
    if ARGV[i] == 'queue' then q = ARGV[i + 1] elseif ARGV[i] == 'priority' then lane = ARGV[i + 1] end
  end
  if lane_depth(KEYS[3], q, lane) >= maxd then return {'full', ''} end
end
local n = tonumber(ARGV[7])
local args = {}
for i = 1, n do
  args[#args + 1] = ARGV[7 + 2 * i - 1]
  args[#args + 1] = ARGV[7 + 2 * i]
end
redis.call('HSET', KEYS[1], 'id', ARGV[5], 'status', 'queued', 'attempts', '0',
           'created_at', fmt(now), unpack(args))
local ei = redis.call('HGET', KEYS[1], 'expires_in')
if ei then
  redis.call('HSET', KEYS[1], 'expires_at', fmt(now + tonumber(ei)))
  redis.call('HDEL', KEYS[1], 'expires_in')
end
local ttl = tonumber(ARGV[2])
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('RPUSH', KEYS[2], fmt(now) .. ' queued')
redis.call('EXPIRE', KEYS[2], ttl)
if ARGV[3] == '1' then redis.call('SET', KEYS[4], ARGV[4] .. '|' .. ARGV[5], 'EX', ttl) end
local owner = redis.call('HGET', KEYS[1], 'owner')
if ARGV[6] ~= '' then
  push_message(KEYS[1], KEYS[3], owner or '', ARGV[6])
  queued_index(KEYS[1], ARGV[6])
end
-- owner index (GET /v1/jobs): {prefix}:owner:{owner}:jobs, job ids scored by created_at
if owner then
  local ix = string.sub(KEYS[1], 1, #KEYS[1] - #ARGV[5] - 4) .. 'owner:' .. owner .. ':jobs'
  redis.call('ZADD', ix, now, ARGV[5])
  redis.call('ZREMRANGEBYSCORE', ix, '-inf', '(' .. fmt(now - ttl))  -- records older than the TTL are gone
  redis.call('EXPIRE', ix, ttl)
end
apply_metrics(8 + 2 * n)
count_move(nil, 'queued')
quota_take(qb)
return {'created', ARGV[5]}
