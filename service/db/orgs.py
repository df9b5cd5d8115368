"""Organisations and their API keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class Organization:
    id: uuid.UUID
    name: str
    link_quota: int
    rate_limit: str


@dataclass(frozen=True)
class KeyRecord:
    key_id: uuid.UUID
    key_hash: bytes
    org_id: uuid.UUID
    scopes: tuple[str, ...]
    rate_limit: str


async def insert_org(conn: asyncpg.Connection, name: str, link_quota: int, rate_limit: str) -> Organization:
    row = await conn.fetchrow(
        "INSERT INTO organizations (id, name, link_quota, rate_limit) VALUES ($1, $2, $3, $4)"
        " RETURNING id, name, link_quota, rate_limit",
        uuid.uuid4(), name, link_quota, rate_limit,
    )
    assert row is not None  # RETURNING of an INSERT: one row
    return Organization(**row)


async def update_org(
    conn: asyncpg.Connection, org_id: uuid.UUID, link_quota: int | None, rate_limit: str | None
) -> Organization | None:
    row = await conn.fetchrow(
        "UPDATE organizations SET link_quota = coalesce($2, link_quota), rate_limit = coalesce($3, rate_limit)"
        " WHERE id = $1 RETURNING id, name, link_quota, rate_limit",
        org_id, link_quota, rate_limit,
    )
    return Organization(**row) if row else None


async def org_exists(conn: asyncpg.Connection, org_id: uuid.UUID) -> bool:
    return bool(await conn.fetchval("SELECT true FROM organizations WHERE id = $1", org_id))


async def insert_key(
    conn: asyncpg.Connection, org_id: uuid.UUID, name: str, key_hash: bytes, scopes: list[str],
    key_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """A new key row; `key_id` is the id its secret carries (a new one when not given)."""
    new_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO api_keys (id, org_id, name, key_hash, scopes) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        key_id or uuid.uuid4(), org_id, name, key_hash, scopes,
    )
    return new_id


async def revoke_key(conn: asyncpg.Connection, key_id: uuid.UUID) -> bool:
    status = await conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", key_id
    )
    return status.endswith(" 1")


async def active_key_by_hash(conn: asyncpg.Connection, key_hash: bytes) -> KeyRecord | None:
    row = await conn.fetchrow(
        "SELECT k.id AS key_id, k.key_hash, k.org_id, k.scopes, o.rate_limit"
        " FROM api_keys k JOIN organizations o ON o.id = k.org_id"
        " WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        key_hash,
    )
    if row is None:
        return None
    return KeyRecord(row["key_id"], row["key_hash"], row["org_id"], tuple(row["scopes"]), row["rate_limit"])
