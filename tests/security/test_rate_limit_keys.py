"""Rate limits of authenticated requests are keyed by organisation, never by anything a caller
controls: not X-Forwarded-For (also from a trusted proxy: the client address only keys the limit on
requests without a valid key, tests/security/test_unauthenticated_limit.py), not the key used, not
the Filum `organization-id` header."""

from __future__ import annotations

from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from service.app import create_app
from service.core.auth import hash_secret, new_secret
from service.db import orgs
from tests.helpers import create_survey, links_path
from tests.security.conftest import M

SPOOFS = [
    {"X-Forwarded-For": "203.0.113.7"},
    {"X-Forwarded-For": "198.51.100.1, 127.0.0.1"},
    {"X-Real-IP": "192.0.2.55"},
    {"Forwarded": "for=192.0.2.60;proto=https"},
    {"X-Client-IP": "192.0.2.61", "True-Client-IP": "192.0.2.62", "CF-Connecting-IP": "192.0.2.63"},
    {"X-Request-Id": "another-caller"},
    {"User-Agent": "someone-else/1.0"},
]


async def _redis_keys(url: str) -> list[str]:
    client = aioredis.Redis.from_url(url)
    try:
        return sorted([k.decode() async for k in client.scan_iter(count=1000)])
    finally:
        await client.aclose()


@pytest.mark.parametrize("trusted", [frozenset(), frozenset({"127.0.0.1", "::1"})])
async def test_spoofed_client_addresses_share_the_organisations_bucket(aiohttp_client, settings, make_tenant,
                                                                       trusted):
    client = await aiohttp_client(create_app(replace(settings, trusted_proxies=trusted)))
    tenant = await make_tenant(rate_limit="3/minute")
    for i in range(3):
        resp = await client.get(f"{M}/metadata-fields", headers={**tenant.headers, **SPOOFS[i]})
        assert resp.status == 200
        assert resp.headers["RateLimit"].startswith(f'"minute";r={2 - i};')
    for spoof in SPOOFS:
        resp = await client.get(f"{M}/metadata-fields", headers={**tenant.headers, **spoof})
        assert resp.status == 429, spoof
    # the only rate-limit state is the organisation's, named by its id
    keys = await _redis_keys(settings.redis_url)
    assert keys == [f"{{o:{tenant.org}}}:rl"]


async def test_every_key_of_an_organisation_spends_the_same_bucket(client, make_tenant, db, redis_url):
    tenant = await make_tenant(rate_limit="3/minute")
    second = new_secret()
    await orgs.insert_key(db, tenant.org_id, "second", hash_secret(second), ["manage"])
    other = await make_tenant(rate_limit="3/minute")
    statuses = []
    for headers in ({"x-api-key": tenant.key}, {"x-api-key": second}, {"Authorization": f"Bearer {second}"},
                    {"x-api-key": tenant.key}, {"Authorization": f"Bearer {tenant.key}"}):
        statuses.append((await client.get(f"{M}/metadata-fields", headers=headers)).status)
    assert statuses == [200, 200, 200, 429, 429]
    # another organisation has its own, untouched bucket
    assert (await client.get(f"{M}/metadata-fields", headers=other.headers)).status == 200
    assert await _redis_keys(redis_url) == sorted([f"{{o:{tenant.org}}}:rl", f"{{o:{other.org}}}:rl"])


async def test_filum_organization_header_cannot_spend_another_organisations_tokens(client, make_tenant):
    victim = await make_tenant(rate_limit="2/minute")
    attacker = await make_tenant(rate_limit="off")
    survey = await create_survey(client, attacker.headers)
    for _ in range(5):
        resp = await client.post(links_path(survey["id"]), json={"name": "x"},
                                 headers={**attacker.headers, "organization-id": victim.org})
        assert resp.status == 403
    statuses = [(await client.get(f"{M}/metadata-fields", headers=victim.headers)).status for _ in range(3)]
    assert statuses == [200, 200, 429]
