-- Prepended to every script of the Redis state (router/state/_redis.py). One clock for every
-- replica: Redis's TIME. Amounts are integers (tokens, picodollars) passed as decimal strings and
-- handed to HINCRBY/INCRBY as they came, never through a Lua number (a double prints 14 digits);
-- only the cap comparisons use Lua numbers, exact below 2^53 picodollars (about $9,007).

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function num(value)
  return tonumber(value or '0') or 0
end

local function neg(digits)
  if digits == '0' then return '0' end
  return '-' .. digits
end

local function whole(value)
  return string.format('%.0f', value)
end

-- A session's hash and its member of the sessions set expire together: ttl after its last activity,
-- or hold while it has a reservation (a call in flight keeps its session alive).
local function touch(skey, sessions, sid, now, ttl, hold)
  local held = redis.call('HMGET', skey, 'rtokens', 'rcost')
  if num(held[1]) > 0 or num(held[2]) > 0 then ttl = math.max(ttl, hold) end
  redis.call('PEXPIRE', skey, ttl)
  redis.call('ZADD', sessions, now + ttl, sid)
end

-- nil when the session may go on; else the milliseconds until the longest-idle session ends.
local function session_room(skey, sessions, max_sessions, now)
  if redis.call('EXISTS', skey) == 1 then return nil end
  redis.call('ZREMRANGEBYSCORE', sessions, '-inf', now)
  if redis.call('ZCARD', sessions) < max_sessions then return nil end
  local oldest = redis.call('ZRANGE', sessions, 0, 0, 'WITHSCORES')
  return whole(tonumber(oldest[2]) - now)
end

-- Drop a live reservation and what it holds; false when it was not live (settled, released, reaped).
local function unreserve(prefix, reservations, amounts, reserved, id)
  if redis.call('ZREM', reservations, id) == 0 then return false end
  local record = redis.call('HGET', amounts, id)
  redis.call('HDEL', amounts, id)
  if not record then return true end
  local tokens, cost, sid = string.match(record, '^(%d+) (%d+) (.*)$')
  redis.call('DECRBY', reserved, cost)
  local skey = prefix .. 'session:' .. sid
  if redis.call('EXISTS', skey) == 1 then
    redis.call('HINCRBY', skey, 'rtokens', neg(tokens))
    redis.call('HINCRBY', skey, 'rcost', neg(cost))
  end
  return true
end

-- Reservations held past their expiry belong to a process that died: let them go.
local function reap(prefix, reservations, amounts, reserved, now)
  local ids = redis.call('ZRANGEBYSCORE', reservations, '-inf', now, 'LIMIT', 0, 100)
  for _, id in ipairs(ids) do unreserve(prefix, reservations, amounts, reserved, id) end
  return #ids
end

-- The hourly window: one field per minute. A minute counts while it is at most 60 minutes old, so a
-- cost leaves the window up to one minute late, never early. Older fields are dropped here.
local function hour_sum(hour, now, drop)
  local minute = math.floor(now / 60000)
  local fields = redis.call('HGETALL', hour)
  local sum = 0
  for i = 1, #fields, 2 do
    if tonumber(fields[i]) < minute - 60 then
      if drop then redis.call('HDEL', hour, fields[i]) end
    else
      sum = sum + tonumber(fields[i + 1])
    end
  end
  return sum
end
