"""Admin commands: organisations and API keys. Each prints one JSON object."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from .core.auth import SCOPES, hash_secret, issue_key
from .core.ratepolicy import DEFAULT_POLICY, parse_policy
from .core.rules import NAME
from .db import orgs
from .settings import Settings

T = TypeVar("T")

# an organisation's link quota when none is given (the column default in 0001_initial.sql says the same)
DEFAULT_LINK_QUOTA = 50


class AdminError(Exception):
    """A command that cannot be carried out; its message is shown to the operator."""


def _org_json(org: orgs.Organization) -> dict[str, Any]:
    return {"id": str(org.id), "name": org.name, "linkQuota": org.link_quota, "rateLimit": org.rate_limit}


def _uuid(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise AdminError(f"{what} must be a UUID") from None


async def _with_conn(settings: Settings, action: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """`action` on a connection of its own (the database is migrated: see runtime.servers)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await action(conn)
    finally:
        await conn.close()


async def new_tenant(
    conn: asyncpg.Connection, name: str, link_quota: int, rate_limit: str, key_name: str
) -> tuple[orgs.Organization, str]:
    """A new organisation and one API key with every scope; the key's secret is known only here."""
    org = await orgs.insert_org(conn, name, link_quota, rate_limit)
    key_id, secret = issue_key()
    await orgs.insert_key(conn, org.id, key_name, hash_secret(secret), list(SCOPES), key_id)
    return org, secret


def create_org(settings: Settings, name: str, link_quota: int, rate_limit: str) -> dict[str, Any]:
    name = name.strip()
    if NAME.problem(name) is not None:
        raise AdminError(f"--name must be {NAME.min_chars}-{NAME.max_chars} characters, none of them NUL")
    if link_quota < 0:
        raise AdminError("--link-quota must be >= 0")
    policy = parse_policy(rate_limit or DEFAULT_POLICY)
    org = asyncio.run(_with_conn(settings, lambda c: orgs.insert_org(c, name, link_quota, policy.text)))
    return _org_json(org)


def update_org(settings: Settings, org_id: str, link_quota: int | None, rate_limit: str | None) -> dict[str, Any]:
    oid = _uuid(org_id, "--org")
    policy = parse_policy(rate_limit).text if rate_limit is not None else None
    org = asyncio.run(_with_conn(settings, lambda c: orgs.update_org(c, oid, link_quota, policy)))
    if org is None:
        raise AdminError(f"no organisation {org_id}")
    return _org_json(org)


def create_key(settings: Settings, org_id: str, name: str, scopes: str) -> dict[str, Any]:
    oid = _uuid(org_id, "--org")
    wanted = [s.strip() for s in scopes.split(",") if s.strip()]
    bad = [s for s in wanted if s not in SCOPES]
    if bad or not wanted:
        raise AdminError(f"--scopes must be a comma-separated subset of {','.join(SCOPES)}")
    key_id, secret = issue_key()

    async def action(conn: asyncpg.Connection) -> uuid.UUID:
        if not await orgs.org_exists(conn, oid):
            raise AdminError(f"no organisation {org_id}")
        return await orgs.insert_key(conn, oid, name, hash_secret(secret), wanted, key_id)

    asyncio.run(_with_conn(settings, action))
    return {"id": str(key_id), "key": secret, "scopes": wanted}


def revoke_key(settings: Settings, key_id: str) -> dict[str, Any]:
    kid = _uuid(key_id, "KEY_ID")
    if not asyncio.run(_with_conn(settings, lambda c: orgs.revoke_key(c, kid))):
        raise AdminError(f"no active key {key_id}")
    return {"id": key_id, "revoked": True}
