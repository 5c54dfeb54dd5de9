-- flashgate track.lua, version 1: records placed orders, read from the stream, where pay and
-- expiry find them. purchase.lua leaves this out of its atomic step to stay cheap; everything
-- here is derived from a stream entry and is idempotent, so tracking an order twice, or two
-- trackers at once, changes nothing.
--
-- KEYS (one hash tag, the event):  1 meta  2 orders  3 pending  then 3 + i: the user hash
--   of order i
-- ARGV: 1 the stream id ("<ms>-<seq>") up to which the entries were read, then per placed
--   order i: order id, user id, idempotency key, created (Unix ms, the `now` purchase.lua had)
-- Reply: the orders that are pending after this call, of those given (integer).
--
-- Per order: the index `o:<order id>` → "<user> <key> <day>" in the orders hash (day: the
-- calendar day purchase.lua counted the order on, at the event's UTC offset); the pending
-- set gets the order at its deadline if it is still pending (`s:<key>` a number: an order
-- already paid or expired is not put back); the user hash, when it holds the order, expires
-- 7 days after the event ends. Then `n:tracked` in the orders hash moves up to ARGV[1], never down: every placed
-- entry at or below it has been tracked (crates/core/src/orders.rs reads from just past it).

local unpack = unpack or table.unpack
local ms, seq = string.match(ARGV[1], '^(%d+)-(%d+)$')
if not ms or (#ARGV - 1) % 4 ~= 0 then return redis.error_reply('track.lua: malformed arguments') end
local meta = redis.call('HMGET', KEYS[1], 'utc_offset_min', 'ends_at')
-- An event deleted meanwhile has nothing left to pay or expire: its entries are passed over.
local n = meta[1] and (#ARGV - 1) / 4 or 0
local off, expire_at = tonumber(meta[1] or '0') * 60000, string.format('%d', tonumber(meta[2] or '0') + 7 * 86400000)
local index, due, pending = {}, {}, 0
for i = 1, n do
  local oid, uid, key, created = ARGV[4 * i - 2], ARGV[4 * i - 1], ARGV[4 * i], tonumber(ARGV[4 * i + 1])
  local t = created + off
  index[2 * i - 1] = 'o:' .. oid
  index[2 * i] = uid .. ' ' .. key .. ' ' .. string.format('%d', (t - t % 86400000) / 86400000)
  local state = redis.call('HGET', KEYS[3 + i], 's:' .. key)
  if state then
    -- The order is in its user's hash (not yet expired with it).
    if tonumber(state) then
      due[#due + 1] = state
      due[#due + 1] = oid
      pending = pending + 1
    end
    redis.call('PEXPIREAT', KEYS[3 + i], expire_at)
  end
end
if n > 0 then redis.call('HSET', KEYS[2], unpack(index)) end
if #due > 0 then redis.call('ZADD', KEYS[3], unpack(due)) end
local cur = redis.call('HGET', KEYS[2], 'n:tracked')
local cms, cseq = string.match(cur or '0-0', '^(%d+)-(%d+)$')
if tonumber(ms) > tonumber(cms) or (tonumber(ms) == tonumber(cms) and tonumber(seq) > tonumber(cseq)) then
  redis.call('HSET', KEYS[2], 'n:tracked', ARGV[1])
end
return pending
