-- One breaker per provider/model, the same states as router/providers/_breaker.py: closed (failures
-- counted in a window), open (cooldown), half_open (one probe at a time: breaker_probe:<key> holds the
-- prober's token, and expires after the probe's own TTL, so that a prober that died, or never reported,
-- cannot block the breaker).
-- KEYS: breaker:<key>, breaker_failures:<key>, breaker_probe:<key>.
-- ARGV: op (allow, abandon, success, failure, state), failures, window_ms, cooldown_ms, reset_on_success
--       ('1'/'0'), probe_ms (allow: the probe's TTL), and a token (allow, abandon: the caller's; failure: a
--       unique member of the window).
-- Returns {allowed (1/0), state, ms until the next probe}.
local now = now_ms()
local opened = redis.call('HGET', KEYS[1], 'opened')
local cooldown = tonumber(ARGV[4])
local op = ARGV[1]

local function state()
  if not opened then return 'closed' end
  if now - tonumber(opened) >= cooldown then return 'half_open' end
  return 'open'
end

local function wait()
  if not opened then return '0' end
  return whole(math.max(0, cooldown - (now - tonumber(opened))))
end

local function open()
  opened = whole(now)
  redis.call('HSET', KEYS[1], 'opened', opened)
end

if op == 'allow' then
  local s = state()
  if s == 'closed' then return {1, s, '0'} end
  if s == 'half_open' and redis.call('SET', KEYS[3], ARGV[7], 'NX', 'PX', ARGV[6]) then return {1, s, '0'} end
  return {0, s, wait()}
elseif op == 'abandon' then  -- only the caller that holds the probe gives it back
  if redis.call('GET', KEYS[3]) == ARGV[7] then redis.call('DEL', KEYS[3]) end
elseif op == 'success' then
  if not opened then
    if ARGV[5] == '1' then redis.call('DEL', KEYS[2]) end
  elseif redis.call('EXISTS', KEYS[3]) == 1 then  -- the probe answered: close
    redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
    opened = nil
  end  -- else: a call that began before the breaker opened; its success says nothing new
elseif op == 'failure' then
  if opened then  -- a failed probe: open again for a full cooldown
    open()
    redis.call('DEL', KEYS[3])
  else
    local window = tonumber(ARGV[3])
    redis.call('ZADD', KEYS[2], now, ARGV[7])
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. whole(now - window))
    redis.call('PEXPIRE', KEYS[2], window + 1000)
    if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then
      open()
      redis.call('DEL', KEYS[2])
    end
  end
end
return {0, state(), wait()}
