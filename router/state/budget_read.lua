-- One read for left/totals: Redis's time (ms), the session's tokens, cost, calls, steps, and the hourly
-- window's fields (minute, cost, ...), summed by the caller (exact in Python at any size).
-- KEYS: session, hour.
local s = redis.call('HMGET', KEYS[1], 'tokens', 'cost', 'calls', 'steps')
return {whole(now_ms()), s[1] or '0', s[2] or '0', s[3] or '0', s[4] or '0', redis.call('HGETALL', KEYS[2])}
