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

local meta = redis.call('HMGET', KEYS[1], 'state', 'starts_at', 'ends_at', 'utc_offset_min',
  'cap_item', 'cap_total', 'cap_qty')
if not meta[1] then return {2} end

local now = tonumber(ARGV[1])
local n = tonumber(ARGV[5])
if not now or not n or n < 1 or n > 100 or #ARGV ~= 5 + 2 * n then return {12} end

local idem = 'i:' .. ARGV[2]
local prior = redis.call('HGET', KEYS[4], idem)
if prior then
  local nl = string.find(prior, '\n', 1, true)
  if string.sub(prior, 1, nl - 1) ~= ARGV[3] then return {10} end
  return {1, string.sub(prior, nl + 1), tonumber(redis.call('HGET', KEYS[4], 't') or '0')}
end

local flag, starts, ends = meta[1], tonumber(meta[2]), tonumber(meta[3])
if flag == 'ended' or now >= ends then return {5} end
if flag == 'paused' then return {4} end
if flag ~= 'live' and now < starts then return {3} end

local cap_item, cap_total, cap_qty = tonumber(meta[5]), tonumber(meta[6]), tonumber(meta[7])
local day = math.floor((now + tonumber(meta[4]) * 60000) / 86400000)

local lines, seen, sum = {}, {}, 0
for i = 1, n do
  local sku, qty = ARGV[4 + 2 * i], tonumber(ARGV[5 + 2 * i])
  if seen[sku] or not qty or qty < 1 or qty ~= math.floor(qty) then return {12} end
  seen[sku] = true
  local stock = redis.call('HGET', KEYS[2], sku)
  if not stock then return {6, i} end
  if qty > cap_qty then return {11, i, cap_qty} end
  local remaining = tonumber(stock) - tonumber(redis.call('HGET', KEYS[3], sku) or '0')
  if qty > remaining then return {7, i, remaining} end
  local field = 'd:' .. day .. ':' .. sku
  local today = tonumber(redis.call('HGET', KEYS[4], field) or '0')
  if today + qty > cap_item then return {8, i, today} end
  lines[i] = {sku, qty, field, today, remaining}
  sum = sum + qty
end
local total = tonumber(redis.call('HGET', KEYS[4], 't') or '0')
if total + sum > cap_total then return {9, total} end

local reply = {0, total + sum}
for i = 1, n do
  local l = lines[i]
  redis.call('HINCRBY', KEYS[3], l[1], l[2])
  redis.call('HINCRBY', KEYS[4], l[3], l[2])
  reply[#reply + 1] = l[4] + l[2]
  reply[#reply + 1] = l[5] - l[2]
end
redis.call('HINCRBY', KEYS[4], 't', sum)
redis.call('HSET', KEYS[4], idem, ARGV[3] .. '\n' .. ARGV[4])
redis.call('RPUSH', KEYS[5], ARGV[4])
redis.call('PEXPIREAT', KEYS[4], ends + 7 * 86400000)
return reply
