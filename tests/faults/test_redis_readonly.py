"""A read-only Redis (a failover left REDIS_URL on a replica), through the whole app: the gate cannot
spend a token, so RATE_LIMIT_FAILURE_MODE decides (open: through, counted and warned about; closed:
503), /ready names it, and once Redis takes writes again traffic is limited as before."""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ReadOnlyError

from service.app import create_app
from service.embedded.process import free_port
from tests.faults.test_redis_faults import FILUM_503, FORMBRICKS_503
from tests.faults.test_redis_memory import REFUSING, _body, _campaign, _links, metric
from tests.helpers import links_path, wait_until

READONLY = "READONLY You can't write against a read only replica."


@pytest.fixture
def app_with(aiohttp_client, settings, own_redis):
    """Factory: a test client of the whole app on this test's own Redis, in a failure mode."""

    async def make(mode: str):
        return await aiohttp_client(create_app(replace(settings, redis_url=own_redis.url,
                                                       rate_limit_failure_mode=mode)))

    return make


async def make_read_only(url: str) -> None:
    """REPLICAOF a master that is not there: the server stays a read-only replica that refuses every write."""
    direct = aioredis.Redis.from_url(url)
    try:
        await direct.config_set("replica-read-only", "yes")
        await direct.replicaof("127.0.0.1", free_port())
        with pytest.raises(ReadOnlyError):
            await direct.set("probe", b"1")
    finally:
        await direct.aclose()


async def make_writable(url: str) -> None:
    direct = aioredis.Redis.from_url(url)
    try:
        await direct.replicaof("NO", "ONE")
        assert await direct.set("probe", b"1")
    finally:
        await direct.aclose()


async def _limited_again(client, survey_id: str, field: int, headers: dict[str, str], resting: int) -> None:
    """Past the breaker's rest (answered `resting` meanwhile), a create spends a real token again: 200
    with RateLimit headers."""
    values = iter(range(1000))

    async def limited() -> bool:
        resp = await client.post(links_path(survey_id), json=_body(field, f"after {next(values)}"), headers=headers)
        if resp.status == 200 and "RateLimit" in resp.headers:
            return True
        assert resp.status == resting, await resp.text()
        return False

    await wait_until(limited, timeout=5)


async def test_read_only_redis_open_mode_lets_requests_through_counted(app_with, own_redis, make_tenant, db,
                                                                       caplog):
    client = await app_with("open")
    tenant = await make_tenant(rate_limit="50/minute", link_quota=50)
    survey_id, field = await _campaign(client, tenant.headers)
    try:
        await make_read_only(own_redis.url)
        caplog.set_level(logging.WARNING, "service.ratelimit")
        resp = await client.post(links_path(survey_id), json=_body(field, "read-only"), headers=tenant.headers)
        assert resp.status == 200, await resp.text()
        link = await resp.json()
        assert link["name"] == "n" and link["metadata_mapping"][0]["value"] == "read-only"
        assert "RateLimit" not in resp.headers and "Idempotent-Replayed" not in resp.headers
        assert await _links(db, survey_id) == 1
        assert await metric(client, "sls_ratelimit_decisions_total", 'decision="degraded"') == 1
        assert await metric(client, "sls_redis_failures_total", 'operation="gate"') == 1
        warnings = [r.getMessage() for r in caplog.records if r.name == "service.ratelimit"]
        assert f"redis refused the rate limiter's write: {READONLY}" in warnings
        assert all(READONLY in w for w in warnings), warnings  # the replay cache's refused write, at most
        ready = await client.get("/ready")
        assert ready.status == 503 and await ready.json() == REFUSING
    finally:
        await make_writable(own_redis.url)

    await _limited_again(client, survey_id, field, tenant.headers, resting=200)
    assert (await client.get("/ready")).status == 200
    direct = aioredis.Redis.from_url(own_redis.url)
    try:
        assert await direct.exists(f"{{o:{tenant.org}}}:rl") == 1  # the bucket is written again
    finally:
        await direct.aclose()


async def test_read_only_redis_closed_mode_answers_503(app_with, own_redis, make_tenant, db):
    client = await app_with("closed")
    tenant = await make_tenant(rate_limit="50/minute", link_quota=50)
    survey_id, field = await _campaign(client, tenant.headers)
    try:
        await make_read_only(own_redis.url)
        resp = await client.post(links_path(survey_id), json=_body(field, "read-only"), headers=tenant.headers)
        assert resp.status == 503 and await resp.json() == FILUM_503
        assert resp.headers["Retry-After"] == "1"
        resp = await client.get(f"/api/v2/management/surveys/{survey_id}", headers=tenant.headers)
        assert resp.status == 503 and await resp.json() == FORMBRICKS_503
        assert resp.headers["Retry-After"] == "1"
        assert await _links(db, survey_id) == 0
        assert await metric(client, "sls_ratelimit_decisions_total", 'decision="degraded"') == 0
        assert await metric(client, "sls_redis_failures_total", 'operation="gate"') == 2
        ready = await client.get("/ready")
        assert ready.status == 503 and await ready.json() == REFUSING
    finally:
        await make_writable(own_redis.url)

    await _limited_again(client, survey_id, field, tenant.headers, resting=503)
    # the one create let through: every one before it was a 503, which writes nothing
    assert await db.fetchval("SELECT count(*) FROM survey_links WHERE survey_id = $1", uuid.UUID(survey_id)) == 1
    assert (await client.get("/ready")).status == 200
