local _t = redis.call('TIME'); local now = tonumber(_t[1]) + tonumber(_t[2]) / 1000000
