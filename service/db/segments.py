"""Segments: their rows, and what a contact-links page must know before it reads any contact
(link_context). Their members, a page or a count, are db/members.py's."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from .keyset import newest_first


@dataclass(frozen=True)
class Segment:
    id: uuid.UUID
    title: str
    filters: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class LinkContext:
    """What a contact-links page needs to know before it reads contacts."""

    survey_seq: int | None
    survey_status: str | None
    filters: dict[str, Any] | None
    link_format: str | None  # the survey's: 'jwt' or 'short'
    # the generation new tokens carry (the survey's; 1 when there is no survey)
    link_generation: int
    # moved on by every write of the survey's contact opens (the reminder list's counts compare it)
    opens_version: int
    # whether contacts were written since the cached count's snapshot (None: no cached count given)
    changed: bool | None


@dataclass(frozen=True)
class Since:
    """A cached count's snapshot (`pg_current_snapshot()` as text) and the previous release's contacts
    version it saw: enough to tell whether any contact write committed after it."""

    snapshot: str
    version: int


async def insert_segment(conn: asyncpg.Connection, org_id: uuid.UUID, title: str, filters: dict[str, Any]) -> Segment:
    row = await conn.fetchrow(
        "INSERT INTO segments (id, org_id, title, filters) VALUES ($1, $2, $3, $4)"
        " RETURNING id, title, filters, created_at",
        uuid.uuid4(), org_id, title, filters,
    )
    assert row is not None  # RETURNING of an INSERT: one row
    return Segment(**row)


# the previous release's contacts version (org id as $1): only its instances still move it
CONTACTS_VERSION = "(SELECT coalesce(max(version), 0) FROM contact_versions WHERE org_id = $1)"
# whether a contact write committed after the snapshot $n (and the old version $n+1): org id as $1;
# rows of transactions older than the snapshot's xmin are all visible to it, so only the newest are read
_CHANGED = (
    "(EXISTS (SELECT 1 FROM contact_changes WHERE org_id = $1 AND xid >= pg_snapshot_xmin(${0}::text::pg_snapshot)"
    " AND NOT pg_visible_in_snapshot(xid, ${0}::text::pg_snapshot)) OR " + CONTACTS_VERSION + " <> ${1}::bigint)"
)


def _changed(since: Since | None, first: int) -> tuple[str, list[Any]]:
    if since is None:
        return "NULL::boolean", []
    return _CHANGED.format(first, first + 1), [since.snapshot, since.version]


async def get_segment(
    conn: asyncpg.Connection, org_id: uuid.UUID, segment_id: uuid.UUID, since: Since | None = None
) -> tuple[Segment, bool | None] | None:
    """The segment and whether contacts changed since `since` (None without it), or None."""
    changed, params = _changed(since, 3)
    row = await conn.fetchrow(
        f"SELECT id, title, filters, created_at, {changed} AS changed FROM segments WHERE org_id = $1 AND id = $2",
        org_id, segment_id, *params,
    )
    if row is None:
        return None
    return Segment(row["id"], row["title"], row["filters"], row["created_at"]), row["changed"]


async def update_segment(
    conn: asyncpg.Connection, org_id: uuid.UUID, segment_id: uuid.UUID, title: str | None,
    filters: dict[str, Any] | None, since: Since | None = None,
) -> tuple[Segment, bool | None] | None:
    """Change the title and/or the filters (None keeps one), answered as get_segment answers; None when missing."""
    changed, params = _changed(since, 5)
    row = await conn.fetchrow(
        "UPDATE segments SET title = coalesce($3, title), filters = coalesce($4, filters)"
        f" WHERE org_id = $1 AND id = $2 RETURNING id, title, filters, created_at, {changed} AS changed",
        org_id, segment_id, title, filters, *params,
    )
    if row is None:
        return None
    return Segment(row["id"], row["title"], row["filters"], row["created_at"]), row["changed"]


async def delete_segment(conn: asyncpg.Connection, org_id: uuid.UUID, segment_id: uuid.UUID) -> bool:
    """False when the organisation has no such segment."""
    return await conn.fetchval(
        "DELETE FROM segments WHERE org_id = $1 AND id = $2 RETURNING id", org_id, segment_id
    ) is not None


async def list_segments(
    conn: asyncpg.Connection, org_id: uuid.UUID, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> list[Segment]:
    """The organisation's segments newest first (ties by id), from just past `after` (a keyset seek on
    segments_page_idx)."""
    rows = await newest_first(conn, "segments", "id, title, filters, created_at", org_id, limit, after)
    return [Segment(**r) for r in rows]


async def link_context(
    conn: asyncpg.Connection, org_id: uuid.UUID, survey_id: uuid.UUID, segment_id: uuid.UUID | None,
    since: Since | None = None,
) -> LinkContext:
    """The survey, the segment (when one is named), the survey's opens version and whether contacts
    changed since `since`, in one round trip."""
    changed, params = _changed(since, 4)
    row = await conn.fetchrow(
        f"SELECT s.seq, s.status, g.filters, s.link_format, coalesce(s.link_generation, 1) AS link_generation,"
        " (SELECT coalesce(max(v.version), 0) FROM contact_opens_versions v WHERE v.org_id = $1 AND v.survey_id = s.id)"
        " AS opens,"
        f" {changed} AS changed FROM (SELECT 1) AS one"
        " LEFT JOIN surveys s ON s.id = $2 AND s.org_id = $1"
        " LEFT JOIN segments g ON g.id = $3 AND g.org_id = $1",
        org_id, survey_id, segment_id, *params,
    )
    assert row is not None  # FROM (SELECT 1): one row
    return LinkContext(row["seq"], row["status"], row["filters"], row["link_format"], row["link_generation"],
                       row["opens"], row["changed"])
