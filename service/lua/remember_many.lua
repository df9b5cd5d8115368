-- Remember created links' answers in the replay cache (one link's, or a batch's in one call), unless a
-- revocation in the survey may have made them stale since the request read the cache.
--
-- KEYS[1]  the survey's replay epoch, e.g. {o:<org>}:lke:<survey>
-- KEYS[2..n]  the replay-cache keys, e.g. {o:<org>}:lk:<kid>:<survey>:<hash> (the organisation's slot)
-- ARGV[1]  the TTL in seconds, ARGV[2] the epoch the lookup saw ('' for none)
-- ARGV[3]  a fresh epoch, put in place when the survey has none and the lookup saw none
-- ARGV[4..n+2]  the answers (JSON), in the order of their keys
--
-- Revoking a link moves its survey's epoch on after the revocation is committed. A request that read
-- the cache before that and the link from PostgreSQL before the commit holds the revoked link: its
-- write finds another epoch than it saw, and is refused. Entries carry the epoch they were written
-- under (the gate script ignores those of another), so entries written before a revocation are no
-- answer after it, whatever mapping hash or signing key named them. The epoch's TTL is renewed with
-- every entry written under it, so it outlives them: an epoch lost (evicted) leaves its entries unread.
-- Returns the number of entries written (0 when refused).
-- Written only under the epoch the lookup saw (none seen and none now: a fresh one).
local epoch = redis.call('GET', KEYS[1])
if epoch then
  if epoch ~= ARGV[2] then
    return 0
  end
elseif ARGV[2] ~= '' then
  return 0
else
  epoch = ARGV[3]
end
redis.call('SET', KEYS[1], epoch, 'EX', ARGV[1])
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], epoch .. ARGV[i + 2], 'EX', ARGV[1])
end
return #KEYS - 1
