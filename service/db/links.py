"""Created survey links (Filum contract)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

_COLUMNS = "id, public_id, survey_id, name, metadata_mapping, created_at, updated_at"


@dataclass(frozen=True)
class SurveyLink:
    id: int
    public_id: str
    survey_id: uuid.UUID
    name: str
    metadata_mapping: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime


async def find_link_either(conn: asyncpg.Connection, survey_id: uuid.UUID, mapping_hash: bytes,
                           older_hash: bytes) -> SurveyLink | None:
    """The link stored under `mapping_hash`, else the one stored under `older_hash`."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM survey_links WHERE survey_id = $1 AND mapping_hash = any($2::bytea[])"
        " ORDER BY mapping_hash = $3 DESC LIMIT 1",
        survey_id, [mapping_hash, older_hash], mapping_hash,
    )
    return SurveyLink(**row) if row else None


async def find_link(conn: asyncpg.Connection, survey_id: uuid.UUID, mapping_hash: bytes) -> SurveyLink | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM survey_links WHERE survey_id = $1 AND mapping_hash = $2",
        survey_id, mapping_hash,
    )
    return SurveyLink(**row) if row else None


# One statement, so the survey row is locked only while PostgreSQL runs it and commits: no client
# round trip (nor the worker's event loop) sits between taking the lock and releasing it. The row
# is locked first (FOR UPDATE re-reads the newest count after any wait), the link is inserted if
# there is room, and the count moves only if the insert happened (a conflicting mapping leaves it).
# `counted` is data-modifying, so PostgreSQL runs it even though the final SELECT never reads it.
# A mapping already stored (a replay the Redis cache no longer holds) skips the lock altogether, so
# replays never queue behind creators of the same survey; one committed meanwhile is still caught by
# ON CONFLICT, as before.
_CLAIM_AND_INSERT = f"""
WITH quota AS (
    SELECT s.id FROM surveys s JOIN organizations o ON o.id = s.org_id
    WHERE s.id = $1 AND s.link_count < coalesce(s.link_quota, o.link_quota)
      AND NOT EXISTS (SELECT 1 FROM survey_links l WHERE l.survey_id = $1 AND l.mapping_hash = $3)
    FOR UPDATE OF s
), created AS (
    INSERT INTO survey_links (public_id, survey_id, mapping_hash, name, metadata_mapping)
    SELECT $2, id, $3, $4, $5 FROM quota
    ON CONFLICT (survey_id, mapping_hash) DO NOTHING
    RETURNING {_COLUMNS}
), counted AS (
    UPDATE surveys SET link_count = link_count + 1 WHERE id = $1 AND EXISTS (SELECT 1 FROM created)
)
SELECT * FROM created
"""


async def claim_and_insert(
    conn: asyncpg.Connection, survey_id: uuid.UUID, public_id: str, mapping_hash: bytes,
    name: str, mapping: list[dict[str, Any]],
) -> SurveyLink | None:
    """The new link; None when the survey is full or the mapping exists already."""
    row = await conn.fetchrow(_CLAIM_AND_INSERT, survey_id, public_id, mapping_hash, name, mapping)
    return SurveyLink(**row) if row else None


async def effective_quota(conn: asyncpg.Connection, survey_id: uuid.UUID) -> int:
    return await conn.fetchval(
        "SELECT coalesce(s.link_quota, o.link_quota) FROM surveys s JOIN organizations o ON o.id = s.org_id"
        " WHERE s.id = $1",
        survey_id,
    )


@dataclass(frozen=True)
class OpenedLink:
    public_id: str
    survey_id: uuid.UUID
    status: str
    redirect_url: str | None
    metadata_mapping: list[dict[str, Any]]
    variables: dict[int, str]


async def link_for_opening(conn: asyncpg.Connection, public_id: str) -> OpenedLink | None:
    """A created link with its survey's state and the variable name of each metadata field."""
    row = await conn.fetchrow(
        "SELECT l.public_id, l.survey_id, s.status, s.redirect_url, l.metadata_mapping,"
        " (SELECT coalesce(jsonb_object_agg(m.id::text, m.variable), '{}'::jsonb) FROM metadata_fields m"
        "   WHERE m.org_id = s.org_id"
        "   AND m.id IN (SELECT (e->>'metadata_id')::bigint FROM jsonb_array_elements(l.metadata_mapping) e))"
        "   AS variables"
        " FROM survey_links l JOIN surveys s ON s.id = l.survey_id WHERE l.public_id = $1",
        public_id,
    )
    if row is None:
        return None
    variables = {int(k): v for k, v in row["variables"].items()}
    return OpenedLink(row["public_id"], row["survey_id"], row["status"], row["redirect_url"],
                      row["metadata_mapping"], variables)
