"""Created links as the management API sees them: one, a page, revoking one; and revoking a survey's
contact links (its link generation)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class ManagedLink:
    id: int
    public_id: str
    name: str
    # as stored: [{"metadata_id", "value"}], in the canonical order
    metadata_mapping: list[dict[str, Any]]
    # the organisation's metadata fields the mapping names: {id: {"id", "name", "variable"}}
    fields: dict[int, dict[str, Any]]
    created_at: datetime
    revoked_at: datetime | None
    opens: int
    first_opened_at: datetime | None
    last_opened_at: datetime | None


# one link's columns, its mapping's fields and its opens (none: a count of 0 and nulls)
_LINK = """
    l.id, l.public_id, l.name, l.metadata_mapping, l.created_at, l.revoked_at,
    (SELECT coalesce(jsonb_object_agg(m.id::text, jsonb_build_object('id', m.id, 'name', m.name,
                                                                     'variable', m.variable)), '{}'::jsonb)
     FROM metadata_fields m WHERE m.org_id = $2
     AND m.id IN (SELECT (e->>'metadata_id')::bigint FROM jsonb_array_elements(l.metadata_mapping) e)) AS fields,
    coalesce(o.count, 0) AS opens, o.first_at, o.last_at
"""


def _link(row: asyncpg.Record) -> ManagedLink:
    fields = {int(k): v for k, v in row["fields"].items()}
    return ManagedLink(row["id"], row["public_id"], row["name"], row["metadata_mapping"], fields, row["created_at"],
                       row["revoked_at"], row["opens"], row["first_at"], row["last_at"])


async def get_link(
    conn: asyncpg.Connection, org_id: uuid.UUID, survey_id: uuid.UUID, link_id: int
) -> ManagedLink | None:
    """The survey's link, if the survey is the organisation's."""
    row = await conn.fetchrow(
        # the link's (org_id, survey_id) key onto surveys says the survey is the organisation's
        f"SELECT {_LINK} FROM survey_links l LEFT JOIN link_opens o ON o.org_id = $2 AND o.link_id = l.id"
        " WHERE l.org_id = $2 AND l.survey_id = $1 AND l.id = $3",
        survey_id, org_id, link_id,
    )
    return _link(row) if row else None


async def page_links(
    conn: asyncpg.Connection, org_id: uuid.UUID, survey_id: uuid.UUID, before: int, limit: int
) -> list[ManagedLink] | None:
    """Up to `limit` of the survey's links, newest (highest id) first, those below `before`;
    None when the organisation has no such survey. Walks survey_links_page_idx (survey_id, id DESC)."""
    rows = await conn.fetch(
        f"SELECT s.id AS survey, {_LINK} FROM surveys s"
        " LEFT JOIN LATERAL (SELECT * FROM survey_links x WHERE x.org_id = $2 AND x.survey_id = s.id AND x.id < $3"
        "   ORDER BY x.id DESC LIMIT $4) l ON true"
        " LEFT JOIN link_opens o ON o.org_id = $2 AND o.link_id = l.id"
        " WHERE s.id = $1 AND s.org_id = $2 ORDER BY l.id DESC",
        survey_id, org_id, before, limit,
    )
    if not rows:
        return None
    return [_link(r) for r in rows if r["id"] is not None]


async def has_link(conn: asyncpg.Connection, org_id: uuid.UUID, survey_id: uuid.UUID, link_id: int) -> bool:
    """Whether the organisation's survey has this link (revoked or not)."""
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM survey_links WHERE org_id = $2 AND survey_id = $1 AND id = $3)",
        survey_id, org_id, link_id,
    )
    return found


# One statement, as creating a link is (db/links.py): the survey row is locked first (the InitPlan runs
# before the link row is updated), as creators lock it first, so a revoke and a creator of the same
# mapping queue on the survey row instead of deadlocking on the link's unique-index entry. The live
# count moves only when this statement revoked the link: a second revoke changes nothing.
_REVOKE = """
WITH survey AS (
    SELECT id FROM surveys WHERE org_id = $3 AND id = $1 FOR UPDATE
), revoked AS (
    UPDATE survey_links SET revoked_at = now(), updated_at = now()
    WHERE org_id = $3 AND id = $2 AND survey_id = (SELECT id FROM survey) AND revoked_at IS NULL
    RETURNING revoked_at
), counted AS (
    UPDATE surveys SET link_count = link_count - 1 WHERE org_id = $3 AND id = $1 AND EXISTS (SELECT 1 FROM revoked)
)
SELECT revoked_at FROM revoked
"""


async def revoke_link(
    conn: asyncpg.Connection, org_id: uuid.UUID, survey_id: uuid.UUID, link_id: int
) -> datetime | None:
    """Revoke a live link and free its place in the quota; None when it was revoked already."""
    revoked_at: datetime | None = await conn.fetchval(_REVOKE, survey_id, link_id, org_id)
    return revoked_at


async def revoke_contact_links(conn: asyncpg.Connection, org_id: uuid.UUID, survey_id: uuid.UUID) -> datetime | None:
    """Move the survey's link generation on (every contact link issued so far is revoked), one UPDATE;
    the instant, or None when the organisation has no such survey."""
    revoked_at: datetime | None = await conn.fetchval(
        "UPDATE surveys SET link_generation = link_generation + 1, contact_links_revoked_at = now()"
        " WHERE id = $1 AND org_id = $2 RETURNING contact_links_revoked_at",
        survey_id, org_id,
    )
    return revoked_at
