"""The API key format: new keys check themselves (a flipped character is 401 without a query), keys
made before it (`slk_` + 43 characters) keep working."""

from __future__ import annotations

import secrets
import uuid

import pytest

from service.core.auth import could_be_ours, hash_secret, issue_key, key_id_of, new_secret
from service.db import orgs
from tests.security.conftest import M


@pytest.fixture
def key_queries(monkeypatch) -> list[bytes]:
    """The key lookups that reached PostgreSQL (the one query a key costs), by hash."""
    calls: list[bytes] = []
    real = orgs.active_key_by_hash

    async def counted(conn, key_hash):
        calls.append(key_hash)
        return await real(conn, key_hash)

    monkeypatch.setattr(orgs, "active_key_by_hash", counted)
    return calls


def _flip(secret: str, at: int) -> str:
    return secret[:at] + ("A" if secret[at] != "A" else "B") + secret[at + 1:]


async def test_old_format_keys_keep_working(client, make_tenant, db, key_queries):
    tenant = await make_tenant()
    old = "slk_" + secrets.token_urlsafe(32)  # what new_secret made before the format changed
    assert len(old) == 47 and could_be_ours(old)
    await orgs.insert_key(db, tenant.org_id, "old", hash_secret(old), ["manage"])
    resp = await client.get(f"{M}/metadata-fields", headers={"x-api-key": old})
    assert resp.status == 200
    assert key_queries == [hash_secret(old)]  # resolved in the database, as before
    # an unknown key of the old shape still costs its query (then the negative cache)
    unknown = "slk_" + secrets.token_urlsafe(32)
    assert (await client.get(f"{M}/metadata-fields", headers={"x-api-key": unknown})).status == 401
    assert key_queries[1:] == [hash_secret(unknown)]


async def test_new_keys_carry_their_id_and_a_checksum(client, make_tenant, db):
    tenant = await make_tenant()
    key_id, secret = issue_key()
    await orgs.insert_key(db, tenant.org_id, "new", hash_secret(secret), ["manage"], key_id)
    assert secret.startswith("sls_") and len(secret) == 75 and key_id_of(secret) == key_id
    assert (await client.get(f"{M}/metadata-fields", headers={"x-api-key": secret})).status == 200
    assert (await client.get(f"{M}/metadata-fields", headers={"Authorization": f"Bearer {secret}"})).status == 200


async def test_a_flipped_character_is_401_without_a_query(client, tenant, key_queries):
    assert tenant.key.startswith("sls_")
    for at in (len(tenant.key) - 1, len(tenant.key) - 6, 30, 4):  # checksum, secret, id
        flipped = _flip(tenant.key, at)
        assert not could_be_ours(flipped) and key_id_of(flipped) is None
        resp = await client.get(f"{M}/metadata-fields", headers={"x-api-key": flipped})
        assert resp.status == 401
    for junk in ("sls_", "sls_" + "A" * 71, tenant.key + "A", tenant.key.lower(), "slk_" + "A" * 42, "x" * 75, ""):
        assert (await client.get(f"{M}/metadata-fields", headers={"x-api-key": junk})).status == 401
    assert key_queries == []
    # a well-formed key that is not in the database is one query: the spy above sees queries
    stranger = new_secret(uuid.uuid4())
    assert (await client.get(f"{M}/metadata-fields", headers={"x-api-key": stranger})).status == 401
    assert key_queries == [hash_secret(stranger)]
