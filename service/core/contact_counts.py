"""Segment sizes, cached in Redis so that paging does not count the whole segment every time.

A count is cached under the organisation's contacts version (`{o:<org>}:sc:<segment>:<version>`).
Every contact write bumps that version in PostgreSQL, in its own transaction, so a write makes
the old entries unreachable at once; they expire on their own. Segments never change after they
are created, so (segment, version) determines the count. Redis is only a cache here: when it does
not answer, the count comes from PostgreSQL.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..db.segments import count_members
from .ratelimit import org_key

log = logging.getLogger("service.counts")
COUNT_TTL_SECONDS = 3600


def count_key(org_id: uuid.UUID, segment_id: uuid.UUID, version: int) -> str:
    return org_key(str(org_id), f"sc:{segment_id}:{version}")


async def _cached(redis: Redis, key: str) -> int | None:
    try:
        raw = await redis.get(key)
    except (RedisError, OSError):
        log.warning("segment count cache unavailable; counting in PostgreSQL")
        return None
    return int(raw) if raw is not None else None


async def _remember(redis: Redis, key: str, total: int) -> None:
    try:
        await redis.set(key, total, ex=COUNT_TTL_SECONDS)
    except (RedisError, OSError):
        log.warning("segment count cache unavailable; count not cached")


async def segment_total(
    redis: Redis, conn: asyncpg.Connection, org_id: uuid.UUID, segment_id: uuid.UUID,
    filters: dict[str, Any], version: int | None,
) -> int:
    """How many contacts the segment holds at `version` (or later), from the cache when possible."""
    if version is not None:
        cached = await _cached(redis, count_key(org_id, segment_id, version))
        if cached is not None:
            return cached
    total, counted_at = await count_members(conn, org_id, filters)
    # stored under the version the count really saw, which may be newer than `version`
    await _remember(redis, count_key(org_id, segment_id, counted_at), total)
    return total
