"""`?opened=true|false` on a segment's contact links: the contacts that have (or have not) opened the
survey's link, checked against the database's truth, with `meta.total` of that set."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from service.core.segment_cache import cache_key
from service.db import members as members_db
from service.db.members import OpenedFilter
from service.web.keys import OPENS, SEGMENT_CACHE
from tests.contact_helpers import (
    CONTACTS,
    all_members,
    bulk,
    create_segment,
    error,
    freeze,
    page,
    segment_links_path,
    settle,
)
from tests.helpers import create_survey

GROUP_A = {"attribute": "group", "op": "equals", "value": "a"}


def path_of(url: str) -> str:
    return url.removeprefix("http://links.test")


@pytest.fixture
async def world(client, tenant, db):
    """120 contacts, 90 of them in the segment (group a); some opened survey 1, others only survey 2."""
    await bulk(client, tenant.headers, [{"email": f"r{i}@x.io", "group": "b" if i % 4 == 3 else "a"}
                                        for i in range(120)])
    segment = await create_segment(client, tenant.headers, GROUP_A)
    first = await create_survey(client, tenant.headers, name="first")
    second = await create_survey(client, tenant.headers, name="second")
    everyone = await all_members(client, tenant.headers, first["id"],
                                 (await create_segment(client, tenant.headers, {}))["id"])
    ids = {item["contactId"]: path_of(item["surveyUrl"]) for item in everyone}
    other = await all_members(client, tenant.headers, second["id"],
                              (await create_segment(client, tenant.headers, {}))["id"])
    for n, path in enumerate(ids.values()):
        if n % 3 == 0:  # every third contact opens survey 1, some of them twice
            for _ in range(1 + n % 2):
                assert (await client.get(path)).status == 200
    for item in other[:60]:  # survey 2's opens must not count for survey 1
        assert (await client.get(path_of(item["surveyUrl"]))).status == 200
    await client.app[OPENS].flush()
    return {"segment": segment["id"], "survey": first["id"], "links": ids}


async def truth(db, tenant, survey_id: str, opened: bool | None) -> set[str]:
    rows = await db.fetch(
        "SELECT c.id FROM contacts c WHERE c.org_id = $1 AND c.attributes->>'group' = 'a'"
        " AND ($3::boolean IS NULL OR $3 = EXISTS (SELECT 1 FROM contact_opens o"
        "      WHERE o.survey_id = $2 AND o.contact_id = c.id))",
        tenant.org_id, uuid.UUID(survey_id), opened)
    return {str(r["id"]) for r in rows}


@pytest.mark.parametrize("opened", ["true", "false", "TRUE", "0", None])
async def test_each_set_is_the_database_truth_paged_exactly_once(client, tenant, db, world, opened):
    wanted = {"true": True, "TRUE": True, "false": False, "0": False, None: None}[opened]
    expected = await truth(db, tenant, world["survey"], wanted)
    assert 0 < len(expected) < 90 or wanted is None
    params = {} if opened is None else {"opened": opened}
    for limit in (50, 7):  # page positions remembered at multiples of 50, and pages that never hit one
        seen: list[str] = []
        while True:
            body = await page(client, tenant.headers, world["survey"], world["segment"], limit=limit,
                              skip=len(seen), **params)
            assert body["meta"] == {"total": len(expected), "limit": limit, "offset": len(seen)}
            seen += [item["contactId"] for item in body["data"]]
            if len(body["data"]) < limit:
                break
        assert len(seen) == len(set(seen)) and set(seen) == expected
        assert seen == sorted(seen, key=int, reverse=True)  # newest first (ids follow creation here)


async def test_an_open_written_moves_the_contact_within_the_lag(client, tenant, db, world):
    freeze(client)
    before = await page(client, tenant.headers, world["survey"], world["segment"], opened="false", limit=250)
    newcomer = before["data"][0]["contactId"]
    opened = await page(client, tenant.headers, world["survey"], world["segment"], opened="true", limit=250)
    assert newcomer not in {item["contactId"] for item in opened["data"]}
    assert (await client.get(world["links"][newcomer])).status == 200
    # tallied, not yet written: the lists are those of the database
    again = await page(client, tenant.headers, world["survey"], world["segment"], opened="false", limit=250)
    assert again["meta"]["total"] == before["meta"]["total"]
    await client.app[OPENS].flush()
    # written: the page reads the members as they are now at once, while its total is the count taken
    # before the open for up to 1 s (then refreshed in the background; counted first after 4 s)
    soon = await page(client, tenant.headers, world["survey"], world["segment"], opened="false", limit=250)
    assert [item["contactId"] for item in soon["data"]] == [item["contactId"] for item in before["data"][1:]]
    assert soon["meta"]["total"] == before["meta"]["total"]
    settle(client)
    after = await page(client, tenant.headers, world["survey"], world["segment"], opened="false", limit=250)
    assert after["meta"]["total"] == before["meta"]["total"] - 1
    assert [item["contactId"] for item in after["data"]] == [item["contactId"] for item in before["data"][1:]]
    now_opened = await page(client, tenant.headers, world["survey"], world["segment"], opened="true", limit=250)
    assert now_opened["meta"]["total"] == opened["meta"]["total"] + 1
    assert {item["contactId"] for item in now_opened["data"]} == await truth(db, tenant, world["survey"], True)
    # a repeat open changes no set: the counts stay exact
    assert (await client.get(world["links"][newcomer])).status == 200
    await client.app[OPENS].flush()
    final = await page(client, tenant.headers, world["survey"], world["segment"], opened="false", limit=250)
    assert final["meta"]["total"] == after["meta"]["total"]


async def test_an_erased_contact_leaves_both_sets(client, tenant, db, world):
    freeze(client)
    opened = await truth(db, tenant, world["survey"], True)
    body = await page(client, tenant.headers, world["survey"], world["segment"], opened="true", limit=250)
    assert body["meta"]["total"] == len(opened)  # counted, and remembered
    gone = max(opened, key=int)
    assert (await client.delete(f"{CONTACTS}/{gone}", headers=tenant.headers)).status == 204
    body = await page(client, tenant.headers, world["survey"], world["segment"], opened="true", limit=250)
    assert {item["contactId"] for item in body["data"]} == opened - {gone}  # the page reads what is there now
    settle(client)  # the erasure is a contact write: the list's total follows within MAX_AGE
    body = await page(client, tenant.headers, world["survey"], world["segment"], opened="true", limit=250)
    assert {item["contactId"] for item in body["data"]} == opened - {gone}
    assert body["meta"]["total"] == len(opened) - 1


async def test_the_reminder_list_is_counted_again_when_opens_are_written(client, tenant, db, redis_url, world):
    """Its own entry per survey and flag, holding the opens version its count saw: opens written since
    make it stale as contact writes do (answered, refreshed in the background between 1 and 4 s)."""
    freeze(client)
    cache = client.app[SEGMENT_CACHE]
    survey, segment = uuid.UUID(world["survey"]), uuid.UUID(world["segment"])
    before = await page(client, tenant.headers, world["survey"], world["segment"], opened="false", limit=1)
    total = before["meta"]["total"]
    assert total == len(await truth(db, tenant, world["survey"], False))
    r = aioredis.Redis.from_url(redis_url)
    key = cache_key(tenant.org_id, segment, OpenedFilter(survey, False, 0))
    version = await db.fetchval("SELECT version FROM contact_opens_versions WHERE survey_id = $1", survey)
    assert await r.hmget(key, ["t", "o"]) == [str(total).encode(), str(version).encode()]
    assert await r.exists(cache_key(tenant.org_id, segment, OpenedFilter(survey, True, 0))) == 0
    assert (await client.get(world["links"][before["data"][0]["contactId"]])).status == 200
    await client.app[OPENS].flush()
    settle(client, 2.0)  # between REFRESH_AFTER and MAX_AGE: answered as is, and counted in the background
    stale = await page(client, tenant.headers, world["survey"], world["segment"], opened="false", limit=1)
    assert stale["meta"]["total"] == total
    await cache.settled()
    assert await r.hmget(key, ["t", "o"]) == [str(total - 1).encode(), str(version + 1).encode()]
    fresh = await page(client, tenant.headers, world["survey"], world["segment"], opened="false", limit=1)
    assert fresh["meta"]["total"] == total - 1
    await r.aclose()


@pytest.mark.parametrize("value", ["maybe", "2", "yes please", "tru"])
async def test_a_value_that_is_not_a_boolean_is_422(client, tenant, world, value):
    resp = await client.get(segment_links_path(world["survey"], world["segment"]), params={"opened": value},
                            headers=tenant.headers)
    assert resp.status == 422
    assert await resp.json() == error(422, "Unprocessable Entity",
                                      [{"field": "opened", "issue": "value could not be parsed to a boolean"}])


async def test_empty_means_every_contact(client, tenant, db, world):
    body = await page(client, tenant.headers, world["survey"], world["segment"], opened="", limit=250)
    assert body["meta"]["total"] == 90


@pytest.mark.parametrize("opened", [True, False])
async def test_the_export_takes_opened_too(client, tenant, db, world, monkeypatch, opened):
    from service.web import export

    monkeypatch.setattr(export, "BATCH", 7)  # several batches: the filter holds across the cursor
    resp = await client.get(segment_links_path(world["survey"], world["segment"]) + "/export",
                            params={"opened": str(opened).lower()}, headers=tenant.headers)
    assert resp.status == 200
    lines = (await resp.text()).splitlines()
    assert lines[0] == "contactId,surveyUrl,expiresAt"
    ids = [line.split(",")[0] for line in lines[1:]]
    assert len(ids) == len(set(ids)) and set(ids) == await truth(db, tenant, world["survey"], opened)


@pytest.mark.parametrize("opened", [True, False])
async def test_a_reminder_count_holds_every_step_th_member_in_page_order(tenant, db, world, opened):
    """The reminder list is counted in its own statement form (members numbered in page order): the same
    total and positions as the truth, for a step that makes several."""
    survey = uuid.UUID(world["survey"])
    truth_rows = await db.fetch(
        "SELECT c.id, c.created_at FROM contacts c WHERE c.org_id = $1 AND c.attributes->>'group' = 'a'"
        " AND $3 = EXISTS (SELECT 1 FROM contact_opens o WHERE o.survey_id = $2 AND o.contact_id = c.id)"
        " ORDER BY c.created_at DESC, c.id DESC", tenant.org_id, survey, opened)
    version = await db.fetchval("SELECT version FROM contact_opens_versions WHERE survey_id = $1", survey)
    counted = await members_db.count_members(db, tenant.org_id, GROUP_A, 7, OpenedFilter(survey, opened, 0))
    assert counted.total == len(truth_rows) > 7
    assert counted.markers == [(r["created_at"], r["id"]) for r in truth_rows[::7]]
    assert counted.opens_version == version
