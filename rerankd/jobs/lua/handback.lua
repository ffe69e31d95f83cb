-- include: now fmt counters leases queued broker
-- KEYS: job, log, lane (or the broker outbox: broker.lua) ; ARGV: worker, attempt, message, reason
-- A stopping worker hands a running job back (rerankd/jobs/handback.py): only the attempt that holds
-- it may (same worker and attempt, as in finish.lua).  The job is queued again with that attempt
-- not counted, its lease dropped, and a fresh message pushed at the consuming end (the front) of
-- its lane, as the reaper does (reap.lua).  Returns 1, or 0 when the caller does not hold the job.
local f = redis.call('HMGET', KEYS[1], 'status', 'worker', 'attempts')
if f[1] ~= 'running' or f[2] ~= ARGV[1] or f[3] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempts', math.max(0, tonumber(f[3]) - 1))
-- the job did start within its wait deadline (expires_at): a hand-back must not make it 'expired'
redis.call('HDEL', KEYS[1], 'lease_until', 'worker', 'started_at', 'expires_at',
           'requeued_attempt', 'requeued_until', 'requeued_msg')
lease_index(KEYS[1], nil)
count_move('running', 'queued')
requeue_message(KEYS[3], ARGV[3])
queued_index(KEYS[1], ARGV[3])
redis.call('RPUSH', KEYS[2], fmt(now) .. ' handed back by ' .. ARGV[1] .. ' (' .. ARGV[4] .. ')')
return 1
