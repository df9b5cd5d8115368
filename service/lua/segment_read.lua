-- A segment's cached count and the marker a page at position ARGV[1] starts from, in one call.
-- KEYS[1]: the count's hash; KEYS[2]: its markers, 16 bytes each (created_at in microseconds, id).
-- ARGV[1]: the page's skip; ARGV[2]: members between two markers.
-- Answers {digest, total, snapshot, version, at, opens version, marker index, marker bytes} (false when
-- missing).
local h = redis.call('HMGET', KEYS[1], 'f', 't', 's', 'v', 'at', 'o', 'n')
if not h[1] then
  return false
end
local n = tonumber(h[7])
local index = math.min(math.floor(tonumber(ARGV[1]) / tonumber(ARGV[2])), n - 1)
local marker = false
if index >= 0 then
  marker = redis.call('GETRANGE', KEYS[2], index * 16, index * 16 + 15)
end
return {h[1], h[2], h[3], h[4], h[5], h[6], index, marker}
