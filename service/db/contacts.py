"""Contacts and contact attribute keys.

Every contact write records itself in `contact_changes` (one row of its own per transaction, so no
writer waits for another): cached segment counts taken in a snapshot that could not see it are then
known to be stale (core.segment_cache). Races between writers of the same email are closed by the
unique index `contacts_email_idx` (`ON CONFLICT`), never by queueing them.
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
    """Record that this transaction writes the organisation's contacts (call inside it, once or more).

    The row is keyed by the transaction's own id: concurrent writers never touch the same row.
    """
    await conn.execute("INSERT INTO contact_changes (org_id) VALUES ($1) ON CONFLICT DO NOTHING", org_id)


async def prune_changes(conn: asyncpg.Connection) -> None:
    """Forget contact writes older than an hour (no cached count is trusted for that long)."""
    await conn.execute("DELETE FROM contact_changes WHERE at < now() - interval '1 hour'")


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
    """No such contact in the organisation: rolls back the contact_changes row written before looking."""


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
            await bump_version(conn, org_id)  # this transaction's own contact_changes row: no writer waits
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
        email = attributes["email"]
        held = merged.get(email)
        # the caller's dict as it is (never changed here); a new one only for an email seen twice
        merged[email] = attributes if held is None else {**held, **attributes}
    return merged


# New contacts take their ids in the order of the call (the page order within one call), but every row
# is written in email order: concurrent calls sharing emails then wait for each other's rows in one
# order, never in a cycle. The stored changes keep their nulls (a null removes the attribute) and are
# looked up by email in one jsonb object; a new contact gets them without the nulls.
_UPSERT = """
WITH written AS (
INSERT INTO contacts (id, org_id, attributes) OVERRIDING SYSTEM VALUE
SELECT s.id, $1, jsonb_strip_nulls(s.changes) FROM (
    SELECT nextval(pg_get_serial_sequence('contacts', 'id')) AS id, u.email, $3::jsonb -> u.email AS changes
    FROM unnest($2::text[]) WITH ORDINALITY AS u(email, n) ORDER BY u.n
) AS s
ORDER BY s.email
ON CONFLICT (org_id, (attributes->>'email')) WHERE attributes ? 'email'
DO UPDATE SET attributes = jsonb_strip_nulls(contacts.attributes || ($3::jsonb -> (EXCLUDED.attributes->>'email'))),
              updated_at = now()
RETURNING xmax = 0 AS created
)
SELECT count(*) FILTER (WHERE created) AS created, count(*) AS written FROM written
"""


async def upsert_by_email(
    conn: asyncpg.Connection, org_id: uuid.UUID, contacts: Sequence[dict[str, Any]]
) -> UpsertCounts:
    """Create or update contacts matched by their `email` attribute, in one transaction.

    An update merges the given attributes into the stored ones; a null removes an attribute.
    Duplicate emails within the call are merged first and count once. One statement: a contact
    another call creates meanwhile is updated (the unique index decides), never created twice.
    """
    merged = merge_by_email(contacts)
    async with conn.transaction():
        await bump_version(conn, org_id)
        # keys the organisation has are left alone (no lock); only a writer introducing the same new
        # key as an open transaction waits for it (all or nothing: a failed call leaves no key)
        await ensure_attribute_keys(conn, org_id, {k for attrs in merged.values() for k in attrs})
        row = await conn.fetchrow(_UPSERT, org_id, list(merged), merged)
    assert row is not None  # aggregates without GROUP BY: one row
    return UpsertCounts(created=row["created"], updated=row["written"] - row["created"])


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
    org_id: uuid.UUID
    survey_id: uuid.UUID
    status: str
    redirect_url: str | None
    # the survey's contact-link generation: tokens of an earlier one were revoked
    link_generation: int = 1


async def contact_link_for_opening(
    conn: asyncpg.Connection, survey_seq: int, contact_id: int
) -> OpenedContactLink | None:
    """The survey a contact link points at, if the contact still exists in the survey's organisation.

    The one lookup of a survey that does not name its organisation: the link is how it is found (on
    Citus, a probe of every shard's seq index; docs/design.md)."""
    row = await conn.fetchrow(
        "SELECT s.org_id, s.id, s.status, s.redirect_url, s.link_generation FROM surveys s WHERE s.seq = $1"
        " AND EXISTS (SELECT 1 FROM contacts c WHERE c.id = $2 AND c.org_id = s.org_id)",
        survey_seq, contact_id,
    )
    if row is None:
        return None
    return OpenedContactLink(row["org_id"], row["id"], row["status"], row["redirect_url"], row["link_generation"])
