-- Take a pending action: 'claim' renames it running:<id> (an approve runs it; a second claim finds it
-- running), 'take' deletes it (a rejection). Atomic, so two approves on any replicas run it once.
-- KEYS: approval:<id>, running:<id>, pending. ARGV: mode, id, prefix, hold_ms.
local a = redis.call('HMGET', KEYS[1], 'action', 'created', 'session')
if not a[1] then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {'running'} end
  return {'unknown'}
end
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('ZREM', ARGV[3] .. 'pending:' .. a[3], ARGV[2])
if ARGV[1] == 'claim' then
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
else
  redis.call('DEL', KEYS[1])
end
return {'ok', a[1], a[2], a[3]}
