-- Sets the state of a driver's own record to ARGV[2] if it is ARGV[1] (a missing state counts
-- as offline). Returns 1 when it did.
--
-- KEYS[1] is the driver's own record, drv:{<driver>}.
local st = redis.call('HGET', KEYS[1], 'state') or 'offline'
if st ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2])
return 1
