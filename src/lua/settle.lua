-- flashgate settle.lua, version 3: ends ONE pending order atomically, either paid or expired.
-- Pay and expire are this one script with a verb, so they check the same state in the same
-- atomic step: of a pay and an expiry of one order, exactly one wins.
--
-- KEYS (one hash tag, the event):  1 sold  2 user  3 pending  4 stream
-- ARGV: 1 verb (pay | expire)  2 order id  3 user id  4 idempotency key  5 now_ms
--
-- Reply (src/script.rs, Settled):
--   {0, units}  done: paid (units 0), or expired with `units` given back to stock
--   {1} already paid   {3} already expired   {2} no such order
--   {4, pay_by} expire before the order's deadline: not due   {12} malformed arguments
--
-- Invariants: only a pending order changes state (pending → paid | expired, never back);
-- an expiry gives back exactly the order's units to sold and to the user's counters (the
-- total and the order's calendar day); the user's `e` stays the earliest pending deadline;
-- every change is appended to the stream in the same atomic step; the sold hash counts the
-- orders ever paid (`n:paid`) and expired (`n:expired`) for the operator (live.lua).
--
-- The user hash (purchase.lua v4) keeps an order's state in `s:<key>`: its pay_by (ms) while
-- pending, then p or x. A pending order written by purchase.lua v3 has no `s:<key>` and its
-- pay_by in `b:<key>`; both are read, so an upgrade during a sale strands no order.

local unpack = unpack or table.unpack
local verb, oid, uid, key, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
if (verb ~= 'pay' and verb ~= 'expire') or not now or #ARGV ~= 5 then return {12} end

local rec = redis.call('HGET', KEYS[1], 'o:' .. oid)
local prefix = uid .. ' ' .. key .. ' '
if not rec or string.sub(rec, 1, #prefix) ~= prefix then return {2} end
local day = string.sub(rec, #prefix + 1)

local flat = redis.call('HGETALL', KEYS[2])
local u = {}
for i = 1, #flat, 2 do u[flat[i]] = flat[i + 1] end
local idem = u['i:' .. key]
if not idem then return {2} end
local state = u['s:' .. key]
if state == 'p' then return {1} end
if state == 'x' then return {3} end
local pay_by = tonumber(state or u['b:' .. key] or '0')
if verb == 'expire' and now < pay_by then return {4, pay_by} end

-- The earliest deadline among the user's other pending orders (0: none): a numeric `s:`
-- (v4), or a `b:` whose order has no `s:` yet (v3).
local e = 0
for f, v in pairs(u) do
  local tag, k = string.sub(f, 1, 2), string.sub(f, 3)
  local b = k ~= key and ((tag == 's:' and tonumber(v)) or (tag == 'b:' and not u['s:' .. k] and tonumber(v)))
  if b and (e == 0 or b < e) then e = b end
end

local nl = string.find(idem, '\n', 1, true)
local fp, doc = string.sub(idem, 1, nl - 1), string.sub(idem, nl + 1)
local writes = {'s:' .. key, verb == 'pay' and 'p' or 'x'}
local units = 0
if verb == 'expire' then
  local skus, qtys = {}, {}
  for sku, q in string.gmatch(fp, '([^,:]+):(%d+)') do
    skus[#skus + 1] = sku
    qtys[#qtys + 1] = tonumber(q)
  end
  local sold = redis.call('HMGET', KEYS[1], unpack(skus))
  local back = {}
  for i = 1, #skus do
    back[#back + 1] = skus[i]
    back[#back + 1] = math.max(0, tonumber(sold[i] or '0') - qtys[i])
    local d = 'd:' .. day .. ':' .. skus[i]
    writes[#writes + 1] = d
    writes[#writes + 1] = math.max(0, tonumber(u[d] or '0') - qtys[i])
    units = units + qtys[i]
  end
  writes[#writes + 1] = 't'
  writes[#writes + 1] = math.max(0, tonumber(u['t'] or '0') - units)
  redis.call('HSET', KEYS[1], unpack(back))
end
local gone = {}
if u['b:' .. key] then gone[#gone + 1] = 'b:' .. key end
if e > 0 then
  writes[#writes + 1] = 'e'
  writes[#writes + 1] = string.format('%d', e)
elseif u['e'] then
  gone[#gone + 1] = 'e'
end
if #gone > 0 then redis.call('HDEL', KEYS[2], unpack(gone)) end
redis.call('HSET', KEYS[2], unpack(writes))
redis.call('HINCRBY', KEYS[1], verb == 'pay' and 'n:paid' or 'n:expired', 1)
redis.call('ZREM', KEYS[3], oid)
redis.call('XADD', KEYS[4], '*', 'type', verb == 'pay' and 'paid' or 'expired', 'order', doc,
  'at', ARGV[5])
return {0, units}
