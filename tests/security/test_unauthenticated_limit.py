"""Requests without a valid key are limited per client address (UNAUTH_RATE_LIMIT): 401 while the
address has tokens, then 429 in the family's body; another address is unaffected; X-Forwarded-For
counts only when a trusted proxy sends it."""

from __future__ import annotations

from dataclasses import replace

import aiohttp
import pytest
import redis.asyncio as aioredis

from service.app import create_app
from service.core.auth import new_secret
from tests.helpers import links_path
from tests.security.conftest import M

LIMIT = 5
FORMBRICKS_429 = {"error": {"code": 429, "message": "Too Many Requests", "details": []}}


@pytest.fixture
async def limited(aiohttp_client, settings):
    """The app with 5 unauthenticated requests a minute per address, and 127.0.0.1 as a trusted proxy."""
    app = create_app(replace(settings, unauth_rate_limit=f"{LIMIT}/minute", trusted_proxies=frozenset({"127.0.0.1"})))
    return await aiohttp_client(app)


@pytest.fixture
async def from_127_0_0_2(limited):
    """A client whose connections come from 127.0.0.2 (another address, not a trusted proxy)."""
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(str(limited.make_url("/")), connector=connector) as session:
        yield session


async def _statuses(session, n: int, headers: dict[str, str], path: str = f"{M}/metadata-fields") -> list[int]:
    out = []
    for _ in range(n):
        async with session.get(path, headers={"x-api-key": new_secret(), **headers}) as resp:
            out.append(resp.status)
    return out


async def test_a_flood_of_bad_keys_from_one_address_gets_429_and_others_are_unaffected(
        limited, from_127_0_0_2, make_tenant, redis_url):
    tenant = await make_tenant()
    assert (await limited.get(f"{M}/metadata-fields", headers=tenant.headers)).status == 200  # its key now cached
    assert await _statuses(from_127_0_0_2, LIMIT + 3, {}) == [401] * LIMIT + [429] * 3
    resp = await from_127_0_0_2.get(f"{M}/metadata-fields", headers={"x-api-key": "garbage"})
    assert resp.status == 429 and await resp.json() == FORMBRICKS_429
    assert 1 <= int(resp.headers["Retry-After"]) <= 60 // LIMIT
    resp = await from_127_0_0_2.post(links_path("00000000-0000-0000-0000-000000000000"), json={})
    assert (resp.status, await resp.json()) == (429, {"detail": "Rate limit exceeded"})
    # another address still gets its 401s, and a valid caller its answers
    assert await _statuses(limited, 2, {}) == [401, 401]
    assert (await limited.get(f"{M}/metadata-fields", headers=tenant.headers)).status == 200
    # the bucket is the gate's, named by the address, with a TTL
    redis = aioredis.Redis.from_url(redis_url)
    try:
        assert 0 < await redis.ttl("{o:ip:127.0.0.2}:rl") <= 61
        assert 0 < await redis.ttl("{o:ip:127.0.0.1}:rl") <= 61
    finally:
        await redis.aclose()


async def test_x_forwarded_for_counts_only_from_a_trusted_proxy(limited, from_127_0_0_2):
    # through the trusted proxy (127.0.0.1): each forwarded client has its own bucket
    assert await _statuses(limited, LIMIT + 1, {"X-Forwarded-For": "203.0.113.7"}) == [401] * LIMIT + [429]
    # the right-most address not a trusted proxy is the client: what it wrote further left is ignored
    assert await _statuses(limited, 1, {"X-Forwarded-For": "198.51.100.9, 203.0.113.7"}) == [429]
    assert await _statuses(limited, 2, {"X-Forwarded-For": "203.0.113.7, 198.51.100.9"}) == [401, 401]
    assert await _statuses(limited, 1, {"X-Forwarded-For": "203.0.113.8"}) == [401]
    # from an untrusted peer, X-Forwarded-For is the caller's own claim: the peer is counted
    spoofs = [{"X-Forwarded-For": f"192.0.2.{i}"} for i in range(LIMIT + 2)]
    statuses = [(await _statuses(from_127_0_0_2, 1, spoof))[0] for spoof in spoofs]
    assert statuses == [401] * LIMIT + [429, 429]


async def test_valid_keys_are_not_limited_by_it(limited, make_tenant):
    tenant = await make_tenant()
    statuses = [(await limited.get(f"{M}/metadata-fields", headers=tenant.headers)).status for _ in range(LIMIT * 3)]
    assert statuses == [200] * (LIMIT * 3)
    assert await _statuses(limited, 1, {}) == [401]  # none of them spent an unauthenticated token
