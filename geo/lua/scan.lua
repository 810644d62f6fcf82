-- Returns the records of the drivers in the given cells: id1, rec1, id2, rec2...
--
-- KEYS[1] is the region's geo:{r<region>}:pos, KEYS[2] its geo:{r<region>}:cells; ARGV are the
-- cells (H3 strings at CellRes), all in the region.
local out = {}
for i = 1, #ARGV do
  local ms = redis.call('ZRANGEBYLEX', KEYS[2], '[' .. ARGV[i] .. ':', '[' .. ARGV[i] .. ';')
  for _, m in ipairs(ms) do
    local id = string.sub(m, string.len(ARGV[i]) + 2)
    local rec = redis.call('HGET', KEYS[1], id)
    if rec then out[#out+1] = id; out[#out+1] = rec end
  end
end
return out
