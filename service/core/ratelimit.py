"""The request gate: rate limits and the replay-cache lookup in one Redis round trip."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import NamedTuple, cast

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ClusterDownError, OutOfMemoryError, ReadOnlyError, RedisError, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import Unavailable
from .ratepolicy import RatePolicy
from .redis_pipe import PipelinedRedis

log = logging.getLogger("service.ratelimit")

GATE_SCRIPT = resources.files("service").joinpath("lua/gate.lua").read_text()
# what an unreachable or restarting Redis looks like (BusyLoadingError is a ConnectionError);
# any other error is a bug and must surface, not be mistaken for an outage. A Redis Cluster with a
# master down answers CLUSTERDOWN (or leaves a slot uncovered): an outage too
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError, ClusterDownError, SlotNotCoveredError)
# a server that answers but refuses writes: out of memory under noeviction (OOM), a read-only replica
# (READONLY), a failed snapshot with stop-writes-on-bgsave-error (MISCONF), too few replicas
# (NOREPLICAS). Inside a script Redis 6 wraps the code ("ERR Error running script ...: -OOM ..."),
# Redis 7 and Valkey pass it on, redis-py strips it off for the classes it knows
_REFUSED_WRITE = re.compile(r"(?:^|-)(?:OOM|READONLY|MISCONF|NOREPLICAS) ")
# after a failed call, skip Redis for this long so that requests don't each wait for a timeout
BREAKER_SECONDS = 1.0


def refusal(exc: RedisError) -> str | None:
    """Redis's refusal of a write that `exc` carries ("OOM command not allowed ..."), or None for any
    other error (a bug in what was sent, which must surface). Where in a script it happened (Redis 7
    and Valkey add " script: on @user_script:65.") is left out: the refusal reads the same everywhere."""
    if isinstance(exc, OutOfMemoryError):
        text = f"OOM {exc}"
    elif isinstance(exc, ReadOnlyError):
        text = f"READONLY {exc}"
    else:
        text = str(exc)
        found = _REFUSED_WRITE.search(text)
        if found is None:
            return None
        text = text[found.start():].lstrip("-")
    return text.partition(" script: ")[0]


def org_key(org_id: str, suffix: str) -> str:
    """Every key of one organisation shares the hash tag {o:<org>}, so one slot in a cluster."""
    return f"{{o:{org_id}}}:{suffix}"


class Breaker:
    """After a failed Redis call, leave Redis alone for BREAKER_SECONDS (on `clock`, injectable for tests)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._down_until = 0.0
        # cache writes only: after one was refused, the next ones are skipped until then
        self._writes_refused_until = 0.0

    def resting(self) -> bool:
        """Whether a recent failure still keeps Redis out of the way."""
        return self._clock() < self._down_until

    def trip(self) -> None:
        """Note a failure: skip Redis from now until the breaker's time has passed."""
        self._down_until = self._clock() + BREAKER_SECONDS

    async def cache_write(self, what: str, write: Callable[[], Awaitable[object]]) -> None:
        """A best-effort write to a cache that PostgreSQL backs: never fails the request."""
        now = self._clock()
        if now < self._down_until or now < self._writes_refused_until:
            return
        try:
            await write()
        except REDIS_DOWN:
            self.trip()
            log.warning("%s unavailable; nothing remembered", what)
        except RedisError as exc:
            # a server that answers but refuses writes (out of memory, a replica turned read-only):
            # the answer is already computed and reads still work, so neither the request nor the
            # reads stop; the writes of the next second are skipped, not each sent and warned about
            self._writes_refused_until = self._clock() + BREAKER_SECONDS
            log.warning("%s refused a write: %s", what, (refusal(exc) or str(exc))[:120])


class Decision(NamedTuple):
    """The gate's answer. A named tuple: one is made per request, at a fraction of a frozen dataclass's cost."""

    allowed: bool
    retry_after: int = 0
    cached: bytes | None = None
    # per window: (remaining tokens, seconds until the bucket is full)
    windows: tuple[tuple[int, int], ...] = ()
    degraded: bool = False

    def headers(self, policy: RatePolicy) -> dict[str, str]:
        """`RateLimit-Policy` and `RateLimit` (IETF httpapi draft), plus `Retry-After` when refused."""
        if policy.off or not self.windows:
            return {}
        state = ", ".join([
            f'"{name}";r={remaining};t={reset}'
            for name, (remaining, reset) in zip(policy.window_names, self.windows, strict=True)
        ])
        headers = {"RateLimit-Policy": policy.policy_header(), "RateLimit": state}
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


ALLOW_UNLIMITED = Decision(True)


class ReplayCache:
    """The replay cache's reads and writes, best effort: PostgreSQL stays the truth. On REDIS_URL by
    default, behind the gate's breaker; on a Redis of its own (CACHE_REDIS_URL, which may evict) when set."""

    def __init__(self, redis: Redis | RedisCluster, pipe: PipelinedRedis | None = None,
                 breaker: Breaker | None = None) -> None:
        self._redis = redis
        self._pipe = pipe
        self._breaker = Breaker() if breaker is None else breaker

    async def get(self, key: str) -> bytes | None:
        """The cached answer, or None when there is none or the cache Redis does not answer."""
        if self._breaker.resting():
            return None
        try:
            # bytes: the clients do not decode responses (redis-py's types cannot know it)
            if self._pipe is not None:
                return cast(bytes | None, await self._pipe.execute("GET", key))
            return cast(bytes | None, await self._redis.get(key))
        except REDIS_DOWN:
            self._breaker.trip()
            log.warning("replay cache unavailable; PostgreSQL answers replays")
            return None

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        """Remember an answer; skipped when the cache Redis is down or refuses the write."""
        if self._pipe is not None:
            pipe = self._pipe
            await self._breaker.cache_write("replay cache", lambda: pipe.execute("SET", key, value, "EX", ttl_seconds))
        else:
            await self._breaker.cache_write("replay cache", lambda: self._redis.set(key, value, ex=ttl_seconds))

    async def aclose(self) -> None:
        """Close the pipelined connection, if any (the redis-py client is closed by its owner)."""
        if self._pipe is not None:
            await self._pipe.aclose()


class Gate(Breaker):
    """Spends one token of every window of an organisation's policy, atomically.

    The replay cache sits beside the buckets on REDIS_URL by default, read by the gate's script in
    the same round trip; with a `cache` (CACHE_REDIS_URL) it is read there once the token is spent."""

    def __init__(self, redis: Redis | RedisCluster, failure_mode: str,
                 on_redis_failure: Callable[[], None] | None = None, pipe: PipelinedRedis | None = None,
                 cache: ReplayCache | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self._redis = redis
        self._script = redis.register_script(GATE_SCRIPT)
        # the hot calls go through the pipelined connection when there is one (see redis_pipe.py)
        self._pipe = pipe
        self._sha = self._script.sha
        self._failure_mode = failure_mode
        self._on_failure = on_redis_failure
        # read by the script unless it has a server of its own; on REDIS_URL, written behind this breaker
        self._cache = cache
        self._replays = cache if cache is not None else ReplayCache(redis, pipe, self)

    async def check(self, org_id: str, policy: RatePolicy, cache_key: str | None = None) -> Decision:
        """Spend a token (or refuse), and read `cache_key` when allowed."""
        if policy.off and cache_key is None:
            return ALLOW_UNLIMITED
        if cache_key is not None and self._cache is not None:
            return await self._check_then_read(org_id, policy, self._cache, cache_key)
        # resting(), inlined: this runs on every request, where the method call costs ~40% more
        if self._clock() < self._down_until:
            return self._degraded()
        keys = [org_key(org_id, "rl")] if cache_key is None else [org_key(org_id, "rl"), cache_key]
        args = policy.gate_args
        try:
            if self._pipe is not None:
                reply = await self._pipe.evalsha(GATE_SCRIPT, self._sha, keys, args)
            else:
                reply = await self._script(keys=keys, args=list(args))
        except REDIS_DOWN as exc:
            self.trip()
            log.warning("redis unavailable for the rate limiter: %s", type(exc).__name__)
            return self._degraded()
        except RedisError as exc:
            refused = refusal(exc)
            if refused is None:
                raise
            # the bucket cannot be written, so the token cannot be spent: an outage for the gate. (A
            # refusal needs no write: an empty bucket is still a 429 until the breaker trips)
            self.trip()
            log.warning("redis refused the rate limiter's write: %s", refused[:120])
            return self._degraded()
        windows = tuple((int(reply[i]), int(reply[i + 1])) for i in range(3, len(reply), 2)) if len(reply) > 3 else ()
        return Decision(bool(reply[0]), -(-int(reply[1]) // 1000), reply[2] or None, windows)

    async def _check_then_read(self, org_id: str, policy: RatePolicy, cache: ReplayCache, cache_key: str) -> Decision:
        """The buckets on REDIS_URL, then, when allowed, the replay cache on its own server."""
        decision = await self.check(org_id, policy)
        if not decision.allowed:
            return decision
        cached = await cache.get(cache_key)
        return decision if cached is None else decision._replace(cached=cached)

    def _degraded(self) -> Decision:
        if self._on_failure is not None:
            self._on_failure()
        if self._failure_mode == "closed":
            raise Unavailable("redis")
        return Decision(True, degraded=True)

    async def remember(self, key: str, value: bytes, ttl_seconds: int) -> None:
        """Cache an answer; best effort, since PostgreSQL stays the truth."""
        await self._replays.set(key, value, ttl_seconds)

    async def aclose(self) -> None:
        """Close the pipelined connections, if any (the redis-py clients are closed by their owner)."""
        if self._pipe is not None:
            await self._pipe.aclose()
        if self._cache is not None:
            await self._cache.aclose()
