-- A reference for purchase.lua in .ci/bench.sh, not a script flashgate runs: the same five
-- redis.calls that purchase.lua's success path makes, with the same KEYS and ARGV and values
-- of the same sizes, but none of its checks, parsing or arithmetic. Its calls/s is the most
-- purchase.lua could reach while it writes what it writes (sold, the user's counters, state
-- and idempotency record, the stream entry), so the gap between the two is what purchase.lua's
-- decisions cost.
-- KEYS: 1 meta  2 user  3 stream.  ARGV: as purchase.lua's (crates/core/src/script.rs).
local key, sku = ARGV[2], ARGV[6]
local d = 'd:20000:' .. sku
redis.call('HMGET', KEYS[1], 'state', 'starts_at', 'ends_at', 'utc_offset_min', 'cap_item',
  'cap_total', 'cap_qty', 'stock:' .. sku, 'sold:' .. sku)
redis.call('HMGET', KEYS[2], 'i:' .. key, 's:' .. key, 't', 'e', d)
redis.call('HSET', KEYS[1], 'sold:' .. sku, '1')
redis.call('HSET', KEYS[2], d, '1', 't', '1', 'e', ARGV[4], 's:' .. key, ARGV[4],
  'i:' .. key, ARGV[3])
redis.call('XADD', KEYS[3], '*', 'type', 'placed', 'order', ARGV[3])
return {0, 1, 0, 1, 0}
