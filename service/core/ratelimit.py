"""The request gate: rate limits and the replay-cache lookup in one Redis round trip."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from importlib import resources
from typing import NamedTuple

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from .breaker import REDIS_DOWN, Breaker, refusal
from .errors import Unavailable
from .ratepolicy import RatePolicy
from .redis_pipe import PipelinedRedis
from .replay_cache import ReplayCache

log = logging.getLogger("service.ratelimit")

GATE_SCRIPT = resources.files("service").joinpath("lua/gate.lua").read_text()


def org_key(org_id: str, suffix: str) -> str:
    """Every key of one organisation shares the hash tag {o:<org>}, so one slot in a cluster."""
    return f"{{o:{org_id}}}:{suffix}"


class Decision(NamedTuple):
    """The gate's answer. A named tuple: one is made per request, at a fraction of a frozen dataclass's cost."""

    allowed: bool
    retry_after: int = 0
    cached: bytes | None = None
    # per window: (remaining tokens, seconds until the bucket is full)
    windows: tuple[tuple[int, int], ...] = ()
    degraded: bool = False
    # the survey's replay epoch the lookup saw (asked with a replay-cache entry), for remember()
    epoch: bytes | None = None

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

    async def check(self, org_id: str, policy: RatePolicy, replay: tuple[str, str] | None = None) -> Decision:
        """Spend a token (or refuse), and when allowed read the replay-cache entry `replay` names (its key,
        and its survey's epoch key: only an entry written under that epoch answers, see remember_many.lua)."""
        if policy.off and replay is None:
            return ALLOW_UNLIMITED
        if replay is not None and self._cache is not None:
            return await self._check_then_read(org_id, policy, self._cache, *replay)
        # resting(), inlined: this runs on every request, where the method call costs ~40% more
        if self._clock() < self._down_until:
            return self._degraded()
        keys = [org_key(org_id, "rl")] if replay is None else [org_key(org_id, "rl"), *replay]
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
        epoch = (reply.pop() or None) if replay is not None else None  # the script answers it last
        windows = tuple((int(reply[i]), int(reply[i + 1])) for i in range(3, len(reply), 2)) if len(reply) > 3 else ()
        return Decision(bool(reply[0]), -(-int(reply[1]) // 1000), reply[2] or None, windows, epoch=epoch)

    async def _check_then_read(self, org_id: str, policy: RatePolicy, cache: ReplayCache, cache_key: str,
                               epoch_key: str) -> Decision:
        """The buckets on REDIS_URL, then, when allowed, the replay cache on its own server."""
        decision = await self.check(org_id, policy)
        if not decision.allowed:
            return decision
        cached, epoch = await cache.lookup(cache_key, epoch_key)
        return decision._replace(cached=cached, epoch=epoch)

    def _degraded(self) -> Decision:
        if self._on_failure is not None:
            self._on_failure()
        if self._failure_mode == "closed":
            raise Unavailable("redis")
        return Decision(True, degraded=True)

    async def remember(self, key: str, value: bytes, ttl_seconds: int, epoch_key: str, seen: bytes | None) -> None:
        """Cache an answer (under the epoch `seen`, see ReplayCache.set); best effort, since PostgreSQL stays
        the truth."""
        await self._replays.set(key, value, ttl_seconds, epoch_key, seen)

    async def move_epoch(self, epoch_key: str, ttl_seconds: int) -> None:
        """Make every replay-cache entry of a survey stale (Unavailable when Redis does not take it)."""
        await self._replays.move_epoch(epoch_key, ttl_seconds)

    async def recall_many(self, keys: list[str], epoch_key: str) -> tuple[list[bytes | None], bytes | None]:
        """The replay cache's answers for `keys` under their survey's epoch, and the epoch, wherever the
        cache lives (after check() spent the token)."""
        return await self._replays.get_many(keys, epoch_key)

    async def remember_many(self, items: list[tuple[str, bytes]], ttl_seconds: int, epoch_key: str,
                            seen: bytes | None) -> None:
        """Cache many answers in one pipeline, under the epoch the lookup saw; best effort."""
        await self._replays.set_many(items, ttl_seconds, epoch_key, seen)

    async def aclose(self) -> None:
        """Close the pipelined connections, if any (the redis-py clients are closed by their owner)."""
        if self._pipe is not None:
            await self._pipe.aclose()
        if self._cache is not None:
            await self._cache.aclose()
