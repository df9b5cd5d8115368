"""POST /external/survey-campaigns/{id}/links: statuses, exact bodies, idempotency, quota."""

from __future__ import annotations

import asyncio
import io
import json
import re
import time
import uuid

import pytest
import redis.asyncio as aioredis

from service.core.auth import SCOPES
from service.web.keys import GATE, KEYS
from tests.helpers import JSON, create_metadata_field, create_survey, links_path, wait_until
from tests.ops.metrics_text import parse_samples
from tests.ops.metrics_text import value as sample

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
async def campaign(client, tenant):
    survey = await create_survey(client, tenant.headers)
    sku = await create_metadata_field(client, tenant.headers, "SKU Number")
    date = await create_metadata_field(client, tenant.headers, "Date", "date")
    return {"id": survey["id"], "sku": sku, "date": date}


async def post_link(client, tenant, survey_id, body, **headers):
    return await client.post(links_path(survey_id), json=body, headers={**tenant.headers, **headers})


async def count_links(db, survey_id) -> int:
    return await db.fetchval("SELECT count(*) FROM survey_links WHERE survey_id = $1", uuid.UUID(survey_id))


async def test_creates_link_with_reference_shape(client, tenant, campaign, db):
    body = {"name": "  SKU 12345 - Link 001  ", "metadata_mapping": [
        {"metadata_id": campaign["sku"]["id"], "value": "SKU-12345"},
        {"metadata_id": campaign["date"]["id"], "value": "2024-01-15"},
    ]}
    resp = await post_link(client, tenant, campaign["id"], body)
    assert resp.status == 200
    assert "Idempotent-Replayed" not in resp.headers
    assert resp.headers["Cache-Control"] == "private, no-store"  # a personal link
    data = await resp.json()
    assert set(data) == {"id", "public_id", "name", "metadata_mapping", "survey_url", "created", "updated"}
    assert isinstance(data["id"], int)
    assert data["name"] == "SKU 12345 - Link 001"
    assert data["metadata_mapping"] == [
        {"metadata": {"id": campaign["sku"]["id"], "name": "SKU Number", "variable": "SKU Number"},
         "value": "SKU-12345"},
        {"metadata": {"id": campaign["date"]["id"], "name": "Date", "variable": "date"}, "value": "2024-01-15"},
    ]
    assert ISO.match(data["created"]) and data["created"] == data["updated"]
    assert re.fullmatch(r"[0-9a-f]{24}", data["public_id"])  # 96 random bits: the open's only key (0008)
    assert data["survey_url"].startswith(f"http://links.test/l/t1.{data['public_id']}.")
    row = await db.fetchrow("SELECT name, public_id, org_id FROM survey_links WHERE id = $1", data["id"])
    assert (row["name"], row["public_id"], row["org_id"]) == ("SKU 12345 - Link 001", data["public_id"], tenant.org_id)
    assert await count_links(db, campaign["id"]) == 1
    survey_count = await db.fetchval("SELECT link_count FROM surveys WHERE id = $1", uuid.UUID(campaign["id"]))
    assert survey_count == 1


async def test_bearer_and_filum_headers_are_accepted(client, tenant, campaign):
    headers = {"Authorization": f"Bearer {tenant.key}", "organization-id": tenant.org, "auth-type": "token",
               **JSON}
    resp = await client.post(links_path(campaign["id"]), json={"name": "x"}, headers=headers)
    assert resp.status == 200


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ([("sku", "A"), ("date", "B")], [("date", "B"), ("sku", "A")]),  # order of items
        ([("sku", 1)], [("sku", 1.0)]),  # 1 == 1.0
        ([("sku", [1, "x", None])], [("sku", [1.0, "x", None])]),
        ([("sku", 10**18)], [("sku", 1e18)]),  # an integral float is the integer it equals
        (None, []),  # absent == []
        ([("sku", None)], [("sku", None)]),
    ],
)
async def test_same_mapping_replays_same_link(client, tenant, campaign, db, first, second):
    def body(items, name):
        if items is None:
            return {"name": name}
        return {"name": name, "metadata_mapping": [{"metadata_id": campaign[k]["id"], "value": v} for k, v in items]}

    created = await post_link(client, tenant, campaign["id"], body(first, "first"))
    assert created.status == 200
    replay = await post_link(client, tenant, campaign["id"], body(second, "another name"))
    assert replay.status == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert await replay.json() == await created.json()
    assert await count_links(db, campaign["id"]) == 1


async def test_different_values_give_different_links(client, tenant, campaign, db):
    sku = campaign["sku"]["id"]
    # integers past 2**53 are distinct although a double cannot tell them apart (19-digit order numbers)
    variants = ["SKU-1", "sku-1", "SKU-1 ", 1, "1", [1, 2], [2, 1], None,
                2**53, 2**53 + 1, 12345678901234567890, 12345678901234567891]
    ids = set()
    for value in variants:
        resp = await post_link(client, tenant, campaign["id"], {"name": "n", "metadata_mapping": [
            {"metadata_id": sku, "value": value}]})
        assert resp.status == 200, value
        assert "Idempotent-Replayed" not in resp.headers
        data = await resp.json()
        assert [item["value"] for item in data["metadata_mapping"]] == [value]  # answered exactly as sent
        ids.add(data["id"])
    assert len(ids) == len(variants)
    assert await count_links(db, campaign["id"]) == len(variants)


async def test_a_link_stored_before_integers_stayed_exact_still_replays_at_full_quota(client, make_tenant, db):
    """Stored earlier, 2**53 + 1 was hashed as the double 9007199254740992.0: asked again, that link
    is the answer (not a second link, nor a quota refusal)."""
    from service.core.mapping import legacy_mapping_hash

    tenant = await make_tenant(link_quota=1)
    survey = await create_survey(client, tenant.headers)
    field = await create_metadata_field(client, tenant.headers, "order")
    legacy = legacy_mapping_hash([(field["id"], 2**53 + 1)])
    stored = await db.fetchrow(
        "INSERT INTO survey_links (org_id, public_id, survey_id, mapping_hash, name, metadata_mapping)"
        " VALUES ((SELECT org_id FROM surveys WHERE id = $1), '0123456789abcdef', $1, $2, 'stored before', $3)"
        " RETURNING id",
        uuid.UUID(survey["id"]), legacy, json.dumps([{"metadata_id": field["id"], "value": 9007199254740992.0}]))
    await db.execute("UPDATE surveys SET link_count = 1 WHERE id = $1", uuid.UUID(survey["id"]))
    # from PostgreSQL, then from the replay cache; 2**53 rounds to the same double, so it is that link
    # too, as it was when the link was stored (README: it stands for every integer that rounds to it)
    for number in (2**53 + 1, 2**53 + 1, 2**53):
        resp = await post_link(client, tenant, survey["id"], {"name": "again", "metadata_mapping": [
            {"metadata_id": field["id"], "value": number}]})
        assert resp.status == 200, await resp.text()
        assert resp.headers["Idempotent-Replayed"] == "true"
        assert resp.headers["Cache-Control"] == "private, no-store"  # from either source
        data = await resp.json()
        assert (data["id"], data["name"], data["metadata_mapping"][0]["value"]) == (
            stored["id"], "stored before", 9007199254740992.0)  # the double it stored
    assert await count_links(db, survey["id"]) == 1
    metrics = parse_samples(await (await client.get("/metrics")).text())
    assert sample(metrics, "sls_idempotent_replays_total", source="database") == 2  # 2**53 + 1, then 2**53
    assert sample(metrics, "sls_idempotent_replays_total", source="cache") == 1
    # a mapping that was never stored is still held to the quota
    resp = await post_link(client, tenant, survey["id"], {"name": "new", "metadata_mapping": [
        {"metadata_id": field["id"], "value": 2**53 + 3}]})
    assert (resp.status, await resp.json()) == (422, {"detail": {
        "message": "threshold_exceeded", "params": {"model": "survey_link", "threshold": 1}}})


async def test_a_link_under_the_current_hash_wins_over_one_under_the_legacy_hash(client, make_tenant, db,
                                                                                  redis_url):
    from service.core.mapping import canonical_mapping, legacy_mapping_hash, mapping_hash

    tenant = await make_tenant()
    survey = await create_survey(client, tenant.headers)
    field = await create_metadata_field(client, tenant.headers, "order")
    canonical = canonical_mapping([(field["id"], 2**53 + 1)])
    rows = {}
    for name, digest, value in (("legacy", legacy_mapping_hash(canonical), 9007199254740992.0),
                                ("current", mapping_hash(canonical), 2**53 + 1)):
        rows[name] = await db.fetchval(
            "INSERT INTO survey_links (org_id, public_id, survey_id, mapping_hash, name, metadata_mapping)"
            " VALUES ((SELECT org_id FROM surveys WHERE id = $2), $1, $2, $3, $4, $5) RETURNING id",
            f"{name:0>16}", uuid.UUID(survey["id"]), digest, name,
            json.dumps([{"metadata_id": field["id"], "value": value}]))
    body = {"name": "again", "metadata_mapping": [{"metadata_id": field["id"], "value": 2**53 + 1}]}
    for _ in range(2):  # from PostgreSQL, then again once the replay cache is emptied
        resp = await post_link(client, tenant, survey["id"], body)
        assert (resp.status, resp.headers["Idempotent-Replayed"]) == (200, "true")
        assert (await resp.json())["id"] == rows["current"]
        r = aioredis.Redis.from_url(redis_url)
        await r.flushall()
        await r.aclose()


async def test_replay_from_postgres_when_cache_is_gone(client, tenant, campaign, db, redis_url):
    first = await post_link(client, tenant, campaign["id"], {"name": "a"})
    r = aioredis.Redis.from_url(redis_url)
    cached = [k async for k in r.scan_iter(match=f"{{o:{tenant.org}}}:lk:*")]
    assert len(cached) == 1
    assert 0 < await r.ttl(cached[0]) <= 24 * 3600
    await r.flushall()
    await r.aclose()
    replay = await post_link(client, tenant, campaign["id"], {"name": "b"})
    assert replay.status == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert await replay.json() == await first.json()
    assert await count_links(db, campaign["id"]) == 1


async def test_a_replay_from_postgres_does_not_wait_for_the_survey_lock(client, tenant, campaign, db, redis_url):
    """Creators of a survey queue on its row; a replay of a stored mapping does not join them."""
    first = await post_link(client, tenant, campaign["id"], {"name": "a"})
    r = aioredis.Redis.from_url(redis_url)
    await r.flushall()
    await r.aclose()
    async with db.transaction():
        await db.execute("SELECT 1 FROM surveys WHERE id = $1 FOR UPDATE", uuid.UUID(campaign["id"]))
        holder = await db.fetchval("SELECT pg_backend_pid()")
        replay = await asyncio.wait_for(post_link(client, tenant, campaign["id"], {"name": "b"}), 5)
        assert replay.status == 200
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert await replay.json() == await first.json()
        # a new mapping does wait for the lock (the quota is counted under it): PostgreSQL says so
        creating = asyncio.ensure_future(post_link(client, tenant, campaign["id"], {"name": "c", "metadata_mapping": [
            {"metadata_id": campaign["sku"]["id"], "value": "new"}]}))
        blocked = await wait_until(lambda: db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))", holder), 5, 0.025)
        assert blocked == 1
        assert not creating.done()
    created = await asyncio.wait_for(creating, 5)
    assert created.status == 200 and "Idempotent-Replayed" not in created.headers
    assert await count_links(db, campaign["id"]) == 2
    assert await db.fetchval("SELECT link_count FROM surveys WHERE id = $1", uuid.UUID(campaign["id"])) == 2
    # the replay was answered from PostgreSQL, not from the (flushed) cache
    metrics = parse_samples(await (await client.get("/metrics")).text())
    assert sample(metrics, "sls_idempotent_replays_total", source="database") == 1
    assert sample(metrics, "sls_idempotent_replays_total", source="cache") == 0


async def test_replays_after_a_key_rotation_carry_the_new_kid(client, aiohttp_client, settings, tenant, campaign,
                                                              db):
    from dataclasses import replace

    from service.app import create_app
    from service.settings import SigningKey

    first = await (await post_link(client, tenant, campaign["id"], {"name": "a"})).json()
    assert "/l/t1." in first["survey_url"]
    rotated = replace(settings, signing_keys=(SigningKey("t2", b"the-next-signing-secret-0123456789abcdef"),
                                              *settings.signing_keys))
    new_client = await aiohttp_client(create_app(rotated))
    replay = await post_link(new_client, tenant, campaign["id"], {"name": "b"})
    body = await replay.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert body["id"] == first["id"] and body["public_id"] == first["public_id"]
    assert body["survey_url"].startswith(f"http://links.test/l/t2.{first['public_id']}.")
    # both links open on the rotated server: the old key still verifies
    for url in (first["survey_url"], body["survey_url"]):
        opened = await new_client.get(url.removeprefix("http://links.test"), allow_redirects=False)
        assert opened.status == 200, url
    assert await count_links(db, campaign["id"]) == 1


async def test_fifty_identical_requests_make_one_row(client, tenant, campaign, db):
    body = {"name": "same", "metadata_mapping": [{"metadata_id": campaign["sku"]["id"], "value": "X"}]}
    responses = await asyncio.gather(*(post_link(client, tenant, campaign["id"], body) for _ in range(50)))
    assert [r.status for r in responses] == [200] * 50
    ids = {(await r.json())["id"] for r in responses}
    assert len(ids) == 1
    assert sum(1 for r in responses if "Idempotent-Replayed" not in r.headers) == 1
    assert await count_links(db, campaign["id"]) == 1
    assert await db.fetchval("SELECT link_count FROM surveys WHERE id = $1", uuid.UUID(campaign["id"])) == 1


async def test_quota_is_exact_under_concurrency(client, make_tenant, db):
    tenant = await make_tenant(link_quota=50)
    survey = await create_survey(client, tenant.headers, linkQuota=10)
    field = await create_metadata_field(client, tenant.headers, "n")
    bodies = [{"name": f"l{i}", "metadata_mapping": [{"metadata_id": field["id"], "value": i}]} for i in range(30)]
    responses = await asyncio.gather(*(post_link(client, tenant, survey["id"], b) for b in bodies))
    statuses = [r.status for r in responses]
    assert statuses.count(200) == 10 and statuses.count(422) == 20
    for r in responses:
        if r.status == 422:
            assert await r.json() == {"detail": {"message": "threshold_exceeded",
                                                 "params": {"model": "survey_link", "threshold": 10}}}
    assert await count_links(db, survey["id"]) == 10
    created = next(b for b, r in zip(bodies, responses, strict=True) if r.status == 200)
    replay = await post_link(client, tenant, survey["id"], {**created, "name": "again"})
    assert replay.status == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert await count_links(db, survey["id"]) == 10


async def test_organisation_quota_applies_without_survey_quota(client, make_tenant, db):
    tenant = await make_tenant(link_quota=2)
    survey = await create_survey(client, tenant.headers)
    field = await create_metadata_field(client, tenant.headers, "n")
    statuses = []
    for i in range(3):
        resp = await post_link(client, tenant, survey["id"], {"name": "x", "metadata_mapping": [
            {"metadata_id": field["id"], "value": i}]})
        statuses.append(resp.status)
    assert statuses == [200, 200, 422]
    assert (await resp.json())["detail"]["params"]["threshold"] == 2


async def test_missing_unknown_and_revoked_keys_are_401(client, tenant, campaign, db, settings):
    expected = {"detail": "Invalid or missing token"}
    # the key cache's ages, on a clock the test moves; it starts from the real one, which the fixtures'
    # requests cached the key on
    now = [time.monotonic()]
    client.app[KEYS].clock = lambda: now[0]
    for headers in ({}, {"x-api-key": "slk_nope"}, {"Authorization": "Bearer slk_nope"},
                    {"Authorization": tenant.key}):
        resp = await client.post(links_path(campaign["id"]), json={"name": "x"}, headers=headers)
        assert resp.status == 401 and await resp.json() == expected
    assert (await post_link(client, tenant, campaign["id"], {"name": "x"})).status == 200  # the key now cached
    await db.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", tenant.key_id)
    now[0] += settings.key_cache_seconds  # the cached answer has expired: the key is looked up again
    resp = await post_link(client, tenant, campaign["id"], {"name": "x"})
    assert resp.status == 401 and await resp.json() == expected


async def test_wrong_auth_type_is_401(client, tenant, campaign):
    resp = await post_link(client, tenant, campaign["id"], {"name": "x"}, **{"auth-type": "basic"})
    assert resp.status == 401 and await resp.json() == {"detail": "Invalid or missing token"}


async def test_scope_and_foreign_organisation_header_are_403(client, make_tenant, campaign, tenant):
    reader = await make_tenant(scopes=("links:read",))
    resp = await post_link(client, reader, campaign["id"], {"name": "x"})
    assert resp.status == 403 and await resp.json() == {"detail": "Permission denied"}
    other = await make_tenant()
    resp = await post_link(client, tenant, campaign["id"], {"name": "x"}, **{"organization-id": other.org})
    assert resp.status == 403 and await resp.json() == {"detail": "Permission denied"}


BODY_ERRORS = {  # name: (body, headers, the answer once the key, rate limit and scope have passed)
    "not in its Content-Encoding": (b'{"name": "x"}', {"Content-Type": "application/json", "Content-Encoding": "gzip"},
                                    422),
    "another content type": (b"name=x", {"Content-Type": "application/x-www-form-urlencoded"}, 422),
    "past the size limit, declared": (b'{"name": "' + b"x" * (2 << 20) + b'"}', {"Content-Type": "application/json"},
                                      413),
}


@pytest.mark.parametrize("case", list(BODY_ERRORS))
async def test_a_body_error_comes_only_after_the_key_rate_and_scope_checks(client, make_tenant, campaign, case):
    """Like bad JSON, the body's own errors (413, another type's or an undecodable body's 422) are answered after
    429 and 403: every authenticated request spends a token, and a key without the scope is a 403."""
    data, headers, status = BODY_ERRORS[case]
    reader = await make_tenant(scopes=("links:read",))
    resp = await client.post(links_path(campaign["id"]), data=io.BytesIO(data), headers={**reader.headers, **headers})
    assert (resp.status, await resp.json()) == (403, {"detail": "Permission denied"})
    limited = await make_tenant(rate_limit="1/minute")
    statuses = []
    for _ in range(2):  # the first spends the minute's token although its body is refused
        resp = await client.post(links_path(campaign["id"]), data=io.BytesIO(data),
                                 headers={**limited.headers, **headers})
        statuses.append(resp.status)
    assert statuses == [status, 429]


async def test_a_chunked_body_past_the_size_limit_is_413_after_the_scope_check(client, make_tenant, campaign):
    reader = await make_tenant(scopes=("links:read",))

    async def chunks():
        for _ in range(8):
            yield b"x" * (256 << 10)

    resp = await client.post(links_path(campaign["id"]), data=chunks(),
                             headers={**reader.headers, "Content-Type": "application/json"})
    assert (resp.status, await resp.json()) == (403, {"detail": "Permission denied"})
    resp = await client.post(links_path(campaign["id"]), data=chunks(),
                             headers={**(await make_tenant()).headers, "Content-Type": "application/json"})
    assert (resp.status, await resp.json()) == (413, {"detail": "Request body too large (limit 1048576 bytes)"})


async def test_unknown_and_foreign_campaigns_are_404(client, make_tenant, campaign, db):
    expected = {"detail": {"message": "not_found", "params": {"model": "survey_campaign"}}}
    other = await make_tenant()
    for tenant, survey_id in ((other, campaign["id"]), (other, str(uuid.uuid4()))):
        resp = await post_link(client, tenant, survey_id, {"name": "x"})
        assert resp.status == 404 and await resp.json() == expected
    assert await count_links(db, campaign["id"]) == 0


def issue(loc, msg, type_, ctx=None):
    return {"loc": loc, "msg": msg, "type": type_, **({} if ctx is None else {"ctx": ctx})}


async def test_validation_errors_list_every_problem(client, tenant, campaign, db):
    sku = campaign["sku"]["id"]
    cases = [
        ({}, [issue(["body", "name"], "field required", "value_error.missing")]),
        ({"name": "   "}, [issue(["body", "name"], "ensure this value has at least 1 characters",
                                 "value_error.any_str.min_length", {"limit_value": 1})]),
        ({"name": "x" * 256}, [issue(["body", "name"], "ensure this value has at most 255 characters",
                                     "value_error.any_str.max_length", {"limit_value": 255})]),
        ({"name": ["x"]}, [issue(["body", "name"], "str type expected", "type_error.str")]),
        ({"name": True}, [issue(["body", "name"], "str type expected", "type_error.str")]),  # not pydantic's "True"
        ({"name": None}, [issue(["body", "name"], "none is not an allowed value", "type_error.none.not_allowed")]),
        ({"name": "x", "metadata_mapping": {}}, [issue(["body", "metadata_mapping"], "value is not a valid list",
                                                       "type_error.list")]),
        ({"name": "x", "metadata_mapping": [{"metadata_id": sku, "value": 1}] * 201},
         [issue(["body", "metadata_mapping"], "ensure this value has at most 200 items",
                "value_error.list.max_items", {"limit_value": 200})]),
        ({"name": "x", "metadata_mapping": [{"value": 1}]},
         [issue(["body", "metadata_mapping", 0, "metadata_id"], "field required", "value_error.missing")]),
        ({"name": "x", "metadata_mapping": [{"metadata_id": "1.0"}]},
         [issue(["body", "metadata_mapping", 0, "metadata_id"], "value is not a valid integer", "type_error.integer")]),
        ({"name": "x", "metadata_mapping": [{"metadata_id": 1.5}]},  # int(1.5) is 1 in pydantic: lossy, refused
         [issue(["body", "metadata_mapping", 0, "metadata_id"], "value is not a valid integer", "type_error.integer")]),
        ({"name": "x", "metadata_mapping": [{"metadata_id": 0}]},
         [issue(["body", "metadata_mapping", 0, "metadata_id"], "ensure this value is greater than or equal to 1",
                "value_error.number.not_ge", {"limit_value": 1})]),
        ({"name": "x", "metadata_mapping": [{"metadata_id": "9223372036854775808"}]},
         [issue(["body", "metadata_mapping", 0, "metadata_id"],
                "ensure this value is less than or equal to 9223372036854775807", "value_error.number.not_le",
                {"limit_value": 9223372036854775807})]),
        ({"name": "x", "metadata_mapping": [{"metadata_id": True}]},
         [issue(["body", "metadata_mapping", 0, "metadata_id"], "value is not a valid integer", "type_error.integer")]),
        ({"name": "x", "metadata_mapping": [{"metadata_id": sku, "value": "v" * 2001}]},
         [issue(["body", "metadata_mapping", 0, "value"], "ensure this value has at most 2000 characters",
                "value_error.any_str.max_length", {"limit_value": 2000})]),
        ({"name": "x", "metadata_mapping": [{"metadata_id": sku, "value": [1] * 201}]},
         [issue(["body", "metadata_mapping", 0, "value"], "ensure this value has at most 200 items",
                "value_error.list.max_items", {"limit_value": 200})]),
        ({"name": "x", "metadata_mapping": [{"metadata_id": sku, "value": True}]},
         [issue(["body", "metadata_mapping", 0, "value"],
                "value must be a string, a finite number, a list of those, or null", "type_error")]),
        ({"name": "x", "metadata_mapping": [{"metadata_id": sku, "value": [[1]]}]},
         [issue(["body", "metadata_mapping", 0, "value", 0],
                "value must be a string, a finite number, a list of those, or null", "type_error")]),
        ({"name": "x", "metadata_mapping": [{"metadata_id": sku}, {"metadata_id": str(sku), "value": 2}]},
         [issue(["body", "metadata_mapping", 1, "metadata_id"], "metadata_id appears more than once",
                "value_error.duplicate")]),
        ({"name": "x", "metadata_mapping": [{"metadata_id": 987654}]},
         [issue(["body", "metadata_mapping", 0, "metadata_id"], "metadata field 987654 does not exist",
                "value_error.not_found")]),
        ([1, 2], [issue(["body"], "value is not a valid dict", "type_error.dict")]),
        ({"metadata_mapping": [5], "name": ""},
         [issue(["body", "name"], "ensure this value has at least 1 characters", "value_error.any_str.min_length",
                {"limit_value": 1}),
          issue(["body", "metadata_mapping", 0], "value is not a valid dict", "type_error.dict")]),
    ]
    for body, expected in cases:
        resp = await post_link(client, tenant, campaign["id"], body)
        assert resp.status == 422, body
        assert await resp.json() == {"detail": expected}, body
    assert await count_links(db, campaign["id"]) == 0


async def test_foreign_metadata_field_is_unknown(client, tenant, make_tenant, campaign):
    other = await make_tenant()
    foreign = await create_metadata_field(client, other.headers, "theirs")
    resp = await post_link(client, tenant, campaign["id"], {"name": "x", "metadata_mapping": [
        {"metadata_id": foreign["id"], "value": 1}]})
    assert resp.status == 422
    assert (await resp.json())["detail"][0]["type"] == "value_error.not_found"


async def test_bad_path_id_and_bad_json(client, tenant, campaign, db):
    # as FastAPI: the body is parsed before anything else, so JSON that does not parse is the whole answer,
    # in the standard library's words with pydantic's ctx (the document, where and why)
    resp = await client.post(links_path("not-a-uuid"), data=b'{"name": "x",}', headers={**tenant.headers, **JSON})
    assert (resp.status, await resp.json()) == (422, {"detail": [issue(
        ["body", 13], "Expecting property name enclosed in double quotes: line 1 column 14 (char 13)",
        "value_error.jsondecode", {"msg": "Expecting property name enclosed in double quotes",
                                   "doc": '{"name": "x",}', "pos": 13, "lineno": 1, "colno": 14})]})
    # a body that parses is validated along with the path
    resp = await client.post(links_path("not-a-uuid"), data=b"{}", headers={**tenant.headers, **JSON})
    assert (resp.status, await resp.json()) == (422, {"detail": [
        issue(["path", "survey_campaign_id"], "value is not a valid uuid", "type_error.uuid"),
        issue(["body", "name"], "field required", "value_error.missing")]})
    # no body, or JSON null, is a missing body (whatever the content type)
    for raw, ctype in ((b"", "application/json"), (b"null", "application/json"), (b"", "text/plain")):
        headers = {**tenant.headers, "Content-Type": ctype}
        resp = await client.post(links_path(campaign["id"]), data=raw, headers=headers)
        assert (resp.status, await resp.json()) == (422, {"detail": [
            issue(["body"], "field required", "value_error.missing")]}), (raw, ctype)
    # what the standard library reads and orjson refuses (not JSON, or past a double) stays a 422 of ours
    for raw in (b'{"name": NaN}', b'{"name": "x", "metadata_mapping": [{"metadata_id": 1, "value": 1e400}]}',
                b'{"name": "\\ud800"}', b'\xef\xbb\xbf{"name": "x"}'):
        resp = await client.post(links_path(campaign["id"]), data=raw, headers={**tenant.headers, **JSON})
        detail = (await resp.json())["detail"]
        assert (resp.status, len(detail), detail[0]["type"]) == (422, 1, "value_error.jsondecode"), raw
        assert detail[0]["msg"].startswith("Invalid JSON: ") and "ctx" not in detail[0], raw
    assert await count_links(db, campaign["id"]) == 0


async def test_lossless_coercions_are_read_as_pydantic_reads_them(client, tenant, campaign, db):
    sku, date = campaign["sku"]["id"], campaign["date"]["id"]
    body = {"name": 123, "metadata_mapping": [{"metadata_id": f" {sku} ", "value": "A"},
                                              {"metadata_id": float(date), "value": "B"}]}
    resp = await post_link(client, tenant, campaign["id"], body)
    assert resp.status == 200, await resp.text()
    created = await resp.json()
    assert created["name"] == "123"
    assert [(m["metadata"]["id"], m["value"]) for m in created["metadata_mapping"]] == [(sku, "A"), (date, "B")]
    # the same mapping written with plain integers is the same link
    replay = await post_link(client, tenant, campaign["id"], {"name": "n", "metadata_mapping": [
        {"metadata_id": date, "value": "B"}, {"metadata_id": sku, "value": "A"}]})
    assert (replay.status, replay.headers["Idempotent-Replayed"]) == (200, "true")
    assert (await replay.json())["id"] == created["id"]
    assert await db.fetchval("SELECT name FROM survey_links WHERE id = $1", created["id"]) == "123"
    assert await count_links(db, campaign["id"]) == 1


async def test_wrong_content_type_and_huge_body(client, tenant, campaign, db):
    # FastAPI hands a body of another type to its model as bytes: 422 "not a valid dict", never 415;
    # the same bytes as JSON (remembered as valid) do not make it valid
    valid = b'{"name": "x"}'
    assert (await client.post(links_path(campaign["id"]), data=valid, headers={**tenant.headers, **JSON})).status == 200
    for raw, ctype in ((b"name=x", "application/x-www-form-urlencoded"), (valid, "text/plain")):
        headers = {**tenant.headers, "Content-Type": ctype}
        resp = await client.post(links_path(campaign["id"]), data=raw, headers=headers)
        assert (resp.status, await resp.json()) == (422, {"detail": [
            issue(["body"], "value is not a valid dict", "type_error.dict")]}), ctype
    resp = await client.post(links_path(campaign["id"]), data=io.BytesIO(b"{" + b" " * (2 * 1024 * 1024) + b"}"),
                             headers={**tenant.headers, **JSON})
    assert resp.status == 413
    assert await resp.json() == {"detail": "Request body too large (limit 1048576 bytes)"}
    resp = await client.post(links_path(campaign["id"]), data=io.BytesIO(b"x" * (2 * 1024 * 1024)),
                             headers={**tenant.headers, "Content-Type": "text/plain"})
    assert (resp.status, await resp.json()) == (413, {"detail": "Request body too large (limit 1048576 bytes)"})
    assert await count_links(db, campaign["id"]) == 1


def test_scopes_constant_matches_spec():
    assert SCOPES == ("links:write", "links:read", "manage")


async def test_the_same_bytes_for_another_survey_or_organisation_are_their_own_link(client, tenant, make_tenant, db):
    # the validated form of a body is remembered by (path, bytes): what it names must still be per survey and org
    from service.web.keys import RECENT_LINKS

    other = await make_tenant()
    surveys = [(tenant, (await create_survey(client, tenant.headers))["id"]) for _ in range(2)]
    surveys.append((other, (await create_survey(client, other.headers))["id"]))
    body = b'{"name": "same bytes", "metadata_mapping": []}'
    links = []
    for owner, survey_id in surveys * 2:
        resp = await client.post(links_path(survey_id), data=body, headers={**owner.headers, **JSON})
        assert resp.status == 200
        links.append(((await resp.json())["id"], survey_id))
    assert links[:3] == links[3:]  # each replayed its own
    assert len({link for link, _ in links}) == 3
    for survey_id in {s for _, s in surveys}:
        assert await count_links(db, survey_id) == 1
    assert all((s, body) in client.app[RECENT_LINKS] for _, s in surveys)
    # a foreign organisation sending the same bytes to a survey it does not own is still a 404
    resp = await client.post(links_path(surveys[0][1]), data=body, headers={**other.headers, **JSON})
    assert resp.status == 404


def test_remembered_requests_are_bounded():
    from service.core.errors import Issue
    from service.core.links import LinkRequest
    from service.web import filum
    from service.web.recent import Recent

    recent: Recent[LinkRequest] = Recent(3, filum.RECENT_BODY_MAX)
    survey = str(uuid.uuid4())
    for n in range(5):
        assert filum._validate(recent, survey, b'{"name": "n%d"}' % n, True, []) is not None
    assert [raw for _, raw in recent] == [b'{"name": "n2"}', b'{"name": "n3"}', b'{"name": "n4"}']
    too_long = b'{"name": "%s"}' % (b"x" * 3000)
    assert filum._validate(recent, survey, too_long, True, []) is None  # too long a name: issues
    validated = filum._validate(recent, survey, b'{"name": "n9"}', True, [])
    assert validated is not None and validated.cache_tail == f"{survey}:{validated.hash.hex()}"
    assert filum._validate(recent, survey, b'{"name": "n", "metadata_mapping": [%s]}' % b",".join(
        b'{"metadata_id": %d, "value": "%s"}' % (i, b"v" * 40) for i in range(1, 40)), True, []) is not None
    assert len(recent) == 3 and all(len(raw) <= filum.RECENT_BODY_MAX for _, raw in recent)
    assert [raw for _, raw in recent][-1] == b'{"name": "n9"}'
    assert filum._validate(recent, survey, b'{"name": "n8"}', False, []) is None  # not sent as JSON: not remembered
    assert [raw for _, raw in recent][-1] == b'{"name": "n9"}'
    issues: list[Issue] = []
    assert filum._validate(recent, "not-a-uuid", b"{", True, issues) is None
    assert [i.loc for i in issues] == [("body", 1)]  # not JSON is the whole answer, as in FastAPI


async def test_max_body_bytes_is_the_limit_of_a_small_body(aiohttp_client, settings, tenant, campaign, db):
    # MAX_BODY_BYTES: a body that arrives whole with the headers is held to the same limit as a streamed one
    from dataclasses import replace

    from service.app import create_app

    small = await aiohttp_client(create_app(replace(settings, max_body_bytes=64)))
    headers = {**tenant.headers, **JSON}
    over = b'{"name": "%s"}' % (b"x" * 88)
    assert len(over) == 100
    resp = await small.post(links_path(campaign["id"]), data=over, headers={**headers, "X-Request-Id": "trace-413"})
    assert (resp.status, await resp.json()) == (413, {"detail": "Request body too large (limit 64 bytes)"})
    assert resp.headers["X-Request-Id"] == "trace-413"
    # the Formbricks family answers its own body for the same limit
    resp = await small.post("/api/v2/management/surveys", data=over, headers=headers)
    assert (resp.status, await resp.json()) == (413, {"error": {
        "code": 413, "message": "Request body too large (limit 64 bytes)", "details": []}})
    assert await count_links(db, campaign["id"]) == 0
    # one byte over is refused; exactly the limit, and under it, are not
    just_over = b'{"name": "%s"}' % (b"y" * 53)
    assert len(just_over) == 65
    resp = await small.post(links_path(campaign["id"]), data=just_over, headers=headers)
    assert resp.status == 413
    for name, size in ((b"a" * 52, 64), (b"b" * 10, 22)):
        body = b'{"name": "%s"}' % name
        assert len(body) == size
        resp = await small.post(links_path(campaign["id"]), data=body, headers=headers)
        assert resp.status == 200, (len(body), await resp.text())
    assert await count_links(db, campaign["id"]) == 1  # no mapping: both bodies name the same link


async def test_the_campaigns_own_quota_comes_before_the_organisations(client, make_tenant, db):
    # SPEC: "a campaign holds at most its linkQuota links (the campaign's own, else the organisation's)"
    tenant = await make_tenant(link_quota=2)
    field = await create_metadata_field(client, tenant.headers, "n")

    def body(i: int) -> dict:
        return {"name": f"l{i}", "metadata_mapping": [{"metadata_id": field["id"], "value": i}]}

    def refused(threshold: int) -> dict:
        return {"detail": {"message": "threshold_exceeded", "params": {"model": "survey_link", "threshold": threshold}}}

    above = await create_survey(client, tenant.headers, linkQuota=3)  # above the organisation's 2
    statuses = [(await post_link(client, tenant, above["id"], body(i))).status for i in range(3)]
    assert statuses == [200, 200, 200]
    resp = await post_link(client, tenant, above["id"], body(3))
    assert (resp.status, await resp.json()) == (422, refused(3))
    assert await count_links(db, above["id"]) == 3
    # without its own quota, the campaign falls back to the organisation's
    resp = await client.patch(f"/api/v2/management/surveys/{above['id']}", json={"linkQuota": None},
                              headers=tenant.headers)
    assert resp.status == 200 and (await resp.json())["data"]["linkQuota"] is None
    resp = await post_link(client, tenant, above["id"], body(4))
    assert (resp.status, await resp.json()) == (422, refused(2))

    closed = await create_survey(client, tenant.headers, linkQuota=0)  # 0 is a quota, not "unset"
    resp = await post_link(client, tenant, closed["id"], body(0))
    assert (resp.status, await resp.json()) == (422, refused(0))
    assert await count_links(db, closed["id"]) == 0


async def test_a_link_is_answered_when_redis_refuses_to_cache_it(client, tenant, campaign, db, redis_url, caplog):
    """Redis out of memory refuses the replay cache's write: the link, committed, is answered all the same
    (it was a 503 after the commit), and the replay comes from PostgreSQL."""
    client.app[GATE]._clock = lambda: 1000.0  # the replay cache's breaker (the gate's), on a clock that stands still
    r = aioredis.Redis.from_url(redis_url)
    await r.config_set("maxmemory", 1)  # with the default noeviction policy, every write is refused (OOM)
    try:
        created = await post_link(client, tenant, campaign["id"], {"name": "x"})
        assert created.status == 200, await created.text()
        replay = await post_link(client, tenant, campaign["id"], {"name": "y"})
        assert (replay.status, replay.headers["Idempotent-Replayed"]) == (200, "true")
        assert await replay.json() == await created.json()
    finally:
        await r.config_set("maxmemory", 0)
    assert await r.dbsize() == 0
    await r.aclose()
    assert await count_links(db, campaign["id"]) == 1
    # warned once: on the still clock the replay's write falls within the refused write's second, so it
    # is skipped unsent (the second's bounds: tests/faults/test_gate_refusals.py)
    assert caplog.text.count("replay cache refused a write: OOM command not allowed") == 1
    metrics = parse_samples(await (await client.get("/metrics")).text())
    assert sample(metrics, "sls_idempotent_replays_total", source="database") == 1
