"""Created survey links, many at once: the batch create's queries (one round of them per batch)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import asyncpg

from .links import _COLUMNS, CONFLICT_TARGET, LIVE, QUOTA, SurveyLink

# A replay answers the live link only (a revoked one is not answered again). One index probe per
# hash, whatever the table's statistics say: the LIMIT keeps PostgreSQL from flattening the lateral
# subquery into a join, which with statistics taken while the survey was small (a generic plan of
# the statement cached by the connection) it ran as a nested loop comparing every link of the survey
# with every hash: 300 ms at 10,000 links and 1,000 hashes
LIVE_LINKS = f"""
SELECT l.mapping_hash, {", ".join(f"l.{c}" for c in _COLUMNS.split(", "))}
FROM unnest($2::bytea[]) AS h(mapping_hash)
CROSS JOIN LATERAL (
    SELECT * FROM survey_links WHERE org_id = $3 AND survey_id = $1 AND mapping_hash = h.mapping_hash AND {LIVE}
    LIMIT 1
) l
"""


async def live_links(conn: asyncpg.Connection, org_id: uuid.UUID, survey_id: uuid.UUID,
                     hashes: Sequence[bytes]) -> dict[bytes, SurveyLink]:
    """The live links of a survey stored under any of `hashes`, by hash."""
    rows = await conn.fetch(LIVE_LINKS, survey_id, hashes, org_id)
    return {row["mapping_hash"]: _link(row) for row in rows}


async def lock_room(conn: asyncpg.Connection, org_id: uuid.UUID, survey_id: uuid.UUID) -> tuple[int, int]:
    """Lock the survey row (as the single create does to move link_count) and answer its effective quota
    and the room left in it."""
    row = await conn.fetchrow(
        f"SELECT {QUOTA} AS quota, greatest({QUOTA} - s.link_count, 0) AS room"
        " FROM surveys s JOIN organizations o ON o.id = s.org_id WHERE s.org_id = $1 AND s.id = $2 FOR UPDATE OF s",
        org_id, survey_id,
    )
    assert row is not None  # the survey was found (survey_metadata_fields) in this organisation
    return row["quota"], row["room"]


_INSERT = f"""
INSERT INTO survey_links (org_id, public_id, survey_id, mapping_hash, name, metadata_mapping)
SELECT $6, p, $1, h, n, m::jsonb FROM unnest($2::text[], $3::bytea[], $4::text[], $5::text[]) AS t(p, h, n, m)
ON CONFLICT {CONFLICT_TARGET} DO NOTHING
RETURNING mapping_hash, {_COLUMNS}
"""


async def insert_links(conn: asyncpg.Connection, org_id: uuid.UUID, survey_id: uuid.UUID, public_ids: Sequence[str],
                       hashes: Sequence[bytes], names: Sequence[str], mappings: Sequence[str],
                       ) -> dict[bytes, SurveyLink]:
    """Insert the links (mappings as JSON text) and move the survey's link_count by as many as were
    inserted; by hash. Call it in a transaction, holding the survey's lock (lock_room)."""
    rows = await conn.fetch(_INSERT, survey_id, public_ids, hashes, names, mappings, org_id)
    if rows:
        await conn.execute("UPDATE surveys SET link_count = link_count + $3 WHERE org_id = $1 AND id = $2",
                           org_id, survey_id, len(rows))
    return {row["mapping_hash"]: _link(row) for row in rows}


def _link(row: asyncpg.Record) -> SurveyLink:
    # the row is the mapping hash, then SurveyLink's fields in their order (_COLUMNS)
    return SurveyLink(*tuple(row)[1:])
