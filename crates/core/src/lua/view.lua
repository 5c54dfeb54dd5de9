-- flashgate view.lua, version 4: one consistent read of an event for the edge cache and the CLI,
-- and the fleet's figures: an isolate that refreshes reports its counts since its last report.
--
-- KEYS (one hash tag): 1 meta  2 pending  3 stream
--   4 fleet:<this second> (where a report goes)  5 fleet:<second - 1>  6 fleet:<second - 2>
-- ARGV: 1 TTL of a fleet bucket in seconds, then name count ... (the report; none from the CLI)
-- Reply: 0 when the event does not exist, else
--   {meta fields, stock fields, sold fields, stream length, pending orders,
--    fleet fields of second - 1, fleet fields of second - 2}
-- where each "fields" is a flat array of name, value (stock from meta's `stock:<sku>`, sold
-- from its `sold:<sku>`, 0 when absent; fleet buckets are hashes of counter → sum over the
-- reports that second). Pending orders are those track.lua has recorded.
-- Writes only the fleet bucket. Its first call is the only EXISTS in flashgate's scripts, so
-- `INFO commandstats` counts view.lua calls as cmdstat_exists (the simulator relies on it).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local meta = redis.call('HGETALL', KEYS[1])
local stock, sold, by_sku = {}, {}, {}
for i = 1, #meta, 2 do
  local tag = string.sub(meta[i], 1, 5)
  if tag == 'stock' and string.sub(meta[i], 6, 6) == ':' then
    local sku = string.sub(meta[i], 7)
    stock[#stock + 1] = sku
    stock[#stock + 1] = meta[i + 1]
  elseif tag == 'sold:' then
    by_sku[string.sub(meta[i], 6)] = meta[i + 1]
  end
end
for i = 1, #stock, 2 do
  sold[#sold + 1] = stock[i]
  sold[#sold + 1] = by_sku[stock[i]] or '0'
end
if #ARGV > 1 then
  for i = 2, #ARGV - 1, 2 do redis.call('HINCRBY', KEYS[4], ARGV[i], ARGV[i + 1]) end
  redis.call('EXPIRE', KEYS[4], ARGV[1])
end
return {meta, stock, sold, redis.call('XLEN', KEYS[3]), redis.call('ZCARD', KEYS[2]),
  redis.call('HGETALL', KEYS[5]), redis.call('HGETALL', KEYS[6])}
