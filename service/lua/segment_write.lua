-- Remember a segment's count and markers, unless a count taken later is already there.
-- KEYS[1]: the count's hash; KEYS[2]: its markers. ARGV: ttl, at, digest, total, snapshot, version,
-- marker count, markers (16 bytes each), the survey's opens version (reminder lists; 0 otherwise).
local held = redis.call('HGET', KEYS[1], 'at')
if held and tonumber(held) > tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 'at', ARGV[2], 'f', ARGV[3], 't', ARGV[4], 's', ARGV[5], 'v', ARGV[6], 'n', ARGV[7],
           'o', ARGV[9])
redis.call('SET', KEYS[2], ARGV[8])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
