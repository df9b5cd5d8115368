"""Segments, and the contacts of a segment: one page, or how many there are.

The filter is compiled to SQL by `filters.py` (values and keys are `$n` parameters). A page
walks `contacts_page_idx` (org, created_at DESC, id DESC) and reads only ids for the skipped rows;
the attributes asked for are extracted in SQL for the page's rows alone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from .filters import compile_filters


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
    contacts_version: int
    link_format: str | None  # the survey's: 'jwt' or 'short'
    # the generation new tokens carry (the survey's; 1 when there is no survey)
    link_generation: int
    # moved on by every write of the survey's contact opens (the reminder list's cache key)
    opens_version: int = 0


@dataclass(frozen=True)
class OpenedFilter:
    """Only the members that have (or have not) opened the survey's contact link: `?opened=`."""

    survey_id: uuid.UUID
    opened: bool
    # the survey's opens version when the request began (see LinkContext)
    version: int

    def sql(self, param: int) -> str:
        """The condition on `contacts`, the survey id being `$param`: a probe of contact_opens' key."""
        exists = "EXISTS" if self.opened else "NOT EXISTS"
        return (f" AND {exists} (SELECT 1 FROM contact_opens o"
                f" WHERE o.survey_id = ${param} AND o.contact_id = contacts.id)")


def _opened(opened: OpenedFilter | None, param: int) -> tuple[str, list[Any]]:
    return ("", []) if opened is None else (opened.sql(param), [opened.survey_id])


@dataclass(frozen=True)
class PageRow:
    contact_id: int
    # the asked-for attributes as JSON text (None when no keys were asked for)
    attributes_json: str | None


@dataclass(frozen=True)
class Page:
    rows: list[PageRow]
    # the id of the member just before the page, when the read walked over it; of the page's last member
    before: int | None
    last: int | None
    # the contacts version the page was read at (None for an empty read)
    version: int | None


async def insert_segment(conn: asyncpg.Connection, org_id: uuid.UUID, title: str, filters: dict[str, Any]) -> Segment:
    row = await conn.fetchrow(
        "INSERT INTO segments (id, org_id, title, filters) VALUES ($1, $2, $3, $4)"
        " RETURNING id, title, filters, created_at",
        uuid.uuid4(), org_id, title, filters,
    )
    assert row is not None  # RETURNING of an INSERT: one row
    return Segment(**row)


# the organisation's contacts version (org id as $1), read in the same statement as what depends on it
_VERSION = "(SELECT coalesce(max(version), 0) FROM contact_versions WHERE org_id = $1) AS version"


async def get_segment(
    conn: asyncpg.Connection, org_id: uuid.UUID, segment_id: uuid.UUID
) -> tuple[Segment, int] | None:
    """The segment and the organisation's current contacts version, or None."""
    row = await conn.fetchrow(
        f"SELECT id, title, filters, created_at, {_VERSION} FROM segments WHERE org_id = $1 AND id = $2",
        org_id, segment_id,
    )
    if row is None:
        return None
    return Segment(row["id"], row["title"], row["filters"], row["created_at"]), row["version"]


async def update_segment(
    conn: asyncpg.Connection, org_id: uuid.UUID, segment_id: uuid.UUID, title: str | None,
    filters: dict[str, Any] | None,
) -> tuple[Segment, int] | None:
    """Change the title and/or the filters (None keeps one), answered as get_segment answers; None when missing."""
    row = await conn.fetchrow(
        "UPDATE segments SET title = coalesce($3, title), filters = coalesce($4, filters)"
        f" WHERE org_id = $1 AND id = $2 RETURNING id, title, filters, created_at, {_VERSION}",
        org_id, segment_id, title, filters,
    )
    if row is None:
        return None
    return Segment(row["id"], row["title"], row["filters"], row["created_at"]), row["version"]


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
    columns = "id, title, filters, created_at"
    if after is None:
        rows = await conn.fetch(
            f"SELECT {columns} FROM segments WHERE org_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
            org_id, limit)
    else:
        rows = await conn.fetch(
            f"SELECT {columns} FROM segments WHERE org_id = $1 AND (created_at, id) < ($3, $4)"
            " ORDER BY created_at DESC, id DESC LIMIT $2", org_id, limit, *after)
    return [Segment(**r) for r in rows]


async def link_context(
    conn: asyncpg.Connection, org_id: uuid.UUID, survey_id: uuid.UUID, segment_id: uuid.UUID | None
) -> LinkContext:
    """The survey, the segment (when one is named), the contacts version and the survey's opens
    version, in one round trip."""
    row = await conn.fetchrow(
        f"SELECT s.seq, s.status, g.filters, {_VERSION}, s.link_format,"
        " coalesce(s.link_generation, 1) AS link_generation,"
        " (SELECT coalesce(max(v.version), 0) FROM contact_opens_versions v WHERE v.survey_id = s.id) AS opens"
        " FROM (SELECT 1) AS one"
        " LEFT JOIN surveys s ON s.id = $2 AND s.org_id = $1"
        " LEFT JOIN segments g ON g.id = $3 AND g.org_id = $1",
        org_id, survey_id, segment_id,
    )
    assert row is not None  # FROM (SELECT 1): one row
    return LinkContext(row["seq"], row["status"], row["filters"], row["version"], row["link_format"],
                       row["link_generation"], row["opens"])


async def count_members(conn: asyncpg.Connection, org_id: uuid.UUID, filters: dict[str, Any],
                        opened: OpenedFilter | None = None) -> tuple[int, int]:
    """How many contacts the segment holds (that have or have not opened, with `opened`), and the
    contacts version that count belongs to.

    One statement, so one snapshot: the version read is the one the count saw.
    """
    condition, params = compile_filters(filters, 2)
    opened_sql, opened_params = _opened(opened, 2 + len(params))
    row = await conn.fetchrow(
        f"SELECT count(*) AS total, {_VERSION} FROM contacts WHERE org_id = $1 AND {condition}{opened_sql}",
        org_id, *params, *opened_params,
    )
    assert row is not None  # an aggregate without GROUP BY: one row
    return row["total"], row["version"]


# a keyset seek past a known member: a row comparison on the page index, however deep the page
_SEEK = " AND (created_at, id) < ((SELECT m.created_at FROM contacts m WHERE m.id = $4 AND m.org_id = $1), $4)"


def _page_sql(condition: str, key_count: int, seek: bool) -> str:
    where = f"org_id = $1{_SEEK if seek else ''} AND {condition}"  # `condition` ends with any opened filter
    order = "ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
    if key_count == 0:
        return f"SELECT id, NULL::text AS attrs, {_VERSION} FROM contacts WHERE {where} {order}"
    first = 5 if seek else 4
    # `->>`: each value as text, as Formbricks' schema answers attributes (a number in its JSON text, `42`,
    # a boolean as `true`); only the page's rows are joined back for their attributes, the skipped ones
    # are never read for them. Stored values are never null, so stripping nulls leaves exactly the keys
    # the contact has.
    pairs = ", ".join(f"${first + i}::text, c.attributes->>(${first + i}::text)" for i in range(key_count))
    return (
        f"SELECT p.id, jsonb_strip_nulls(jsonb_build_object({pairs}))::text AS attrs, {_VERSION}"
        f" FROM (SELECT id, created_at FROM contacts WHERE {where} {order}) AS p"
        " JOIN contacts c ON c.id = p.id ORDER BY p.created_at DESC, p.id DESC"
    )


async def member_page(
    conn: asyncpg.Connection, org_id: uuid.UUID, filters: dict[str, Any], limit: int, skip: int,
    attribute_keys: list[str], after: int | None = None, opened: OpenedFilter | None = None,
) -> Page:
    """One page of the segment's contacts, newest first (ties by id), with the asked-for attributes.

    `after` is the id of the member at position `skip` (1-based), when known: the read seeks past
    it through the index instead of walking `skip` rows. Without it, the read starts one row early
    so that the member before the page comes back, to be remembered for the next reader.
    """
    seek = after is not None
    head = 1 if not seek and skip > 0 else 0
    fixed: list[Any] = [org_id, limit + head, 0 if seek else skip - head]
    if seek:
        fixed.append(after)
    condition, params = compile_filters(filters, len(fixed) + 1 + len(attribute_keys))
    opened_sql, opened_params = _opened(opened, len(fixed) + 1 + len(attribute_keys) + len(params))
    rows = await conn.fetch(_page_sql(condition + opened_sql, len(attribute_keys), seek),
                            *fixed, *attribute_keys, *params, *opened_params)
    version = rows[0][2] if rows else None
    before = rows[0][0] if head and rows else None
    rows = rows[head:]
    return Page([PageRow(r[0], r[1]) for r in rows], before, rows[-1][0] if rows else None, version)
