-- include: now
-- KEYS: broker outbox ; ARGV: grace_s, limit
-- The messages of the broker outbox (broker.lua) put there more than grace_s ago and still not
-- removed (their publisher crashed, or the broker was away): up to limit of them, each re-scored
-- to now so that other relays leave them alone for grace_s (rerankd/jobs/relay.py).
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]), 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], now, m) end
return due
