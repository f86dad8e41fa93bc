-- KEYS: session, sessions, reservations, reservation_amounts, reserved_cost, hour, done:<reservation id>.
-- ARGV: prefix, sid, reservation id, tokens, cost (picodollars), session_tokens, session_cost,
--       hourly_cost ('' = off), ttl_ms, hold_ms, max_sessions.
-- The client gave up on this reservation (its answer was lost) and its release ran first: hold nothing.
if redis.call('EXISTS', KEYS[7]) == 1 then return {'released', 0} end
local now = now_ms()
local reaped = reap(ARGV[1], KEYS[3], KEYS[4], KEYS[5], now)
local full = session_room(KEYS[1], KEYS[2], tonumber(ARGV[11]), now)
if full then return {'sessions_full', full} end
local tokens, cost = tonumber(ARGV[4]), tonumber(ARGV[5])
local s = redis.call('HMGET', KEYS[1], 'tokens', 'cost', 'rtokens', 'rcost')
if ARGV[6] ~= '' and num(s[1]) + num(s[3]) + tokens > tonumber(ARGV[6]) then
  return {'session_tokens', s[1] or '0', s[3] or '0'}
end
if ARGV[7] ~= '' and num(s[2]) + num(s[4]) + cost > tonumber(ARGV[7]) then
  return {'session_cost_usd', s[2] or '0', s[4] or '0'}
end
if ARGV[8] ~= '' then
  local settled = hour_sum(KEYS[6], now, true)
  local reserved = redis.call('GET', KEYS[5]) or '0'
  if settled + num(reserved) + cost > tonumber(ARGV[8]) then
    return {'hourly_cost_usd', whole(settled), reserved}
  end
end
redis.call('HINCRBY', KEYS[1], 'rtokens', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'rcost', ARGV[5])
redis.call('INCRBY', KEYS[5], ARGV[5])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[10]), ARGV[3])
redis.call('HSET', KEYS[4], ARGV[3], ARGV[4] .. ' ' .. ARGV[5] .. ' ' .. ARGV[2])
touch(KEYS[1], KEYS[2], ARGV[2], now, tonumber(ARGV[9]), tonumber(ARGV[10]))
return {'ok', reaped}
