"""PostgreSQL stopped under the service: clear 503s (never a 500), /ready 503, and recovery without
a restart once it is back on its port, with the pool handing out working connections again."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import asyncpg
import pytest

from service.app import create_app
from tests.faults.conftest import OwnPostgres, new_tenant
from tests.helpers import links_path, wait_until

PG_DETAIL = "Service temporarily unavailable: postgresql is not answering, retry shortly"
FILUM_503 = {"detail": PG_DETAIL}
FORMBRICKS_503 = {"error": {"code": 503, "message": PG_DETAIL, "details": []}}
BASE = "/api/v2/management"


@pytest.fixture
async def pg_client(aiohttp_client, settings, own_postgres: OwnPostgres):
    """The whole app on the test's own PostgreSQL (running again whatever the previous test did)."""
    if not own_postgres.running:
        own_postgres.start()
    # no key cache, so key lookups really reach the database during the outage (no waiting one out)
    app = create_app(replace(settings, database_url=own_postgres.url, key_cache_seconds=0))
    return await aiohttp_client(app)


async def _setup(client, database_url: str):
    tenant = await new_tenant(database_url, link_quota=1000)
    h = tenant.headers
    survey = await (await client.post(f"{BASE}/surveys", json={"name": "S"}, headers=h)).json()
    field = await (await client.post(f"{BASE}/metadata-fields", json={"name": f"f{uuid.uuid4().hex[:6]}"},
                                     headers=h)).json()
    return tenant, survey["data"]["id"], field["data"]["id"]


async def _data(client, h: dict[str, str], survey_id: str) -> dict[str, str]:
    """A contact, a segment and both kinds of signed links, for the endpoints that need them."""
    contact = (await (await client.post(f"{BASE}/contacts", json={"attributes": {"email": "a@b.io"}},
                                        headers=h)).json())["data"]["id"]
    segment = (await (await client.post(f"{BASE}/segments", json={"title": "all", "filters": {}},
                                        headers=h)).json())["data"]["id"]
    contact_url = (await (await client.get(f"{BASE}/surveys/{survey_id}/contact-links/contacts/{contact}",
                                           headers=h)).json())["data"]["surveyUrl"]
    link = await (await client.post(links_path(survey_id), json={"name": "l"}, headers=h)).json()
    return {"contact": contact, "segment": segment, "c": contact_url.split("/c/")[1],
            "l": link["survey_url"].split("/l/")[1]}


def _body(field: int, value: object) -> dict:
    return {"name": "n", "metadata_mapping": [{"metadata_id": field, "value": value}]}


async def _rows(database_url: str, survey_id: str) -> tuple[int, int]:
    conn = await asyncpg.connect(database_url)
    try:
        count = await conn.fetchval("SELECT count(*) FROM survey_links WHERE survey_id = $1", uuid.UUID(survey_id))
        counter = await conn.fetchval("SELECT link_count FROM surveys WHERE id = $1", uuid.UUID(survey_id))
    finally:
        await conn.close()
    return count, counter


async def test_postgres_stopped_gives_503_then_recovers(pg_client, own_postgres):
    client = pg_client
    tenant, survey_id, field = await _setup(client, own_postgres.url)
    h = tenant.headers
    first = await client.post(links_path(survey_id), json=_body(field, "first"), headers=h)
    assert first.status == 200
    data = await _data(client, h, survey_id)

    own_postgres.stop()
    calls = [
        ("POST", links_path(survey_id), _body(field, "new"), FILUM_503),
        ("GET", f"{BASE}/surveys/{survey_id}", None, FORMBRICKS_503),
        ("PATCH", f"{BASE}/surveys/{survey_id}", {"name": "renamed"}, FORMBRICKS_503),
        ("POST", f"{BASE}/surveys", {"name": "S2"}, FORMBRICKS_503),
        ("GET", f"{BASE}/metadata-fields", None, FORMBRICKS_503),
        ("POST", f"{BASE}/metadata-fields", {"name": "g"}, FORMBRICKS_503),
        ("GET", f"{BASE}/contact-attribute-keys", None, FORMBRICKS_503),
        ("POST", f"{BASE}/contacts", {"attributes": {"email": "c@d.io"}}, FORMBRICKS_503),
        ("PUT", f"{BASE}/contacts/bulk", {"contacts": [{"attributes": {"email": "e@f.io"}}]}, FORMBRICKS_503),
        ("POST", f"{BASE}/segments", {"title": "t", "filters": {}}, FORMBRICKS_503),
        ("GET", f"{BASE}/segments/{data['segment']}", None, FORMBRICKS_503),
        ("GET", f"{BASE}/surveys/{survey_id}/contact-links/segments/{data['segment']}", None, FORMBRICKS_503),
        ("GET", f"{BASE}/surveys/{survey_id}/contact-links/segments/{data['segment']}/export", None,
         FORMBRICKS_503),
        ("GET", f"{BASE}/surveys/{survey_id}/contact-links/contacts/{data['contact']}", None, FORMBRICKS_503),
        ("GET", f"/c/{data['c']}", None, FORMBRICKS_503),
        ("GET", f"/l/{data['l']}", None, FORMBRICKS_503),
    ]
    for method, path, body, expected in calls:
        resp = await asyncio.wait_for(client.request(method, path, json=body, headers=h), 15)
        assert resp.status == 503, (method, path, await resp.text())
        assert await resp.json() == expected, (method, path)
        assert resp.headers["Retry-After"] == "1"
    ready = await client.get("/ready")
    assert ready.status == 503
    assert await ready.json() == {"status": "unavailable", "checks": {"postgresql": "unavailable", "redis": "ok"}}
    assert (await client.get("/health")).status == 200
    # a forged link is refused before any database lookup, so PostgreSQL's absence doesn't show
    assert (await client.get(f"/c/{data['c'][:-2]}xx")).status == 404
    assert (await client.get(f"/l/{data['l'][:-2]}xx")).status == 404

    own_postgres.start()

    async def recovered():
        resp = await client.post(links_path(survey_id), json=_body(field, "after"), headers=h)
        return resp.status == 200

    await wait_until(recovered, timeout=10, interval=0.2)
    # every pooled connection works again: more concurrent requests than the pool holds
    responses = await asyncio.gather(*(client.post(links_path(survey_id), json=_body(field, i), headers=h)
                                       for i in range(30)))
    assert [r.status for r in responses] == [200] * 30
    replay = await client.post(links_path(survey_id), json=_body(field, "first"), headers=h)
    assert replay.status == 200 and await replay.json() == await first.json()
    assert (await client.get("/ready")).status == 200
    for path in (f"/c/{data['c']}", f"/l/{data['l']}", f"{BASE}/segments/{data['segment']}"):
        assert (await client.get(path, headers=h)).status == 200, path
    assert await _rows(own_postgres.url, survey_id) == (33, 33)


async def test_postgres_stopped_mid_traffic_never_500(pg_client, own_postgres):
    client = pg_client
    tenant, survey_id, field = await _setup(client, own_postgres.url)
    statuses: list[int] = []
    answered: dict[int, int] = {}  # value -> link id, for every 200

    async def traffic(worker: int) -> None:
        for i in range(40):
            value = worker * 1000 + i
            resp = await client.post(links_path(survey_id), json=_body(field, value), headers=tenant.headers)
            statuses.append(resp.status)
            if resp.status == 200:
                answered[value] = (await resp.json())["id"]
            else:
                assert await resp.json() == FILUM_503
            await asyncio.sleep(0.01)

    async def answered_at_least(count: int, status: int) -> bool:
        return statuses.count(status) >= count

    runners = asyncio.gather(*(traffic(w) for w in range(4)))
    await wait_until(lambda: answered_at_least(4, 200), timeout=30, interval=0.01)  # traffic is flowing
    own_postgres.stop()
    await wait_until(lambda: answered_at_least(4, 503), timeout=30, interval=0.01)  # and meets the outage
    own_postgres.start()
    await asyncio.wait_for(runners, 60)
    assert set(statuses) <= {200, 503}, statuses
    assert 503 in statuses and 200 in statuses
    # every answered link is committed, and the quota counter agrees with the rows
    conn = await asyncpg.connect(own_postgres.url)
    try:
        rows = {value: link_id for value, link_id in await conn.fetch(
            "SELECT (metadata_mapping->0->>'value')::int, id FROM survey_links WHERE survey_id = $1",
            uuid.UUID(survey_id))}
    finally:
        await conn.close()
    assert {v: rows.get(v) for v in answered} == answered
    count, counter = await _rows(own_postgres.url, survey_id)
    assert count == counter


async def test_postgres_killed_mid_traffic_loses_nothing_and_overspends_nothing(pg_client, own_postgres):
    """kill -9 of PostgreSQL (postmaster and backends) while four clients create links, several sending the
    same mappings and more mappings than the quota holds: after recovery, one link per mapping, never more
    than the quota, the counter equal to the rows, and every link answered 200 committed as answered."""
    client = pg_client
    tenant = await new_tenant(own_postgres.url, link_quota=60)
    h = tenant.headers
    survey_id = (await (await client.post(f"{BASE}/surveys", json={"name": "S"}, headers=h)).json())["data"]["id"]
    field = (await (await client.post(f"{BASE}/metadata-fields", json={"name": f"f{uuid.uuid4().hex[:6]}"},
                                      headers=h)).json())["data"]["id"]
    statuses: list[int] = []
    answered: dict[int, set[int]] = {}  # value -> the link ids it was answered with
    quota_refusal = {"detail": {"message": "threshold_exceeded", "params": {"model": "survey_link", "threshold": 60}}}

    async def traffic(worker: int) -> None:
        for i in range(40):
            value = (worker * 40 + i) % 80  # workers 0 and 2 (1 and 3) send the same mappings: 80 in all
            resp = await client.post(links_path(survey_id), json=_body(field, value), headers=h)
            statuses.append(resp.status)
            body = await resp.json()
            if resp.status == 200:
                answered.setdefault(value, set()).add(body["id"])
            elif resp.status == 422:
                assert body == quota_refusal
            else:
                assert (resp.status, body) == (503, FILUM_503)

    async def answered_at_least(count: int, status: int) -> bool:
        return statuses.count(status) >= count

    runners = asyncio.gather(*(traffic(w) for w in range(4)))
    await wait_until(lambda: answered_at_least(8, 200), timeout=30, interval=0.01)  # traffic is flowing
    own_postgres.kill()
    await wait_until(lambda: answered_at_least(4, 503), timeout=30, interval=0.01)  # and meets the outage
    own_postgres.start()
    await asyncio.wait_for(runners, 90)
    assert set(statuses) <= {200, 422, 503} and 503 in statuses and 200 in statuses, statuses

    conn = await asyncpg.connect(own_postgres.url)
    try:
        rows = await conn.fetch("SELECT (metadata_mapping->0->>'value')::int AS value, id, mapping_hash"
                                " FROM survey_links WHERE survey_id = $1", uuid.UUID(survey_id))
        counter = await conn.fetchval("SELECT link_count FROM surveys WHERE id = $1", uuid.UUID(survey_id))
    finally:
        await conn.close()
    stored = {r["value"]: r["id"] for r in rows}
    assert len(rows) == len(stored) == len({r["mapping_hash"] for r in rows})  # no duplicate
    assert len(rows) <= 60 and counter == len(rows)  # no overspend, the counter exact
    # every answer names the one committed link of its mapping (none lost, none answered twice differently)
    assert {value: ids for value, ids in answered.items()} == {value: {stored[value]} for value in answered}
