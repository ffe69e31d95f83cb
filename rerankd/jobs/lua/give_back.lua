-- include: now queued broker
-- KEYS: job, lane (or the broker outbox: broker.lua) ; ARGV: message
-- A delivered message its worker did not claim (a batch message parked while the worker's batch
-- slots were busy, rerankd/worker/slots.py, or one delivered to a stopping worker) goes back to
-- the consuming end of its lane, so the next worker takes it first.  A job no longer waiting for
-- a run drops it (returns 0).
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'queued' and st ~= 'running' then return 0 end
requeue_message(KEYS[2], ARGV[1])
if st == 'queued' then queued_index(KEYS[1], ARGV[1]) end
return 1
