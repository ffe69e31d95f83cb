-- include: now fair
-- Where a job's broker message goes.  With kombu's Redis transport (the default broker): its lane,
-- a Redis list (fair.lua orders a new message among its owner's; a requeued one goes to the
-- consuming end).  With RabbitMQ (RERANKD_BROKER_URL=amqp://): the broker outbox
-- {prefix}:broker:outbox, a sorted set of messages scored by when they were put there, written in
-- the same script as the job's record; the process that wrote it publishes it with confirms and
-- removes it, and every API and worker process republishes what a crash left behind
-- (rerankd/jobs/relay.py).  The caller passes the outbox's name in place of the lane.
local function is_broker_outbox(list)
  return string.sub(list, -14) == ':broker:outbox'
end
-- A new job's message.
local function push_message(jk, list, owner, msg)
  if is_broker_outbox(list) then
    redis.call('ZADD', list, now, msg)
  else
    fair_push(jk, list, owner, msg)
  end
end
-- The messages of one owner's new jobs ({{jk, msg}, ...}) on one lane (a batch: one pass).
local function push_messages(list, owner, jobs)
  if is_broker_outbox(list) then
    for _, job in ipairs(jobs) do redis.call('ZADD', list, now, job[2]) end
  else
    fair_push_many(list, owner, jobs)
  end
end
-- A message put back for a job whose worker was lost: at the consuming end of its lane.
local function requeue_message(list, msg)
  if is_broker_outbox(list) then
    redis.call('ZADD', list, now, msg)
  else
    redis.call('RPUSH', list, msg)
  end
end
-- Whether msg still waits to be consumed (in its lane, or not yet published from the outbox).
local function message_waiting(list, msg)
  if is_broker_outbox(list) then
    return redis.call('ZSCORE', list, msg) ~= false
  end
  return redis.call('LPOS', list, msg) ~= false
end
-- The depth of a lane: its Redis list's length, or with RabbitMQ (which counts a queue's messages,
-- not its lanes') the jobs waiting for a run in it, {prefix}:waiting:{queue}|{lane} (counters.lua).
local function lane_depth(list, queue, lane)
  if is_broker_outbox(list) then
    local p = string.sub(list, 1, #list - 14)
    return redis.call('ZCOUNT', p .. ':waiting:' .. queue .. '|' .. lane, now, '+inf')
  end
  return redis.call('LLEN', list)
end
