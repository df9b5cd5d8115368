"""gate.lua against fakeredis and a real Redis: buckets, all-or-nothing, cache lookup, TTLs."""

from __future__ import annotations

import fakeredis
import pytest
import redis.asyncio as aioredis

from service.core.ratelimit import GATE_SCRIPT, Gate, org_key
from service.core.ratepolicy import parse_policy


@pytest.fixture(params=["fakeredis", "redis"])
async def redis_client(request, redis_url):
    client = fakeredis.FakeAsyncRedis() if request.param == "fakeredis" else aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def run(client, limits, cache_key=None):
    script = client.register_script(GATE_SCRIPT)
    keys = [org_key("o1", "rl")] + ([cache_key] if cache_key else [])
    args = [len(limits)]
    for limit, seconds in limits:
        args += [limit, seconds]
    return await script(keys=keys, args=args)


async def test_spends_one_token_per_window(redis_client):
    reply = await run(redis_client, [(3, 1), (10, 60)])
    assert reply[:3] == [1, 0, None]
    assert reply[3] == 2 and reply[5] == 9  # remaining per window
    assert await redis_client.ttl(org_key("o1", "rl")) == 61


async def test_refusal_spends_nothing(redis_client):
    for _ in range(2):
        assert (await run(redis_client, [(2, 60), (100, 3600)]))[0] == 1
    before = await redis_client.hgetall(org_key("o1", "rl"))
    refused = await run(redis_client, [(2, 60), (100, 3600)])
    assert refused[0] == 0
    assert 29_000 <= refused[1] <= 30_000  # ms until the 60 s window has one token again
    assert await redis_client.hgetall(org_key("o1", "rl")) == before


async def test_cache_is_read_only_when_allowed(redis_client):
    cache = org_key("o1", "lk:s:abc")
    await redis_client.set(cache, b"cached")
    assert (await run(redis_client, [(1, 60)], cache))[2] == b"cached"
    refused = await run(redis_client, [(1, 60)], cache)
    assert refused[0] == 0 and refused[2] is None


async def test_no_windows_is_a_plain_cache_lookup(redis_client):
    cache = org_key("o1", "lk:s:x")
    reply = await run(redis_client, [], cache)
    assert reply == [1, 0, None]
    assert not await redis_client.exists(org_key("o1", "rl"))


async def test_gate_renders_headers(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    gate = Gate(client, "open")
    policy = parse_policy("2/second;3/minute")
    decision = await gate.check("org", policy)
    assert decision.allowed
    assert decision.headers(policy) == {
        "RateLimit-Policy": '"second";q=2;w=1, "minute";q=3;w=60',
        "RateLimit": '"second";r=1;t=1, "minute";r=2;t=20',
    }
    await client.aclose()


async def test_gate_fails_open_or_closed_when_redis_is_unreachable():
    from service.core.errors import Unavailable
    from service.embedded.process import free_port
    from service.redis_client import OPTIONS, SINGLE_SERVER_RETRY

    # the service's own client settings (short timeouts, one immediate retry), at a port nobody serves
    dead = aioredis.Redis(port=free_port(), retry=SINGLE_SERVER_RETRY, **OPTIONS)
    policy = parse_policy("1/second")
    failures = []
    decision = await Gate(dead, "open", on_redis_failure=lambda: failures.append(1)).check("o", policy)
    assert decision.allowed and decision.degraded and failures == [1]
    with pytest.raises(Unavailable):
        await Gate(dead, "closed").check("o", policy)
    await dead.aclose()
