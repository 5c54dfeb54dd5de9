-- flashgate live.lua, version 4: the operator's live view of an event in one read.
--
-- KEYS (one hash tag): 1 meta  2 orders  3 pending  4 stream  5 line
--   6 .. #KEYS fleet:<second>, one per second of the window, oldest first
-- ARGV: 1 the order writer's consumer group (`sink`)
-- Reply: 0 when the event does not exist, else
--   {meta fields, sold, {pending, paid, expired, cancelled}, {stream length, group, lag, group pending},
--    {fleet fields of KEYS[6], fleet fields of KEYS[7], ...}, line fields}
-- where meta fields and each fleet bucket are flat arrays of name, value; sold is sku, units
-- (meta's `sold:<sku>`) for every `stock:<sku>` of meta; pending counts the orders track.lua
-- has recorded; paid, expired and cancelled are settle.lua's `n:paid` / `n:expired` /
-- `n:cancelled` counters (orders)
-- on the orders hash; group is 1 when the stream has the consumer group (then lag is
-- its entries not yet delivered, -1 when the server cannot tell, and group pending its
-- entries delivered but not acknowledged), else 0, 0, 0. All counts are integers. Line
-- fields are the line hash as view.lua reads it (line.lua's state, `n:<rank>` sampled
-- entrants per window, `claimed`): empty for a `fairness = attempt` event or before anyone
-- entered.
-- Only reads. It issues no EXISTS (view.lua's calls are counted by cmdstat_exists).
local meta = redis.call('HGETALL', KEYS[1])
if #meta == 0 then return 0 end
local skus, by_sku = {}, {}
for i = 1, #meta, 2 do
  local tag = string.sub(meta[i], 1, 5)
  if tag == 'stock' and string.sub(meta[i], 6, 6) == ':' then
    skus[#skus + 1] = string.sub(meta[i], 7)
  elseif tag == 'sold:' then
    by_sku[string.sub(meta[i], 6)] = meta[i + 1]
  end
end
local sold = {}
for i = 1, #skus do
  sold[#sold + 1] = skus[i]
  sold[#sold + 1] = tonumber(by_sku[skus[i]] or '0')
end
local v = redis.call('HMGET', KEYS[2], 'n:paid', 'n:expired', 'n:cancelled')
local orders = {redis.call('ZCARD', KEYS[3]), tonumber(v[1] or '0'), tonumber(v[2] or '0'),
  tonumber(v[3] or '0')}

local writer = {redis.call('XLEN', KEYS[4]), 0, 0, 0}
local t = redis.call('TYPE', KEYS[4])
if type(t) == 'table' then t = t.ok end
if t == 'stream' then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[4])) do
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    if info['name'] == ARGV[1] then
      writer[2] = 1
      writer[3] = tonumber(info['lag']) or -1
      writer[4] = tonumber(info['pending']) or 0
    end
  end
end

local fleet = {}
for i = 6, #KEYS do fleet[#fleet + 1] = redis.call('HGETALL', KEYS[i]) end
return {meta, sold, orders, writer, fleet, redis.call('HGETALL', KEYS[5])}
