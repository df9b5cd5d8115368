"""What paging a segment remembers in Redis: its size, and where its pages start.

Both live in one hash per (segment, contacts version, filters),
`{o:<org>}:seg:<segment>:<version>:<digest of the filters>`: `t` is the number of members, and
`p<n>` the id of the member at position n (1-based) in the page order. Every contact write bumps
the organisation's contacts version in PostgreSQL, in the writing transaction, and editing a
segment's filters changes their digest, so either makes the old hash unreachable at once, on every
worker (it expires on its own): the filters and the version determine both facts. A reader that
still holds the old filters writes under the old digest, which no reader of the new ones reads.
The reminder list (`?opened=true|false`) is another set: its hash adds the survey, the flag and the
survey's opens version, `...:<digest>:o<survey>:<1|0>:<opens version>`, which every write of the
survey's contact opens moves on in the writing statement (service/db/opens.py), so an open once
written is never answered for from an older hash.

With the member before a page known, the page is a keyset seek through the page index instead of
an OFFSET walk over `skip` rows: paging on through a segment, or asking for the same deep page
again, costs the same at any depth. Positions are remembered at multiples of 50 only (every page
boundary of the usual page sizes), which bounds the hash. Redis is only a cache here: when it
does not answer (the gate's REDIS_DOWN errors), PostgreSQL does all the work; a write it refuses
(out of memory, read-only) is logged and skipped; any other Redis error on a read is a bug and surfaces.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

import asyncpg
import orjson
from redis.asyncio import Redis, RedisCluster

from ..db import segments as segment_db
from ..db.segments import OpenedFilter, PageRow
from .breaker import REDIS_DOWN, Breaker
from .ratelimit import org_key

log = logging.getLogger("service.segments")
CACHE_TTL_SECONDS = 3600
MARKER_EVERY = 50
# fields and TTL in one atomic call (also on a cluster: one key, one slot)
_REMEMBER = "redis.call('HSET', KEYS[1], unpack(ARGV, 2)) return redis.call('EXPIRE', KEYS[1], ARGV[1])"


def cache_key(org_id: uuid.UUID, segment_id: uuid.UUID, version: int, filters: dict[str, Any],
              opened: OpenedFilter | None = None) -> str:
    # sorted keys: the same tree has one digest whatever order its JSON came in
    digest = hashlib.blake2b(orjson.dumps(filters, option=orjson.OPT_SORT_KEYS), digest_size=8).hexdigest()
    key = f"seg:{segment_id}:{version}:{digest}"
    if opened is not None:
        key += f":o{opened.survey_id}:{1 if opened.opened else 0}:{opened.version}"
    return org_key(str(org_id), key)


@dataclass
class SegmentCache:
    """One app's segment cache: its Redis client, and its own breaker (one app's outage does not
    silence another's cache: tests run several apps)."""

    redis: Redis | RedisCluster
    breaker: Breaker = field(default_factory=Breaker)


async def _read(cache: SegmentCache, key: str, *fields: str) -> list[bytes | None]:
    if cache.breaker.resting():
        return [None] * len(fields)
    try:
        # bytes: the client does not decode responses (redis-py's types cannot know it)
        return cast(list[bytes | None], await cache.redis.hmget(key, list(fields)))
    except REDIS_DOWN:
        cache.breaker.trip()
        log.warning("segment cache unavailable; PostgreSQL counts and walks")
        return [None] * len(fields)


async def _write(cache: SegmentCache, key: str, fields: dict[str, Any]) -> None:
    pairs = [item for name, value in fields.items() for item in (name, value)]
    await cache.breaker.cache_write(
        "segment cache", lambda: cache.redis.eval(_REMEMBER, 1, key, CACHE_TTL_SECONDS, *pairs))


async def _count(cache: SegmentCache, conn: asyncpg.Connection, org_id: uuid.UUID, segment_id: uuid.UUID,
                 filters: dict[str, Any], opened: OpenedFilter | None = None) -> int:
    total, counted_at = await segment_db.count_members(conn, org_id, filters, opened)
    # remembered under the version the count really saw, which may be newer than the caller's (so may
    # the opens it saw be: a hash never holds facts older than its versions)
    await _write(cache, cache_key(org_id, segment_id, counted_at, filters, opened), {"t": total})
    return total


async def segment_total(cache: SegmentCache, conn: asyncpg.Connection, org_id: uuid.UUID, segment_id: uuid.UUID,
                        filters: dict[str, Any], version: int | None) -> int:
    """How many contacts the segment holds at `version` (None: unknown, count now)."""
    if version is not None:
        (cached,) = await _read(cache, cache_key(org_id, segment_id, version, filters), "t")
        if cached is not None:
            return int(cached)
    return await _count(cache, conn, org_id, segment_id, filters)


@dataclass(frozen=True)
class SegmentPage:
    total: int
    rows: list[PageRow]


async def read_page(
    cache: SegmentCache, conn: asyncpg.Connection, org_id: uuid.UUID, segment_id: uuid.UUID, filters: dict[str, Any],
    version: int, limit: int, skip: int, attribute_keys: list[str], opened: OpenedFilter | None = None,
) -> SegmentPage:
    """A page of the segment (of its members that have or have not opened, with `opened`) and its
    total: one Redis read, the page query, and what was learnt."""
    key = cache_key(org_id, segment_id, version, filters, opened)
    end = skip + limit
    cached_total, start, end_known = await _read(cache, key, "t", f"p{skip}", f"p{end}")
    total = int(cached_total) if cached_total is not None else await _count(
        cache, conn, org_id, segment_id, filters, opened)
    after = None if start is None else int(start)
    page = await segment_db.member_page(conn, org_id, filters, limit, skip, attribute_keys, after, opened)
    learnt: dict[str, str] = {}
    if page.before is not None and skip % MARKER_EVERY == 0:
        learnt[f"p{skip}"] = str(page.before)
    if page.last is not None and len(page.rows) == limit and end % MARKER_EVERY == 0 and end_known is None:
        learnt[f"p{end}"] = str(page.last)
    if learnt and page.version == version:
        await _write(cache, key, learnt)
    return SegmentPage(total, page.rows)
