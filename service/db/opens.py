"""Opens of links, written in batches: one statement per table per batch (service/core/opens.py buffers).

Each statement adds a batch to the stored counts (count, first, last) with `INSERT ... SELECT FROM
unnest(...) ON CONFLICT DO UPDATE`. The batch is joined to the link or the contact it names, so a
row whose contact was erased meanwhile is left out instead of failing the batch on its foreign key:
`FOR KEY SHARE` makes an erasure that commits while the statement runs wait, or be seen and skipped.
Rows are written in key order, so that two workers flushing at once cannot deadlock.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

_LINKS = """
INSERT INTO link_opens (org_id, link_id, count, first_at, last_at)
SELECT l.org_id, l.id, u.count, u.first_at, u.last_at
FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::timestamptz[], $5::timestamptz[])
    AS u(org_id, link_id, count, first_at, last_at)
JOIN survey_links l ON l.org_id = u.org_id AND l.id = u.link_id
ORDER BY l.org_id, l.id
FOR KEY SHARE OF l
ON CONFLICT (org_id, link_id) DO UPDATE SET count = link_opens.count + excluded.count,
    first_at = least(link_opens.first_at, excluded.first_at), last_at = greatest(link_opens.last_at, excluded.last_at)
"""

# the surveys whose contact opens were written move their version on, in the same statement (the
# sort waits for every row of `written`, so the version rows are locked after the opens, in order)
_CONTACTS = """
WITH written AS (
    INSERT INTO contact_opens (org_id, survey_id, contact_id, count, first_at, last_at)
    SELECT s.org_id, s.id, c.id, u.count, u.first_at, u.last_at
    FROM unnest($1::uuid[], $2::uuid[], $3::bigint[], $4::bigint[], $5::timestamptz[], $6::timestamptz[])
        AS u(org_id, survey_id, contact_id, count, first_at, last_at)
    JOIN surveys s ON s.org_id = u.org_id AND s.id = u.survey_id
    JOIN contacts c ON c.org_id = u.org_id AND c.id = u.contact_id
    ORDER BY s.org_id, s.id, c.id
    FOR KEY SHARE OF c
    ON CONFLICT (org_id, survey_id, contact_id) DO UPDATE SET count = contact_opens.count + excluded.count,
        first_at = least(contact_opens.first_at, excluded.first_at),
        last_at = greatest(contact_opens.last_at, excluded.last_at)
    RETURNING org_id, survey_id
), moved AS (
    INSERT INTO contact_opens_versions (org_id, survey_id, version)
    SELECT DISTINCT org_id, survey_id, 1 FROM written ORDER BY org_id, survey_id
    ON CONFLICT (org_id, survey_id) DO UPDATE SET version = contact_opens_versions.version + 1
)
SELECT count(*) FROM written
"""


@dataclass(frozen=True)
class Tally:
    count: int
    first_at: datetime
    last_at: datetime


async def add_link_opens(conn: asyncpg.Connection, opens: dict[tuple[uuid.UUID, int], Tally],
                         timeout: float | None = None) -> None:
    """Add opens of created links, by (organisation id, link id); links that no longer exist are left out."""
    keys = sorted(opens)
    await conn.execute(_LINKS, [k[0] for k in keys], [k[1] for k in keys], [opens[k].count for k in keys],
                       [opens[k].first_at for k in keys], [opens[k].last_at for k in keys], timeout=timeout)


async def add_contact_opens(conn: asyncpg.Connection, opens: dict[tuple[uuid.UUID, uuid.UUID, int], Tally],
                            timeout: float | None = None) -> int:
    """Add opens of contact links, by (organisation id, survey id, contact id); answers how many rows were
    written (contacts erased meanwhile are left out)."""
    keys: Sequence[tuple[uuid.UUID, uuid.UUID, int]] = sorted(opens)
    written: int = await conn.fetchval(_CONTACTS, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys],
                                       [opens[k].count for k in keys], [opens[k].first_at for k in keys],
                                       [opens[k].last_at for k in keys], timeout=timeout)
    return written
