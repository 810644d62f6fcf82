-- Records ARGV[1] as live until Redis's clock passes ARGV[2] ms from now, drops the members
-- past their time and lists the others.
--
-- KEYS[1] is the set of live matchers, matchers:{m}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], ARGV[2] * 4)
return redis.call('ZRANGE', KEYS[1], 0, -1)
