-- flashgate line.lua, version 2: writes the line's next state, computed by the isolate that
-- claimed the advance tick (view.lua), and the threshold history.
--
-- KEYS (one hash tag): 1 meta  2 line  3 line:history
-- ARGV: 1 the tick claimed  2 Unix second  3 the highest threshold reachable with this state
--   4 the oldest second to keep in the history  5 `at` of the state it was computed from (0:
--   none), then field value ... (threshold::LineState)
-- Reply: 1 when written; 0 when nothing was written: the event does not exist, a state of a
--   later tick is in, or the state it was computed from is no longer the latest (a claimer
--   that read before the last write landed, or two claimers racing: the later tick's claimer
--   computes from the new state). A claimer whose write comes late (after the next tick was
--   claimed) still writes when its base is still the latest: no tick is lost to a slow round
--   trip.
-- Invariant: the stored threshold (`pos`) only grows; each state is computed from the one it
-- replaces; the history's value for a second only grows and is the highest threshold any
-- isolate could use in that second, so an order placed then for a place below it was in turn.
-- Its first call is an EXISTS, so `INFO commandstats` counts it with view.lua (not a purchase).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local tick = tonumber(ARGV[1])
local stored = redis.call('HMGET', KEYS[2], 'tick', 'at', 'pos')
if tick <= tonumber(stored[1] or '0') then return 0 end
if (stored[2] or '0') ~= ARGV[5] then return 0 end
local fields = {'tick', ARGV[1]}
local pos
for i = 6, #ARGV do
  fields[#fields + 1] = ARGV[i]
  if ARGV[i] == 'pos' then pos = tonumber(ARGV[i + 1]) end
end
if pos and pos < tonumber(stored[3] or '0') then return 0 end
redis.call('HSET', KEYS[2], unpack(fields))
local sec, reach = ARGV[2], tonumber(ARGV[3])
local before = tonumber(redis.call('HGET', KEYS[3], sec) or '-1')
if reach > before then redis.call('HSET', KEYS[3], sec, ARGV[3]) end
redis.call('HDEL', KEYS[3], ARGV[4])
return 1
