-- Writes drivers' points into one region.
--
-- KEYS[1] is the region's geo:{r<region>}:pos, KEYS[2] its geo:{r<region>}:cells. ARGV[1] is
-- the region's feed channel ("" for none); then two ARGV per point:
-- "lat,lng,heading,ts,cell,state,id" and the point's DriverView as JSON without its state and
-- closing brace. Latest wins by ts; a move between cells is one atomic step. The stored state
-- is kept when the driver has a record; the state given ("" for available) is the state of a
-- new record, and revives a record the sweeper marked offline (answered with a "+" first; a new
-- record is answered with a "*" first). Offline drivers are in no cell set. It answers, per
-- point, the driver's state when written, "" when the point is older than what is stored, and
-- publishes the applied points on the feed as one JSON array.
--
-- One script call per region and flush (rather than per point) and no cell-set write unless the
-- cell or the membership changes: the common point costs Redis an HGET and an HSET.
local out = {}
local views = {}
local feed = ARGV[1]
for i = 2, #ARGV, 2 do
  local lat, lng, hd, ts, cell, state, id = string.match(ARGV[i], '^([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),(.*)$')
  local old = redis.call('HGET', KEYS[1], id)
  local res = nil
  local oldCell, wasIn, revived, created = '', false, '', '*'
  if old then
    local ots, ost, ocell = string.match(old, '^[^,]*,[^,]*,[^,]*,([^,]*),([^,]*),([^,]*)$')
    if ots then
      created = ''
      if tonumber(ots) > tonumber(ts) then
        res = ''
      else
        if ost == 'offline' and state ~= '' and state ~= 'offline' then
          revived = '+'
        else
          state = ost
        end
        oldCell, wasIn = ocell, ost ~= 'offline'
      end
    end
  end
  if res == nil then
    if state == '' then state = 'available' end
    local isIn = state ~= 'offline'
    if wasIn and (not isIn or oldCell ~= cell) then redis.call('ZREM', KEYS[2], oldCell .. ':' .. id) end
    if isIn and (not wasIn or oldCell ~= cell) then redis.call('ZADD', KEYS[2], 0, cell .. ':' .. id) end
    redis.call('HSET', KEYS[1], id, lat .. ',' .. lng .. ',' .. hd .. ',' .. ts .. ',' .. state .. ',' .. cell)
    res = created .. revived .. state
    if feed ~= '' then views[#views+1] = ARGV[i+1] .. ',"state":"' .. state .. '"}' end
  end
  out[#out+1] = res
end
if #views > 0 then redis.call('PUBLISH', feed, '[' .. table.concat(views, ',') .. ']') end
return out
