-- flashgate purchase.lua, version 7: decides and records ONE purchase attempt atomically, and
-- hands a placed order to the order stream. No `#!lua` shebang and no undeclared keys:
-- Dragonfly runs it as is, under one hash tag.
--
-- KEYS (one hash tag, the event):  1 meta  2 user  3 stream  [4 fleet:<this second>]
-- ARGV: 1 now_ms (the edge's clock)  2 idempotency key  3 order JSON  4 pay_by (ms)
--       5 fresh (1: the edge knows nothing of this key, so it is not a retry it saw), then
--         optionally `:<window>`: the attempt's entry window in the line (0 before the start,
--         else the Unix second of arrival; `line::Window`)
--       then sku_1 qty_1 ... sku_n qty_n   (n = (#ARGV - 5) / 2, 1 to 100 lines)
--
-- The line (version 7): with KEYS[4], an event with `fairness = line` counts every attempt that
-- reaches it in that second's fleet bucket (`origin`), which the line's controller reads; a
-- placed order records its window as `w:<key>` in the user hash (`flashgate event verify-draw`).
--
-- Reply: an array headed by an integer code (src/script.rs, Outcome):
--   {0, total, e, today_1, remaining_1, ..., today_n, remaining_n}  placed
--   {1, order_json, total, paid, e, placed}   the key's order (a replay); placed is the
--                                     counters its 201 reported ('' if not recorded)
--   {13, order_json, state}          the key's order ended unpaid: state x expired, c cancelled
--   {2} unknown event  {3} not started  {4} paused  {5} ended
--   {6, line} unknown item  {7, line, remaining} not enough stock
--   {8, line, today, e} item cap  {9, total, e} total cap
--   {11, line, cap_qty} too many units in one order  {12} malformed arguments
-- where e is the earliest pay_by (ms) among the user's pending orders, 0 if none: until then
-- the user's counters cannot go down by expiry (a cancel lowers them at any time: the edge
-- watches the event's cancel count, src/edge.rs), so the edge may trust them.
-- A replay names the key's order; the caller compares its lines with the attempt's and
-- answers "key reused with other lines" when they differ (src/script.rs).
--
-- Data: meta holds the event's fields, `stock:<sku>` and `sold:<sku>` (units sold); the user
-- hash holds `t` (units, all items), `d:<day>:<sku>` (units of the item that calendar day),
-- `i:<key>` → the order JSON (the idempotency record), `c:<key>` → the counters its 201
-- reported ("<total> <today_1> ... <today_n>", so that a replay answers the same body),
-- `s:<key>` → the order's state (its
-- pay_by in ms while pending, then p (paid), x (expired) or c (cancelled)) and `e`. The order index, the
-- pending set and the user hash's expiry are derived from the stream by track.lua, off this
-- path (crates/core/src/orders.rs).
--
-- A fresh attempt for an item that is already sold out is refused after one read (meta) and
-- one HEXISTS of the key's record, before the user's hash is read: the cheap refusal for the
-- crowd that arrives after the sell-out. "Fresh" is only what one isolate knows: the same key
-- may have placed an order through another isolate a moment before (twins of one request,
-- or a retry that reached another isolate), so a key that holds an order is always answered
-- with it, never with a refusal. A key the edge saw sent is checked for a replay first.
--
-- Invariants: nothing is written unless every check passed, so an attempt is all or nothing;
-- sold only grows here and never past stock; each placed order is appended to the stream
-- exactly once, in the same atomic step, and its idempotency record makes any retry a replay.
-- Integer arithmetic only.
--
-- Cost: this is the hottest code at the origin. A one-line order (nearly all of them) takes
-- a straight path with the same checks, in the same order, as the general loop; tests run
-- each refusal both ways (tests/script.rs). Every number handed to redis.call is formatted
-- with '%d' first (Redis formats a Lua number with '%.17g', several times dearer), and pay_by
-- and the order JSON go to Redis as the strings they came as.

local unpack = unpack or table.unpack
local tonumber, fmt = tonumber, string.format
local now, n = tonumber(ARGV[1]), (#ARGV - 5) / 2
if not now or n < 1 or n > 100 or n % 1 ~= 0 then return {12} end
local key, doc, pay_by, fresh = ARGV[2], ARGV[3], ARGV[4], string.sub(ARGV[5], 1, 1) == '1'
local window = string.match(ARGV[5], ':(%d+)$')

-- A `fairness = line` event counts the attempts that reach it, per second.
local function count(fairness)
  if KEYS[4] and fairness == 'line' and redis.call('HINCRBY', KEYS[4], 'origin', 1) == 1 then
    redis.call('EXPIRE', KEYS[4], 600)
  end
end
local MFIELDS = {'state', 'starts_at', 'ends_at', 'utc_offset_min', 'cap_item', 'cap_total', 'cap_qty'}

-- The calendar day of `now` at the event's UTC offset (meta[4], minutes).
local function day(meta)
  local t = now + meta[4] * 60000
  return fmt('%d', (t - t % 86400000) / 86400000)
end

-- The key's order, as a retry of it is answered: {user[1] JSON, user[2] state, user[3] t, user[4] e}.
local function replay(user)
  if user[2] == 'x' or user[2] == 'c' then return {13, user[1], user[2]} end
  local placed = redis.call('HGET', KEYS[2], 'c:' .. key) or ''
  return {1, user[1], tonumber(user[3] or '0'), user[2] == 'p' and 1 or 0, tonumber(user[4] or '0'),
    placed}
end

-- The event's refusal at `now`, nil while it takes orders.
local function closed(meta)
  local flag = meta[1]
  if flag == 'ended' or now >= meta[3] + 0 then return {5} end
  if flag == 'paused' then return {4} end
  if flag ~= 'live' and now < meta[2] + 0 then return {3} end
end

-- Line i's refusal, nil when it passes: qty asked, stock (nil: unknown item), units left,
-- units of it the user has today.
local function refuse(meta, i, qty, stock, left, today, e)
  if not qty or qty < 1 or qty % 1 ~= 0 then return {12} end
  if not stock then return {6, i} end
  if qty > meta[7] + 0 then return {11, i, meta[7] + 0} end
  if qty > left then return {7, i, left} end
  if today + qty > meta[5] + 0 then return {8, i, today, e} end
end

if n == 1 then
  local sku, qty = ARGV[6], tonumber(ARGV[7])
  local sold_f = 'sold:' .. sku
  local meta = redis.call('HMGET', KEYS[1], 'state', 'starts_at', 'ends_at', 'utc_offset_min',
    'cap_item', 'cap_total', 'cap_qty', 'stock:' .. sku, sold_f, 'fairness')
  if not meta[1] then return {2} end
  count(meta[10])
  local sold = (meta[9] or 0) + 0
  local left = (meta[8] or 0) - sold
  if fresh and meta[8] and qty and qty > left and redis.call('HEXISTS', KEYS[2], 'i:' .. key) == 0 then
    return {7, 1, left}
  end
  local day_f, idem_f, state_f = 'd:' .. day(meta) .. ':' .. sku, 'i:' .. key, 's:' .. key
  local user = redis.call('HMGET', KEYS[2], idem_f, state_f, 't', 'e', day_f)
  if user[1] then return replay(user) end
  local e, today = tonumber(user[4] or '0'), (user[5] or 0) + 0
  local no = closed(meta) or refuse(meta, 1, qty, meta[8], left, today, e)
  if no then return no end
  local total = (user[3] or 0) + qty
  if total > meta[6] + 0 then return {9, total - qty, e} end
  if e == 0 or pay_by + 0 < e then e = pay_by + 0 end
  redis.call('HSET', KEYS[1], sold_f, fmt('%d', sold + qty))
  if window then
    redis.call('HSET', KEYS[2], day_f, fmt('%d', today + qty), 't', fmt('%d', total),
      'e', fmt('%d', e), state_f, pay_by, idem_f, doc, 'c:' .. key, fmt('%d %d', total, today + qty),
      'w:' .. key, window)
  else
    redis.call('HSET', KEYS[2], day_f, fmt('%d', today + qty), 't', fmt('%d', total),
      'e', fmt('%d', e), state_f, pay_by, idem_f, doc, 'c:' .. key, fmt('%d %d', total, today + qty))
  end
  redis.call('XADD', KEYS[3], '*', 'type', 'placed', 'order', doc)
  return {0, total, e, today + qty, left - qty}
end

-- Two or more lines: the same checks, line by line.
local mfields = {unpack(MFIELDS)}
for i = 1, n do
  local sku = ARGV[4 + 2 * i]
  for j = 1, i - 1 do if ARGV[4 + 2 * j] == sku then return {12} end end
  mfields[6 + 2 * i] = 'stock:' .. sku
  mfields[7 + 2 * i] = 'sold:' .. sku
end
mfields[8 + 2 * n] = 'fairness'
local meta = redis.call('HMGET', KEYS[1], unpack(mfields))
if not meta[1] then return {2} end
count(meta[8 + 2 * n])
if fresh then
  for i = 1, n do
    local stock, qty = meta[6 + 2 * i], tonumber(ARGV[5 + 2 * i])
    local left = (stock or 0) - (meta[7 + 2 * i] or 0)
    if stock and qty and qty > left then
      if redis.call('HEXISTS', KEYS[2], 'i:' .. key) == 1 then break end
      return {7, i, left}
    end
  end
end
local d = day(meta)
local ufields = {'i:' .. key, 's:' .. key, 't', 'e'}
for i = 1, n do ufields[4 + i] = 'd:' .. d .. ':' .. ARGV[4 + 2 * i] end
local user = redis.call('HMGET', KEYS[2], unpack(ufields))
if user[1] then return replay(user) end
local e = tonumber(user[4] or '0')
local no = closed(meta)
if no then return no end
local sum, new_meta, new_user, reply = 0, {}, {}, {0, 0, 0}
for i = 1, n do
  local qty, stock = tonumber(ARGV[5 + 2 * i]), meta[6 + 2 * i]
  local sold, today = (meta[7 + 2 * i] or 0) + 0, (user[4 + i] or 0) + 0
  local left = (stock or 0) - sold
  no = refuse(meta, i, qty, stock, left, today, e)
  if no then return no end
  sum = sum + qty
  new_meta[2 * i - 1], new_meta[2 * i] = mfields[7 + 2 * i], fmt('%d', sold + qty)
  new_user[2 * i - 1], new_user[2 * i] = ufields[4 + i], fmt('%d', today + qty)
  reply[2 + 2 * i], reply[3 + 2 * i] = today + qty, left - qty
end
local total = (user[3] or 0) + sum
if total > meta[6] + 0 then return {9, total - sum, e} end
if e == 0 or pay_by + 0 < e then e = pay_by + 0 end
reply[2], reply[3] = total, e
local placed = {fmt('%d', total)}
for i = 1, n do placed[i + 1] = fmt('%d', reply[2 + 2 * i]) end
local m = 2 * n
new_user[m + 1], new_user[m + 2], new_user[m + 3], new_user[m + 4] = 't', fmt('%d', total), 'e', fmt('%d', e)
new_user[m + 5], new_user[m + 6], new_user[m + 7], new_user[m + 8] = ufields[2], pay_by, ufields[1], doc
new_user[m + 9], new_user[m + 10] = 'c:' .. key, table.concat(placed, ' ')
if window then new_user[m + 11], new_user[m + 12] = 'w:' .. key, window end
redis.call('HSET', KEYS[1], unpack(new_meta))
redis.call('HSET', KEYS[2], unpack(new_user))
redis.call('XADD', KEYS[3], '*', 'type', 'placed', 'order', doc)
return reply
