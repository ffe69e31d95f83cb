-- include: now
-- Owners take turns within a lane (start-time fair queuing, one order for every worker).
-- A lane is kombu's Redis list of messages; BRPOP takes its right (oldest) end.  Each job gets a
-- start tag max(V, F[owner]) (V: the tag of the last job claimed from the lane, F[owner]: the
-- owner's last tag + 1) and its message goes behind every message with a tag up to its own, so a
-- tenant's 100 queued jobs tag V+1..V+100 and another tenant's next job (tag V) runs before all
-- but those already taken.  One owner alone keeps FIFO (each tag is the highest: a plain LPUSH).
-- {prefix}:fair:{lane}     sorted set 'seq|job id' -> start tag (the lane's tagged messages)
-- {prefix}:fairtag:{lane}  hash: _v (V), _seq, o:{owner} -> F[owner], d:{delivery tag} -> start tag
-- Placing jobs pops the messages tagged above the first new one from the list's newest end (their
-- count is the sorted set's, so an untagged message among them, e.g. one a worker handed back,
-- keeps its neighbours' place), merges the new ones in by tag and pushes the lot back: linear in
-- the messages moved, one pass for a whole batch.
local FAIR_TTL_S = 604800
local function _dtag(msg)
  local ok, env = pcall(cjson.decode, msg)
  if ok and type(env) == 'table' and type(env.properties) == 'table' then
    return tostring(env.properties.delivery_tag)
  end
  return nil
end
local function _lpush_all(lane, msgs)
  for i = 1, #msgs, 1000 do
    redis.call('LPUSH', lane, unpack(msgs, i, math.min(i + 999, #msgs)))
  end
end
-- Queue the messages of one owner's new jobs (jobs: {{jk, msg}, ...}, in their order) on a lane.
local function fair_push_many(lane, owner, jobs)
  if #jobs == 0 then return end
  local p = string.match(jobs[1][1], '^(.*):job:[^:]+$')
  local zk, hk = p .. ':fair:' .. lane, p .. ':fairtag:' .. lane
  local v = tonumber(redis.call('HGET', hk, '_v') or '0')
  local s0 = math.max(v, tonumber(redis.call('HGET', hk, 'o:' .. owner) or '0'))
  redis.call('HSET', hk, 'o:' .. owner, s0 + #jobs)
  local seq = redis.call('HINCRBY', hk, '_seq', #jobs) - #jobs
  local ztags, dtags, new = {}, {}, {}
  for i, job in ipairs(jobs) do
    local tag, id = s0 + i - 1, string.match(job[1], ':job:([^:]+)$')
    local member = string.format('%015d|', seq + i) .. id
    ztags[#ztags + 1] = tag
    ztags[#ztags + 1] = member
    local dt = _dtag(job[2])
    if dt then
      dtags[#dtags + 1] = 'd:' .. dt
      dtags[#dtags + 1] = tag
    end
    redis.call('HSET', job[1], 'fair_lane', lane, 'fair_start', tag, 'fair_member', member, 'fair_dt', dt or '')
    new[i] = {tag, job[2]}
  end
  -- the messages that must run after the first new one: tagged above s0, at the newest end
  local k = redis.call('ZCOUNT', zk, '(' .. s0, '+inf')
  local moved = {}
  if k > 0 then moved = redis.call('LPOP', lane, k) or {} end
  -- moved is newest first: walk it oldest first, carrying the last known tag over untagged ones
  local old, last = {}, s0
  for i = #moved, 1, -1 do
    local dt = _dtag(moved[i])
    local tag = dt and tonumber(redis.call('HGET', hk, 'd:' .. dt) or '')
    if tag then last = tag end
    old[#old + 1] = {last, moved[i]}
  end
  -- merge by tag, oldest first; on equal tags the message already waiting goes first
  local out, a, b = {}, 1, 1
  while a <= #old or b <= #new do
    if b > #new or (a <= #old and old[a][1] <= new[b][1]) then
      out[#out + 1] = old[a][2]
      a = a + 1
    else
      out[#out + 1] = new[b][2]
      b = b + 1
    end
  end
  _lpush_all(lane, out)
  for i = 1, #ztags, 1000 do redis.call('ZADD', zk, unpack(ztags, i, math.min(i + 999, #ztags))) end
  for i = 1, #dtags, 1000 do redis.call('HSET', hk, unpack(dtags, i, math.min(i + 999, #dtags))) end
  redis.call('EXPIRE', zk, FAIR_TTL_S)
  redis.call('EXPIRE', hk, FAIR_TTL_S)
end
local function fair_push(jk, lane, owner, msg)
  fair_push_many(lane, owner, {{jk, msg}})
end
-- The job leaves its lane's order: claimed (V moves to its tag) or ended while queued.
local function fair_done(jk, claimed)
  local f = redis.call('HMGET', jk, 'fair_lane', 'fair_start', 'fair_member', 'fair_dt')
  if not f[1] then return end
  local p = string.match(jk, '^(.*):job:[^:]+$')
  local hk = p .. ':fairtag:' .. f[1]
  redis.call('ZREM', p .. ':fair:' .. f[1], f[3])
  if f[4] and f[4] ~= '' then redis.call('HDEL', hk, 'd:' .. f[4]) end
  if claimed then
    local v = tonumber(redis.call('HGET', hk, '_v') or '0')
    if tonumber(f[2]) > v then redis.call('HSET', hk, '_v', f[2]) end
  end
  redis.call('HDEL', jk, 'fair_lane', 'fair_start', 'fair_member', 'fair_dt')
end
