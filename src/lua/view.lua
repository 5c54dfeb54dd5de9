-- flashgate view.lua, version 1: one consistent read of an event for the edge cache and the CLI.
-- KEYS (one hash tag): 1 meta  2 stock  3 sold  4 orders
-- Reply: 0 when the event does not exist, else {meta fields, stock fields, sold fields, queued}
-- where each "fields" is a flat HGETALL array. Read-only.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]),
  redis.call('HGETALL', KEYS[3]), redis.call('LLEN', KEYS[4])}
