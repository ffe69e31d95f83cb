-- include: now fmt counters quotas queued fair broker
-- Create a whole batch in one step: every job, its message on its lane, the batch record, the
-- counters, or nothing (idempotency replay, conflict, full lane, quota).
-- KEYS: batch, batch items, idem
-- ARGV: prefix, ttl, use_idem, idem_hash, batch_id, max_depth, max_batch_depth, owner,
--       nq, (interactive queue, lane, jobs, model) * nq, nmeta, (k, v) * nmeta,
--       njobs, (id, message, lane, nf, (k, v) * nf) * njobs, then quota args (quotas.lua)
if ARGV[3] == '1' then
  local v = redis.call('GET', KEYS[3])
  if v then
    local sep = string.find(v, '|', 1, true)
    local id = string.sub(v, sep + 1)
    if string.sub(v, 1, sep - 1) == ARGV[4] then return {'existing', id} end
    return {'conflict', id}
  end
end
local p, ttl, owner = ARGV[1], tonumber(ARGV[2]), ARGV[8]
local maxd, maxb = tonumber(ARGV[6]), tonumber(ARGV[7])
local i = 10
local nq = tonumber(ARGV[9])
for _ = 1, nq do
  -- Redis: ARGV[i] the interactive lane (the queue's own list), ARGV[i + 1] the batch lane;
  -- RabbitMQ: ARGV[i] the queue, ARGV[i + 1] the broker outbox (broker.lua)
  local inter = is_broker_outbox(ARGV[i + 1]) and lane_depth(ARGV[i + 1], ARGV[i], '0') or redis.call('LLEN', ARGV[i])
  if maxd >= 0 and inter >= maxd then return {'full', ARGV[i]} end
  if maxb >= 0 and lane_depth(ARGV[i + 1], ARGV[i], '9') + tonumber(ARGV[i + 2]) > maxb then
    return {'full', ARGV[i + 1]}
  end
  i = i + 4
end
local meta_at, nmeta = i + 1, tonumber(ARGV[i])
i = i + 1 + 2 * nmeta
local jobs_at, njobs = i + 1, tonumber(ARGV[i])
local j = jobs_at
for _ = 1, njobs do j = j + 4 + 2 * tonumber(ARGV[j + 3]) end
local over = quota_check(j)
if over then return over end
local qb = j
local stamp = fmt(now)
j = jobs_at
local lanes, lane_order = {}, {}
for _ = 1, njobs do
  local id, nf = ARGV[j], tonumber(ARGV[j + 3])
  local jk = p .. ':job:' .. id
  local h = {'id', id, 'status', 'queued', 'attempts', '0', 'created_at', stamp}
  for f = 4, 3 + 2 * nf do h[#h + 1] = ARGV[j + f] end
  redis.call('HSET', jk, unpack(h))
  redis.call('EXPIRE', jk, ttl)
  redis.call('RPUSH', jk .. ':log', stamp .. ' queued')
  redis.call('EXPIRE', jk .. ':log', ttl)
  if not lanes[ARGV[j + 2]] then
    lanes[ARGV[j + 2]] = {}
    lane_order[#lane_order + 1] = ARGV[j + 2]
  end
  table.insert(lanes[ARGV[j + 2]], {jk, ARGV[j + 1]})
  queued_index(jk, ARGV[j + 1])
  redis.call('RPUSH', KEYS[2], id)
  inflight_add(p, owner .. '|batch', id, now + ttl)
  local qp = redis.call('HMGET', jk, 'queue', 'priority')
  if qp[1] then redis.call('ZADD', p .. ':waiting:' .. qp[1] .. '|' .. (qp[2] or '0'), now + ttl, id) end
  j = j + 4 + 2 * nf
end
for _, lane in ipairs(lane_order) do push_messages(lane, owner, lanes[lane]) end
redis.call('HSET', KEYS[1], 'id', ARGV[5], 'owner', owner, 'created_at', stamp, 'total', njobs, 'n_queued', njobs)
for m = 0, nmeta - 1 do redis.call('HSET', KEYS[1], ARGV[meta_at + 2 * m], ARGV[meta_at + 2 * m + 1]) end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
-- owner index (GET /v1/batches): {prefix}:owner:{owner}:batches, batch ids scored by created_at
redis.call('ZADD', p .. ':owner:' .. owner .. ':batches', now, ARGV[5])
redis.call('ZREMRANGEBYSCORE', p .. ':owner:' .. owner .. ':batches', '-inf', '(' .. fmt(now - ttl))
redis.call('EXPIRE', p .. ':owner:' .. owner .. ':batches', ttl)
i = 10
for _ = 1, nq do
  local field = '{"model":' .. cjson.encode(ARGV[i + 3]) .. ',"status":"queued"}'
  redis.call('HINCRBY', p .. ':m:g:jobs_by_status', field, tonumber(ARGV[i + 2]))
  i = i + 4
end
if ARGV[3] == '1' then redis.call('SET', KEYS[3], ARGV[4] .. '|' .. ARGV[5], 'EX', ttl) end
quota_take(qb)
return {'created', ARGV[5]}
