"""Opens on the real server (`serve --workers 2`): written within a second while it runs, and every
one of 1,000 concurrent opens over both workers counted exactly after a SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import asyncpg
import pytest

from tests.faults.conftest import new_tenant, signing_keys_env
from tests.helpers import links_path, wait_until
from tests.ops.metrics_text import parse_samples, series

BASE = "/api/v2/management"


@pytest.fixture
async def two_workers(serve, database_url, redis_url):
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "SIGNING_KEYS": signing_keys_env(),
           "PUBLIC_BASE_URL": "http://links.test"}
    return serve(env, workers=2)


async def _json(http, method: str, url: str, headers: dict, body: object = None) -> dict:
    async with http.request(method, url, json=body, headers=headers) as resp:
        assert resp.status in (200, 201), await resp.text()
        return await resp.json()


async def _links(http, base: str, tenant) -> tuple[str, list[str], list[str], list[int]]:
    """A survey, 5 contacts' links and 3 created links (paths), and the contacts' ids."""
    survey = (await _json(http, "POST", f"{base}{BASE}/surveys", tenant.headers, {"name": "S"}))["data"]["id"]
    await _json(http, "PUT", f"{base}{BASE}/contacts/bulk", tenant.headers,
                {"contacts": [{"attributes": {"email": f"s{i}@x.io"}} for i in range(5)]})
    segment = (await _json(http, "POST", f"{base}{BASE}/segments", tenant.headers,
                           {"title": "all", "filters": {}}))["data"]["id"]
    page = await _json(http, "GET", f"{base}{BASE}/surveys/{survey}/contact-links/segments/{segment}",
                       tenant.headers)
    contact_paths = [item["surveyUrl"].removeprefix("http://links.test") for item in page["data"]]
    field = (await _json(http, "POST", f"{base}{BASE}/metadata-fields", tenant.headers, {"name": "sku"}))["data"]
    created = []
    for i in range(3):
        link = await _json(http, "POST", base + links_path(survey), tenant.headers,
                           {"name": f"n{i}", "metadata_mapping": [{"metadata_id": field["id"], "value": i}]})
        created.append(link["survey_url"].removeprefix("http://links.test"))
    return survey, contact_paths, created, [int(item["contactId"]) for item in page["data"]]


async def _open_all(http, base: str, paths: list[str]) -> None:
    async def one(path: str) -> int:
        async with http.get(base + path, allow_redirects=False) as resp:
            await resp.read()
            return resp.status

    statuses = await asyncio.wait_for(asyncio.gather(*(one(p) for p in paths)), 120)
    assert statuses == [200] * len(paths)


async def _counts(database_url: str, survey: str) -> dict[str, int]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT 'c' || contact_id AS k, count FROM contact_opens WHERE survey_id = $1"
            " UNION ALL SELECT 'l' || l.public_id, o.count FROM link_opens o JOIN survey_links l ON l.id = o.link_id"
            " WHERE l.survey_id = $1", uuid.UUID(survey))
    finally:
        await conn.close()
    return {r["k"]: r["count"] for r in rows}


def _keys(contact_ids: list[int], created: list[str]) -> list[str]:
    return [f"c{c}" for c in contact_ids] + [f"l{p.split('.')[1]}" for p in created]


async def test_opens_are_written_within_a_second_and_all_of_them_on_sigterm(two_workers, http, database_url):
    base = two_workers.base_url
    tenant = await new_tenant(database_url)
    survey, contact_paths, created, contact_ids = await _links(http, base, tenant)
    paths = contact_paths + created
    keys = _keys(contact_ids, created)

    # while serving: a batch every second, so a worker killed outright loses at most its last second
    await _open_all(http, base, [paths[i % 8] for i in range(200)])
    started = time.monotonic()
    await wait_until(lambda: _expect(database_url, survey, dict.fromkeys(keys, 25)), timeout=10, interval=0.05)
    assert time.monotonic() - started < 3.0  # one flush period (1 s), and slack for a loaded machine

    # each new connection goes to either worker: both answered opens
    answered = await wait_until(lambda: _answered(http, base), timeout=10)
    assert len(answered) == 2 and all(v >= 20 for v in answered.values()), answered

    # 1,000 at once over both workers, then SIGTERM at once: none is lost
    await _open_all(http, base, [paths[i % 8] for i in range(1_000)])
    two_workers.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(two_workers.proc.wait, 30) == 0
    assert await _counts(database_url, survey) == dict.fromkeys(keys, 25 + 125)
    assert "open counts lost" not in two_workers.logs()


async def _answered(http, base: str) -> dict | None:
    """Requests answered per worker, once the scrape holds the 200 opens of both."""
    async with http.get(base + "/metrics") as resp:
        answered = series(parse_samples(await resp.text()), "sls_worker_requests")
    return answered if sum(answered.values()) >= 200 + 12 else None


async def _expect(database_url: str, survey: str, wanted: dict[str, int]) -> bool:
    return await _counts(database_url, survey) == wanted
