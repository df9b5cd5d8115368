"""A page of an organisation's rows, newest first: the keyset seek the list endpoints share."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg


async def newest_first(conn: asyncpg.Connection, table: str, columns: str, org_id: uuid.UUID, limit: int,
                       after: tuple[datetime, Any] | None) -> list[asyncpg.Record]:
    """Up to `limit` of the organisation's rows of `table` (a constant of ours, never the caller's) by
    created_at then id, both descending, from just past `after`: a seek on the table's
    (org_id, created_at DESC, id DESC) index, the same cost at any depth."""
    seek = "" if after is None else " AND (created_at, id) < ($3, $4)"
    return await conn.fetch(
        f"SELECT {columns} FROM {table} WHERE org_id = $1{seek} ORDER BY created_at DESC, id DESC LIMIT $2",
        org_id, limit, *(after or ()))
