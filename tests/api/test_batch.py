"""POST /external/survey-campaigns/{id}/links/batch: each item as the single create answers it."""

from __future__ import annotations

import asyncio
import json
import random
import re
import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from service.core.auth import SCOPES
from service.web.keys import DRAIN
from tests.helpers import (
    JSON,
    as_bytes,
    create_metadata_field,
    create_survey,
    links_path,
    table_snapshot,
    wait_until,
)

VARYING = ("id", "public_id", "survey_url", "created", "updated")


def batch_path(survey_id: str) -> str:
    return links_path(survey_id) + "/batch"


async def post_batch(client, tenant, survey_id, body, **kw):
    return await client.post(batch_path(survey_id), json=body, headers={**tenant.headers, **kw})


@pytest.fixture
async def fields(client, tenant):
    sku = await create_metadata_field(client, tenant.headers, "SKU Number", "sku")
    date = await create_metadata_field(client, tenant.headers, "Date", "date")
    return {"sku": sku["id"], "date": date["id"]}


async def rows(db, survey_id: str) -> list[tuple[str, str]]:
    found = await db.fetch("SELECT name, metadata_mapping::text AS m FROM survey_links"
                           " WHERE survey_id = $1 ORDER BY id", uuid.UUID(survey_id))
    return [(r["name"], r["m"]) for r in found]


async def link_count(db, survey_id: str) -> int:
    return await db.fetchval("SELECT link_count FROM surveys WHERE id = $1", uuid.UUID(survey_id))


# --- every item shape against the single create -------------------------------------------------

def random_item(rng: random.Random, ids: dict[str, int]) -> Any:
    """A create-link body: mostly valid, with every kind of mistake the single create names, and
    mappings from a small pool so that replays and duplicates within a batch happen."""
    names: list[Any] = ["SKU 1", "  padded  ", "", "   ", "x" * 255, "x" * 256, 123, 1.5, True, None, "a\x00b",
                        ["n"], {"n": 1}]
    body: dict[str, Any] = {}
    if rng.random() < 0.95:
        body["name"] = rng.choice(names) if rng.random() < 0.3 else f"name {rng.randrange(5)}"
    if rng.random() < 0.1:
        body["extra"] = "ignored"
    roll = rng.random()
    if roll < 0.1:
        return body  # no metadata_mapping
    if roll < 0.15:
        body["metadata_mapping"] = rng.choice([None, [], "abc", 5, {"metadata_id": ids["sku"]}])
        return body
    if roll < 0.18:
        body["metadata_mapping"] = [{"metadata_id": ids["sku"], "value": "v"}] * 2  # duplicate id
        return body
    if roll < 0.2:
        body["metadata_mapping"] = [{"metadata_id": ids["date"], "value": i} for i in range(201)]
        return body
    if roll < 0.25:  # a field the organisation does not have, in a mapping valid otherwise
        body["metadata_mapping"] = [{"metadata_id": ids["sku"], "value": "a"}, {"metadata_id": 999_999, "value": 1}]
        return body
    mapping: list[Any] = []  # some items are deliberately not objects
    keys = rng.sample(["sku", "date"], rng.randint(1, 2))
    for key in keys:
        metadata_id: Any = ids[key]
        if rng.random() < 0.08:
            metadata_id = rng.choice([999_999, 0, -1, 2**63, "12x", True, 1.5, None, str(ids[key])])
        value: Any = rng.choice(["a", "b", 1, 1.0, 2, [1, "x", None], None, 2**53 + 1])
        if rng.random() < 0.06:
            value = rng.choice([True, {"a": 1}, "x" * 2001, "nul\x00", [True], [[1]], list(range(201))])
        entry: dict[str, Any] = {"metadata_id": metadata_id, "value": value}
        if rng.random() < 0.05:
            del entry["metadata_id"]
        if rng.random() < 0.05:
            del entry["value"]  # a missing value is null
        mapping.append(entry)
    if rng.random() < 0.03:
        mapping.append(rng.choice(["not an object", 7, None]))
    rng.shuffle(mapping)
    body["metadata_mapping"] = mapping
    return body


def comparable(link: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in link.items() if k not in VARYING}


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_item_is_answered_as_the_single_create_answers_it(client, tenant, fields, db, seed):
    rng = random.Random(seed)
    batch_survey = (await create_survey(client, tenant.headers, linkQuota=12))["id"]
    single_survey = (await create_survey(client, tenant.headers, linkQuota=12))["id"]
    batch_ids: dict[int, int] = {}  # link id of the batch's survey -> the single creates' one
    kinds: set[str] = set()
    for _ in range(3):
        items = [random_item(rng, fields) for _ in range(rng.randint(1, 40))]
        resp = await post_batch(client, tenant, batch_survey, {"links": items})
        assert resp.status == 200, await resp.text()
        assert resp.headers["Cache-Control"] == "private, no-store"
        results = (await resp.json())["results"]
        assert len(results) == len(items)
        for pos, (body, result) in enumerate(zip(items, results, strict=True)):
            single = await client.post(links_path(single_survey), json=body, headers=tenant.headers)
            expected = await single.json()
            assert result["status"] == single.status, (pos, body, result, expected)
            if single.status == 200:
                assert set(result) == {"status", "replayed", "link"}
                assert result["replayed"] == (single.headers.get("Idempotent-Replayed") == "true"), (pos, body)
                assert comparable(result["link"]) == comparable(expected), (pos, body)
                # the same mapping is the same link on both sides
                assert batch_ids.setdefault(result["link"]["id"], expected["id"]) == expected["id"]
                kinds.add("replayed" if result["replayed"] else "created")
            else:
                assert set(result) == {"status", "detail"}
                detail = expected["detail"]
                if isinstance(detail, list):  # each loc under the item
                    detail = [{**issue, "loc": ["body", "links", pos, *issue["loc"][1:]]} for issue in detail]
                assert result["detail"] == detail, (pos, body)
                kinds.update([i["type"] for i in detail] if isinstance(detail, list) else [detail["message"]])
    # the generator reaches each kind of answer: new, replayed, the edge's 422s, the unknown field, the quota
    assert {"created", "replayed", "value_error.missing", "value_error.not_found", "threshold_exceeded"} <= kinds
    assert len(kinds) >= 10
    assert len(batch_ids) == len(set(batch_ids.values()))
    assert [n for n, _ in await rows(db, batch_survey)] == [n for n, _ in await rows(db, single_survey)]
    assert [m for _, m in await rows(db, batch_survey)] == [m for _, m in await rows(db, single_survey)]
    assert await link_count(db, batch_survey) == await link_count(db, single_survey) == len(batch_ids)


# --- idempotency, duplicates, quota ---------------------------------------------------------------

async def test_a_batch_of_exactly_1000_items_is_answered_whole(client, tenant, fields, db):
    """The upper bound itself is accepted: 1,000 new mappings, 1,000 results in request order, 1,000 rows."""
    survey = (await create_survey(client, tenant.headers, linkQuota=1000))["id"]
    items = [{"name": f"SKU {i}", "metadata_mapping": [{"metadata_id": fields["sku"], "value": f"SKU-{i}"}]}
             for i in range(1000)]
    resp = await post_batch(client, tenant, survey, {"links": items})
    assert resp.status == 200, await resp.text()
    results = (await resp.json())["results"]
    assert [(r["status"], r["replayed"]) for r in results] == [(200, False)] * 1000
    assert [r["link"]["name"] for r in results] == [f"SKU {i}" for i in range(1000)]
    assert [r["link"]["metadata_mapping"][0]["value"] for r in results] == [f"SKU-{i}" for i in range(1000)]
    assert len({r["link"]["id"] for r in results}) == 1000
    # each its own 96 random bits (the batch slices one draw), and the organisation on every row
    public_ids = [r["link"]["public_id"] for r in results]
    assert len(set(public_ids)) == 1000 and all(re.fullmatch(r"[0-9a-f]{24}", p) for p in public_ids)
    assert await db.fetchval("SELECT array_agg(DISTINCT org_id) FROM survey_links WHERE survey_id = $1",
                             uuid.UUID(survey)) == [tenant.org_id]
    assert [n for n, _ in await rows(db, survey)] == [f"SKU {i}" for i in range(1000)]
    assert await link_count(db, survey) == 1000


async def test_the_same_mapping_twice_in_a_batch_is_one_link(client, tenant, fields, db):
    survey = (await create_survey(client, tenant.headers))["id"]
    sku, date = fields["sku"], fields["date"]
    items = [
        {"name": "first", "metadata_mapping": [{"metadata_id": sku, "value": "A"}, {"metadata_id": date, "value": 1}]},
        {"name": "second", "metadata_mapping": [{"metadata_id": date, "value": 1.0},
                                                {"metadata_id": sku, "value": "A"}]},
        {"name": "other", "metadata_mapping": [{"metadata_id": sku, "value": "B"}]},
        {"name": "third", "metadata_mapping": [{"metadata_id": sku, "value": "A"}, {"metadata_id": date, "value": 1}]},
    ]
    resp = await post_batch(client, tenant, survey, {"links": items})
    assert resp.status == 200
    results = (await resp.json())["results"]
    assert [(r["status"], r["replayed"]) for r in results] == [(200, False), (200, True), (200, False), (200, True)]
    first = results[0]["link"]
    assert results[1]["link"] == first == results[3]["link"]
    assert first["name"] == "first"
    assert results[2]["link"]["id"] != first["id"]
    assert [n for n, _ in await rows(db, survey)] == ["first", "other"]
    assert await link_count(db, survey) == 2

    # again: every item a replay, answered from the replay cache (one key per mapping)
    again = await post_batch(client, tenant, survey, {"links": items})
    assert [(r["status"], r["replayed"]) for r in (await again.json())["results"]] == [(200, True)] * 4
    assert [r["link"] for r in (await again.json())["results"]] == [r["link"] for r in results]
    assert await link_count(db, survey) == 2


async def test_batch_and_single_creates_replay_each_other(client, tenant, fields, redis_url, db):
    survey = (await create_survey(client, tenant.headers))["id"]
    single = await client.post(links_path(survey), json={
        "name": "single", "metadata_mapping": [{"metadata_id": fields["sku"], "value": "S"}]}, headers=tenant.headers)
    assert single.status == 200
    made = await single.json()
    resp = await post_batch(client, tenant, survey, {"links": [
        {"name": "n", "metadata_mapping": [{"metadata_id": fields["sku"], "value": "S"}]},
        {"name": "new", "metadata_mapping": [{"metadata_id": fields["sku"], "value": "T"}]},
    ]})
    results = (await resp.json())["results"]
    assert results[0] == {"status": 200, "replayed": True, "link": made}
    assert results[1]["replayed"] is False
    r = aioredis.from_url(redis_url)
    try:
        keys = sorted(as_bytes(k).decode() for k in await r.keys(f"{{o:{tenant.org}}}:lk:*"))
    finally:
        await r.aclose()
    assert len(keys) == 2 and all(survey in k for k in keys)  # the batch's answer is cached too
    replay = await client.post(links_path(survey), json={
        "name": "z", "metadata_mapping": [{"metadata_id": fields["sku"], "value": "T"}]}, headers=tenant.headers)
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert await replay.json() == results[1]["link"]
    assert await link_count(db, survey) == 2


async def test_items_past_the_quota_are_refused_and_replays_never_are(client, tenant, fields, db):
    survey = (await create_survey(client, tenant.headers, linkQuota=3))["id"]
    sku = fields["sku"]
    first = await post_batch(client, tenant, survey, {"links": [
        {"name": "a", "metadata_mapping": [{"metadata_id": sku, "value": "a"}]}]})
    assert (await first.json())["results"][0]["status"] == 200
    values = ["b", "c", "d", "a", "b", "e"]
    resp = await post_batch(client, tenant, survey, {"links": [
        {"name": v, "metadata_mapping": [{"metadata_id": sku, "value": v}]} for v in values]})
    results = (await resp.json())["results"]
    refused = {"status": 422, "detail": {"message": "threshold_exceeded",
                                         "params": {"model": "survey_link", "threshold": 3}}}
    assert [(r["status"], r.get("replayed")) for r in results] == [
        (200, False), (200, False), (422, None), (200, True), (200, True), (422, None)]
    assert results[2] == refused == results[5]
    assert sorted(n for n, _ in await rows(db, survey)) == ["a", "b", "c"]
    assert await link_count(db, survey) == 3


async def test_concurrent_batches_and_single_creates_keep_the_quota_exactly(client, tenant, fields, db):
    quota = 100
    survey = (await create_survey(client, tenant.headers, linkQuota=quota))["id"]
    sku = fields["sku"]
    rng = random.Random(7)
    pool = [f"m{i}" for i in range(160)]

    def body(value: str) -> dict[str, Any]:
        return {"name": value, "metadata_mapping": [{"metadata_id": sku, "value": value}]}

    batches = [rng.sample(pool, 60) for _ in range(8)]
    singles = [rng.choice(pool) for _ in range(50)]

    async def batch(values):
        resp = await post_batch(client, tenant, survey, {"links": [body(v) for v in values]})
        assert resp.status == 200
        return list(zip(values, (await resp.json())["results"], strict=True))

    async def single(value):
        resp = await client.post(links_path(survey), json=body(value), headers=tenant.headers)
        data = await resp.json()
        if resp.status == 200:
            return [(value, {"status": 200, "replayed": "Idempotent-Replayed" in resp.headers, "link": data})]
        return [(value, {"status": resp.status, **data})]

    answers = [a for group in await asyncio.gather(*map(batch, batches), *map(single, singles)) for a in group]
    stored = await db.fetch("SELECT id, name, metadata_mapping->0->>'value' AS v FROM survey_links"
                            " WHERE survey_id = $1", uuid.UUID(survey))
    by_value = {r["v"]: r["id"] for r in stored}
    assert len(stored) == quota == len(by_value)  # exactly the quota, one link per mapping
    assert await link_count(db, survey) == quota
    created = 0
    for value, answer in answers:
        if answer["status"] == 200:
            assert answer["link"]["id"] == by_value[value]
            created += not answer["replayed"]
        else:
            assert answer["detail"]["message"] == "threshold_exceeded"
            assert value not in by_value  # a refused mapping was never made afterwards
    assert created == quota  # each link answered as new exactly once


# --- the whole call -------------------------------------------------------------------------------

LINKS_LOC = ["body", "links"]


@pytest.mark.parametrize(("raw", "detail"), [
    (b"{", [{"loc": ["body", 1], "msg": "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
             "type": "value_error.jsondecode",
             "ctx": {"msg": "Expecting property name enclosed in double quotes", "doc": "{", "pos": 1,
                     "lineno": 1, "colno": 2}}]),
    (b"", [{"loc": ["body"], "msg": "field required", "type": "value_error.missing"}]),
    (b"null", [{"loc": ["body"], "msg": "field required", "type": "value_error.missing"}]),
    (b"[]", [{"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"}]),
    (b'"links"', [{"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"}]),
    (b"{}", [{"loc": LINKS_LOC, "msg": "field required", "type": "value_error.missing"}]),
    (b'{"link": []}', [{"loc": LINKS_LOC, "msg": "field required", "type": "value_error.missing"}]),
    (b'{"links": null}', [{"loc": LINKS_LOC, "msg": "none is not an allowed value",
                           "type": "type_error.none.not_allowed"}]),
    (b'{"links": {"name": "a"}}', [{"loc": LINKS_LOC, "msg": "value is not a valid list", "type": "type_error.list"}]),
    (b'{"links": "abc"}', [{"loc": LINKS_LOC, "msg": "value is not a valid list", "type": "type_error.list"}]),
    (b'{"links": []}', [{"loc": LINKS_LOC, "msg": "ensure this value has at least 1 items",
                         "type": "value_error.list.min_items", "ctx": {"limit_value": 1}}]),
    (b'{"links": [' + b",".join([b'{"name": "a"}'] * 1001) + b"]}",
     [{"loc": LINKS_LOC, "msg": "ensure this value has at most 1000 items", "type": "value_error.list.max_items",
       "ctx": {"limit_value": 1000}}]),
    (b'{"links": [{"name": "a"}, 1, null, "x", [], {"name": "b"}]}',
     [{"loc": [*LINKS_LOC, i], "msg": "value is not a valid dict", "type": "type_error.dict"} for i in (1, 2, 3, 4)]),
])
async def test_a_malformed_envelope_is_422_as_a_whole(client, tenant, fields, db, raw, detail):
    survey = (await create_survey(client, tenant.headers))["id"]
    before = await table_snapshot(db)
    resp = await client.post(batch_path(survey), data=raw, headers={**tenant.headers, **JSON})
    assert resp.status == 422
    assert await resp.json() == {"detail": detail}
    assert await table_snapshot(db) == before


async def test_the_whole_call_refusals(client, tenant, make_tenant, fields):
    survey = (await create_survey(client, tenant.headers))["id"]
    ok = {"links": [{"name": "a"}]}
    assert (await client.post(batch_path(survey), json=ok)).status == 401
    reader = await make_tenant(scopes=tuple(s for s in SCOPES if s != "links:write"))
    resp = await post_batch(client, reader, survey, ok)
    assert (resp.status, await resp.json()) == (403, {"detail": "Permission denied"})
    resp = await post_batch(client, tenant, survey, ok, **{"organization-id": str(uuid.uuid4())})
    assert resp.status == 403
    resp = await post_batch(client, tenant, str(uuid.uuid4()), ok)
    assert (resp.status, await resp.json()) == (
        404, {"detail": {"message": "not_found", "params": {"model": "survey_campaign"}}})
    resp = await post_batch(client, tenant, "not-a-uuid", ok)
    assert (resp.status, await resp.json()) == (422, {"detail": [
        {"loc": ["path", "survey_campaign_id"], "msg": "value is not a valid uuid", "type": "type_error.uuid"}]})
    other = await make_tenant()  # another organisation's survey is as absent as a missing one
    assert (await post_batch(client, other, survey, ok)).status == 404


async def test_a_batch_spends_one_rate_limit_token(client, make_tenant, redis_url):
    tenant = await make_tenant(rate_limit="5/minute")
    await create_metadata_field(client, tenant.headers, "SKU")  # spends one
    survey = (await create_survey(client, tenant.headers))["id"]  # and one
    resp = await post_batch(client, tenant, survey, {"links": [{"name": f"n{i}"} for i in range(50)]})
    assert resp.status == 200
    assert resp.headers["RateLimit"].startswith('"minute";r=2;')
    r = aioredis.from_url(redis_url)
    try:
        tokens = float(as_bytes(await r.hget(f"{{o:{tenant.org}}}:rl", "t60")))
    finally:
        await r.aclose()
    assert 2 <= tokens < 3  # three spent (and a little refilled), not fifty-two


async def test_a_batch_that_fails_midway_writes_nothing(client, tenant, fields, db):
    survey = (await create_survey(client, tenant.headers))["id"]
    sku = fields["sku"]
    # an item PostgreSQL refuses at insert time, after the others of its statement were inserted
    await db.execute("""
        CREATE FUNCTION refuse_batch_test() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.name = 'explode' THEN RAISE EXCEPTION 'refused by the test'; END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_batch_test BEFORE INSERT ON survey_links
            FOR EACH ROW EXECUTE FUNCTION refuse_batch_test();
    """)
    try:
        before = await table_snapshot(db)
        names = ["a", "b", "explode", "c"]
        resp = await post_batch(client, tenant, survey, {"links": [
            {"name": n, "metadata_mapping": [{"metadata_id": sku, "value": n}]} for n in names]})
        assert resp.status == 500
        assert await resp.json() == {"detail": "Internal server error"}
        assert await table_snapshot(db) == before
        assert await rows(db, survey) == [] and await link_count(db, survey) == 0
    finally:
        await db.execute("DROP TRIGGER refuse_batch_test ON survey_links; DROP FUNCTION refuse_batch_test()")
    # and the same batch without the refused item goes through whole
    resp = await post_batch(client, tenant, survey, {"links": [
        {"name": n, "metadata_mapping": [{"metadata_id": sku, "value": n}]} for n in names]})
    assert [r["replayed"] for r in (await resp.json())["results"]] == [False] * 4
    assert await link_count(db, survey) == 4


async def test_a_link_stored_under_the_legacy_hash_replays_in_a_batch(client, make_tenant, db):
    """As the single create: 2**53 + 1 stored earlier as the double 9007199254740992.0 is that link."""
    from service.core.mapping import legacy_mapping_hash

    tenant = await make_tenant(link_quota=2)
    survey = (await create_survey(client, tenant.headers))["id"]
    field = (await create_metadata_field(client, tenant.headers, "order"))["id"]
    stored = await db.fetchval(
        "INSERT INTO survey_links (org_id, public_id, survey_id, mapping_hash, name, metadata_mapping)"
        " VALUES ((SELECT org_id FROM surveys WHERE id = $1), '0123456789abcdef', $1, $2, 'stored before', $3)"
        " RETURNING id",
        uuid.UUID(survey), legacy_mapping_hash([(field, 2**53 + 1)]),
        json.dumps([{"metadata_id": field, "value": 9007199254740992.0}]))
    await db.execute("UPDATE surveys SET link_count = 1 WHERE id = $1", uuid.UUID(survey))
    values = [2**53 + 1, 2**53 + 3, 2**53, 2**53 + 5]
    resp = await post_batch(client, tenant, survey, {"links": [
        {"name": "again", "metadata_mapping": [{"metadata_id": field, "value": v}]} for v in values]})
    results = (await resp.json())["results"]
    assert [(r["status"], r.get("replayed")) for r in results] == [(200, True), (200, False), (200, True), (422, None)]
    assert results[0]["link"]["id"] == results[2]["link"]["id"] == stored
    assert results[1]["link"]["metadata_mapping"][0]["value"] == 2**53 + 3  # exact
    assert await link_count(db, survey) == 2


@pytest.mark.parametrize("pipelined", [True, False])
async def test_the_replay_cache_reads_and_writes_many_keys_at_once(redis_url, pipelined):
    """Both ways to Redis (the lean pipe, and redis-py for a cluster or TLS), and Redis gone."""
    from service.core.redis_pipe import PipelinedRedis
    from service.core.replay_cache import ReplayCache

    client = aioredis.from_url(redis_url)
    pipe = PipelinedRedis.for_client(client) if pipelined else None
    cache = ReplayCache(client, pipe)
    epoch = "{o:x}:lke:s"
    try:
        keys = [f"{{o:x}}:lk:{i}" for i in range(300)]
        # no epoch yet: nothing answers, and the first writes put one in place (remember_many.lua)
        assert await cache.get_many(keys, epoch) == ([None] * 300, None)
        await cache.set_many([(k, f"v{i}".encode()) for i, k in enumerate(keys[:200])], 60, epoch, None)
        seen = as_bytes(await client.get(epoch))
        assert len(seen) == 16
        assert await cache.get_many(keys, epoch) == ([f"v{i}".encode() for i in range(200)] + [None] * 100, seen)
        assert await client.get(keys[0]) == seen + b"v0"  # each entry carries the epoch it was written under
        assert 0 < await client.ttl(keys[0]) <= 60 and await client.ttl(keys[199]) > 0
        assert await cache.get_many([], epoch) == ([], None)
        # the epoch moved on (a revocation): no entry answers, and a write under the old one is refused
        await cache.move_epoch(epoch, 60)
        moved = as_bytes(await client.get(epoch))
        assert await cache.get_many(keys, epoch) == ([None] * 300, moved)
        await cache.set_many([(keys[250], b"late")], 60, epoch, seen)
        assert await client.exists(keys[250]) == 0
        # the script flushed: loaded again, the writes go through
        await client.script_flush()
        await cache.set_many([(keys[250], b"again")], 60, epoch, moved)
        assert await cache.get_many([keys[250]], epoch) == ([b"again"], moved)
    finally:
        await cache.aclose()
        await client.aclose()
    gone = aioredis.from_url("redis://127.0.0.1:1", socket_connect_timeout=1)
    down = ReplayCache(gone, PipelinedRedis.for_client(gone) if pipelined else None)
    try:
        await down.set_many([("{o:x}:lk:a", b"v")], 60, "{o:x}:lke:s", None)  # best effort: no error
        assert await down.get_many(["{o:x}:lk:a", "{o:x}:lk:b"], "{o:x}:lke:s") == ([None, None], None)
    finally:
        await down.aclose()
        await gone.aclose()


async def test_the_stored_links_are_looked_up_one_index_probe_a_hash(db):
    """Also in a generic plan (the connection's cached statement, with statistics from when the
    survey was small): never every link of the survey against every hash."""
    from service.db.batch_links import LIVE_LINKS

    def nodes(plan):
        yield plan
        for child in plan.get("Plans", []):
            yield from nodes(child)

    async with db.transaction():
        await db.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        plan = (await (await db.prepare(LIVE_LINKS)).explain(uuid.uuid4(), [bytes(32)] * 1000, uuid.uuid4()))[0]["Plan"]
    kinds = [(n["Node Type"], n.get("Relation Name")) for n in nodes(plan)]
    assert kinds[0] == ("Nested Loop", None) and ("Function Scan", None) in kinds, kinds
    assert [k for k in kinds if k[1] == "survey_links"] == [("Index Scan", "survey_links")], kinds


async def test_a_client_gone_half_way_through_its_batch_writes_nothing(aiohttp_client, settings, tenant, fields, db):
    from dataclasses import replace

    from service.app import create_app

    client = await aiohttp_client(create_app(replace(settings, body_timeout_seconds=1)))
    survey = (await create_survey(client, tenant.headers))["id"]
    body = json.dumps({"links": [{"name": f"n{i}", "metadata_mapping": [{"metadata_id": fields["sku"], "value": i}]}
                                 for i in range(1000)]}).encode()
    before = await table_snapshot(db)
    _, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"POST {batch_path(survey)} HTTP/1.1\r\nHost: x\r\nx-api-key: {tenant.key}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                 + body[:len(body) // 2])
    await writer.drain()
    drain = client.app[DRAIN]

    async def started():
        return drain.active == 1

    async def done():
        return drain.active == 0

    assert await wait_until(started, 5, 0.01)  # the handler is reading the body
    writer.close()
    await writer.wait_closed()
    # the server is done with it (the client's leaving ends it, at the latest the body's time limit)
    assert await wait_until(done, 10, 0.05)
    resp = await post_batch(client, tenant, survey, {"links": [{"name": "after"}]})
    assert resp.status == 200
    assert await rows(db, survey) == [("after", "[]")]
    after = await table_snapshot(db)
    changed = {t for t in after if after[t] != before[t]}
    assert changed <= {"survey_links", "surveys"} and await link_count(db, survey) == 1


async def test_the_same_bytes_sent_as_another_content_type_are_still_refused_whole(client, tenant, fields, db):
    """A batch read once is remembered by its bytes: not across content types."""
    survey = (await create_survey(client, tenant.headers))["id"]
    raw = json.dumps({"links": [{"name": "a"}]}).encode()
    first = await client.post(batch_path(survey), data=raw, headers={**tenant.headers, **JSON})
    assert first.status == 200
    again = await client.post(batch_path(survey), data=raw, headers={**tenant.headers, "Content-Type": "text/plain"})
    assert (again.status, await again.json()) == (
        422, {"detail": [{"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"}]})
    other = (await create_survey(client, tenant.headers))["id"]  # and not across campaigns
    resp = await client.post(batch_path(other), data=raw, headers={**tenant.headers, **JSON})
    assert (await resp.json())["results"][0]["replayed"] is False
    assert await link_count(db, survey) == await link_count(db, other) == 1
