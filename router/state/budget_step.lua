-- KEYS: session, sessions. ARGV: sid, session_steps ('' = off), ttl_ms, hold_ms, max_sessions.
local now = now_ms()
local full = session_room(KEYS[1], KEYS[2], tonumber(ARGV[5]), now)
if full then return {'sessions_full', full} end
local steps = redis.call('HGET', KEYS[1], 'steps') or '0'
if ARGV[2] ~= '' and num(steps) + 1 > tonumber(ARGV[2]) then return {'session_steps', steps} end
redis.call('HINCRBY', KEYS[1], 'steps', 1)
touch(KEYS[1], KEYS[2], ARGV[1], now, tonumber(ARGV[3]), tonumber(ARGV[4]))
return {'ok'}
