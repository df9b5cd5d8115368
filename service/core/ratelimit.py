"""The request gate: rate limits and the replay-cache lookup in one Redis round trip."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, NamedTuple, cast

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import (
    ClusterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    SlotNotCoveredError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .errors import Unavailable
from .ratepolicy import RatePolicy
from .redis_pipe import PipelinedRedis, encode

log = logging.getLogger("service.ratelimit")

GATE_SCRIPT = resources.files("service").joinpath("lua/gate.lua").read_text()
REMEMBER_SCRIPT = resources.files("service").joinpath("lua/remember.lua").read_text()
REMEMBER_SHA = hashlib.sha1(REMEMBER_SCRIPT.encode()).hexdigest()
# what an unreachable or restarting Redis looks like (BusyLoadingError is a ConnectionError);
# any other error is a bug and must surface, not be mistaken for an outage. A Redis Cluster with a
# master down answers CLUSTERDOWN (or leaves a slot uncovered): an outage too
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError, ClusterDownError, SlotNotCoveredError)
# a server that answers but refuses writes: out of memory under noeviction (OOM), a read-only replica
# (READONLY), a failed snapshot with stop-writes-on-bgsave-error (MISCONF), too few replicas
# (NOREPLICAS). Inside a script Redis 6 wraps the code ("ERR Error running script ...: -OOM ..."),
# Redis 7 and Valkey pass it on, redis-py strips it off for the classes it knows
_REFUSED_WRITE = re.compile(r"(?:^|-)(?:OOM|READONLY|MISCONF|NOREPLICAS) ")
_MGET_KEYS = 100
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


def new_epoch() -> bytes:
    """A survey's replay epoch: 16 hex digits (every epoch has that length: gate.lua strips it off an entry)."""
    return secrets.token_hex(8).encode()


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
    # the survey's replay epoch the lookup saw (asked with an epoch key), for remember()
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

    async def lookup(self, key: str, epoch_key: str) -> tuple[bytes | None, bytes | None]:
        """The answer an entry holds under the survey's epoch (see remember.lua), and that epoch."""
        if self._breaker.resting():
            return None, None
        try:
            if self._pipe is not None:
                entry, epoch = await self._pipe.execute("MGET", key, epoch_key)
            else:
                entry, epoch = await self._redis.mget(key, epoch_key)
        except REDIS_DOWN:
            self._breaker.trip()
            log.warning("replay cache unavailable; PostgreSQL answers replays")
            return None, None
        return (entry[len(epoch):] if entry and epoch and entry.startswith(epoch) else None), epoch

    async def set(self, key: str, value: bytes, ttl_seconds: int, epoch_key: str | None = None,
                  seen: bytes | None = None) -> None:
        """Remember an answer (with `epoch_key`: under the epoch the lookup saw, else not at all); skipped
        when the cache Redis is down or refuses the write."""
        if epoch_key is None:
            command: tuple[str | bytes | int, ...] = ("SET", key, value, "EX", ttl_seconds)
        else:
            command = ("EVALSHA", REMEMBER_SHA, 2, key, epoch_key, value, ttl_seconds, seen or b"", new_epoch())
        await self._breaker.cache_write("replay cache", lambda: self._call(command, REMEMBER_SCRIPT))

    async def _call(self, command: tuple[str | bytes | int, ...], script: str) -> object:
        """The command; an EVALSHA whose script the server lacks is sent again as EVAL (which loads it)."""
        call = self._pipe.execute if self._pipe is not None else self._redis.execute_command
        try:
            return await call(*command)
        except NoScriptError:
            return await call("EVAL", script, *command[2:])

    async def move_epoch(self, epoch_key: str, ttl_seconds: int) -> None:
        """Put a new epoch in place (every entry of the survey stops answering), or Unavailable."""
        try:
            await self._redis.set(epoch_key, new_epoch(), ex=ttl_seconds)
        except REDIS_DOWN:
            self._breaker.trip()
            raise Unavailable("redis") from None
        except RedisError as exc:
            if refusal(exc) is None:
                raise
            raise Unavailable("redis") from None

    async def get_many(self, keys: list[str], epoch_key: str) -> tuple[list[bytes | None], bytes | None]:
        """The answers the entries of `keys` hold under their survey's epoch (see remember.lua), and that
        epoch: MGETs of the keys and the epoch key (one slot: the organisation's); all None when the
        cache Redis does not answer."""
        if not keys or self._breaker.resting():
            return [None] * len(keys), None
        names = [epoch_key, *keys]
        try:
            if self._pipe is not None:
                # MGETs of 100 keys, pipelined: the pipe parses a reply again from its start each time
                # more of it arrives, so a 700 kB reply (1,000 links) would be parsed a dozen times over
                replies = await self._pipe.execute_many([encode(("MGET", *names[i:i + _MGET_KEYS]))
                                                         for i in range(0, len(names), _MGET_KEYS)])
                values = [value for reply in replies for value in reply]
            else:
                values = await self._redis.mget(names)
        except REDIS_DOWN:
            self._breaker.trip()
            log.warning("replay cache unavailable; PostgreSQL answers replays")
            return [None] * len(keys), None
        epoch, entries = values[0], values[1:]
        if not epoch:
            return [None] * len(keys), None
        return [entry[len(epoch):] if entry and entry.startswith(epoch) else None for entry in entries], epoch

    async def set_many(self, items: list[tuple[str, bytes]], ttl_seconds: int, epoch_key: str,
                       seen: bytes | None) -> None:
        """Remember many answers in one pipeline, each as set() remembers one (under the epoch the lookup
        saw: remember.lua); best effort."""
        if not items:
            return
        # one new epoch for the batch: when the lookup saw none, the first write puts it in place and the
        # others (sent after it, in order) write under it; any other epoch found refuses them all
        fresh = new_epoch()
        commands = [("EVALSHA", REMEMBER_SHA, 2, key, epoch_key, value, ttl_seconds,
                     seen or (fresh if i else b""), fresh) for i, (key, value) in enumerate(items)]
        await self._breaker.cache_write("replay cache", lambda: self._call_many(commands))

    async def _call_many(self, commands: list[tuple[Any, ...]]) -> None:
        """The EVALSHAs in one pipeline; when the server lacks the script, it is loaded and they are sent
        again (each write is the same the second time)."""
        for attempt in range(2):
            try:
                if self._pipe is not None:
                    await self._pipe.execute_many([encode(command) for command in commands])
                else:
                    async with self._redis.pipeline(transaction=False) as pipeline:
                        for command in commands:
                            pipeline.execute_command(*command)
                        await pipeline.execute()
                return
            except NoScriptError:
                if attempt:
                    raise
                if self._pipe is not None:
                    await self._pipe.execute("SCRIPT", "LOAD", REMEMBER_SCRIPT)
                else:
                    await self._redis.script_load(REMEMBER_SCRIPT)

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

    async def check(self, org_id: str, policy: RatePolicy, cache_key: str | None = None,
                    epoch_key: str | None = None) -> Decision:
        """Spend a token (or refuse), and read `cache_key` when allowed (with `epoch_key`: only an entry
        written under the survey's epoch answers, see remember.lua)."""
        if policy.off and cache_key is None:
            return ALLOW_UNLIMITED
        if cache_key is not None and self._cache is not None:
            return await self._check_then_read(org_id, policy, self._cache, cache_key, epoch_key)
        # resting(), inlined: this runs on every request, where the method call costs ~40% more
        if self._clock() < self._down_until:
            return self._degraded()
        keys = [org_key(org_id, "rl")] if cache_key is None else [org_key(org_id, "rl"), cache_key]
        if epoch_key is not None and cache_key is not None:
            keys.append(epoch_key)
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
        epoch = (reply.pop() or None) if len(keys) == 3 else None  # the script answers it last
        windows = tuple((int(reply[i]), int(reply[i + 1])) for i in range(3, len(reply), 2)) if len(reply) > 3 else ()
        return Decision(bool(reply[0]), -(-int(reply[1]) // 1000), reply[2] or None, windows, epoch=epoch)

    async def _check_then_read(self, org_id: str, policy: RatePolicy, cache: ReplayCache, cache_key: str,
                               epoch_key: str | None) -> Decision:
        """The buckets on REDIS_URL, then, when allowed, the replay cache on its own server."""
        decision = await self.check(org_id, policy)
        if not decision.allowed:
            return decision
        if epoch_key is None:
            cached = await cache.get(cache_key)
            return decision if cached is None else decision._replace(cached=cached)
        cached, epoch = await cache.lookup(cache_key, epoch_key)
        return decision._replace(cached=cached, epoch=epoch)

    def _degraded(self) -> Decision:
        if self._on_failure is not None:
            self._on_failure()
        if self._failure_mode == "closed":
            raise Unavailable("redis")
        return Decision(True, degraded=True)

    async def remember(self, key: str, value: bytes, ttl_seconds: int, epoch_key: str | None = None,
                       seen: bytes | None = None) -> None:
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
