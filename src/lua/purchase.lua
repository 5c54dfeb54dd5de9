-- flashgate purchase.lua, version 1: decides and records ONE purchase attempt atomically.
-- No `#!lua` shebang and no undeclared keys: Dragonfly runs it as is, under one hash tag.
--
-- KEYS (one hash tag, the event):  1 meta  2 stock  3 sold  4 user  5 orders
-- ARGV: 1 now_ms (the edge's clock)  2 idempotency key  3 fingerprint of the lines
--       4 order JSON  5 n lines  then sku_1 qty_1 ... sku_n qty_n
--
-- Reply: an array headed by an integer code (src/script.rs, Outcome):
--   {0, total, today_1, remaining_1, ..., today_n, remaining_n}   placed
--   {1, order_json, total}                                        replay of a placed order
--   {2} unknown event  {3} not started  {4} paused  {5} ended
--   {6, line} unknown item  {7, line, remaining} not enough stock
--   {8, line, today} item cap  {9, total} total cap  {10} key reused with other lines
--   {11, line, cap_qty} too many units in one order  {12} malformed arguments
--
-- Invariants: nothing is written unless every check passed, so an attempt is all or nothing;
-- sold only grows here and never past stock; each placed order is pushed to the queue exactly
-- once, and its idempotency record makes any retry a replay. Integer arithmetic only.

local unpack = unpack or table.unpack
local meta = redis.call('HMGET', KEYS[1], 'state', 'starts_at', 'ends_at', 'utc_offset_min',
  'cap_item', 'cap_total', 'cap_qty')
if not meta[1] then return {2} end

local now = tonumber(ARGV[1])
local n = tonumber(ARGV[5])
if not now or not n or n < 1 or n > 100 or #ARGV ~= 5 + 2 * n then return {12} end
local day = math.floor((now + tonumber(meta[4]) * 60000) / 86400000)

-- One read of the user's hash: the idempotency record, the total, today's count per line.
local idem = 'i:' .. ARGV[2]
local skus, fields, seen = {}, {idem, 't'}, {}
for i = 1, n do
  local sku = ARGV[4 + 2 * i]
  if seen[sku] then return {12} end
  seen[sku] = true
  skus[i] = sku
  fields[i + 2] = 'd:' .. day .. ':' .. sku
end
local user = redis.call('HMGET', KEYS[4], unpack(fields))
if user[1] then
  local nl = string.find(user[1], '\n', 1, true)
  if string.sub(user[1], 1, nl - 1) ~= ARGV[3] then return {10} end
  return {1, string.sub(user[1], nl + 1), tonumber(user[2] or '0')}
end

local flag, starts, ends = meta[1], tonumber(meta[2]), tonumber(meta[3])
if flag == 'ended' or now >= ends then return {5} end
if flag == 'paused' then return {4} end
if flag ~= 'live' and now < starts then return {3} end

local cap_item, cap_total, cap_qty = tonumber(meta[5]), tonumber(meta[6]), tonumber(meta[7])
local stock = redis.call('HMGET', KEYS[2], unpack(skus))
local sold = redis.call('HMGET', KEYS[3], unpack(skus))
local sum, new_sold, new_user, reply = 0, {}, {}, {0, 0}
for i = 1, n do
  local qty = tonumber(ARGV[5 + 2 * i])
  if not qty or qty < 1 or qty ~= math.floor(qty) then return {12} end
  if not stock[i] then return {6, i} end
  if qty > cap_qty then return {11, i, cap_qty} end
  local s = tonumber(sold[i] or '0')
  local remaining = tonumber(stock[i]) - s
  if qty > remaining then return {7, i, remaining} end
  local today = tonumber(user[i + 2] or '0')
  if today + qty > cap_item then return {8, i, today} end
  sum = sum + qty
  new_sold[#new_sold + 1] = skus[i]
  new_sold[#new_sold + 1] = s + qty
  new_user[#new_user + 1] = fields[i + 2]
  new_user[#new_user + 1] = today + qty
  reply[#reply + 1] = today + qty
  reply[#reply + 1] = remaining - qty
end
local total = tonumber(user[2] or '0')
if total + sum > cap_total then return {9, total} end
reply[2] = total + sum

-- Every check passed: write. The script is atomic, so absolute values are safe here.
new_user[#new_user + 1] = 't'
new_user[#new_user + 1] = total + sum
new_user[#new_user + 1] = idem
new_user[#new_user + 1] = ARGV[3] .. '\n' .. ARGV[4]
redis.call('HSET', KEYS[3], unpack(new_sold))
redis.call('HSET', KEYS[4], unpack(new_user))
redis.call('RPUSH', KEYS[5], ARGV[4])
if not user[2] then redis.call('PEXPIREAT', KEYS[4], ends + 7 * 86400000) end
return reply
