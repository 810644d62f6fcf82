-- Marks offline the given drivers of a region that are still available and whose latest point
-- is older than ARGV[1] (Unix ms). ARGV[2..]: ids. Returns id1, rec1, id2, rec2...
--
-- KEYS[1] is the region's geo:{r<region>}:pos, KEYS[2] its geo:{r<region>}:cells.
local out = {}
local cutoff = tonumber(ARGV[1])
for i = 2, #ARGV do
  local old = redis.call('HGET', KEYS[1], ARGV[i])
  if old then
    local head, ts, st, cell = string.match(old, '^([^,]*,[^,]*,[^,]*,([^,]*)),([^,]*),([^,]*)$')
    if head and st == 'available' and tonumber(ts) < cutoff then
      local rec = head .. ',offline,' .. cell
      redis.call('HSET', KEYS[1], ARGV[i], rec)
      redis.call('ZREM', KEYS[2], cell .. ':' .. ARGV[i])
      out[#out+1] = ARGV[i]
      out[#out+1] = rec
    end
  end
end
return out
