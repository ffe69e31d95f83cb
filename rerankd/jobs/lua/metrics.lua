local function apply_metrics(base)
  local m = tonumber(ARGV[base] or '0')
  for i = 0, m - 1 do
    local o = base + 1 + 4 * i
    local key = KEYS[tonumber(ARGV[o])]
    if ARGV[o + 2] == 'f' then
      redis.call('HINCRBYFLOAT', key, ARGV[o + 1], ARGV[o + 3])
    else
      redis.call('HINCRBY', key, ARGV[o + 1], ARGV[o + 3])
    end
  end
end
