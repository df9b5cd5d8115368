-- Remember a created link's answer in the replay cache, unless a revocation in the survey may have
-- made it stale since the request read the cache.
--
-- KEYS[1]  the replay-cache key, e.g. {o:<org>}:lk:<kid>:<survey>:<hash>
-- KEYS[2]  the survey's replay epoch, e.g. {o:<org>}:lke:<survey>
-- ARGV[1]  the answer (JSON), ARGV[2] its TTL in seconds
-- ARGV[3]  the epoch the request's cache lookup saw ('' for none)
-- ARGV[4]  a fresh epoch, put in place when the survey has none and the lookup saw none
--
-- Revoking a link moves its survey's epoch on after the revocation is committed. A request that read
-- the cache before that and the link from PostgreSQL before the commit holds the revoked link: its
-- write finds another epoch than it saw, and is refused. Entries carry the epoch they were written
-- under (the gate script ignores those of another), so entries written before a revocation are no
-- answer after it, whatever mapping hash or signing key named them. The epoch's TTL is renewed with
-- every entry written under it, so it outlives them: an epoch lost (evicted) leaves its entries unread.
-- Returns 1 when written, 0 when refused.
-- Written only under the epoch the lookup saw (none seen and none now: a fresh one).
local epoch = redis.call('GET', KEYS[2])
if epoch then
  if epoch ~= ARGV[3] then
    return 0
  end
elseif ARGV[3] ~= '' then
  return 0
else
  epoch = ARGV[4]
end
redis.call('SET', KEYS[2], epoch, 'EX', ARGV[2])
redis.call('SET', KEYS[1], epoch .. ARGV[1], 'EX', ARGV[2])
return 1
