-- Release a lock only if it is still the caller's (KEYS[1] holds ARGV[1]): an expired lock taken over
-- by another refresher stays theirs.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
