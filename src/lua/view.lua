-- flashgate view.lua, version 3: one consistent read of an event for the edge cache and the CLI,
-- and the fleet's figures: an isolate that refreshes reports its counts since its last report.
--
-- KEYS (one hash tag): 1 meta  2 sold  3 pending  4 stream
--   5 fleet:<this second> (where a report goes)  6 fleet:<second - 1>  7 fleet:<second - 2>
-- ARGV: 1 TTL of a fleet bucket in seconds, then name count ... (the report; none from the CLI)
-- Reply: 0 when the event does not exist, else
--   {meta fields, stock fields, sold fields, stream length, pending orders,
--    fleet fields of second - 1, fleet fields of second - 2}
-- where each "fields" is a flat array of name, value (stock from meta's `stock:<sku>`, sold
-- for the same skus; fleet buckets are hashes of counter → sum over the reports that second).
-- Writes only the fleet bucket. Its first call is the only EXISTS in flashgate's scripts, so
-- `INFO commandstats` counts view.lua calls as cmdstat_exists (the simulator relies on it).
local unpack = unpack or table.unpack
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local meta = redis.call('HGETALL', KEYS[1])
local skus, stock, sold = {}, {}, {}
for i = 1, #meta, 2 do
  if string.sub(meta[i], 1, 6) == 'stock:' then
    local sku = string.sub(meta[i], 7)
    skus[#skus + 1] = sku
    stock[#stock + 1] = sku
    stock[#stock + 1] = meta[i + 1]
  end
end
if #skus > 0 then
  local v = redis.call('HMGET', KEYS[2], unpack(skus))
  for i = 1, #skus do
    sold[#sold + 1] = skus[i]
    sold[#sold + 1] = v[i] or '0'
  end
end
if #ARGV > 1 then
  for i = 2, #ARGV - 1, 2 do redis.call('HINCRBY', KEYS[5], ARGV[i], ARGV[i + 1]) end
  redis.call('EXPIRE', KEYS[5], ARGV[1])
end
return {meta, stock, sold, redis.call('XLEN', KEYS[4]), redis.call('ZCARD', KEYS[3]),
  redis.call('HGETALL', KEYS[6]), redis.call('HGETALL', KEYS[7])}
