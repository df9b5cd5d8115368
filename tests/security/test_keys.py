"""API keys: 256 random bits, stored only as a SHA-256 hash, compared in constant time, and revoked
within seconds even though every process caches resolved keys."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from service import admin
from service.app import create_app
from service.core import auth
from service.core.auth import key_id_of
from service.settings import Settings, SettingsError, load_settings
from service.web.keys import KEYS
from tests.helpers import create_survey, links_path
from tests.security.conftest import M


async def _everything_in_postgres(db) -> str:
    """Every row of every table of the public schema, as text."""
    tables = await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    dump = []
    for t in tables:
        dump += [r[0] for r in await db.fetch(f'SELECT t::text FROM "{t["tablename"]}" t')]
    return "\n".join(dump)


async def _everything_in_redis(url: str) -> bytes:
    client = aioredis.Redis.from_url(url)
    try:
        dump = []
        async for key in client.scan_iter(count=1000):
            dump.append(key)
            kind = await client.type(key)
            if kind == b"string":
                dump.append(await client.get(key) or b"")
            elif kind == b"hash":
                for field, value in (await client.hgetall(key)).items():
                    dump += [field, value]
            elif kind == b"list":
                dump += await client.lrange(key, 0, -1)
            elif kind == b"set":
                dump += list(await client.smembers(key))
            elif kind == b"zset":
                dump += await client.zrange(key, 0, -1)
            else:  # a stream or a module type: nothing the service writes; fail loudly rather than skip it
                raise AssertionError(f"unexpected Redis type {kind!r} at {key!r}")
        return b"\n".join(dump)
    finally:
        await client.aclose()


async def test_keys_are_random_and_stored_only_as_hashes(client, make_tenant, settings, db):
    org = await make_tenant()
    created = await asyncio.to_thread(admin.create_key, settings, org.org, "ci", "links:write,manage")
    secret = created["key"]
    # sls_, the key's id, 256 random bits and a checksum, in base62 (README "API keys")
    assert re.fullmatch(r"sls_[0-9A-Za-z]{71}", secret)
    assert str(key_id_of(secret)) == created["id"]
    again = auth.new_secret(key_id_of(secret))  # same id: only the 43 random digits and the checksum differ
    assert again[:26] == secret[:26] and again[26:69] != secret[26:69] and auth.could_be_ours(again)
    # the key is used (cached in-process, rate-limited and replay-cached in Redis) ...
    headers = {"x-api-key": secret}
    survey = await create_survey(client, headers)
    assert (await client.post(links_path(survey["id"]), json={"name": "x"}, headers=headers)).status == 200
    # ... yet neither database holds it, only its SHA-256
    stored = await db.fetchval("SELECT key_hash FROM api_keys WHERE id = $1::uuid", created["id"])
    assert stored == hashlib.sha256(secret.encode()).digest()
    postgres = await _everything_in_postgres(db)
    redis_dump = await _everything_in_redis(settings.redis_url)
    for needle in (secret, secret[4:], secret[4:20], secret[-16:]):
        assert needle not in postgres
        assert needle.encode() not in redis_dump
    assert hashlib.sha256(secret.encode()).hexdigest() not in redis_dump.decode(errors="replace")


async def test_keys_are_compared_in_constant_time(client, tenant, monkeypatch):
    """The lookup is by hash; the final equality still goes through hmac.compare_digest."""
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert (await client.get(f"{M}/metadata-fields", headers=tenant.headers)).status == 200
    digest = hashlib.sha256(tenant.key.encode()).digest()
    assert (digest, digest) in calls


async def test_a_key_is_hashed_once_a_request(client, tenant, monkeypatch):
    """Not cached yet: one hash for the cache and the query alike; cached: one hash."""
    hashed = []
    real = auth.hash_secret
    def counted(secret: str) -> bytes:
        hashed.append(secret)
        return real(secret)

    monkeypatch.setattr(auth, "hash_secret", counted)
    assert (await client.get(f"{M}/metadata-fields", headers=tenant.headers)).status == 200  # a query
    assert hashed == [tenant.key]
    assert (await client.get(f"{M}/metadata-fields", headers=tenant.headers)).status == 200  # the cache
    assert hashed == [tenant.key, tenant.key]


def test_default_key_cache_is_at_most_five_seconds():
    assert Settings().key_cache_seconds <= 5
    assert load_settings({}).key_cache_seconds <= 5


@pytest.mark.parametrize("cache_seconds", [1.0, 2.0])
async def test_revocation_takes_effect_within_the_cache_time(aiohttp_client, make_tenant, settings,
                                                             cache_seconds):
    client = await aiohttp_client(create_app(replace(settings, key_cache_seconds=cache_seconds)))
    now = [1000.0]
    client.app[KEYS].clock = lambda: now[0]  # the key cache's ages, on a clock the test moves
    org = await make_tenant()
    created = await asyncio.to_thread(admin.create_key, settings, org.org, "", "manage")
    headers = {"x-api-key": created["key"]}
    assert (await client.get(f"{M}/metadata-fields", headers=headers)).status == 200  # now cached
    await asyncio.to_thread(admin.revoke_key, settings, created["id"])
    now[0] += cache_seconds - 0.001
    assert (await client.get(f"{M}/metadata-fields", headers=headers)).status == 200  # still the cached answer
    now[0] += 0.001
    resp = await client.get(f"{M}/metadata-fields", headers=headers)
    assert resp.status == 401  # the cache time is up: asked again, and refused
    assert await resp.json() == {"error": {"code": 401, "message": "Unauthorized", "details": [
        {"field": "x-api-key", "issue": "missing, unknown or revoked API key"}]}}
    # and it stays refused, on every endpoint family
    assert (await client.post(links_path("00000000-0000-0000-0000-000000000000"), json={"name": "x"},
                              headers=headers)).status == 401


@pytest.mark.parametrize("raw", ["abc", "inf", "nan", "-1", "3600", "1e9"])
def test_a_key_cache_that_would_delay_revocation_is_refused(raw):
    """A cache of an hour, or forever, would let a revoked key work on: the process must not start."""
    with pytest.raises(SettingsError, match="KEY_CACHE_SECONDS"):
        load_settings({"KEY_CACHE_SECONDS": raw})
    assert load_settings({"KEY_CACHE_SECONDS": "0.5"}).key_cache_seconds == 0.5
    assert load_settings({"KEY_CACHE_SECONDS": ""}).key_cache_seconds == 5.0
