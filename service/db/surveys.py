"""Surveys (the Filum path's survey campaigns) and metadata fields."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from .keyset import newest_first

_SURVEY_COLUMNS = ("id, seq, org_id, name, status, link_quota, redirect_url, link_count, created_at, updated_at,"
                   " link_format")


@dataclass(frozen=True)
class Survey:
    id: uuid.UUID
    seq: int
    org_id: uuid.UUID
    name: str
    status: str
    link_quota: int | None
    redirect_url: str | None
    link_count: int
    created_at: datetime
    updated_at: datetime
    link_format: str  # 'jwt' or 'short': how its contact links are written


@dataclass(frozen=True)
class MetadataField:
    id: int
    name: str
    variable: str


async def insert_survey(
    conn: asyncpg.Connection, org_id: uuid.UUID, name: str, status: str,
    link_quota: int | None, redirect_url: str | None, link_format: str = "jwt",
) -> Survey:
    row = await conn.fetchrow(
        f"INSERT INTO surveys (id, org_id, name, status, link_quota, redirect_url, link_format)"
        f" VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_SURVEY_COLUMNS}",
        uuid.uuid4(), org_id, name, status, link_quota, redirect_url, link_format,
    )
    assert row is not None  # RETURNING of an INSERT: one row
    return Survey(**row)


async def get_survey(conn: asyncpg.Connection, org_id: uuid.UUID, survey_id: uuid.UUID) -> Survey | None:
    """The survey if it belongs to the organisation; another's is as absent as a missing one."""
    row = await conn.fetchrow(
        f"SELECT {_SURVEY_COLUMNS} FROM surveys WHERE id = $1 AND org_id = $2", survey_id, org_id
    )
    return Survey(**row) if row else None


async def list_surveys(
    conn: asyncpg.Connection, org_id: uuid.UUID, limit: int, after: tuple[datetime, uuid.UUID] | None
) -> list[Survey]:
    """The organisation's surveys newest first (ties by id), from just past `after` (a keyset seek on
    surveys_page_idx: the same cost at any depth)."""
    rows = await newest_first(conn, "surveys", _SURVEY_COLUMNS, org_id, limit, after)
    return [Survey(**r) for r in rows]


async def update_survey(
    conn: asyncpg.Connection, org_id: uuid.UUID, survey_id: uuid.UUID, changes: dict[str, object]
) -> Survey | None:
    """Apply the given column changes (names come from the edge schema, never from the caller)."""
    allowed = {"name", "status", "link_quota", "redirect_url", "link_format"}
    columns = [c for c in changes if c in allowed]
    sets = ", ".join(f"{c} = ${i + 3}" for i, c in enumerate(columns))
    sql = (
        f"UPDATE surveys SET {sets + ', ' if sets else ''}updated_at = now()"
        f" WHERE id = $1 AND org_id = $2 RETURNING {_SURVEY_COLUMNS}"
    )
    row = await conn.fetchrow(sql, survey_id, org_id, *(changes[c] for c in columns))
    return Survey(**row) if row else None


async def insert_metadata_field(
    conn: asyncpg.Connection, org_id: uuid.UUID, name: str, variable: str
) -> MetadataField | None:
    """None when the organisation already has a field with this variable."""
    row = await conn.fetchrow(
        "INSERT INTO metadata_fields (org_id, name, variable) VALUES ($1, $2, $3)"
        " ON CONFLICT (org_id, variable) DO NOTHING RETURNING id, name, variable",
        org_id, name, variable,
    )
    return MetadataField(**row) if row else None


async def list_metadata_fields(conn: asyncpg.Connection, org_id: uuid.UUID) -> list[MetadataField]:
    rows = await conn.fetch(
        "SELECT id, name, variable FROM metadata_fields WHERE org_id = $1 ORDER BY id", org_id
    )
    return [MetadataField(**r) for r in rows]


async def survey_metadata_fields(
    conn: asyncpg.Connection, org_id: uuid.UUID, survey_id: uuid.UUID, ids: list[int]
) -> dict[int, MetadataField] | None:
    """The organisation's metadata fields among `ids`, or None when it has no such survey (one round trip)."""
    rows = await conn.fetch(
        "SELECT m.id, m.name, m.variable FROM surveys s"
        " LEFT JOIN metadata_fields m ON m.org_id = $2 AND m.id = any($3::bigint[])"
        " WHERE s.id = $1 AND s.org_id = $2",
        survey_id, org_id, ids,
    )
    if not rows:
        return None
    return {r["id"]: MetadataField(*r) for r in rows if r["id"] is not None}
