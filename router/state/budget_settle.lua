-- Settle (charge what was billed) or release (charge nothing) one reservation, once: a replay of the
-- same reservation id finds done:<id> and changes nothing. A reservation reaped meanwhile (it outlived
-- hold_ms) is still charged what was billed.
-- KEYS: session, sessions, reservations, reservation_amounts, reserved_cost, hour, done.
-- ARGV: prefix, sid, reservation id, tokens, cost (picodollars), ttl_ms, hold_ms, done_ttl_ms, charge ('1'/'0').
if not redis.call('SET', KEYS[7], '1', 'NX', 'PX', ARGV[8]) then return 0 end
local now = now_ms()
unreserve(ARGV[1], KEYS[3], KEYS[4], KEYS[5], ARGV[3])
if ARGV[9] == '1' then
  redis.call('HINCRBY', KEYS[1], 'tokens', ARGV[4])
  redis.call('HINCRBY', KEYS[1], 'cost', ARGV[5])
  redis.call('HINCRBY', KEYS[1], 'calls', 1)
  local minute = whole(math.floor(now / 60000))
  if redis.call('HEXISTS', KEYS[6], minute) == 0 then hour_sum(KEYS[6], now, true) end
  redis.call('HINCRBY', KEYS[6], minute, ARGV[5])
  redis.call('PEXPIRE', KEYS[6], 3720000)
elseif redis.call('EXISTS', KEYS[1]) == 0 then
  return 1
end
touch(KEYS[1], KEYS[2], ARGV[2], now, tonumber(ARGV[6]), tonumber(ARGV[7]))
return 1
