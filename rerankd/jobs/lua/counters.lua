-- Status counters kept in step with every job transition (read by /metrics and the quotas):
-- {prefix}:m:g:jobs_by_status  {"model":..,"status":"queued|running"} -> jobs in that status
-- {prefix}:q:inflight:{owner}  jobs of the owner (owner|batch: its batch jobs) queued or running, a
--                              sorted set scored by when the job's record expires, so a record that
--                              expires unfinished stops counting (ZCOUNT from now); owners listed
--                              in the set {prefix}:q:inflight-keys
-- {prefix}:batch:{id}          n_<status> -> the batch's jobs in that status
-- {prefix}:m:tp:{minute}       jobs that left queued/running in that minute (Unix time // 60; 20 min TTL)
-- {prefix}:waiting:{queue}|{lane}  jobs queued there, scored by when their record expires (a
--                              record that expires queued stops counting): a lane's depth with RabbitMQ
local function _active(st) return st == 'queued' or st == 'running' end
local function _incr(key, field, by)
  if redis.call('HINCRBY', key, field, by) < 0 then redis.call('HSET', key, field, 0) end
end
local function inflight_add(p, owner, id, expires_at)
  redis.call('ZADD', p .. ':q:inflight:' .. owner, expires_at, id)
  redis.call('SADD', p .. ':q:inflight-keys', owner)
end
local function count_move(from, to)
  if from == to then return end
  local p = string.match(KEYS[1], '^(.*):job:[^:]+$')
  local f = redis.call('HMGET', KEYS[1], 'owner', 'kind', 'model', 'batch_id', 'id', 'queue', 'priority')
  if f[6] and (from == 'queued' or to == 'queued') then
    local wk = p .. ':waiting:' .. f[6] .. '|' .. (f[7] or '0')
    if to == 'queued' then
      local ttl = redis.call('TTL', KEYS[1])
      redis.call('ZADD', wk, ttl > 0 and now + ttl or now + 315360000, f[5])
      redis.call('ZREMRANGEBYSCORE', wk, '-inf', '(' .. now)
    else
      redis.call('ZREM', wk, f[5])
    end
  end
  local model = cjson.encode(f[3] or '')
  local owner = f[1] or ''
  if f[2] == 'batch' then owner = owner .. '|batch' end
  if _active(from) then
    _incr(p .. ':m:g:jobs_by_status', '{"model":' .. model .. ',"status":"' .. from .. '"}', -1)
    if not _active(to) then redis.call('ZREM', p .. ':q:inflight:' .. owner, f[5]) end
  end
  if _active(from) and not _active(to) then  -- a job finished: per-minute count (GET /v1/queues)
    local tk = p .. ':m:tp:' .. math.floor(now / 60)
    redis.call('INCR', tk)
    redis.call('EXPIRE', tk, 1200)
  end
  if _active(to) then
    _incr(p .. ':m:g:jobs_by_status', '{"model":' .. model .. ',"status":"' .. to .. '"}', 1)
    if not _active(from) then
      local ttl = redis.call('TTL', KEYS[1])
      inflight_add(p, owner, f[5], ttl > 0 and now + ttl or now + 315360000)
    end
  end
  if f[4] then
    local bk = p .. ':batch:' .. f[4]
    if redis.call('EXISTS', bk) == 1 then
      if from then _incr(bk, 'n_' .. from, -1) end
      _incr(bk, 'n_' .. to, 1)
    end
  end
end
