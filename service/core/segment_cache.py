"""A segment's size and where its pages start, kept in Redis so that a steady stream of contact writes
does not make every page recount the segment.

A count is taken in one statement together with the key (created_at, id) of every STEP-th member in
page order and the snapshot it saw (db.members.count_members), and remembered in
`{o:<org>}:seg:<segment>` (a hash: the filters' digest, total, snapshot, time) and `...:m` (the keys,
16 bytes each). A page at `skip` seeks to the remembered member at or before `skip` (inclusive) and
walks at most STEP - 1 more: its cost does not depend on the depth nor on the segment's size. The
reminder list (`?opened=true|false`) has entries of its own per survey and flag,
`{o:<org>}:seg:<segment>:o<survey>:<1|0>`, which also hold the survey's opens version their count
saw (moved on by every write of the survey's contact opens, service/db/opens.py).

Whether the count still holds is asked of PostgreSQL in the round trip that reads the survey and the
segment anyway: every contact write inserts a `contact_changes` row under its own transaction id, so
"a row whose transaction the count's snapshot could not see" means "written since"; for a reminder
list, so does an opens version other than the one its count saw (read in the same round trip). Then:
- nothing written since: the count is exact, whatever its age;
- written since, counted less than REFRESH_AFTER ago: answered as is;
- written since, counted less than MAX_AGE ago: answered as is, and one refresh starts in the
  background (one at a time per segment across workers and instances: a Redis lock with a TTL);
- written since, counted longer ago (or nothing remembered): counted now, before answering.
So `meta.total` is exact when nothing was written (nor opened, for a reminder list) in the last
MAX_AGE seconds and never further behind than that (a margin under the contract's 5 s for clock skew
between instances: times are each process's wall clock). Pages read the members after the remembered
positions as they are now. An entry holds the digest of the filters it counted, and one counted for
other filters is never answered (after an edit, the first reader counts).
Redis is only a cache: when it does not answer, every page counts (PostgreSQL does all the work).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis, RedisCluster
from redis.commands.core import AsyncScript

from ..db import members as members_db
from ..db.members import Counted, OpenedFilter, PageRow
from ..db.pool import Pool
from ..db.segments import Since
from .breaker import REDIS_DOWN, Breaker
from .count_forms import CountForms
from .ratelimit import org_key

log = logging.getLogger("service.segments")
STEP = 250  # members between two remembered positions: a page walks at most STEP - 1 past one
REFRESH_AFTER = 1.0  # seconds: a count younger than this is answered without a refresh, even after writes
MAX_AGE = 4.0  # seconds: older than this after writes, it is counted again before answering
CACHE_TTL_SECONDS = 1800  # well within contact_changes' hour: an older count is never trusted
LOCK_MS = 60_000  # a refresher that died holds its segment's refresh for at most this long
_LUA = resources.files("service").joinpath("lua")
_READ = _LUA.joinpath("segment_read.lua").read_text()
_WRITE = _LUA.joinpath("segment_write.lua").read_text()
_UNLOCK = _LUA.joinpath("unlock.lua").read_text()
_MARKER = struct.Struct(">qq")  # created_at in microseconds since the epoch, id
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def filters_digest(filters: dict[str, Any]) -> str:
    # sorted keys: the same tree has one digest whatever order its JSON came in
    return hashlib.blake2b(orjson.dumps(filters, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()


def cache_key(org_id: uuid.UUID, segment_id: uuid.UUID, opened: OpenedFilter | None = None) -> str:
    key = f"seg:{segment_id}"
    if opened is not None:
        key += f":o{opened.survey_id}:{1 if opened.opened else 0}"
    return org_key(str(org_id), key)


def _pack(markers: list[tuple[datetime, int]]) -> bytes:
    return b"".join(_MARKER.pack((at - _EPOCH) // _MICROSECOND, cid) for at, cid in markers)


def _unpack(raw: bytes) -> tuple[datetime, int]:
    micros, cid = _MARKER.unpack(raw)
    return _EPOCH + micros * _MICROSECOND, cid


@dataclass(frozen=True)
class Cached:
    """A remembered count, and the remembered member nearest at or before the asked position."""

    digest: str
    total: int
    since: Since
    at: float  # the caller's clock just before the count was asked for
    opens_version: int | None  # the survey's, as the count saw it (reminder lists)
    index: int  # the marker's number (position index * STEP + 1); -1: the segment was empty
    anchor: tuple[datetime, int] | None


@dataclass
class SegmentCache:
    """One app's segment cache: its Redis client, its own breaker (tests run several apps), its clock
    (wall clock: counts are shared between processes), and the refreshes it runs in the background."""

    redis: Redis | RedisCluster
    breaker: Breaker = field(default_factory=Breaker)
    clock: Callable[[], float] = time.time
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    refreshing: set[str] = field(default_factory=set)
    # counts running in this process, by (segment key, filters' digest): a request that needs one
    # waits for it rather than counting the same segment again beside it
    counting: dict[tuple[str, str], asyncio.Future[Counted]] = field(default_factory=dict)
    # how long each form of a segment's count took, where either may be taken (core/count_forms.py)
    forms: CountForms = field(default_factory=CountForms)
    read_script: AsyncScript = field(init=False)
    write_script: AsyncScript = field(init=False)
    unlock_script: AsyncScript = field(init=False)

    def __post_init__(self) -> None:
        self.read_script = self.redis.register_script(_READ)
        self.write_script = self.redis.register_script(_WRITE)
        self.unlock_script = self.redis.register_script(_UNLOCK)

    async def settled(self) -> None:
        """Wait for the refreshes running now (tests, and the benchmark, wait on this rather than sleep)."""
        while self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def lookup(cache: SegmentCache, org_id: uuid.UUID, segment_id: uuid.UUID, skip: int = 0,
                 opened: OpenedFilter | None = None) -> Cached | None:
    """What is remembered of the segment (of its reminder list, with `opened`), with the marker for a
    page at `skip` (one Redis call)."""
    if cache.breaker.resting():
        return None
    key = cache_key(org_id, segment_id, opened)
    try:
        found = await cache.read_script(keys=[key, key + ":m"], args=[skip, STEP])
    except REDIS_DOWN:
        cache.breaker.trip()
        log.warning("segment cache unavailable; PostgreSQL counts and walks")
        return None
    if not found:
        return None
    digest, total, snapshot, version, at, opens, index, marker = found
    anchor = _unpack(marker) if marker and len(marker) == _MARKER.size else None
    if int(index) >= 0 and anchor is None:
        return None  # the markers expired or were evicted apart from the count
    return Cached(digest.decode(), int(total), Since(snapshot.decode(), int(version)), float(at),
                  None if opens is None else int(opens), int(index), anchor)


async def _recount(cache: SegmentCache, conn: asyncpg.Connection, org_id: uuid.UUID, segment_id: uuid.UUID,
                   filters: dict[str, Any], opened: OpenedFilter | None = None) -> Counted:
    key, digest = cache_key(org_id, segment_id, opened), filters_digest(filters)
    running = cache.counting.get((key, digest))
    if running is not None:
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if not running.cancelled() or (current is not None and current.cancelling()):
                raise
            # the request that was counting went away: count here instead
    flight: asyncio.Future[Counted] = asyncio.get_running_loop().create_future()
    cache.counting[key, digest] = flight
    try:
        at = cache.clock()  # before the statement: the snapshot is at least this recent
        either = members_db.either_form(filters, opened)
        hops = either and cache.forms.hops((key, digest))
        started = time.perf_counter()
        counted = await members_db.count_members(conn, org_id, filters, STEP, opened, hops)
        if either:
            cache.forms.took((key, digest), hops, time.perf_counter() - started)
    except asyncio.CancelledError:
        flight.cancel()
        raise
    except BaseException as exc:
        flight.set_exception(exc)
        flight.exception()  # retrieved: no "never retrieved" warning when nobody was waiting
        raise
    else:
        flight.set_result(counted)
    finally:
        del cache.counting[key, digest]
    args: list[bytes | str | int] = [
        CACHE_TTL_SECONDS, repr(at), digest, counted.total, counted.since.snapshot, counted.since.version,
        len(counted.markers), _pack(counted.markers), counted.opens_version]
    await cache.breaker.cache_write("segment cache", lambda: cache.write_script(keys=[key, key + ":m"], args=args))
    return counted


async def _refresh(cache: SegmentCache, pool: Pool, org_id: uuid.UUID, segment_id: uuid.UUID,
                   filters: dict[str, Any], opened: OpenedFilter | None, lock: str) -> None:
    token = os.urandom(8).hex()
    try:
        if not await cache.redis.set(lock, token, nx=True, px=LOCK_MS):
            return  # another worker or instance is counting this segment now
        try:
            async with pool.acquire() as conn:
                await _recount(cache, conn, org_id, segment_id, filters, opened)
        finally:
            await cache.unlock_script(keys=[lock], args=[token])
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a refresh is an optimisation: the next reader counts if it must
        log.warning("segment count refresh failed", extra={"error": type(exc).__name__})
    finally:
        cache.refreshing.discard(lock)


def _schedule(cache: SegmentCache, pool: Pool, org_id: uuid.UUID, segment_id: uuid.UUID,
              filters: dict[str, Any], opened: OpenedFilter | None = None) -> None:
    lock = cache_key(org_id, segment_id, opened) + ":lock"
    if lock in cache.refreshing or cache.breaker.resting():
        return
    cache.refreshing.add(lock)
    task = asyncio.create_task(_refresh(cache, pool, org_id, segment_id, filters, opened, lock))
    cache.tasks.add(task)
    task.add_done_callback(cache.tasks.discard)


def _usable(cache: SegmentCache, cached: Cached | None, filters: dict[str, Any], changed: bool | None,
            opened: OpenedFilter | None = None) -> str:
    """`use`, `refresh` (use, and count again in the background) or `count` (count before answering)."""
    if cached is None or cached.digest != filters_digest(filters):
        return "count"
    if opened is not None and cached.opens_version != opened.version:
        changed = True  # opens written since the count (or the entry is from before opens versions)
    if changed is False:
        return "use"
    age = cache.clock() - cached.at
    if age < REFRESH_AFTER:
        return "use"
    return "refresh" if age < MAX_AGE else "count"


async def segment_total(cache: SegmentCache, pool: Pool, conn: asyncpg.Connection, org_id: uuid.UUID,
                        segment_id: uuid.UUID, filters: dict[str, Any], cached: Cached | None,
                        changed: bool | None) -> int:
    """How many contacts the segment holds (see the module's rules), given what `lookup` found and
    whether contacts changed since its snapshot (asked of PostgreSQL by the caller)."""
    decision = _usable(cache, cached, filters, changed)
    if decision == "count":
        return (await _recount(cache, conn, org_id, segment_id, filters)).total
    if decision == "refresh":
        _schedule(cache, pool, org_id, segment_id, filters)
    assert cached is not None
    return cached.total


@dataclass(frozen=True)
class SegmentPage:
    total: int
    rows: list[PageRow]


async def read_page(
    cache: SegmentCache, pool: Pool, conn: asyncpg.Connection, org_id: uuid.UUID, segment_id: uuid.UUID,
    filters: dict[str, Any], cached: Cached | None, changed: bool | None, limit: int, skip: int,
    attribute_keys: list[str], opened: OpenedFilter | None = None,
) -> SegmentPage:
    """A page of the segment (of its members that have or have not opened, with `opened`: `cached`
    must then be the reminder list's entry) and its total: the page query from the remembered position
    at or before `skip`, and a count first only when what is remembered may not be answered."""
    decision = _usable(cache, cached, filters, changed, opened)
    if decision == "count":
        counted = await _recount(cache, conn, org_id, segment_id, filters, opened)
        total, index = counted.total, min(skip // STEP, len(counted.markers) - 1)
        anchor = counted.markers[index] if index >= 0 else None
    else:
        if decision == "refresh":
            _schedule(cache, pool, org_id, segment_id, filters, opened)
        assert cached is not None
        total, index, anchor = cached.total, cached.index, cached.anchor
    offset = skip if anchor is None else skip - index * STEP
    rows = await members_db.member_page(conn, org_id, filters, limit, offset, attribute_keys, anchor, opened)
    return SegmentPage(total, rows)
