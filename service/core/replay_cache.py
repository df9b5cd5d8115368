"""The replay cache: the answers of the Filum create remembered in Redis, best effort (PostgreSQL
stays the truth), each entry written under its survey's epoch (remember_many.lua) so that moving the
epoch makes every entry of the survey stale at once."""

from __future__ import annotations

import logging
import secrets
from importlib import resources

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from .breaker import REDIS_DOWN, Breaker, refusal
from .errors import Unavailable
from .redis_pipe import PipelinedRedis, encode

log = logging.getLogger("service.ratelimit")  # the gate's: its warnings read as the gate's

# one answer or a batch's in one call (1,000 EVALSHAs of one answer each cost the worker and Redis far more)
REMEMBER_MANY_SCRIPT = resources.files("service").joinpath("lua/remember_many.lua").read_text()
_MGET_KEYS = 100


def new_epoch() -> bytes:
    """A survey's replay epoch: 16 hex digits (every epoch has that length: gate.lua strips it off an entry)."""
    return secrets.token_hex(8).encode()


class ReplayCache:
    """The replay cache's reads and writes, best effort: PostgreSQL stays the truth. On REDIS_URL by
    default, behind the gate's breaker; on a Redis of its own (CACHE_REDIS_URL, which may evict) when set."""

    def __init__(self, redis: Redis | RedisCluster, pipe: PipelinedRedis | None = None,
                 breaker: Breaker | None = None) -> None:
        self._redis = redis
        self._pipe = pipe
        self._breaker = Breaker() if breaker is None else breaker
        self._remember = redis.register_script(REMEMBER_MANY_SCRIPT)  # without a pipe: redis-py reloads it

    async def lookup(self, key: str, epoch_key: str) -> tuple[bytes | None, bytes | None]:
        """The answer an entry holds under the survey's epoch (see remember_many.lua), and that epoch."""
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

    async def set(self, key: str, value: bytes, ttl_seconds: int, epoch_key: str, seen: bytes | None) -> None:
        """Remember an answer under the epoch the lookup saw, or not at all (as set_many); skipped when the
        cache Redis is down or refuses the write."""
        await self.set_many([(key, value)], ttl_seconds, epoch_key, seen)

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
        """The answers the entries of `keys` hold under their survey's epoch (see remember_many.lua), and that
        epoch: MGETs of the keys and the epoch key (one slot: the organisation's); all None when the
        cache Redis does not answer."""
        if not keys or self._breaker.resting():
            return [None] * len(keys), None
        names = [epoch_key, *keys]
        try:
            if self._pipe is not None:
                # MGETs of 100 keys, pipelined: chosen when the pipe's own parser read a partial reply
                # again from its start; hiredis keeps its place, so one MGET may do as well (not re-measured)
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
        """Remember answers in one call, under the epoch the lookup saw, or (none seen and none in place) a
        fresh one, or not at all (remember_many.lua); best effort."""
        if not items:
            return
        keys = [epoch_key, *[key for key, _ in items]]
        args: list[int | bytes] = [ttl_seconds, seen or b"", new_epoch(), *[value for _, value in items]]
        if self._pipe is not None:
            pipe = self._pipe
            await self._breaker.cache_write(
                "replay cache", lambda: pipe.evalsha(REMEMBER_MANY_SCRIPT, self._remember.sha, keys, args))
        else:
            await self._breaker.cache_write("replay cache", lambda: self._remember(keys=keys, args=args))

    async def aclose(self) -> None:
        """Close the pipelined connection, if any (the redis-py client is closed by its owner)."""
        if self._pipe is not None:
            await self._pipe.aclose()
