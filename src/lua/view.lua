-- flashgate view.lua, version 2: one consistent read of an event for the edge cache and the CLI.
-- KEYS (one hash tag): 1 meta  2 sold  3 pending  4 stream
-- Reply: 0 when the event does not exist, else
--   {meta fields, stock fields, sold fields, stream length, pending orders}
-- where each "fields" is a flat array of name, value (stock from meta's `stock:<sku>`, sold
-- for the same skus). Read-only.
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
return {meta, stock, sold, redis.call('XLEN', KEYS[4]), redis.call('ZCARD', KEYS[3])}
