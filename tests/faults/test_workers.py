"""The real server (`python -m service serve --workers 2`): exactness across processes, and a worker
killed with SIGKILL in the middle of requests."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid

import aiohttp
import asyncpg
import pytest

from tests.conftest import Tenant
from tests.faults.conftest import new_tenant, signing_keys_env
from tests.helpers import links_path, wait_until
from tests.ops.serving import alive

BASE = "/api/v2/management"


@pytest.fixture
async def two_workers(serve, database_url, redis_url):
    """Two workers on the module's database and the session's Redis, configured by environment only."""
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "SIGNING_KEYS": signing_keys_env()}
    return serve(env, workers=2)


async def _campaign(http: aiohttp.ClientSession, base: str, tenant: Tenant, **survey: object) -> tuple[str, int]:
    async with http.post(f"{base}{BASE}/surveys", json={"name": "S", **survey}, headers=tenant.headers) as r:
        assert r.status == 201, await r.text()
        survey_id = (await r.json())["data"]["id"]
    async with http.post(f"{base}{BASE}/metadata-fields", json={"name": f"f{uuid.uuid4().hex[:6]}"},
                         headers=tenant.headers) as r:
        assert r.status == 201, await r.text()
        field = (await r.json())["data"]["id"]
    return survey_id, field


def _body(field: int, value: object) -> dict:
    return {"name": "n", "metadata_mapping": [{"metadata_id": field, "value": value}]}


async def _post(http: aiohttp.ClientSession, url: str, body: dict, headers: dict) -> tuple[int, dict, bool]:
    async with http.post(url, json=body, headers=headers) as r:
        return r.status, await r.json(), r.headers.get("Idempotent-Replayed") == "true"


async def test_two_workers_200_concurrent_requests_stay_exact(two_workers, http, database_url, db):
    base = two_workers.base_url
    tenant = await new_tenant(database_url)
    quota_survey, field = await _campaign(http, base, tenant, linkQuota=25)
    same_survey, _ = await _campaign(http, base, tenant)
    distinct = [_post(http, base + links_path(quota_survey), _body(field, i), tenant.headers) for i in range(100)]
    identical = [_post(http, base + links_path(same_survey), _body(field, "same"), tenant.headers)
                 for _ in range(100)]
    mixed = [c for pair in zip(distinct, identical, strict=True) for c in pair]
    results = await asyncio.wait_for(asyncio.gather(*mixed), 60)
    quota_results, same_results = results[0::2], results[1::2]

    statuses = sorted(status for status, _, _ in quota_results)
    assert statuses == [200] * 25 + [422] * 75
    for status, body, _ in quota_results:
        if status == 422:
            assert body == {"detail": {"message": "threshold_exceeded",
                                       "params": {"model": "survey_link", "threshold": 25}}}
    assert [status for status, _, _ in same_results] == [200] * 100
    assert len({body["id"] for _, body, _ in same_results}) == 1
    assert sum(not replayed for _, _, replayed in same_results) == 1

    for survey_id, expected in ((quota_survey, 25), (same_survey, 1)):
        count = await db.fetchval("SELECT count(*) FROM survey_links WHERE survey_id = $1", uuid.UUID(survey_id))
        counter = await db.fetchval("SELECT link_count FROM surveys WHERE id = $1", uuid.UUID(survey_id))
        assert (count, counter) == (expected, expected)
    # neither worker died under the load
    assert len(two_workers.worker_pids()) == 2


async def test_worker_killed_mid_requests_loses_nothing_and_retries_do_not_duplicate(
        two_workers, http, database_url, db):
    base = two_workers.base_url
    tenant = await new_tenant(database_url)
    survey_id, field = await _campaign(http, base, tenant)
    url = base + links_path(survey_id)
    values = list(range(40))
    answered: dict[int, int] = {}
    failed: list[int] = []
    victim = two_workers.worker_pids()[0]

    async def one(value: int) -> None:
        try:
            status, body, _ = await _post(http, url, _body(field, value), tenant.headers)
        except (TimeoutError, aiohttp.ClientError):
            failed.append(value)
            return
        assert status == 200, body
        answered[value] = body["id"]

    # hold the survey row: every create then waits inside its transaction (claiming a quota slot),
    # on both workers, so the kill lands on open transactions
    lock = db.transaction()
    await lock.start()
    try:
        await db.execute("SELECT 1 FROM surveys WHERE id = $1 FOR UPDATE", uuid.UUID(survey_id))
        runner = asyncio.gather(*(one(v) for v in values))
        # each worker's pool holds 10 connections: more than 10 waiting means both workers are in
        await wait_until(lambda: _waiting_on_lock(database_url, 12), timeout=15)
        os.kill(victim, signal.SIGKILL)

        async def victim_dead() -> bool:
            return not alive(victim)

        await wait_until(victim_dead, timeout=10, interval=0.01)  # before its transactions can go on
    finally:
        await lock.rollback()
    await asyncio.wait_for(runner, 60)
    assert failed, "the killed worker had requests in flight"
    assert answered, "the surviving worker answered its requests"
    assert len(failed) + len(answered) == len(values)

    # nothing answered is lost, and the killed transactions left the quota counter exact. Both are
    # read in one snapshot: a killed worker's statement that was waiting on the lock still runs and
    # commits once the lock goes (PostgreSQL learns its client is gone only when it answers), so it
    # may land between two separate reads
    async with db.transaction(isolation="repeatable_read", readonly=True):
        rows = dict(await db.fetch(
            "SELECT (metadata_mapping->0->>'value')::int, id FROM survey_links WHERE survey_id = $1",
            uuid.UUID(survey_id)))
        counter = await db.fetchval("SELECT link_count FROM surveys WHERE id = $1", uuid.UUID(survey_id))
    assert {v: rows.get(v) for v in answered} == answered
    assert counter == len(rows)
    # the master replaces the dead worker
    await wait_until(lambda: _two_new_workers(two_workers, victim), timeout=20)

    # a client retries everything (answered or not): no duplicate, same ids for what was answered
    retried = await asyncio.gather(*(_post(http, url, _body(field, v), tenant.headers) for v in values))
    assert [status for status, _, _ in retried] == [200] * len(values)
    for value, (_, body, replayed) in zip(values, retried, strict=True):
        if value in answered:
            assert replayed and body["id"] == answered[value]
        elif value in rows:  # committed, but the answer died with the worker
            assert replayed and body["id"] == rows[value]
    count = await db.fetchval("SELECT count(*) FROM survey_links WHERE survey_id = $1", uuid.UUID(survey_id))
    counter = await db.fetchval("SELECT link_count FROM surveys WHERE id = $1", uuid.UUID(survey_id))
    assert (count, counter) == (len(values), len(values))


async def _waiting_on_lock(database_url: str, at_least: int) -> bool:
    conn = await asyncpg.connect(database_url)
    try:
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
    finally:
        await conn.close()
    return waiting >= at_least


async def _two_new_workers(server, victim: int) -> bool:
    pids = server.worker_pids()
    return len(pids) == 2 and victim not in pids
