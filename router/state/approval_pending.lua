-- The live pending actions of a set (all, or one session's), oldest first, as flat
-- id, action, created, session quadruples. KEYS: the set. ARGV: ttl_ms, prefix.
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. whole(now - tonumber(ARGV[1])))
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local a = redis.call('HMGET', ARGV[2] .. 'approval:' .. id, 'action', 'created', 'session')
  if a[1] then
    out[#out + 1] = id
    out[#out + 1] = a[1]
    out[#out + 1] = a[2]
    out[#out + 1] = a[3]
  end
end
return out
