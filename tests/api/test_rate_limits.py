"""Rate limits: token buckets per organisation, all windows spent or none, on Redis's clock."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

from tests.helpers import as_bytes, create_survey, links_path


async def _post(client, tenant, survey_id, name="x"):
    return await client.post(links_path(survey_id), json={"name": name}, headers=tenant.headers)


def _bucket(tenant) -> str:
    return f"{{o:{tenant.org}}}:rl"


async def _advance(redis_url, tenant, seconds: float) -> None:
    """Let `seconds` pass for the organisation's buckets: each window's time of last update (`u<secs>`,
    Redis microseconds) moves that far into the past, which is all the gate reads of the clock."""
    r = aioredis.Redis.from_url(redis_url)
    try:
        stored = await r.hgetall(_bucket(tenant))
        moved: dict[FieldT, EncodableT] = {field: int(value) - round(seconds * 1_000_000)
                                           for field, value in stored.items() if as_bytes(field).startswith(b"u")}
        assert moved, stored
        await r.hset(_bucket(tenant), mapping=moved)
    finally:
        await r.aclose()


async def _full_buckets(redis_url, tenant) -> None:
    """Forget the organisation's buckets: every window is full again."""
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.delete(_bucket(tenant))
    finally:
        await r.aclose()


async def test_burst_passes_exactly_the_shortest_window(client, make_tenant, redis_url):
    # a minute window refills one token in 12 s: a burst, however slow the machine, cannot earn a sixth
    tenant = await make_tenant(rate_limit="5/minute;50/hour")
    survey = await create_survey(client, tenant.headers)  # spends one token
    await _full_buckets(redis_url, tenant)
    started = time.monotonic()
    responses = await asyncio.gather(*(_post(client, tenant, survey["id"]) for _ in range(12)))
    elapsed = time.monotonic() - started
    assert elapsed < 12, "the burst took longer than the minute window needs to refill one token"
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] * 5 + [429] * 7
    for resp in responses:
        assert resp.headers["RateLimit-Policy"] == '"minute";q=5;w=60, "hour";q=50;w=3600'
        assert resp.headers["RateLimit"].startswith('"minute";r=')
        if resp.status == 429:
            assert await resp.json() == {"detail": "Rate limit exceeded"}
            # 12 s for a token from the first spend (at or after `started`), so at least 12 - elapsed from
            # now, in whole seconds rounded up: never a second early
            assert math.ceil(12 - elapsed) <= int(resp.headers["Retry-After"]) <= 12


async def test_refused_requests_spend_nothing(client, make_tenant, redis_url):
    tenant = await make_tenant(rate_limit="2/10s;5/hour")
    survey = await create_survey(client, tenant.headers)
    assert (await _post(client, tenant, survey["id"])).status == 200  # the 10 s bucket is now empty
    r = aioredis.Redis.from_url(redis_url)
    bucket = f"{{o:{tenant.org}}}:rl"
    before = await r.hgetall(bucket)
    refused = await asyncio.gather(*(_post(client, tenant, survey["id"]) for _ in range(20)))
    assert {x.status for x in refused} == {429}
    assert await r.hgetall(bucket) == before  # not a token spent, not even the hour window's
    assert float(before[b"t3600"]) == pytest.approx(3, abs=0.01)
    await r.aclose()


async def test_retry_after_is_never_early(client, make_tenant, redis_url):
    tenant = await make_tenant(rate_limit="1/3s")
    started = time.monotonic()
    survey = await create_survey(client, tenant.headers)  # spends the one token
    refused = await _post(client, tenant, survey["id"])
    assert refused.status == 429
    retry = int(refused.headers["Retry-After"])
    assert 3 - (time.monotonic() - started) - 1 < retry <= 3
    await _advance(redis_url, tenant, retry)
    assert (await _post(client, tenant, survey["id"])).status == 200


async def test_short_window_holds_over_a_longer_run(client, make_tenant, redis_url):
    tenant = await make_tenant(rate_limit="5/10s;10/30s")
    survey = await create_survey(client, tenant.headers)
    await _full_buckets(redis_url, tenant)
    allowed = 0
    started = time.monotonic()
    for _ in range(100):  # 100 s on the buckets' clock, one request a second
        resp = await _post(client, tenant, survey["id"])
        allowed += resp.status == 200
        await _advance(redis_url, tenant, 1.0)
    elapsed = time.monotonic() - started  # the real time that passed too, which only adds tokens
    # both buckets full, then the 10 s window's 5 and the 30 s window's 10 run out, and one request in
    # three passes (the 10 s window alone would have let 54 through)
    assert allowed >= 43
    # and a bucket of 10 refilled at 10 per 30 s can never have given more than this
    assert allowed <= 10 + (100 + elapsed) * 10 / 30


async def test_limits_are_per_organisation_and_keys_expire(client, make_tenant, redis_url):
    first = await make_tenant(rate_limit="2/minute")
    second = await make_tenant(rate_limit="2/minute")
    s1 = await create_survey(client, first.headers)
    s2 = await create_survey(client, second.headers)
    assert (await _post(client, first, s1["id"])).status == 200
    assert (await _post(client, first, s1["id"])).status == 429
    assert (await _post(client, second, s2["id"])).status == 200
    r = aioredis.Redis.from_url(redis_url)
    for tenant in (first, second):
        ttl = await r.ttl(f"{{o:{tenant.org}}}:rl")
        assert 0 < ttl <= 61
    await r.aclose()


async def test_policy_off_sends_no_headers(client, tenant):
    survey = await create_survey(client, tenant.headers)
    resp = await _post(client, tenant, survey["id"])
    assert resp.status == 200
    assert "RateLimit" not in resp.headers and "RateLimit-Policy" not in resp.headers


async def test_unauthenticated_requests_spend_nothing(client, make_tenant, redis_url):
    tenant = await make_tenant(rate_limit="2/minute")
    survey = await create_survey(client, tenant.headers)
    for _ in range(5):
        resp = await client.post(links_path(survey["id"]), json={"name": "x"}, headers={"x-api-key": "slk_bad"})
        assert resp.status == 401
    assert (await _post(client, tenant, survey["id"])).status == 200
