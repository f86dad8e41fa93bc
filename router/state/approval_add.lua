-- Check the pending caps (mode 'check'), or check and add one pending action (mode 'create').
-- Expired members (created more than ttl_ms ago) are dropped first.
-- KEYS: pending, pending:<sid>, approval:<id>. ARGV: mode, ttl_ms, max_pending, max_per_session, id,
--       action (JSON), sid.
local now = now_ms()
local ttl = tonumber(ARGV[2])
local cut = '(' .. whole(now - ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cut)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', cut)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then
  return {'session', redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')[2], whole(now)}
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return {'all', redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2], whole(now)}
end
if ARGV[1] == 'create' then
  redis.call('HSET', KEYS[3], 'action', ARGV[6], 'created', whole(now), 'session', ARGV[7])
  redis.call('PEXPIREAT', KEYS[3], now + ttl + 1)
  redis.call('ZADD', KEYS[1], now, ARGV[5])
  redis.call('ZADD', KEYS[2], now, ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ttl + 1)
end
return {'ok', whole(now)}
