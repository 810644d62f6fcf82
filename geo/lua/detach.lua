-- Deletes a driver's session mark if it is still ARGV[1]: 1 when it was (no newer socket of
-- theirs came up anywhere), else 0.
--
-- KEYS[1] is the driver's session mark, drv:{<driver>}:session.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
