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


# a mapping names at most one live link (the partial unique index survey_links_live_mapping_idx); revoked
# links keep their rows but never answer for their mapping again
LIVE = "revoked_at IS NULL"
# the arbiter of a duplicate mapping: the partial unique index of live links (migrations 0003, 0008)
CONFLICT_TARGET = f"(org_id, survey_id, mapping_hash) WHERE {LIVE}"
# a survey's effective quota: its own, else its organisation's (surveys s joined to organizations o)
QUOTA = "coalesce(s.link_quota, o.link_quota)"


async def find_link(
    conn: asyncpg.Connection, org_id: uuid.UUID, survey_id: uuid.UUID, mapping_hash: bytes
) -> SurveyLink | None:
    """The live link of the mapping."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM survey_links WHERE org_id = $1 AND survey_id = $2 AND mapping_hash = $3 AND {LIVE}",
        org_id, survey_id, mapping_hash,
    )
    return SurveyLink(**row) if row else None


# One statement, so the survey row is locked only while PostgreSQL runs it and commits: no client
# round trip (nor the worker's event loop) sits between taking the lock and releasing it. A link
# already stored under one of the hashes (a replay the Redis cache no longer holds) is answered as
# it is, without the lock, so replays never queue behind creators of the same survey (only live links
# answer: a revoked one frees its mapping and its place in the quota, see db/created_links.py). Otherwise the
# row is locked (FOR UPDATE re-reads the newest count after any wait), the link is inserted if there
# is room, and the count moves only if the insert happened; one committed by a concurrent creator
# after this statement began is caught by ON CONFLICT (and the statement answers nothing).
# `counted` is data-modifying, so PostgreSQL runs it even though the final SELECT never reads it.
_CLAIM_OR_FIND = f"""
WITH stored AS (
    SELECT {_COLUMNS} FROM survey_links
    WHERE org_id = $7 AND survey_id = $1 AND mapping_hash = any($6::bytea[]) AND {LIVE}
    ORDER BY mapping_hash = $3 DESC LIMIT 1
), quota AS (
    SELECT s.id FROM surveys s JOIN organizations o ON o.id = s.org_id
    WHERE s.org_id = $7 AND s.id = $1 AND s.link_count < {QUOTA}
    AND NOT EXISTS (SELECT 1 FROM stored)
    FOR UPDATE OF s
), created AS (
    INSERT INTO survey_links (org_id, public_id, survey_id, mapping_hash, name, metadata_mapping)
    SELECT $7, $2, id, $3, $4, $5 FROM quota
    ON CONFLICT {CONFLICT_TARGET} DO NOTHING
    RETURNING {_COLUMNS}
), counted AS (
    UPDATE surveys SET link_count = link_count + 1 WHERE org_id = $7 AND id = $1 AND EXISTS (SELECT 1 FROM created)
)
SELECT false AS replayed, * FROM created
UNION ALL
SELECT true AS replayed, * FROM stored
"""


async def claim_or_find(
    conn: asyncpg.Connection, org_id: uuid.UUID, survey_id: uuid.UUID, public_id: str, mapping_hash: bytes,
    stored_hashes: list[bytes], name: str, mapping: list[dict[str, Any]],
) -> tuple[SurveyLink, bool] | None:
    """The link stored under `stored_hashes` (the first preferred) and True, else a new one and False;
    None when the survey is full or a concurrent creator stored the mapping meanwhile."""
    row = await conn.fetchrow(_CLAIM_OR_FIND, survey_id, public_id, mapping_hash, name, mapping, stored_hashes, org_id)
    if row is None:
        return None
    fields = dict(row)
    replayed = fields.pop("replayed")
    return SurveyLink(**fields), replayed


async def effective_quota(conn: asyncpg.Connection, org_id: uuid.UUID, survey_id: uuid.UUID) -> int:
    quota: int = await conn.fetchval(
        f"SELECT {QUOTA} FROM surveys s JOIN organizations o ON o.id = s.org_id"
        " WHERE s.org_id = $1 AND s.id = $2",
        org_id, survey_id,
    )
    return quota


@dataclass(frozen=True)
class OpenedLink:
    org_id: uuid.UUID
    id: int
    public_id: str
    survey_id: uuid.UUID
    status: str
    redirect_url: str | None
    metadata_mapping: list[dict[str, Any]]
    variables: dict[int, str]
    revoked_at: datetime | None = None


async def link_for_opening(conn: asyncpg.Connection, public_id: str) -> OpenedLink | None:
    """A created link with its survey's state and the variable name of each metadata field.

    The one lookup of a created link that does not name its organisation: the link is how it is found
    (on Citus, a probe of every shard's public-id index; docs/design.md)."""
    row = await conn.fetchrow(
        "SELECT l.org_id, l.id, l.public_id, l.survey_id, s.status, s.redirect_url, l.metadata_mapping, l.revoked_at,"
        " (SELECT coalesce(jsonb_object_agg(m.id::text, m.variable), '{}'::jsonb) FROM metadata_fields m"
        "   WHERE m.org_id = s.org_id"
        "   AND m.id IN (SELECT (e->>'metadata_id')::bigint FROM jsonb_array_elements(l.metadata_mapping) e))"
        "   AS variables"
        " FROM survey_links l JOIN surveys s ON s.org_id = l.org_id AND s.id = l.survey_id WHERE l.public_id = $1",
        public_id,
    )
    if row is None:
        return None
    variables = {int(k): v for k, v in row["variables"].items()}
    return OpenedLink(row["org_id"], row["id"], row["public_id"], row["survey_id"], row["status"], row["redirect_url"],
                      row["metadata_mapping"], variables, row["revoked_at"])
