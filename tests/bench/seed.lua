-- The baseline for purchase.lua in .ci/bench.sh: the minimal flash-sale script (the shape of
-- Dragonfly's flash-sale example). One hash per item holds `inventory` and `purchased`; a
-- purchase reads both and takes one unit if any is left. No event state, no user caps, no
-- idempotency record, no order queue: everything purchase.lua adds is what the ratio prices.
-- KEYS: 1 the item hash.  Reply: 1 bought, 0 sold out.
local v = redis.call('HMGET', KEYS[1], 'inventory', 'purchased')
local inventory, purchased = tonumber(v[1] or '0'), tonumber(v[2] or '0')
if purchased < inventory then
  redis.call('HINCRBY', KEYS[1], 'purchased', 1)
  return 1
end
return 0
