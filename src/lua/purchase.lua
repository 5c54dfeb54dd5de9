-- flashgate purchase.lua, version 4: decides and records ONE purchase attempt atomically, and
-- hands a placed order to the order stream. No `#!lua` shebang and no undeclared keys:
-- Dragonfly runs it as is, under one hash tag.
--
-- KEYS (one hash tag, the event):  1 meta  2 sold  3 user  4 pending  5 stream
-- ARGV: 1 now_ms (the edge's clock)  2 idempotency key  3 fingerprint of the lines ("A:1,B:2")
--       4 order JSON  5 order id  6 user id  7 pay_by (ms)  8 n lines
--       9 fresh (1: the edge knows nothing of this key, so it is not a retry it saw)
--       then sku_1 qty_1 ... sku_n qty_n
--
-- Reply: an array headed by an integer code (src/script.rs, Outcome):
--   {0, total, e, today_1, remaining_1, ..., today_n, remaining_n}  placed
--   {1, order_json, total, paid, e}                                replay of a live order
--   {13, order_json}                                               the key's order expired
--   {2} unknown event  {3} not started  {4} paused  {5} ended
--   {6, line} unknown item  {7, line, remaining} not enough stock
--   {8, line, today, e} item cap  {9, total, e} total cap  {10} key reused with other lines
--   {11, line, cap_qty} too many units in one order  {12} malformed arguments
-- where e is the earliest pay_by (ms) among the user's pending orders, 0 if none: until then
-- the user's counters cannot go down (only an expiry lowers them), so the edge may trust them.
--
-- Data: meta holds `stock:<sku>`; sold holds `<sku>` → units sold and `o:<order id>` →
-- "<user> <key> <day>" (the index settle.lua finds an order by); the user hash
-- holds `t`, `d:<day>:<sku>`, `i:<key>` → fingerprint "\n" order JSON, `s:<key>` → the order's
-- state: its pay_by (ms) while pending, then p (paid) or x (expired), and `e`.
--
-- A fresh attempt for an item that is already sold out is refused after two reads (meta and
-- sold), before the user's hash is read: the cheap refusal for the crowd that arrives after
-- the sell-out. A key the edge saw sent (a possible retry) is checked for a replay first.
--
-- Invariants: nothing is written unless every check passed, so an attempt is all or nothing;
-- sold only grows here and never past stock; each placed order is appended to the stream
-- exactly once, in the same atomic step, and its idempotency record makes any retry a replay.
-- Integer arithmetic only.
--
-- Cost: every number handed to redis.call or joined into a string is formatted with '%d'
-- first (Lua's own number-to-string is '%.14g', and Redis formats a number argument with
-- '%.17g', both several times dearer), and pay_by goes to Redis as the string it came as.

local unpack = unpack or table.unpack
local now, n = tonumber(ARGV[1]), tonumber(ARGV[8])
if not now or not n or n < 1 or n > 100 or #ARGV ~= 9 + 2 * n then return {12} end

local mfields = {'state', 'starts_at', 'ends_at', 'utc_offset_min', 'cap_item', 'cap_total', 'cap_qty'}
local skus, seen = {}, {}
for i = 1, n do
  local sku = ARGV[8 + 2 * i]
  if seen[sku] then return {12} end
  seen[sku] = true
  skus[i] = sku
  mfields[7 + i] = 'stock:' .. sku
end
local meta = redis.call('HMGET', KEYS[1], unpack(mfields))
if not meta[1] then return {2} end
local fmt = string.format
local day = fmt('%d', math.floor((now + tonumber(meta[4]) * 60000) / 86400000))

local sold
if ARGV[9] == '1' then
  sold = redis.call('HMGET', KEYS[2], unpack(skus))
  for i = 1, n do
    local stock, qty = tonumber(meta[7 + i]), tonumber(ARGV[9 + 2 * i])
    if stock and qty and qty > stock - tonumber(sold[i] or '0') then
      return {7, i, stock - tonumber(sold[i] or '0')}
    end
  end
end

-- One read of the user's hash: the idempotency record and state, the total, the earliest
-- pending deadline, and today's count per line.
local key = ARGV[2]
local fields = {'i:' .. key, 's:' .. key, 't', 'e'}
for i = 1, n do fields[4 + i] = 'd:' .. day .. ':' .. skus[i] end
local user = redis.call('HMGET', KEYS[3], unpack(fields))
if user[1] then
  local nl = string.find(user[1], '\n', 1, true)
  if string.sub(user[1], 1, nl - 1) ~= ARGV[3] then return {10} end
  local doc = string.sub(user[1], nl + 1)
  if user[2] == 'x' then return {13, doc} end
  return {1, doc, tonumber(user[3] or '0'), user[2] == 'p' and 1 or 0, tonumber(user[4] or '0')}
end
local e = tonumber(user[4] or '0')

local flag, starts, ends = meta[1], tonumber(meta[2]), tonumber(meta[3])
if flag == 'ended' or now >= ends then return {5} end
if flag == 'paused' then return {4} end
if flag ~= 'live' and now < starts then return {3} end

local cap_item, cap_total, cap_qty = tonumber(meta[5]), tonumber(meta[6]), tonumber(meta[7])
sold = sold or redis.call('HMGET', KEYS[2], unpack(skus))
local sum, new_sold, new_user, reply = 0, {}, {}, {0, 0, 0}
for i = 1, n do
  local qty = tonumber(ARGV[9 + 2 * i])
  if not qty or qty < 1 or qty ~= math.floor(qty) then return {12} end
  local stock = meta[7 + i]
  if not stock then return {6, i} end
  if qty > cap_qty then return {11, i, cap_qty} end
  local s = tonumber(sold[i] or '0')
  local remaining = tonumber(stock) - s
  if qty > remaining then return {7, i, remaining} end
  local today = tonumber(user[4 + i] or '0')
  if today + qty > cap_item then return {8, i, today, e} end
  sum = sum + qty
  new_sold[#new_sold + 1] = skus[i]
  new_sold[#new_sold + 1] = fmt('%d', s + qty)
  new_user[#new_user + 1] = fields[4 + i]
  new_user[#new_user + 1] = fmt('%d', today + qty)
  reply[#reply + 1] = today + qty
  reply[#reply + 1] = remaining - qty
end
local total = tonumber(user[3] or '0')
if total + sum > cap_total then return {9, total, e} end

-- Every check passed: write. The script is atomic, so absolute values are safe here.
local oid, pay_by = ARGV[5], tonumber(ARGV[7])
if e == 0 or pay_by < e then e = pay_by end
reply[2], reply[3] = total + sum, e
new_sold[#new_sold + 1] = 'o:' .. oid
new_sold[#new_sold + 1] = ARGV[6] .. ' ' .. key .. ' ' .. day
new_user[#new_user + 1] = 't'
new_user[#new_user + 1] = fmt('%d', total + sum)
new_user[#new_user + 1] = 'e'
new_user[#new_user + 1] = fmt('%d', e)
new_user[#new_user + 1] = 's:' .. key
new_user[#new_user + 1] = ARGV[7]
new_user[#new_user + 1] = 'i:' .. key
new_user[#new_user + 1] = ARGV[3] .. '\n' .. ARGV[4]
redis.call('HSET', KEYS[2], unpack(new_sold))
redis.call('HSET', KEYS[3], unpack(new_user))
redis.call('ZADD', KEYS[4], ARGV[7], oid)
redis.call('XADD', KEYS[5], '*', 'type', 'placed', 'order', ARGV[4], 'at', ARGV[1])
if not user[3] then redis.call('PEXPIREAT', KEYS[3], fmt('%d', ends + 7 * 86400000)) end
return reply
