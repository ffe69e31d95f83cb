-- Per-key quotas, checked and taken atomically with job creation (rerankd/jobs/quotas.py).
-- ARGV from q: prefix, inflight field, max in flight, jobs added, owner, requests/min, documents/min, documents
-- (no ARGV[q]: no quotas).  A limit of 0 is no limit.  Rate windows are fixed minutes of the server clock.
local function _rate_key(q) return ARGV[q] .. ':q:rate:' .. ARGV[q + 4] .. ':' .. math.floor(now / 60) end
local function quota_check(q)
  if ARGV[q] == nil then return nil end
  local maxf, add = tonumber(ARGV[q + 2]), tonumber(ARGV[q + 3])
  if maxf > 0 then
    local ik = ARGV[q] .. ':q:inflight:' .. ARGV[q + 1]
    redis.call('ZREMRANGEBYSCORE', ik, '-inf', now)  -- records that expired unfinished
    local cur = redis.call('ZCARD', ik)
    if cur + add > maxf then return {'quota', 'jobs_in_flight', tostring(cur), ''} end
  end
  local rpm, dpm = tonumber(ARGV[q + 5]), tonumber(ARGV[q + 6])
  if rpm > 0 or dpm > 0 then
    local c = redis.call('HMGET', _rate_key(q), 'requests', 'documents')
    local retry = fmt((math.floor(now / 60) + 1) * 60 - now)
    if rpm > 0 and tonumber(c[1] or '0') + 1 > rpm then
      return {'quota', 'requests_per_minute', c[1] or '0', retry}
    end
    if dpm > 0 and tonumber(c[2] or '0') + tonumber(ARGV[q + 7]) > dpm then
      return {'quota', 'documents_per_minute', c[2] or '0', retry}
    end
  end
  return nil
end
local function quota_take(q)
  if ARGV[q] == nil then return end
  if tonumber(ARGV[q + 5]) > 0 or tonumber(ARGV[q + 6]) > 0 then
    local rk = _rate_key(q)
    redis.call('HINCRBY', rk, 'requests', 1)
    redis.call('HINCRBY', rk, 'documents', tonumber(ARGV[q + 7]))
    redis.call('EXPIRE', rk, 120)
  end
end
