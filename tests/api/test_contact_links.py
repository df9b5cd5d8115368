"""GET .../contact-links/segments/{segmentId} and .../contacts/{contactId}: shape, tokens, paging, counts, errors."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import jwt
import pytest
import redis.asyncio as aioredis

from tests.conftest import TEST_KEYS
from tests.contact_helpers import (
    bulk,
    contact_link_path,
    create_segment,
    error,
    page,
    segment_links_path,
)
from tests.helpers import create_survey

KEY = TEST_KEYS[0]


def claims_of(url: str) -> dict:
    assert url.startswith("http://links.test/c/")
    token = url.removeprefix("http://links.test/c/")
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": KEY.kid}
    return jwt.decode(token, KEY.secret, algorithms=["HS256"])


async def survey_seq(db, survey_id: str) -> int:
    return await db.fetchval("SELECT seq FROM surveys WHERE id = $1", uuid.UUID(survey_id))


async def ids_by_email(db, tenant) -> dict[str, int]:
    rows = await db.fetch("SELECT id, attributes->>'email' AS e FROM contacts WHERE org_id = $1", tenant.org_id)
    return {r["e"]: r["id"] for r in rows}


@pytest.fixture
async def small(client, tenant, db):
    await bulk(client, tenant.headers, [
        {"email": "a@x.io", "plan": "pro", "age": 30, "firstName": "Ann"},
        {"email": "b@x.io", "plan": "free"},
        {"email": "c@x.io", "plan": "pro", "note": "n"},
    ])
    survey = await create_survey(client, tenant.headers)
    segment = await create_segment(client, tenant.headers, {"attribute": "plan", "op": "equals", "value": "pro"})
    return {"survey": survey["id"], "segment": segment["id"], "ids": await ids_by_email(db, tenant)}


async def test_page_shape_and_tokens(client, tenant, small, db):
    body = await page(client, tenant.headers, small["survey"], small["segment"])
    ids = small["ids"]
    assert body["meta"] == {"total": 2, "limit": 50, "offset": 0}
    # newest first; contacts of one call share created_at, so the higher id comes first
    assert [item["contactId"] for item in body["data"]] == [str(ids["c@x.io"]), str(ids["a@x.io"])]
    seq = await survey_seq(db, small["survey"])
    for item in body["data"]:
        assert set(item) == {"contactId", "surveyUrl", "expiresAt", "attributes"}
        assert item["expiresAt"] is None and item["attributes"] == {}
        assert claims_of(item["surveyUrl"]) == {"s": seq, "c": int(item["contactId"])}


async def test_expiration_days_sets_exp_and_expires_at(client, tenant, small):
    before = int(time.time())
    body = await page(client, tenant.headers, small["survey"], small["segment"], expirationDays=7)
    after = int(time.time())
    exps = set()
    for item in body["data"]:
        claims = claims_of(item["surveyUrl"])
        exps.add(claims["exp"])
        expected = datetime.fromtimestamp(claims["exp"], UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        assert item["expiresAt"] == expected
        assert before + 7 * 86400 <= claims["exp"] <= after + 7 * 86400
    assert len(exps) == 1  # computed once per request


async def test_attribute_keys_are_trimmed_deduplicated_and_unknown_ones_ignored(client, tenant, small):
    body = await page(client, tenant.headers, small["survey"], small["segment"],
                      attributeKeys=" email , firstName,unknown,,email, bad key ,note,age")
    assert [item["attributes"] for item in body["data"]] == [
        {"email": "c@x.io", "note": "n"},
        {"email": "a@x.io", "firstName": "Ann", "age": "30"},  # values as text, as Formbricks' schema has them
    ]
    body = await page(client, tenant.headers, small["survey"], small["segment"], attributeKeys="unknown")
    assert [item["attributes"] for item in body["data"]] == [{}, {}]


async def test_limit_and_skip(client, tenant, small):
    ids = small["ids"]
    body = await page(client, tenant.headers, small["survey"], small["segment"], limit=1, skip=1)
    assert body["meta"] == {"total": 2, "limit": 1, "offset": 1}
    assert [item["contactId"] for item in body["data"]] == [str(ids["a@x.io"])]
    body = await page(client, tenant.headers, small["survey"], small["segment"], limit=250, skip=2)
    assert body == {"data": [], "meta": {"total": 2, "limit": 250, "offset": 2}}
    body = await page(client, tenant.headers, small["survey"], small["segment"], skip=2**63 - 1)
    assert body["data"] == [] and body["meta"]["offset"] == 2**63 - 1


async def test_paging_a_large_segment_covers_it_exactly_once(client, tenant, db):
    # three calls, so three created_at values and many ties inside each
    for start in (0, 500, 900):
        await bulk(client, tenant.headers, [{"email": f"u{i}@x.io", "n": i, "odd": i % 2 == 1}
                                            for i in range(start, start + {0: 500, 500: 400, 900: 400}[start])])
    survey = await create_survey(client, tenant.headers)
    segment = await create_segment(client, tenant.headers, {"attribute": "odd", "op": "equals", "value": False})
    seen: list[str] = []
    for skip in range(0, 650, 250):
        body = await page(client, tenant.headers, survey["id"], segment["id"], limit=250, skip=skip)
        assert body["meta"] == {"total": 650, "limit": 250, "offset": skip}
        assert len(body["data"]) == min(250, 650 - skip)
        seen += [item["contactId"] for item in body["data"]]
    expected = await db.fetch(
        "SELECT id FROM contacts WHERE org_id = $1 AND attributes->'odd' = 'false'::jsonb"
        " ORDER BY created_at DESC, id DESC", tenant.org_id)
    assert seen == [str(r["id"]) for r in expected]
    assert len(set(seen)) == 650

    everyone = await create_segment(client, tenant.headers, {})
    seen = []
    for skip in range(0, 1300, 250):
        body = await page(client, tenant.headers, survey["id"], everyone["id"], limit=250, skip=skip)
        assert body["meta"]["total"] == 1300
        seen += [item["contactId"] for item in body["data"]]
    assert len(seen) == len(set(seen)) == 1300


async def test_pages_are_right_while_the_cache_is_unreachable(client, tenant, small, monkeypatch, caplog):
    from redis.exceptions import ConnectionError as RedisConnectionError

    from service.web.keys import REDIS

    calls = []

    async def unreachable(*args, **kwargs):
        calls.append(args)
        raise RedisConnectionError("connection refused")

    monkeypatch.setattr(client.app[REDIS], "evalsha", unreachable)
    for _ in range(3):
        body = await page(client, tenant.headers, small["survey"], small["segment"], limit=1, skip=1)
        assert body["meta"]["total"] == 2
        assert [i["contactId"] for i in body["data"]] == [str(small["ids"]["a@x.io"])]
    # after the first failure the cache is left alone for a while: no request waits for Redis again
    assert len(calls) == 1
    assert "segment cache unavailable" in caplog.text


async def test_pages_are_right_when_redis_refuses_the_cache_write(client, tenant, small, redis_url, caplog):
    """Redis out of memory (or a replica turned read-only) refuses the write: the page is PostgreSQL's anyway,
    and Redis stays in use for reads (a refusal is not an outage)."""
    r = aioredis.Redis.from_url(redis_url)
    await r.flushall()
    await r.config_set("maxmemory", 1)  # with the default noeviction policy, every write is refused (OOM)
    try:
        for _ in range(2):
            body = await page(client, tenant.headers, small["survey"], small["segment"], limit=1, skip=1)
            assert body["meta"]["total"] == 2
            assert [i["contactId"] for i in body["data"]] == [str(small["ids"]["a@x.io"])]
    finally:
        await r.config_set("maxmemory", 0)
    assert await r.dbsize() == 0
    await r.aclose()
    # the first write refused is warned about; the next second's are skipped, unsent (exactly, on an injected
    # clock: tests/faults/test_gate_refusals.py), so a second warning only if the requests were a second apart
    assert 1 <= caplog.text.count("segment cache refused a write: OOM command not allowed") <= 2
    assert "segment cache unavailable" not in caplog.text


async def test_each_invalid_query_parameter_is_named(client, tenant, small):
    path = segment_links_path(small["survey"], small["segment"])
    keys = ",".join(f"k{i}" for i in range(21))
    resp = await client.get(f"{path}?limit=0&skip=-1&expirationDays=366&attributeKeys={keys}", headers=tenant.headers)
    assert resp.status == 422
    assert await resp.json() == error(422, "Unprocessable Entity", [
        {"field": "limit", "issue": "ensure this value is greater than or equal to 1"},
        {"field": "skip", "issue": "ensure this value is greater than or equal to 0"},
        {"field": "expirationDays", "issue": "ensure this value is less than or equal to 365"},
        {"field": "attributeKeys", "issue": "ensure this value has at most 20 keys"},
    ])
    cases = [
        ("limit=1.5", "limit", "value is not a valid integer"),
        ("limit=abc", "limit", "value is not a valid integer"),
        ("limit=%201", "limit", "value is not a valid integer"),
        ("limit=1_0", "limit", "value is not a valid integer"),
        ("limit=0x10", "limit", "value is not a valid integer"),
        ("limit=Infinity", "limit", "value is not a valid integer"),
        ("limit=251", "limit", "ensure this value is less than or equal to 250"),
        ("limit=250.5", "limit", "value is not a valid integer"),
        ("limit=99999999999999999999999", "limit", "ensure this value is less than or equal to 250"),
        ("skip=x", "skip", "value is not a valid integer"),
        ("skip=1e-3", "skip", "value is not a valid integer"),
        ("skip=1e99999", "skip", "value is not a valid integer"),  # an exponent past 4 digits
        ("skip=1e9999", "skip", "ensure this value is less than or equal to 9223372036854775807"),
        ("skip=9223372036854775808", "skip", "ensure this value is less than or equal to 9223372036854775807"),
        ("skip=9223372036854775807.5", "skip", "value is not a valid integer"),
        ("expirationDays=0", "expirationDays", "ensure this value is greater than or equal to 1"),
        ("expirationDays=0.5", "expirationDays", "value is not a valid integer"),
        ("limit=2&limit=1.5", "limit", "value is not a valid integer"),  # the last one counts
    ]
    for query, field, issue in cases:
        resp = await client.get(f"{path}?{query}", headers=tenant.headers)
        assert (resp.status, await resp.json()) == (422, error(422, "Unprocessable Entity", [
            {"field": field, "issue": issue}])), query


async def test_query_numbers_are_read_as_formbricks_reads_them(client, tenant, small):
    """Integral numbers in any decimal spelling, empty values as the defaults, the last of a repeated
    parameter, and unknown parameters ignored (Formbricks' published document and route code)."""
    path = segment_links_path(small["survey"], small["segment"])
    ids = small["ids"]
    second = [str(ids["a@x.io"])]
    for query, meta, contacts in (
        ("limit=50.0&skip=0.0", {"total": 2, "limit": 50, "offset": 0}, [str(ids["c@x.io"]), str(ids["a@x.io"])]),
        ("limit=1.000&skip=1e0", {"total": 2, "limit": 1, "offset": 1}, second),
        ("limit=%2B1&skip=01.", {"total": 2, "limit": 1, "offset": 1}, second),
        ("limit=0.01e2&skip=-0", {"total": 2, "limit": 1, "offset": 0}, [str(ids["c@x.io"])]),
        ("limit=&skip=&expirationDays=&attributeKeys=", {"total": 2, "limit": 50, "offset": 0},
         [str(ids["c@x.io"]), str(ids["a@x.io"])]),
        ("limit=7&limit=1&skip=0&skip=1", {"total": 2, "limit": 1, "offset": 1}, second),
        ("limit=1&skip=1&expirationDay=7&utm_source=x&limit", {"total": 2, "limit": 50, "offset": 1}, second),
        ("skip=9.223372036854775807e18", {"total": 2, "limit": 50, "offset": 2**63 - 1}, []),
    ):
        resp = await client.get(f"{path}?{query}", headers=tenant.headers)
        assert resp.status == 200, (query, await resp.text())
        body = await resp.json()
        assert (body["meta"], [item["contactId"] for item in body["data"]]) == (meta, contacts), query
        assert all(item["expiresAt"] is None for item in body["data"]), query
    resp = await client.get(f"{path}?expirationDays=7.0&expirationDay=1", headers=tenant.headers)
    assert resp.status == 200
    assert all(claims_of(item["surveyUrl"])["exp"] - time.time() > 6.9 * 86400 for item in (await resp.json())["data"])
    one = contact_link_path(small["survey"], str(ids["a@x.io"]))
    resp = await client.get(f"{one}?expirationDays=&limit=abc", headers=tenant.headers)
    assert resp.status == 200 and (await resp.json())["data"]["expiresAt"] is None


async def test_missing_or_foreign_survey_and_segment_are_404(client, tenant, small, make_tenant):
    other = await make_tenant()
    their_survey = await create_survey(client, other.headers)
    their_segment = await create_segment(client, other.headers, {})
    survey_404 = error(404, "Not Found", [{"field": "surveyId", "issue": "not found"}])
    segment_404 = error(404, "Not Found", [{"field": "segmentId", "issue": "not found"}])
    for survey_id, segment_id, expected in (
        (str(uuid.uuid4()), small["segment"], survey_404),
        ("not-a-uuid", small["segment"], survey_404),
        (their_survey["id"], small["segment"], survey_404),
        (small["survey"], str(uuid.uuid4()), segment_404),
        (small["survey"], "123", segment_404),
        (small["survey"], their_segment["id"], segment_404),
    ):
        resp = await client.get(segment_links_path(survey_id, segment_id), headers=tenant.headers)
        assert (resp.status, await resp.json()) == (404, expected), (survey_id, segment_id)


async def test_survey_not_in_progress_is_403(client, tenant, small):
    for status in ("draft", "paused", "completed"):
        resp = await client.patch(f"/api/v2/management/surveys/{small['survey']}", json={"status": status},
                                  headers=tenant.headers)
        assert resp.status == 200
        expected = error(403, "Forbidden", [
            {"field": "surveyId", "issue": f"survey is not in progress (status: {status})"}])
        resp = await client.get(segment_links_path(small["survey"], small["segment"]), headers=tenant.headers)
        assert (resp.status, await resp.json()) == (403, expected)
        resp = await client.get(contact_link_path(small["survey"], str(small["ids"]["a@x.io"])), headers=tenant.headers)
        assert (resp.status, await resp.json()) == (403, expected)


async def test_keys_scopes_and_rate_limit(client, tenant, small, make_tenant):
    path = segment_links_path(small["survey"], small["segment"])
    resp = await client.get(path)
    assert (resp.status, await resp.json()) == (401, error(401, "Unauthorized", [
        {"field": "x-api-key", "issue": "missing, unknown or revoked API key"}]))
    resp = await client.get(path, headers={"Authorization": f"Bearer {tenant.key}"})
    assert resp.status == 200
    writer = await make_tenant(scopes=("links:write", "manage"))
    resp = await client.get(path, headers=writer.headers)
    assert (resp.status, await resp.json()) == (403, error(403, "Forbidden", [
        {"field": "scope", "issue": "this key lacks the links:read scope"}]))
    limited = await make_tenant(rate_limit="1/minute")
    their_path = segment_links_path(str(uuid.uuid4()), str(uuid.uuid4()))
    resp = await client.get(their_path, headers=limited.headers)  # refused later, but the minute's token is spent
    assert (resp.status, await resp.json()) == (404, error(404, "Not Found", [
        {"field": "surveyId", "issue": "not found"}]))
    resp = await client.get(their_path, headers=limited.headers)
    assert (resp.status, await resp.json()) == (429, error(429, "Too Many Requests"))
    # 1/minute: the one token spent a moment ago is back in a minute, not earlier
    assert 59 <= int(resp.headers["Retry-After"]) <= 60
    assert resp.headers["RateLimit-Policy"] == '"minute";q=1;w=60'


async def test_contact_link(client, tenant, small, db, make_tenant):
    contact_id = small["ids"]["b@x.io"]  # not in the segment: any contact of the organisation has a link
    resp = await client.get(contact_link_path(small["survey"], str(contact_id)), headers=tenant.headers)
    assert resp.status == 200
    data = (await resp.json())["data"]
    assert set(data) == {"surveyUrl", "expiresAt"} and data["expiresAt"] is None
    assert claims_of(data["surveyUrl"]) == {"s": await survey_seq(db, small["survey"]), "c": contact_id}
    resp = await client.get(contact_link_path(small["survey"], str(contact_id)), params={"expirationDays": "30"},
                            headers=tenant.headers)
    data = (await resp.json())["data"]
    exp = claims_of(data["surveyUrl"])["exp"]
    assert data["expiresAt"] == datetime.fromtimestamp(exp, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")

    other = await make_tenant()
    await bulk(client, other.headers, [{"email": "z@x.io"}])
    theirs = (await ids_by_email(db, other))["z@x.io"]
    contact_404 = error(404, "Not Found", [{"field": "contactId", "issue": "not found"}])
    for bad in (str(theirs), "0", "-1", "abc", "99999999999999999999", str(2**63), "1.0"):
        resp = await client.get(contact_link_path(small["survey"], bad), headers=tenant.headers)
        assert (resp.status, await resp.json()) == (404, contact_404), bad
    resp = await client.get(contact_link_path(str(uuid.uuid4()), str(contact_id)), headers=tenant.headers)
    assert (await resp.json())["error"]["details"] == [{"field": "surveyId", "issue": "not found"}]
    resp = await client.get(contact_link_path(small["survey"], str(contact_id)), params={"expirationDays": "0"},
                            headers=tenant.headers)
    assert (resp.status, (await resp.json())["error"]["details"]) == (422, [
        {"field": "expirationDays", "issue": "ensure this value is greater than or equal to 1"}])
