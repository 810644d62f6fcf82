-- Renews when owner holds the lease, takes it when free (with a new fence), else -1.
--
-- KEYS[1] is the region's lease:{r<region>}, KEYS[2] its fence:{r<region>}; ARGV[1] is the
-- owner, ARGV[2] the lease's time to live in ms. Returns the fence of the lease held, or -1.
--
-- A new fence is one more than the last, and never less than Redis's clock in microseconds: the
-- store keeps the highest fence it has seen per region (in MySQL), so a Redis that restarted
-- empty must not hand out 1 again, or every offer of the region would be refused as stale until
-- the counter climbed back (found by the fault suite, TestFaultRedisKilled). Fences so stay
-- monotonic across a Redis data loss as long as Redis's clock does not step back and leases
-- change hands less than once a microsecond on average (they do not: Redis runs one script at a
-- time). Microseconds since 1970 stay below 2^53, exact in Lua's numbers.
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
if cur then return -1 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local t = redis.call('TIME')
local fence = tonumber(redis.call('GET', KEYS[2]) or '0') + 1
local floor = tonumber(t[1]) * 1000000 + tonumber(t[2])
if fence < floor then fence = floor end
redis.call('SET', KEYS[2], string.format('%d', fence))
return fence
