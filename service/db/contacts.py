"""Contacts and contact attribute keys.

Every contact write bumps the organisation's row in `contact_versions` first, in the same
transaction: the bump is the key that invalidates cached segment counts, and its row lock puts the
contact writers of one organisation in a line (so the bulk upsert's read-then-write cannot race).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Contact:
    id: int
    attributes: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class AttributeKey:
    id: int
    key: str
    name: str
    created_at: datetime


@dataclass(frozen=True)
class UpsertCounts:
    created: int
    updated: int


class DuplicateEmail(Exception):
    """Another contact of the organisation has this `email` attribute."""


async def bump_version(conn: asyncpg.Connection, org_id: uuid.UUID) -> None:
    """Invalidate the organisation's cached segment counts (call inside the writing transaction)."""
    await conn.execute(
        "INSERT INTO contact_versions (org_id, version) VALUES ($1, 1)"
        " ON CONFLICT (org_id) DO UPDATE SET version = contact_versions.version + 1",
        org_id,
    )


async def ensure_attribute_keys(conn: asyncpg.Connection, org_id: uuid.UUID, keys: Iterable[str]) -> None:
    """Create the keys the organisation does not have yet (named after themselves)."""
    wanted = sorted(set(keys))
    if wanted:
        await conn.execute(
            "INSERT INTO contact_attribute_keys (org_id, key, name) SELECT $1, k, k FROM unnest($2::text[]) k"
            " ON CONFLICT (org_id, key) DO NOTHING",
            org_id, wanted,
        )


async def insert_attribute_key(conn: asyncpg.Connection, org_id: uuid.UUID, key: str, name: str) -> AttributeKey | None:
    """None when the organisation already has this key."""
    row = await conn.fetchrow(
        "INSERT INTO contact_attribute_keys (org_id, key, name) VALUES ($1, $2, $3)"
        " ON CONFLICT (org_id, key) DO NOTHING RETURNING id, key, name, created_at",
        org_id, key, name,
    )
    return AttributeKey(**row) if row else None


async def list_attribute_keys(conn: asyncpg.Connection, org_id: uuid.UUID) -> list[AttributeKey]:
    rows = await conn.fetch(
        "SELECT id, key, name, created_at FROM contact_attribute_keys WHERE org_id = $1 ORDER BY id", org_id
    )
    return [AttributeKey(**r) for r in rows]


async def list_contacts(
    conn: asyncpg.Connection, org_id: uuid.UUID, limit: int, after: tuple[datetime, int] | None,
    email: str | None = None,
) -> list[Contact]:
    """The organisation's contacts newest first (ties by id), from just past `after` (a keyset seek on
    contacts_page_idx); with `email`, only the contact whose email is exactly that (contacts_email_idx)."""
    params: list[Any] = [org_id, limit]
    where = "org_id = $1"
    # an email names one contact at most (unique index), so it needs no order; with one, the planner may walk
    # the page index instead and filter every contact of the organisation (70 ms at 300,000, measured)
    order = "ORDER BY created_at DESC, id DESC"
    if email is not None:
        params.append(email)
        # the index's own predicate and expression, so that the planner can use it
        where += f" AND attributes ? 'email' AND attributes->>'email' = ${len(params)}"
        order = ""
    if after is not None:
        params += after
        where += f" AND (created_at, id) < (${len(params) - 1}, ${len(params)})"
    rows = await conn.fetch(f"SELECT id, attributes, created_at FROM contacts WHERE {where} {order} LIMIT $2", *params)
    return [Contact(**r) for r in rows]


def _set_values(attributes: dict[str, Any]) -> dict[str, Any]:
    # a null means "no value": a new contact simply does not have the attribute
    return {k: v for k, v in attributes.items() if v is not None}


async def insert_contact(conn: asyncpg.Connection, org_id: uuid.UUID, attributes: dict[str, Any]) -> Contact:
    """Create a contact (and any attribute key it introduces); DuplicateEmail if its email is taken."""
    values = _set_values(attributes)
    async with conn.transaction():
        await bump_version(conn, org_id)
        await ensure_attribute_keys(conn, org_id, attributes)
        row = await conn.fetchrow(
            "INSERT INTO contacts (org_id, attributes) VALUES ($1, $2) ON CONFLICT DO NOTHING"
            " RETURNING id, attributes, created_at",
            org_id, values,
        )
        if row is None:
            raise DuplicateEmail()  # rolls the transaction back: nothing was written
    return Contact(**row)


class _Missing(Exception):
    """No such contact in the organisation: rolls back the version bump made before looking."""


def _is_email_conflict(exc: asyncpg.UniqueViolationError) -> bool:
    return exc.constraint_name == "contacts_email_idx"


async def patch_contact(
    conn: asyncpg.Connection, org_id: uuid.UUID, contact_id: int, attributes: dict[str, Any]
) -> Contact | None:
    """Merge attributes into a contact (a null removes one): None when there is no such contact,
    DuplicateEmail when the new email is another contact's.

    One UPDATE computes the merge from the row it locks, so concurrent patches of one contact
    each apply on top of the other (no read-modify-write in between).
    """
    values = _set_values(attributes)
    removed = sorted(k for k, v in attributes.items() if v is None)
    try:
        async with conn.transaction():
            # the version row first, as every contact writer takes it first (no lock-order deadlock)
            await bump_version(conn, org_id)
            await ensure_attribute_keys(conn, org_id, attributes)  # as the bulk upsert: every key named
            row = await conn.fetchrow(
                "UPDATE contacts SET attributes = (attributes || $3::jsonb) - $4::text[], updated_at = now()"
                " WHERE id = $1 AND org_id = $2 RETURNING id, attributes, created_at",
                contact_id, org_id, values, removed,
            )
            if row is None:
                raise _Missing()
    except _Missing:
        return None
    except asyncpg.UniqueViolationError as exc:
        if not _is_email_conflict(exc):
            raise
        raise DuplicateEmail() from None
    return Contact(**row)


async def delete_contact(conn: asyncpg.Connection, org_id: uuid.UUID, contact_id: int) -> bool:
    """Erase a contact: its row (and so its attributes) and, by ON DELETE CASCADE, its opens.

    False when the organisation has no such contact. Its links then fail opening's lookup (404).
    """
    try:
        async with conn.transaction():
            await bump_version(conn, org_id)
            if await conn.fetchval(
                "DELETE FROM contacts WHERE id = $1 AND org_id = $2 RETURNING id", contact_id, org_id
            ) is None:
                raise _Missing()
    except _Missing:
        return False
    return True


def merge_by_email(contacts: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One attribute set per email, later contacts of the same call overriding earlier ones."""
    merged: dict[str, dict[str, Any]] = {}
    for attributes in contacts:
        merged.setdefault(attributes["email"], {}).update(attributes)
    return merged


async def upsert_by_email(
    conn: asyncpg.Connection, org_id: uuid.UUID, contacts: Sequence[dict[str, Any]]
) -> UpsertCounts:
    """Create or update contacts matched by their `email` attribute, in one transaction.

    An update merges the given attributes into the stored ones; a null removes an attribute.
    Duplicate emails within the call are merged first and count once.
    """
    merged = merge_by_email(contacts)
    emails = list(merged)
    async with conn.transaction():
        await bump_version(conn, org_id)
        await ensure_attribute_keys(conn, org_id, {k for attrs in merged.values() for k in attrs})
        rows = await conn.fetch(
            "SELECT id, attributes->>'email' AS email FROM contacts"
            " WHERE org_id = $1 AND attributes ? 'email' AND attributes->>'email' = ANY($2::text[])",
            org_id, emails,
        )
        existing = {r["email"]: r["id"] for r in rows}
        if existing:
            await conn.execute(
                "UPDATE contacts c SET attributes = jsonb_strip_nulls(c.attributes || u.changes), updated_at = now()"
                " FROM unnest($1::bigint[], $2::jsonb[]) AS u(id, changes) WHERE c.id = u.id",
                list(existing.values()), [merged[e] for e in existing],
            )
        fresh = [_set_values(merged[e]) for e in emails if e not in existing]
        if fresh:
            # ids follow the order of the call; the version row's lock means no one else inserts these emails now
            await conn.execute(
                "INSERT INTO contacts (org_id, attributes)"
                " SELECT $1, a FROM unnest($2::jsonb[]) WITH ORDINALITY AS u(a, n) ORDER BY n",
                org_id, fresh,
            )
    return UpsertCounts(created=len(fresh), updated=len(existing))


@dataclass(frozen=True)
class ContactLinkTarget:
    survey_seq: int | None
    survey_status: str | None
    contact_found: bool
    link_format: str | None
    # the generation new tokens carry (the survey's; 1 when there is no survey)
    link_generation: int


async def contact_link_target(
    conn: asyncpg.Connection, org_id: uuid.UUID, survey_id: uuid.UUID, contact_id: int
) -> ContactLinkTarget:
    """The survey and whether the contact exists, both within the organisation, in one round trip."""
    row = await conn.fetchrow(
        "SELECT s.seq, s.status, EXISTS (SELECT 1 FROM contacts c WHERE c.id = $3 AND c.org_id = $1) AS found,"
        " s.link_format, coalesce(s.link_generation, 1) AS link_generation"
        " FROM (SELECT 1) AS one LEFT JOIN surveys s ON s.id = $2 AND s.org_id = $1",
        org_id, survey_id, contact_id,
    )
    assert row is not None  # FROM (SELECT 1): one row
    return ContactLinkTarget(row["seq"], row["status"], row["found"], row["link_format"], row["link_generation"])


@dataclass(frozen=True)
class OpenedContactLink:
    survey_id: uuid.UUID
    status: str
    redirect_url: str | None
    # the survey's contact-link generation: tokens of an earlier one were revoked
    link_generation: int = 1


async def contact_link_for_opening(
    conn: asyncpg.Connection, survey_seq: int, contact_id: int
) -> OpenedContactLink | None:
    """The survey a contact link points at, if the contact still exists in the survey's organisation."""
    row = await conn.fetchrow(
        "SELECT s.id, s.status, s.redirect_url, s.link_generation FROM surveys s WHERE s.seq = $1"
        " AND EXISTS (SELECT 1 FROM contacts c WHERE c.id = $2 AND c.org_id = s.org_id)",
        survey_seq, contact_id,
    )
    return OpenedContactLink(row["id"], row["status"], row["redirect_url"], row["link_generation"]) if row else None
