"""Redis under memory pressure, through the whole app: full under noeviction, an evicting cache Redis.

A Redis that answers but refuses writes is an outage for the rate limiter (it cannot spend a
token): RATE_LIMIT_FAILURE_MODE decides, the metric counts it, and /ready names it. Caches on an
evicting CACHE_REDIS_URL lose entries, never a bucket.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient
from redis.exceptions import OutOfMemoryError

from service.app import create_app
from service.core.ratelimit import org_key
from tests.contact_helpers import bulk, create_segment, page
from tests.faults.conftest import OwnRedis
from tests.faults.test_redis_faults import FILUM_503, FORMBRICKS_503
from tests.helpers import create_metadata_field, create_survey, links_path, wait_until

FIELDS = "/api/v2/management/metadata-fields"
OOM = "OOM command not allowed when used memory > 'maxmemory'."
REFUSING = {"status": "unavailable", "checks": {"postgresql": "ok", "redis": "refusing writes"}}


@pytest.fixture
def app_with(aiohttp_client, settings):
    """Factory: a test client of the whole app on these Redis servers (and the module's PostgreSQL)."""

    async def make(redis_url: str, mode: str, cache_url: str | None = None) -> TestClient:
        return await aiohttp_client(create_app(replace(
            settings, redis_url=redis_url, cache_redis_url=cache_url, rate_limit_failure_mode=mode)))

    return make


@pytest.fixture
def cache_redis(tmp_path: Path):
    """A second Redis, for CACHE_REDIS_URL."""
    server = OwnRedis(tmp_path / "cache-redis")
    yield server
    server.stop()


async def fill_to_maxmemory(url: str) -> None:
    """`maxmemory` just above what Redis uses, then keys until it refuses a write (it is noeviction)."""
    direct = aioredis.Redis.from_url(url)
    try:
        assert (await direct.config_get("maxmemory-policy")) == {"maxmemory-policy": "noeviction"}
        used = (await direct.info("memory"))["used_memory"]
        await direct.config_set("maxmemory", used + 256 * 1024)
        chunk = b"x" * 16384
        for i in range(1000):
            try:
                await direct.set(f"filler:{i}", chunk)
            except OutOfMemoryError:
                break
        else:
            raise AssertionError("Redis never refused a write")
        # full for good: what Redis counts also moves with clients' buffers (freed when a connection idles
        # or closes), so the limit goes down to what the empty server used, which the keys alone exceed
        await direct.config_set("maxmemory", (await direct.info("memory"))["used_memory_startup"])
    finally:
        await direct.aclose()


async def set_maxmemory(url: str, value: int) -> None:
    direct = aioredis.Redis.from_url(url)
    await direct.config_set("maxmemory", value)
    await direct.aclose()


async def metric(client: TestClient, name: str, label: str) -> float:
    """One sample of the app's /metrics (0 when absent)."""
    text = await (await client.get("/metrics")).text()
    found = re.search(rf"^{name}\{{{label}\}} (\S+)$", text, flags=re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def _campaign(client: TestClient, headers: dict[str, str]) -> tuple[str, int]:
    """A survey and a metadata field (two requests: two tokens spent)."""
    survey = await create_survey(client, headers)
    field = await create_metadata_field(client, headers, f"f{uuid.uuid4().hex[:6]}")
    return survey["id"], field["id"]


def _body(field: int, value: object) -> dict:
    return {"name": "n", "metadata_mapping": [{"metadata_id": field, "value": value}]}


async def _links(db, survey_id: str) -> int:
    return await db.fetchval("SELECT count(*) FROM survey_links WHERE survey_id = $1", uuid.UUID(survey_id))


async def test_full_redis_open_mode_lets_limited_tenants_through(app_with, own_redis, make_tenant, db, caplog):
    client = await app_with(own_redis.url, "open")
    tenant = await make_tenant(rate_limit="5/minute", link_quota=50)
    survey_id, field = await _campaign(client, tenant.headers)
    spent = await make_tenant(rate_limit="1/minute")
    assert (await client.get(FIELDS, headers=spent.headers)).status == 200
    assert (await client.get(FIELDS, headers=spent.headers)).status == 429

    await fill_to_maxmemory(own_redis.url)
    caplog.set_level(logging.WARNING, "service.ratelimit")
    # a refusal writes nothing, so an empty bucket still answers 429 while Redis is asked
    refused = await client.get(FIELDS, headers=spent.headers)
    assert refused.status == 429 and refused.headers["RateLimit"].startswith('"minute";r=0;')
    assert await metric(client, "sls_redis_failures_total", 'operation="gate"') == 0
    # spending a token is a write Redis refuses: let through, unlimited, as if Redis were down
    created = await client.post(links_path(survey_id), json=_body(field, "full"), headers=tenant.headers)
    assert created.status == 200, await created.text()
    assert "RateLimit" not in created.headers and "Idempotent-Replayed" not in created.headers
    assert await _links(db, survey_id) == 1
    assert await metric(client, "sls_ratelimit_decisions_total", 'decision="degraded"') == 1
    assert await metric(client, "sls_ratelimit_decisions_total", 'decision="limited"') == 2
    assert await metric(client, "sls_redis_failures_total", 'operation="gate"') == 1
    warnings = [r.getMessage() for r in caplog.records if r.name == "service.ratelimit"]
    assert warnings == [f"redis refused the rate limiter's write: {OOM}"]
    # the same create again is a replay, from PostgreSQL (the replay cache could not be written)
    replay = await client.post(links_path(survey_id), json=_body(field, "full"), headers=tenant.headers)
    assert replay.status == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert await replay.json() == await created.json()

    ready = await client.get("/ready")
    assert ready.status == 503 and await ready.json() == REFUSING

    # memory back: real decisions again once the breaker has rested, and ready
    await set_maxmemory(own_redis.url, 0)

    async def limited_again() -> bool:
        resp = await client.post(links_path(survey_id), json=_body(field, "after"), headers=tenant.headers)
        return resp.status == 200 and "RateLimit" in resp.headers

    await wait_until(limited_again, timeout=5)
    assert (await client.get("/ready")).status == 200
    assert (await client.get(FIELDS, headers=spent.headers)).status == 429


async def test_full_redis_closed_mode_answers_503(app_with, own_redis, make_tenant, db):
    client = await app_with(own_redis.url, "closed")
    tenant = await make_tenant(rate_limit="5/minute", link_quota=50)
    survey_id, field = await _campaign(client, tenant.headers)

    await fill_to_maxmemory(own_redis.url)
    resp = await client.post(links_path(survey_id), json=_body(field, "full"), headers=tenant.headers)
    assert resp.status == 503 and await resp.json() == FILUM_503
    assert resp.headers["Retry-After"] == "1"
    resp = await client.get(f"/api/v2/management/surveys/{survey_id}", headers=tenant.headers)
    assert resp.status == 503 and await resp.json() == FORMBRICKS_503
    assert await _links(db, survey_id) == 0
    assert await metric(client, "sls_ratelimit_decisions_total", 'decision="degraded"') == 0
    # the refused write, then the request the breaker answered without asking Redis
    assert await metric(client, "sls_redis_failures_total", 'operation="gate"') == 2
    ready = await client.get("/ready")
    assert ready.status == 503 and await ready.json() == REFUSING


async def test_cache_churn_on_an_evicting_cache_redis_never_resets_a_bucket(app_with, own_redis, cache_redis,
                                                                            make_tenant, db):
    """Buckets on REDIS_URL (noeviction), caches on CACHE_REDIS_URL (allkeys-lru, tiny): churn evicts caches only."""
    cache = aioredis.Redis.from_url(cache_redis.url)
    truth = aioredis.Redis.from_url(own_redis.url)
    try:
        used = (await cache.info("memory"))["used_memory"]
        await cache.config_set("maxmemory-policy", "allkeys-lru")
        # room for about 400 of the churn's 600 answers (~2.5 kB each): a margin of a whole MiB, since the
        # server's own memory (clients' buffers, the scripts' Lua heap) moves by a few hundred kB under
        # load, and a margin that small leaves nothing to evict and the writes refused (OOM) instead
        await cache.config_set("maxmemory", used + 1024 * 1024)
        client = await app_with(own_redis.url, "closed", cache_redis.url)

        limited = await make_tenant(rate_limit="3/minute", link_quota=50)
        survey_id, field = await _campaign(client, limited.headers)  # two of its three tokens
        first = await client.post(links_path(survey_id), json=_body(field, "mine"), headers=limited.headers)
        assert first.status == 200 and first.headers["RateLimit"].startswith('"minute";r=0;')
        more = await client.post(links_path(survey_id), json=_body(field, "more"), headers=limited.headers)
        assert more.status == 429
        # the answer went to the cache Redis
        assert len([k async for k in cache.scan_iter(match=org_key(limited.org, "lk:*"))]) == 1

        churner = await make_tenant(rate_limit="off", link_quota=1000)
        churn_survey, churn_field = await _campaign(client, churner.headers)
        for start in range(0, 600, 20):
            answers = await asyncio.gather(*(
                client.post(links_path(churn_survey), json=_body(churn_field, f"{i:04d}" + "x" * 1900),
                            headers=churner.headers)
                for i in range(start, start + 20)))
            assert [r.status for r in answers] == [200] * 20
        assert await _links(db, churn_survey) == 600
        # the churn did evict: the cache Redis holds far fewer answers than were written
        assert (await cache.info("stats"))["evicted_keys"] > 0
        cached = [k async for k in cache.scan_iter(match=org_key(churner.org, "lk:*"), count=1000)]
        assert 0 < len(cached) < 600

        # the spent bucket is still spent, on the Redis that never evicts, which holds no cache entry
        refused = await client.post(links_path(survey_id), json=_body(field, "again"), headers=limited.headers)
        assert refused.status == 429 and await refused.json() == {"detail": "Rate limit exceeded"}
        assert int(refused.headers["Retry-After"]) >= 1
        assert await truth.exists(org_key(limited.org, "rl")) == 1
        assert [k async for k in truth.scan_iter(match="*:lk:*")] == []
        assert (await truth.info("stats"))["evicted_keys"] == 0

        # with room again (so LRU's one-second clock cannot pick the entry), a replay is read from the cache Redis
        await cache.config_set("maxmemory", 0)
        fresh = await client.post(links_path(churn_survey), json=_body(churn_field, "fresh"), headers=churner.headers)
        assert fresh.status == 200 and "Idempotent-Replayed" not in fresh.headers
        replays = await metric(client, "sls_idempotent_replays_total", 'source="cache"')
        replay = await client.post(links_path(churn_survey), json=_body(churn_field, "fresh"), headers=churner.headers)
        assert replay.status == 200 and replay.headers["Idempotent-Replayed"] == "true"
        assert await replay.read() == await fresh.read()
        assert await metric(client, "sls_idempotent_replays_total", 'source="cache"') == replays + 1

        # the segment cache is on the cache Redis too
        await bulk(client, churner.headers, [{"email": f"u{i}@x.io"} for i in range(3)])
        segment = await create_segment(client, churner.headers, {})
        assert (await page(client, churner.headers, churn_survey, segment["id"]))["meta"]["total"] == 3
        seg_key = org_key(churner.org, f"seg:{segment['id']}")  # the count's hash, and its page positions
        assert sorted([k async for k in cache.scan_iter(match=seg_key + "*")]) == [seg_key.encode(),
                                                                                 (seg_key + ":m").encode()]
        assert [k async for k in truth.scan_iter(match="*:seg:*")] == []
    finally:
        await cache.aclose()
        await truth.aclose()


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl", "noeviction"])
async def test_an_evicting_redis_url_is_named_at_start(app_with, own_redis, cache_redis, caplog, policy):
    """Buckets must not be evictable: a REDIS_URL whose server evicts (even volatile-*) gets a warning at start."""
    for server in (own_redis, cache_redis):
        direct = aioredis.Redis.from_url(server.url)
        await direct.config_set("maxmemory-policy", policy)
        await direct.aclose()
    caplog.set_level(logging.WARNING, "service.redis")
    client = await app_with(own_redis.url, "open", cache_redis.url)
    assert (await client.get("/ready")).status == 200
    warnings = [r.getMessage() for r in caplog.records if r.name == "service.redis"]
    # one warning, for REDIS_URL: the cache Redis may evict
    assert warnings == ([] if policy == "noeviction" else [
        f"REDIS_URL's Redis evicts keys (maxmemory-policy {policy}): cache churn can reset rate limits; use "
        "noeviction there, and CACHE_REDIS_URL for an evicting cache"])
