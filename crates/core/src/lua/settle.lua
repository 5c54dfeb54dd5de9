-- flashgate settle.lua, version 5: ends ONE pending order atomically: paid, expired or cancelled.
-- Pay, expire and cancel are this one script with a verb, so they check the same state in the
-- same atomic step: of a pay, an expiry and a cancel of one order, exactly one wins.
--
-- KEYS (one hash tag, the event):  1 meta  2 orders  3 user  4 pending  5 stream
-- ARGV: 1 verb (pay | expire | cancel)  2 order id  3 user id  4 idempotency key  5 now_ms
--
-- Reply (src/script.rs, Settled):
--   {0, units}  done: paid (units 0), or expired or cancelled with `units` given back to stock
--   {1} already paid   {3} already expired   {5} already cancelled
--   {2} no such order (not placed, or not yet tracked)
--   {4, pay_by} expire before the order's deadline: not due   {12} malformed arguments
--
-- Invariants: only a pending order changes state (pending → paid | expired | cancelled, never
-- back); an expiry or a cancel (which is an expiry on demand, at any time) gives back exactly the order's units to meta's `sold:<sku>` and to the user's
-- counters (the total and the order's calendar day); the user's `e` stays the earliest
-- pending deadline; every change is appended to the stream in the same atomic step; the
-- orders hash counts the orders ever paid (`n:paid`), expired (`n:expired`) and cancelled
-- (`n:cancelled`) for the operator (live.lua). A cancel also counts itself in meta's `cancels`:
-- the edge's caches learn from it (view.lua reads meta) that counters and orders it learnt
-- before may have gone back before their deadline (src/edge.rs).
--
-- The order is found through the index track.lua keeps (`o:<order id>` → "<user> <key>
-- <day>" in the orders hash). Its lines are read from its JSON (the idempotency record
-- `i:<key>`), which flashgate writes itself: `"sku":"<sku>","qty":<n>` per line, in that order
-- (src/order.rs, golden-tested), with skus that need no escaping (model::valid_id).

local unpack = unpack or table.unpack
local verb, oid, uid, key, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
-- Per verb: the order's new state, the stream entry's type, the counter.
local ENDS = {
  pay = {'p', 'paid', 'n:paid'},
  expire = {'x', 'expired', 'n:expired'},
  cancel = {'c', 'cancelled', 'n:cancelled'},
}
local to = ENDS[verb]
if not to or not now or #ARGV ~= 5 then return {12} end

local rec = redis.call('HGET', KEYS[2], 'o:' .. oid)
local prefix = uid .. ' ' .. key .. ' '
if not rec or string.sub(rec, 1, #prefix) ~= prefix then return {2} end
local day = string.sub(rec, #prefix + 1)

local flat = redis.call('HGETALL', KEYS[3])
local u = {}
for i = 1, #flat, 2 do u[flat[i]] = flat[i + 1] end
local doc = u['i:' .. key]
if not doc then return {2} end
local state = u['s:' .. key]
if state == 'p' then return {1} end
if state == 'x' then return {3} end
if state == 'c' then return {5} end
local pay_by = tonumber(state or '0')
if verb == 'expire' and now < pay_by then return {4, pay_by} end

-- The earliest deadline among the user's other pending orders (0: none).
local e = 0
for f, v in pairs(u) do
  local b = string.sub(f, 1, 2) == 's:' and string.sub(f, 3) ~= key and tonumber(v)
  if b and (e == 0 or b < e) then e = b end
end

local writes = {'s:' .. key, to[1]}
local units = 0
if verb ~= 'pay' then
  local fields, qtys = {}, {}
  for sku, q in string.gmatch(doc, '"sku":"([^"]+)","qty":(%d+)') do
    fields[#fields + 1] = 'sold:' .. sku
    qtys[#qtys + 1] = tonumber(q)
  end
  if #fields == 0 then return redis.error_reply('settle.lua: order ' .. oid .. ' has no lines') end
  local sold = redis.call('HMGET', KEYS[1], unpack(fields))
  local back = {}
  for i = 1, #fields do
    back[#back + 1] = fields[i]
    back[#back + 1] = string.format('%d', math.max(0, tonumber(sold[i] or '0') - qtys[i]))
    local d = 'd:' .. day .. ':' .. string.sub(fields[i], 6)
    writes[#writes + 1] = d
    writes[#writes + 1] = string.format('%d', math.max(0, tonumber(u[d] or '0') - qtys[i]))
    units = units + qtys[i]
  end
  writes[#writes + 1] = 't'
  writes[#writes + 1] = string.format('%d', math.max(0, tonumber(u['t'] or '0') - units))
  redis.call('HSET', KEYS[1], unpack(back))
end
if e > 0 then
  writes[#writes + 1] = 'e'
  writes[#writes + 1] = string.format('%d', e)
elseif u['e'] then
  redis.call('HDEL', KEYS[3], 'e')
end
redis.call('HSET', KEYS[3], unpack(writes))
redis.call('HINCRBY', KEYS[2], to[3], 1)
if verb == 'cancel' then redis.call('HINCRBY', KEYS[1], 'cancels', 1) end
redis.call('ZREM', KEYS[4], oid)
redis.call('XADD', KEYS[5], '*', 'type', to[2], 'order', doc, 'at', ARGV[5])
return {0, units}
