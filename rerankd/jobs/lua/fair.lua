-- include: now
-- Owners take turns within a lane (start-time fair queuing, one order for every worker).
-- A lane is kombu's Redis list of messages; BRPOP takes its right end.  Each job gets a start tag
-- max(V, F[owner]) (V: the tag of the last job claimed from the lane, F[owner]: the owner's last
-- tag + 1) and its message goes into the list behind every message with a tag <= its own, so a
-- tenant's 100 queued jobs tag 1..100 and another tenant's next job (tag V) runs before all but
-- those already taken.  One owner alone keeps FIFO (each tag is the highest: a plain LPUSH).
-- {prefix}:fair:{lane}      sorted set 'seq|job id' -> start tag (the list's messages in tag order)
-- {prefix}:fairtag:{lane}   hash: _v (V), _seq, o:{owner} -> F[owner]
-- Past FAIR_SCAN_MAX waiting messages a job is appended (LINSERT scans the list from its head).
local FAIR_SCAN_MAX = 20000
local function fair_push(jk, lane, owner, msg)
  local p, id = string.match(jk, '^(.*):job:([^:]+)$')
  local zk, hk = p .. ':fair:' .. lane, p .. ':fairtag:' .. lane
  local v = tonumber(redis.call('HGET', hk, '_v') or '0')
  local f = tonumber(redis.call('HGET', hk, 'o:' .. owner) or '0')
  local start = math.max(v, f)
  local seq = redis.call('HINCRBY', hk, '_seq', 1)
  redis.call('HSET', hk, 'o:' .. owner, start + 1)
  local member = string.format('%015d|', seq) .. id
  local top = redis.call('ZREVRANGE', zk, 0, 0, 'WITHSCORES')
  local placed = false
  if top[2] and tonumber(top[2]) > start and redis.call('LLEN', lane) <= FAIR_SCAN_MAX then
    -- the last message that runs before ours: the highest tag <= ours, the latest among equals
    local before = redis.call('ZREVRANGEBYSCORE', zk, start, '-inf', 'LIMIT', 0, 3)
    for _, m in ipairs(before) do
      local pmsg = redis.call('HGET', p .. ':job:' .. string.match(m, '|(.+)$'), 'msg')
      if pmsg and redis.call('LINSERT', lane, 'BEFORE', pmsg, msg) > 0 then
        placed = true
        break
      end
    end
    if not placed and #before < 3 then
      -- nothing before ours waits in the list any more (taken or gone): ours runs next
      redis.call('RPUSH', lane, msg)
      placed = true
    end
  end
  if not placed then redis.call('LPUSH', lane, msg) end
  redis.call('ZADD', zk, start, member)
  redis.call('HSET', jk, 'fair_lane', lane, 'fair_start', start, 'fair_member', member)
  redis.call('EXPIRE', zk, 604800)
  redis.call('EXPIRE', hk, 604800)
end
-- The job leaves its lane's order: claimed (V moves to its tag) or ended while queued.
local function fair_done(jk, claimed)
  local f = redis.call('HMGET', jk, 'fair_lane', 'fair_start', 'fair_member')
  if not f[1] then return end
  local p = string.match(jk, '^(.*):job:[^:]+$')
  redis.call('ZREM', p .. ':fair:' .. f[1], f[3])
  if claimed then
    local hk = p .. ':fairtag:' .. f[1]
    local v = tonumber(redis.call('HGET', hk, '_v') or '0')
    if tonumber(f[2]) > v then redis.call('HSET', hk, '_v', f[2]) end
  end
  redis.call('HDEL', jk, 'fair_lane', 'fair_start', 'fair_member')
end
