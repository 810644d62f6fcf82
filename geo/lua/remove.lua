-- Takes a driver out of a region and returns its record (or false).
--
-- KEYS[1] is the region's geo:{r<region>}:pos, KEYS[2] its geo:{r<region>}:cells; ARGV[1] is
-- the driver's id.
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return false end
local cell = string.match(old, ',([^,]*)$')
if cell then redis.call('ZREM', KEYS[2], cell .. ':' .. ARGV[1]) end
redis.call('HDEL', KEYS[1], ARGV[1])
return old
