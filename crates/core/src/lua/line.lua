-- flashgate line.lua, version 1: writes the line's next state, computed by the isolate that
-- claimed the advance tick (view.lua), and the threshold history.
--
-- KEYS (one hash tag): 1 meta  2 line  3 line:history
-- ARGV: 1 the tick claimed  2 Unix second  3 the highest threshold reachable with this state
--   4 the oldest second to keep in the history, then field value ... (threshold::LineState)
-- Reply: 1 when written, 0 when a state of a later tick was written meanwhile (nothing
--   written), or the event does not exist. A claimer whose write comes late (after the next
--   tick was claimed) still writes, unless that next state is already in: no tick is lost to
--   a slow round trip.
-- Invariant: the stored threshold (`pos`) only grows; the history's value for a second only grows; it is the highest threshold any
-- isolate could use in that second, so an order placed then for a place below it was in turn.
-- Its first call is an EXISTS, so `INFO commandstats` counts it with view.lua (not a purchase).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local tick = tonumber(ARGV[1])
if tick <= tonumber(redis.call('HGET', KEYS[2], 'tick') or '0') then return 0 end
local fields = {'tick', ARGV[1]}
local pos
for i = 5, #ARGV do
  fields[#fields + 1] = ARGV[i]
  if ARGV[i] == 'pos' then pos = tonumber(ARGV[i + 1]) end
end
-- The threshold never goes back: a state computed from an older one (a claimer that read
-- before the last write landed) is dropped.
if pos and pos < tonumber(redis.call('HGET', KEYS[2], 'pos') or '0') then return 0 end
if #fields > 0 then redis.call('HSET', KEYS[2], unpack(fields)) end
local sec, reach = ARGV[2], tonumber(ARGV[3])
local before = tonumber(redis.call('HGET', KEYS[3], sec) or '-1')
if reach > before then redis.call('HSET', KEYS[3], sec, ARGV[3]) end
redis.call('HDEL', KEYS[3], ARGV[4])
return 1
