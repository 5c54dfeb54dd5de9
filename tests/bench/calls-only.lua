-- A reference for purchase.lua in .ci/bench.sh, not a script flashgate runs: the same eight
-- redis.calls that purchase.lua's success path makes, with the same KEYS and ARGV and values
-- of the same sizes, but none of its checks, parsing or arithmetic. Its calls/s is the most
-- purchase.lua could reach while it writes what it writes (the user's record and counters,
-- sold and the order index, the pending set, the stream, the user hash's expiry), so the gap
-- between the two is what purchase.lua's decisions cost.
-- KEYS: 1 meta  2 sold  3 user  4 pending  5 stream.  ARGV: as purchase.lua's (src/script.rs).
local key, sku = ARGV[2], ARGV[10]
local d = 'd:20000:' .. sku
redis.call('HMGET', KEYS[1], 'state', 'starts_at', 'ends_at', 'utc_offset_min', 'cap_item',
  'cap_total', 'cap_qty', 'stock:' .. sku)
redis.call('HMGET', KEYS[2], sku)
redis.call('HMGET', KEYS[3], 'i:' .. key, 's:' .. key, 't', 'e', d)
redis.call('HSET', KEYS[2], sku, '1', 'o:' .. ARGV[5], ARGV[6] .. ' ' .. key .. ' 20000')
redis.call('HSET', KEYS[3], d, '1', 't', '1', 'e', ARGV[7], 's:' .. key, ARGV[7],
  'i:' .. key, ARGV[3] .. '\n' .. ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[7], ARGV[5])
redis.call('XADD', KEYS[5], '*', 'type', 'placed', 'order', ARGV[4], 'at', ARGV[1])
redis.call('PEXPIREAT', KEYS[3], '4102444800000')
return {0, 1, 0, 1, 0}
