-- A claimed action ends: gone when consumed ('1'), else pending again on its own creation time (an
-- action whose ttl passed while it was held expires at once).
-- KEYS: running:<id>, approval:<id>, pending. ARGV: consumed, id, prefix, ttl_ms.
if ARGV[1] == '1' then return redis.call('DEL', KEYS[1]) end
local a = redis.call('HMGET', KEYS[1], 'created', 'session')
if not a[1] then return 0 end
local ttl = tonumber(ARGV[4])
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('PEXPIREAT', KEYS[2], tonumber(a[1]) + ttl + 1)
redis.call('ZADD', KEYS[3], a[1], ARGV[2])
local mine = ARGV[3] .. 'pending:' .. a[2]
redis.call('ZADD', mine, a[1], ARGV[2])
redis.call('PEXPIRE', mine, ttl + 1)
return 1
