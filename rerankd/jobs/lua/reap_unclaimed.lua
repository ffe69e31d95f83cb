-- include: now queued
-- KEYS: unacked_index, unacked, job, lane ; ARGV: delivery tag, message
-- A broker message delivered long ago whose job is still queued (the worker that received it died
-- before claiming it): drop kombu's unacked entry and push a fresh message at the front of the lane.
if redis.call('HGET', KEYS[3], 'status') ~= 'queued' then return 0 end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('RPUSH', KEYS[4], ARGV[2])
queued_index(KEYS[3], ARGV[2])
return 1
