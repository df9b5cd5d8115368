"""PATCH and DELETE /segments/{id}: exact bodies, counts and pages follow new filters at once (cached or not,
on any worker), validation, isolation."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
import redis.asyncio as aioredis

from service.app import create_app
from service.core.segment_cache import cache_key, filters_digest, segment_total
from service.web.keys import POOL, SEGMENT_CACHE
from tests.contact_helpers import SEGMENTS, bulk, create_segment, error, page, segment_links_path
from tests.helpers import create_survey, table_snapshot

PRO = {"attribute": "plan", "op": "equals", "value": "pro"}
FREE = {"attribute": "plan", "op": "equals", "value": "free"}


@pytest.fixture
async def people(client, tenant, db):
    """150 pro and 80 free contacts (so pages remember positions at 50 and 100), a survey."""
    await bulk(client, tenant.headers, [{"email": f"p{i}@x.io", "plan": "pro"} for i in range(150)])
    await bulk(client, tenant.headers, [{"email": f"f{i}@x.io", "plan": "free"} for i in range(80)])
    survey = await create_survey(client, tenant.headers)
    return {"survey": survey["id"]}


async def members(db, tenant, plan: str) -> list[str]:
    """The truth: the plan's contacts in page order."""
    rows = await db.fetch("SELECT id FROM contacts WHERE org_id = $1 AND attributes->>'plan' = $2"
                          " ORDER BY created_at DESC, id DESC", tenant.org_id, plan)
    return [str(r["id"]) for r in rows]


async def get_segment(client, headers, segment_id):
    return await client.get(f"{SEGMENTS}/{segment_id}", headers=headers)


async def version_of(db, tenant) -> int:
    """How many contact write transactions the organisation recorded (contact_changes)."""
    return await db.fetchval("SELECT count(*) FROM contact_changes WHERE org_id = $1", tenant.org_id)


async def test_patch_answers_the_segment_as_get_does(client, tenant, people, db):
    segment = await create_segment(client, tenant.headers, PRO, title="Pros")
    contacts_version = await version_of(db, tenant)
    resp = await client.patch(f"{SEGMENTS}/{segment['id']}", json={"title": "  Payers "}, headers=tenant.headers)
    assert resp.status == 200
    renamed = {**segment, "title": "Payers"}  # trimmed, as on creation
    assert await resp.json() == {"data": renamed}
    new_filters = {"or": [FREE, {"attribute": "plan", "op": "isSet", "value": None}], "extra": None}
    resp = await client.patch(f"{SEGMENTS}/{segment['id']}", json={"filters": new_filters}, headers=tenant.headers)
    assert resp.status == 422  # a malformed tree is refused whole
    resp = await client.patch(f"{SEGMENTS}/{segment['id']}", json={"filters": {"or": [FREE, {
        "attribute": "age", "op": "greaterEqual", "value": 18}]}}, headers=tenant.headers)
    assert resp.status == 200
    body = await resp.json()
    assert body == {"data": {"id": segment["id"], "title": "Payers", "contactCount": 80,
                             "createdAt": segment["createdAt"],
                             "filters": {"or": [FREE, {"attribute": "age", "op": "greaterEqual", "value": 18}]}}}
    got = await get_segment(client, tenant.headers, segment["id"])
    assert (got.status, await got.json()) == (200, body)
    row = await db.fetchrow("SELECT title, filters::text AS f FROM segments WHERE id = $1", uuid.UUID(segment["id"]))
    assert (row["title"], orjson.loads(row["f"])) == ("Payers", body["data"]["filters"])
    # both at once, and the normalised tree is what is stored (contactId values as integers, no isSet value)
    both = {"title": "Static", "filters": {"and": [{"attribute": "contactId", "op": "in", "value": ["1", 2]},
                                                   {"attribute": "plan", "op": "isSet", "value": None}]}}
    resp = await client.patch(f"{SEGMENTS}/{segment['id']}", json=both, headers=tenant.headers)
    assert (await resp.json())["data"]["filters"] == {"and": [{"attribute": "contactId", "op": "in", "value": [1, 2]},
                                                              {"attribute": "plan", "op": "isSet"}]}
    # an empty body changes nothing
    resp = await client.patch(f"{SEGMENTS}/{segment['id']}", json={}, headers=tenant.headers)
    assert (await resp.json())["data"]["title"] == "Static"
    assert await version_of(db, tenant) == contacts_version  # editing a segment writes no contact


async def test_pages_and_counts_follow_new_filters_even_when_cached(client, tenant, people, db, redis_url,
                                                                    aiohttp_client, settings):
    """One worker pages (and caches) the segment, another edits it: the first answers for the new filters."""
    other_worker = await aiohttp_client(create_app(settings))
    survey = people["survey"]
    segment = await create_segment(client, tenant.headers, PRO)
    pros, frees = await members(db, tenant, "pro"), await members(db, tenant, "free")
    for skip in (0, 50, 100):
        body = await page(client, tenant.headers, survey, segment["id"], limit=50, skip=skip)
        assert [i["contactId"] for i in body["data"]] == pros[skip:skip + 50] and body["meta"]["total"] == 150
    version = await version_of(db, tenant)
    r = aioredis.Redis.from_url(redis_url)
    key = cache_key(tenant.org_id, uuid.UUID(segment["id"]))
    assert await r.hmget(key, ["f", "t"]) == [filters_digest(PRO).encode(), b"150"]  # the cache is warm

    resp = await other_worker.patch(f"{SEGMENTS}/{segment['id']}", json={"filters": FREE}, headers=tenant.headers)
    assert (resp.status, (await resp.json())["data"]["contactCount"]) == (200, 80)
    assert await version_of(db, tenant) == version  # no contact was written: only the filters changed
    for worker in (client, other_worker):
        body = await page(worker, tenant.headers, survey, segment["id"], limit=50, skip=50)
        assert ([i["contactId"] for i in body["data"]], body["meta"]["total"]) == (frees[50:80], 80)
        body = await page(worker, tenant.headers, survey, segment["id"], limit=50, skip=0)
        assert ([i["contactId"] for i in body["data"]], body["meta"]["total"]) == (frees[:50], 80)
        got = await get_segment(worker, tenant.headers, segment["id"])
        assert (await got.json())["data"]["contactCount"] == 80
    assert await r.hmget(key, ["f", "t"]) == [filters_digest(FREE).encode(), b"80"]
    # a reader that read the old filters just before the edit counts and remembers them after it: the
    # entry then holds the old digest, and the next reader of the new filters counts instead of using it
    cache = client.app[SEGMENT_CACHE]
    assert await segment_total(cache, client.app[POOL], db, tenant.org_id, uuid.UUID(segment["id"]), PRO,
                               None, None) == 150
    assert await r.hmget(key, ["f", "t"]) == [filters_digest(PRO).encode(), b"150"]
    for worker in (client, other_worker):
        body = await page(worker, tenant.headers, survey, segment["id"], limit=50, skip=50)
        assert ([i["contactId"] for i in body["data"]], body["meta"]["total"]) == (frees[50:80], 80)
    # back to the first filters: counted for them again
    await client.patch(f"{SEGMENTS}/{segment['id']}", json={"filters": PRO}, headers=tenant.headers)
    body = await page(other_worker, tenant.headers, survey, segment["id"], limit=50, skip=100)
    assert ([i["contactId"] for i in body["data"]], body["meta"]["total"]) == (pros[100:150], 150)
    await r.aclose()


def test_the_digest_follows_the_tree_not_its_spelling():
    one = {"and": [{"attribute": "plan", "op": "equals", "value": "pro"}]}
    same = {"and": [{"value": "pro", "op": "equals", "attribute": "plan"}]}
    assert filters_digest(one) == filters_digest(same)
    others: list[dict[str, Any]] = [{"and": [{"attribute": "plan", "op": "equals", "value": "Pro"}]}, {},
                                    {"or": []}, {"and": []}]
    assert len({filters_digest(t) for t in [one, *others]}) == 5


async def test_delete_makes_the_segment_and_its_pages_404(client, tenant, people, db):
    segment = await create_segment(client, tenant.headers, PRO)
    await page(client, tenant.headers, people["survey"], segment["id"])
    contacts_before = await db.fetchval("SELECT count(*) FROM contacts WHERE org_id = $1", tenant.org_id)
    resp = await client.delete(f"{SEGMENTS}/{segment['id']}", headers=tenant.headers)
    assert (resp.status, await resp.read()) == (204, b"")
    assert await db.fetchval("SELECT count(*) FROM segments WHERE id = $1", uuid.UUID(segment["id"])) == 0
    assert await db.fetchval("SELECT count(*) FROM contacts WHERE org_id = $1", tenant.org_id) == contacts_before
    not_found = error(404, "Not Found", [{"field": "segmentId", "issue": "not found"}])
    for resp in (await get_segment(client, tenant.headers, segment["id"]),
                 await client.get(segment_links_path(people["survey"], segment["id"]), headers=tenant.headers),
                 await client.get(segment_links_path(people["survey"], segment["id"]) + "/export",
                                  headers=tenant.headers),
                 await client.delete(f"{SEGMENTS}/{segment['id']}", headers=tenant.headers),
                 await client.patch(f"{SEGMENTS}/{segment['id']}", json={"title": "x"}, headers=tenant.headers)):
        assert (resp.status, await resp.json()) == (404, not_found)


async def test_another_organisations_segment_is_404_and_unchanged(client, tenant, make_tenant, db):
    other = await make_tenant(name="other")
    theirs = await create_segment(client, other.headers, PRO, title="Theirs")
    snapshot = await table_snapshot(db)
    not_found = error(404, "Not Found", [{"field": "segmentId", "issue": "not found"}])
    for segment_id in (theirs["id"], str(uuid.uuid4()), "not-a-uuid"):
        resp = await client.patch(f"{SEGMENTS}/{segment_id}", json={"title": "Mine"}, headers=tenant.headers)
        assert (resp.status, await resp.json()) == (404, not_found)
        resp = await client.delete(f"{SEGMENTS}/{segment_id}", headers=tenant.headers)
        assert (resp.status, await resp.json()) == (404, not_found)
    assert await table_snapshot(db) == snapshot
    assert (await (await get_segment(client, other.headers, theirs["id"])).json())["data"]["title"] == "Theirs"


async def test_patch_validation_is_422_naming_the_field(client, tenant, db):
    segment = await create_segment(client, tenant.headers, PRO, title="Pros")
    snapshot = await table_snapshot(db)
    cases = [
        ({"title": ""}, [{"field": "title", "issue": "ensure this value has at least 1 characters"}]),
        ({"title": "x" * 256}, [{"field": "title", "issue": "ensure this value has at most 255 characters"}]),
        ({"title": None}, [{"field": "title", "issue": "none is not an allowed value"}]),
        ({"filters": None}, [{"field": "filters", "issue": "none is not an allowed value"}]),
        ({"filters": []}, [{"field": "filters", "issue": "value is not a valid dict"}]),
        ({"filters": {"and": [PRO, {"attribute": "plan", "op": "bogus", "value": 1}]}},
         [{"field": "filters.and.1.op", "issue": "value is not a valid enumeration member; permitted: "
           + ", ".join(repr(o) for o in ("equals", "notEquals", "contains", "doesNotContain", "startsWith",
                                         "endsWith", "greaterThan", "greaterEqual", "lessThan", "lessEqual", "in",
                                         "isSet", "isNotSet"))}]),
        ({"filters": {"or": [{"attribute": "contactId", "op": "equals", "value": 1}]}, "x": 1},
         [{"field": "filters.or.0.op", "issue": "contactId supports only the in operator"},
          {"field": "x", "issue": "extra fields not permitted"}]),
    ]
    for body, details in cases:
        resp = await client.patch(f"{SEGMENTS}/{segment['id']}", json=body, headers=tenant.headers)
        assert (resp.status, await resp.json()) == (422, error(422, "Unprocessable Entity", details)), body
    assert await table_snapshot(db) == snapshot
