-- Remember a batch's answers in the replay cache, as remember.lua remembers one, in one call: under
-- the epoch the batch's lookup saw (none seen and none now: a fresh one), or not at all.
--
-- KEYS[1]  the survey's replay epoch, e.g. {o:<org>}:lke:<survey>
-- KEYS[2..n]  the replay-cache keys, e.g. {o:<org>}:lk:<kid>:<survey>:<hash> (the organisation's slot)
-- ARGV[1]  the TTL in seconds, ARGV[2] the epoch the lookup saw ('' for none)
-- ARGV[3]  a fresh epoch, put in place when the survey has none and the lookup saw none
-- ARGV[4..n+2]  the answers (JSON), in the order of their keys
-- Returns the number of entries written (0 when refused).
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
