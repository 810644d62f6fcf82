-- Deletes the lease only if it still carries the caller's token.
--
-- KEYS[1] is the lease (a driver's drv:{<driver>}:lease, or a region's lease:{r<region>});
-- ARGV[1] is the caller's token.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
