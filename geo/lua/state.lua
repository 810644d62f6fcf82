-- Replaces the state field of a driver's record in a region, if present, and returns the new
-- record (or false). Offline drivers leave the cell set, others join it.
--
-- KEYS[1] is the region's geo:{r<region>}:pos, KEYS[2] its geo:{r<region>}:cells; ARGV[1] is
-- the driver's id, ARGV[2] the new state.
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return false end
local head, cell = string.match(old, '^([^,]*,[^,]*,[^,]*,[^,]*),[^,]*,([^,]*)$')
if not head then return false end
local rec = head .. ',' .. ARGV[2] .. ',' .. cell
redis.call('HSET', KEYS[1], ARGV[1], rec)
if ARGV[2] == 'offline' then
  redis.call('ZREM', KEYS[2], cell .. ':' .. ARGV[1])
else
  redis.call('ZADD', KEYS[2], 0, cell .. ':' .. ARGV[1])
end
return rec
