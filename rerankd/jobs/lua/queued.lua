-- include: now
-- The queued index {prefix}:queued, a sorted set of queued job ids scored by when their broker
-- message was last pushed, with that message in the job's 'msg' field; read by the reaper
-- (rerankd/jobs/reaper.py, reap_queued.lua) to find messages lost between a worker's BRPOP and
-- kombu's unacked record.  create/create_batch/reap* set it (msg given), claim and terminate drop it.
local function queued_index(key, msg)
  local p, id = string.match(key, '^(.*):job:([^:]+)$')
  if msg then
    redis.call('ZADD', p .. ':queued', now, id)
    redis.call('HSET', key, 'msg', msg)
  else
    redis.call('ZREM', p .. ':queued', id)
    redis.call('HDEL', key, 'msg')
  end
end
