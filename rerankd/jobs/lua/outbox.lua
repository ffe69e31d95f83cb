-- include: now
-- The webhook outbox ({prefix}:outbox:due, a sorted set: member job id, score = when a dispatcher
-- should next look at it).  Called by every terminal transition, so a job with a callback_url
-- gets its delivery due in the same atomic step (rerankd/jobs/outbox.py).
local function outbox_add()
  if redis.call('HEXISTS', KEYS[1], 'callback_url') == 1 then
    local p = string.match(KEYS[1], '^(.*):job:[^:]+$')
    redis.call('ZADD', p .. ':outbox:due', 'NX', now, redis.call('HGET', KEYS[1], 'id'))
  end
end
