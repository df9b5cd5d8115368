"""The request gate: rate limits and the replay-cache lookup in one Redis round trip."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import NamedTuple

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ClusterDownError, RedisError, SlotNotCoveredError
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
# after a failed call, skip Redis for this long so that requests don't each wait for a timeout
_BREAKER_SECONDS = 1.0


def org_key(org_id: str, suffix: str) -> str:
    """Every key of one organisation shares the hash tag {o:<org>}, so one slot in a cluster."""
    return f"{{o:{org_id}}}:{suffix}"


class Breaker:
    """After a failed Redis call, leave Redis alone for _BREAKER_SECONDS."""

    def __init__(self) -> None:
        self._down_until = 0.0

    def resting(self) -> bool:
        """Whether a recent failure still keeps Redis out of the way."""
        return time.monotonic() < self._down_until

    def trip(self) -> None:
        """Note a failure: skip Redis from now until the breaker's time has passed."""
        self._down_until = time.monotonic() + _BREAKER_SECONDS

    async def cache_write(self, what: str, write: Callable[[], Awaitable[object]]) -> None:
        """A best-effort write to a cache that PostgreSQL backs: never fails the request."""
        if self.resting():
            return
        try:
            await write()
        except REDIS_DOWN:
            self.trip()
            log.warning("%s unavailable; nothing remembered", what)
        except RedisError as exc:
            # a server that answers but refuses writes (out of memory, a replica turned read-only):
            # the answer is already computed and reads still work, so neither the request nor the
            # breaker fails
            log.warning("%s refused a write: %s", what, str(exc)[:120])


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


class Gate(Breaker):
    """Spends one token of every window of an organisation's policy, atomically."""

    def __init__(self, redis: Redis | RedisCluster, failure_mode: str,
                 on_redis_failure: Callable[[], None] | None = None, pipe: PipelinedRedis | None = None) -> None:
        super().__init__()
        self._redis = redis
        self._script = redis.register_script(GATE_SCRIPT)
        # the hot calls go through the pipelined connection when there is one (see redis_pipe.py)
        self._pipe = pipe
        self._sha = self._script.sha
        self._failure_mode = failure_mode
        self._on_failure = on_redis_failure

    async def check(self, org_id: str, policy: RatePolicy, cache_key: str | None = None) -> Decision:
        """Spend a token (or refuse), and read `cache_key` when allowed."""
        if policy.off and cache_key is None:
            return ALLOW_UNLIMITED
        # resting(), inlined: this runs on every request, where the method call costs ~40% more
        if time.monotonic() < self._down_until:
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
        windows = tuple((int(reply[i]), int(reply[i + 1])) for i in range(3, len(reply), 2)) if len(reply) > 3 else ()
        return Decision(bool(reply[0]), -(-int(reply[1]) // 1000), reply[2] or None, windows)

    def _degraded(self) -> Decision:
        if self._on_failure is not None:
            self._on_failure()
        if self._failure_mode == "closed":
            raise Unavailable("redis")
        return Decision(True, degraded=True)

    async def remember(self, key: str, value: bytes, ttl_seconds: int) -> None:
        """Cache an answer; best effort, since PostgreSQL stays the truth."""
        if self._pipe is not None:
            pipe = self._pipe
            await self.cache_write("replay cache", lambda: pipe.execute("SET", key, value, "EX", ttl_seconds))
        else:
            await self.cache_write("replay cache", lambda: self._redis.set(key, value, ex=ttl_seconds))

    async def aclose(self) -> None:
        """Close the pipelined connection, if any (the redis-py client is closed by its owner)."""
        if self._pipe is not None:
            await self._pipe.aclose()
