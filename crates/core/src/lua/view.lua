-- flashgate view.lua, version 7: one consistent read of an event for the edge cache and the CLI,
-- the fleet's figures (an isolate that refreshes reports its counts since its last report), and
-- the line (the draw's seed from the start on, the threshold, entrants per window).
--
-- KEYS (one hash tag): 1 meta  2 pending  3 stream
--   4 fleet:<this second> (where a report goes)  5 fleet:<second - 1>  6 fleet:<second - 2>
--   7 seed  8 line  9 line:seen
-- ARGV: 1 TTL of a fleet bucket in seconds  2 now (Unix ms)  3 the advance tick to claim
--   (now / ADVANCE_MS; 0 claims nothing), then name count ... (the report; none from the CLI).
--   A report name `@<rank>:<user>` is a sampled sighting of a user in a window: counted once
--   per user and window (line:seen), into the line hash's `n:<rank>`; `#<rank>:<user>:<key>`
--   one of their purchases (Idempotency-Key), counted once into `k:<rank>`; `~<rank>` the
--   milliseconds of that window the isolate watched since its last report, added to `x:<rank>`.
-- Reply: 0 when the event does not exist, else
--   {meta fields, stock fields, sold fields, stream length, pending orders,
--    fleet fields of second - 1, fleet fields of second - 2,
--    seed (hex; '' before the start), line fields, claimed (1: this call claimed the tick),
--    fleet fields of this second}
-- where each "fields" is a flat array of name, value (stock from meta's `stock:<sku>`, sold
-- from its `sold:<sku>`, 0 when absent; fleet buckets are hashes of counter → sum over the
-- reports that second). Pending orders are those track.lua has recorded. The tick is claimed
-- (the caller then advances the line with line.lua) only for a started `fairness = line` sale,
-- and only once: the line hash's `claimed` only grows. Nor while the last claim's state has not
-- been written (line.lua's `tick`), for up to 4 ticks: its claimer would compute from the state
-- before it, and line.lua would refuse the write.
-- Writes only the fleet bucket, the line's sightings and `claimed`. Its first call is one of
-- the two EXISTS in flashgate's scripts (line.lua has the other), so `INFO commandstats`
-- counts view.lua and line.lua calls as cmdstat_exists (the simulator relies on it).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local meta = redis.call('HGETALL', KEYS[1])
local stock, sold, by_sku = {}, {}, {}
local starts_at, flag, fairness = 0, 'scheduled', 'attempt'
for i = 1, #meta, 2 do
  local tag = string.sub(meta[i], 1, 5)
  if tag == 'stock' and string.sub(meta[i], 6, 6) == ':' then
    local sku = string.sub(meta[i], 7)
    stock[#stock + 1] = sku
    stock[#stock + 1] = meta[i + 1]
  elseif tag == 'sold:' then
    by_sku[string.sub(meta[i], 6)] = meta[i + 1]
  elseif meta[i] == 'starts_at' then
    starts_at = tonumber(meta[i + 1]) or 0
  elseif meta[i] == 'state' then
    flag = meta[i + 1]
  elseif meta[i] == 'fairness' then
    fairness = meta[i + 1]
  end
end
for i = 1, #stock, 2 do
  sold[#sold + 1] = stock[i]
  sold[#sold + 1] = by_sku[stock[i]] or '0'
end
local reported = false
for i = 4, #ARGV - 1, 2 do
  local name = ARGV[i]
  local mark = string.sub(name, 1, 1)
  if mark == '@' then
    local rank = string.match(name, '^@(%d+):')
    if rank and redis.call('HSETNX', KEYS[9], string.sub(name, 2), '1') == 1 then
      redis.call('HINCRBY', KEYS[8], 'n:' .. rank, 1)
    end
  elseif mark == '~' then
    local rank = string.match(name, '^~(%d+)$')
    local ms = tonumber(ARGV[i + 1])
    if rank and ms then redis.call('HINCRBY', KEYS[8], 'x:' .. rank, math.floor(ms)) end
  elseif mark == '#' then
    local rank = string.match(name, '^#(%d+):')
    if rank and redis.call('HSETNX', KEYS[9], name, '1') == 1 then
      redis.call('HINCRBY', KEYS[8], 'k:' .. rank, 1)
    end
  else
    redis.call('HINCRBY', KEYS[4], name, ARGV[i + 1])
    reported = true
  end
end
if reported then redis.call('EXPIRE', KEYS[4], ARGV[1]) end
local now = tonumber(ARGV[2]) or 0
local started = now >= starts_at or flag ~= 'scheduled'
local seed = ''
if started then seed = redis.call('GET', KEYS[7]) or '' end
local claimed = 0
local tick = tonumber(ARGV[3]) or 0
if tick > 0 and started and fairness == 'line' then
  local last = tonumber(redis.call('HGET', KEYS[8], 'claimed') or '0')
  local written = tonumber(redis.call('HGET', KEYS[8], 'tick') or '0')
  if tick > last and (written >= last or tick - last >= 4) then
    redis.call('HSET', KEYS[8], 'claimed', ARGV[3])
    claimed = 1
  end
end
return {meta, stock, sold, redis.call('XLEN', KEYS[3]), redis.call('ZCARD', KEYS[2]),
  redis.call('HGETALL', KEYS[5]), redis.call('HGETALL', KEYS[6]), seed,
  redis.call('HGETALL', KEYS[8]), claimed, redis.call('HGETALL', KEYS[4])}
