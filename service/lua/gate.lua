-- Rate limit (every window, all or nothing) and, when allowed, the replay-cache lookup:
-- the one Redis round trip of an authenticated request.
--
-- KEYS[1]  the organisation's bucket hash, e.g. {o:<org>}:rl
-- KEYS[2]  optional replay-cache key in the same hash slot, e.g. {o:<org>}:lk:<kid>:<survey>:<hash>
-- KEYS[3]  optional, with KEYS[2]: the survey's replay epoch, e.g. {o:<org>}:lke:<survey>. An entry
--          is its epoch then the answer; one written under another epoch (a revocation has moved it
--          on since, see remember_many.lua) or with no epoch in place is no answer
-- ARGV     n, then n pairs (limit, seconds)
--
-- Each window is a token bucket of `limit` tokens refilled continuously at limit/seconds per
-- second, on Redis's clock. A refused request spends nothing. Buckets are stored as two fields per
-- window, tokens and the microsecond time they were computed at.
--
-- Returns {allowed (1/0), retry_after_ms, cached value or false, then per window remaining, reset_s,
-- then, with KEYS[3], the epoch or false}
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local n = tonumber(ARGV[1])
local key = KEYS[1]

local fields = {}
for i = 1, n do
  local secs = ARGV[2 * i + 1]
  fields[#fields + 1] = 't' .. secs
  fields[#fields + 1] = 'u' .. secs
end
local stored = {}
if n > 0 then
  stored = redis.call('HMGET', key, unpack(fields))
end

local tokens = {}
local allowed = 1
local retry_us = 0
local longest = 0
for i = 1, n do
  local limit = tonumber(ARGV[2 * i])
  local secs = tonumber(ARGV[2 * i + 1])
  local per_us = limit / (secs * 1000000)
  local t = tonumber(stored[2 * i - 1])
  local u = tonumber(stored[2 * i])
  if t == nil or u == nil then
    t = limit
  else
    t = math.min(limit, t + math.max(0, now - u) * per_us)
  end
  tokens[i] = t
  if t < 1 then
    allowed = 0
    local wait = math.ceil((1 - t) / per_us)
    if wait > retry_us then retry_us = wait end
  end
  if secs > longest then longest = secs end
end

local out = {allowed, math.ceil(retry_us / 1000), false}
if allowed == 1 then
  local updates = {}
  for i = 1, n do
    tokens[i] = tokens[i] - 1
    updates[#updates + 1] = 't' .. ARGV[2 * i + 1]
    updates[#updates + 1] = string.format('%.6f', tokens[i])
    updates[#updates + 1] = 'u' .. ARGV[2 * i + 1]
    -- %.0f: a bare number would be written as %.14g and lose the microseconds
    updates[#updates + 1] = string.format('%.0f', now)
  end
  if n > 0 then
    redis.call('HSET', key, unpack(updates))
    -- a bucket untouched for its longest window is full again, so it may expire
    redis.call('EXPIRE', key, longest + 1)
  end
  if KEYS[2] then
    out[3] = redis.call('GET', KEYS[2])
  end
end
local epoch = false
if KEYS[3] and allowed == 1 then
  epoch = redis.call('GET', KEYS[3])
  local cached = out[3]
  if cached then
    if epoch and string.sub(cached, 1, #epoch) == epoch then
      out[3] = string.sub(cached, #epoch + 1)
    else
      out[3] = false
    end
  end
end
for i = 1, n do
  local limit = tonumber(ARGV[2 * i])
  local secs = tonumber(ARGV[2 * i + 1])
  out[#out + 1] = math.floor(tokens[i])
  out[#out + 1] = math.ceil((limit - tokens[i]) * secs / limit)
end
if KEYS[3] then
  out[#out + 1] = epoch
end
return out
