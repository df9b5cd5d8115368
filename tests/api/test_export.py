"""GET .../contact-links/segments/{segmentId}/export: every member once, in page order, as CSV."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import uuid
from datetime import datetime

import jwt
import pytest

from service.db.export import MemberBatches, csv_field
from service.web import export
from tests.conftest import TEST_KEYS
from tests.contact_helpers import all_members, bulk, create_segment, error, segment_links_path
from tests.helpers import create_survey, wait_until

KEY = TEST_KEYS[0]
TRICKY = 'says "hi", then\nleaves'


def export_path(survey_id: str, segment_id: str) -> str:
    return segment_links_path(survey_id, segment_id) + "/export"


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def claims_of(url: str) -> dict:
    token = url.removeprefix("http://links.test/c/")
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "kid": KEY.kid}
    return jwt.decode(token, KEY.secret, algorithms=["HS256"])


@pytest.fixture
async def crowd(client, tenant, monkeypatch):
    """45 contacts in two calls (so created_at ties within each), a segment of all and one of `pro`."""
    monkeypatch.setattr(export, "BATCH", 7)  # many batches, and batch edges inside runs of equal created_at
    first = [{"email": f"a{i}@x.io", "plan": "pro" if i % 3 == 0 else "free", "seats": i} for i in range(30)]
    first[4]["note"] = TRICKY
    await bulk(client, tenant.headers, first)
    await bulk(client, tenant.headers, [{"email": f"b{i}@x.io", "plan": "team", "vip": True} for i in range(15)])
    survey = await create_survey(client, tenant.headers)
    everyone = await create_segment(client, tenant.headers, {"and": []})
    pro = await create_segment(client, tenant.headers, {"attribute": "plan", "op": "equals", "value": "pro"})
    return {"survey": survey["id"], "everyone": everyone["id"], "pro": pro["id"]}


async def read_csv(client, tenant, survey_id, segment_id, **params) -> list[list[str]]:
    resp = await client.get(export_path(survey_id, segment_id), params=params, headers=tenant.headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert resp.headers["X-Request-Id"]
    assert resp.headers["Cache-Control"] == "private, no-store"  # personal links
    body = await resp.read()
    rows = list(csv.reader(io.StringIO(body.decode(), newline="")))
    assert body.endswith(b"\r\n") and body.count(b"\r\n") == len(rows)  # RFC 4180's CRLF ends each record
    return rows


async def test_every_member_once_in_page_order_with_verifying_tokens(client, tenant, crowd, db):
    rows = await read_csv(client, tenant, crowd["survey"], crowd["everyone"], expirationDays=7,
                          attributeKeys="email,note,seats,vip,unknown")
    header, *records = rows
    assert header == ["contactId", "surveyUrl", "expiresAt", "email", "note", "seats", "vip", "unknown"]
    pages = await all_members(client, tenant.headers, crowd["survey"], crowd["everyone"], expirationDays=7,
                              attributeKeys="email,note,seats,vip")
    assert [r[0] for r in records] == [item["contactId"] for item in pages]
    stored = {r["id"]: json.loads(r["attributes"]) for r in await db.fetch(
        "SELECT id, attributes FROM contacts WHERE org_id = $1", tenant.org_id)}
    assert sorted(int(r[0]) for r in records) == sorted(stored)  # each contact exactly once
    seq = await db.fetchval("SELECT seq FROM surveys WHERE id = $1", uuid.UUID(crowd["survey"]))
    for (contact_id, url, expires_at, email, note, seats, vip, unknown), item in zip(records, pages, strict=True):
        claims = claims_of(url)
        assert (claims["s"], claims["c"]) == (seq, int(contact_id))
        # one expiry per request: the export's and the pages' may straddle a second boundary
        assert expires_at == records[0][2]
        assert abs(_epoch(expires_at) - _epoch(item["expiresAt"])) <= 1
        assert _epoch(expires_at) == claims["exp"]
        attrs = stored[int(contact_id)]
        assert email == attrs["email"] and note == attrs.get("note", "") and unknown == ""
        assert seats == (str(attrs["seats"]) if "seats" in attrs else "")
        assert vip == ("true" if attrs.get("vip") else "")
        # the same text as the page's attributes (Formbricks' strings): `5`, `true`
        assert [email, seats, vip] == [item["attributes"].get(k, "") for k in ("email", "seats", "vip")]
    assert TRICKY in [r[4] for r in records]


async def test_filtered_segment_and_no_expiry(client, tenant, crowd, db):
    header, *records = await read_csv(client, tenant, crowd["survey"], crowd["pro"])
    assert header == ["contactId", "surveyUrl", "expiresAt"]
    pro = {r["id"] for r in await db.fetch(
        "SELECT id FROM contacts WHERE org_id = $1 AND attributes->>'plan' = 'pro'", tenant.org_id)}
    assert {int(r[0]) for r in records} == pro and len(records) == len(pro) == 10
    assert all(r[2] == "" and "exp" not in claims_of(r[1]) for r in records)


async def test_empty_segment_is_the_header_alone(client, tenant, crowd):
    nobody = await create_segment(client, tenant.headers, {"attribute": "plan", "op": "equals", "value": "none"})
    assert await read_csv(client, tenant, crowd["survey"], nobody["id"], attributeKeys="email") == [
        ["contactId", "surveyUrl", "expiresAt", "email"]]


async def test_errors_are_json_before_the_stream(client, tenant, crowd, make_tenant):
    path = export_path(crowd["survey"], crowd["everyone"])
    resp = await client.get(export_path(crowd["survey"], str(uuid.uuid4())), headers=tenant.headers)
    assert (resp.status, await resp.json()) == (404, error(404, "Not Found", [{"field": "segmentId",
                                                                              "issue": "not found"}]))
    resp = await client.get(path, params={"expirationDays": "0"}, headers=tenant.headers)
    assert resp.status == 422 and (await resp.json())["error"]["details"][0]["field"] == "expirationDays"
    assert (await client.get(path)).status == 401
    other = await make_tenant(name="other")
    assert (await client.get(path, headers=other.headers)).status == 404
    paused = await create_survey(client, tenant.headers, status="paused")
    resp = await client.get(export_path(paused["id"], crowd["everyone"]), headers=tenant.headers)
    assert (resp.status, await resp.json()) == (403, error(403, "Forbidden", [
        {"field": "surveyId", "issue": "survey is not in progress (status: paused)"}]))


async def test_a_failure_mid_stream_cuts_the_connection(client, tenant, crowd, monkeypatch):
    import aiohttp

    read = MemberBatches.read
    calls = []

    async def failing(self, cursor):
        calls.append(cursor)
        if len(calls) == 3:
            raise OSError("connection to PostgreSQL lost")
        return await read(self, cursor)

    monkeypatch.setattr(MemberBatches, "read", failing)
    resp = await client.get(export_path(crowd["survey"], crowd["everyone"]), headers=tenant.headers)
    assert resp.status == 200  # the headers had left
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()  # but the body never ends as if it were whole


async def test_formula_cells_are_neutralised_and_numbers_kept(client, tenant):
    values = {"f1": "=1+1", "f2": "+SUM(A1:A9)", "f3": "-2+3", "f4": "@cmd", "f5": "\tx", "f6": "=a,b",
              "n1": "-5", "n2": "+1.5e3", "n3": "12", "p": "plain"}
    await bulk(client, tenant.headers, [{"email": "f@x.io", **values}])
    survey = await create_survey(client, tenant.headers)
    segment = await create_segment(client, tenant.headers, {})
    rows = await read_csv(client, tenant, survey["id"], segment["id"], attributeKeys=",".join(values))
    header, record = rows
    cells = dict(zip(header[3:], record[3:], strict=True))
    assert cells == {"f1": "'=1+1", "f2": "'+SUM(A1:A9)", "f3": "'-2+3", "f4": "'@cmd", "f5": "'\tx",
                     "f6": "'=a,b", "n1": "-5", "n2": "+1.5e3", "n3": "12", "p": "plain"}
    assert csv_field("=x") == "'=x" and csv_field("-1") == "-1" and csv_field("a,b") == '"a,b"'


async def test_a_client_gone_mid_file_is_a_499_not_a_postgresql_outage(settings, tenant, crowd, monkeypatch, caplog):
    # found in review: the stream's write failing because the client left was re-raised, and the edge
    # took aiohttp's ClientConnectionResetError (an OSError) for PostgreSQL being unreachable
    import logging

    import aiohttp
    from aiohttp import web

    from service.app import create_app
    from service.web.keys import METRICS
    from tests.ops.metrics_text import parse_samples, value

    read = MemberBatches.read
    first_sent = asyncio.Event()
    client_left = asyncio.Event()

    async def slow_after_the_first(self, cursor):
        if cursor != export.START:
            first_sent.set()
            await client_left.wait()  # the next batch is written only once the client has gone
        return await read(self, cursor)

    monkeypatch.setattr(MemberBatches, "read", slow_after_the_first)
    app = create_app(settings)
    runner = web.AppRunner(app, handler_cancellation=False)  # as `serve` runs it
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}{export_path(crowd['survey'], crowd['everyone'])}"
    caplog.set_level(logging.INFO)
    try:
        async with aiohttp.ClientSession() as session:
            resp = await session.get(url, headers={**tenant.headers, "X-Request-Id": "gone-export"})
            assert resp.status == 200
            await asyncio.wait_for(first_sent.wait(), 10)
            assert resp.connection is not None and resp.connection.transport is not None
            resp.connection.transport.abort()  # the client leaves mid-file
            resp.release()
            client_left.set()
        async def access_line():
            return next((r for r in caplog.records
                         if r.name == "service.access" and getattr(r, "request_id", None) == "gone-export"), None)

        line = await wait_until(access_line, 5, 0.05)
        assert line.status == 499
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
        app[METRICS].flush()
        samples = parse_samples(app[METRICS].render().decode())
        assert value(samples, "sls_postgres_failures_total") == 0
        route = "/api/v2/management/surveys/{surveyId}/contact-links/segments/{segmentId}/export"
        assert value(samples, "sls_http_requests_total", method="GET", route=route, status="499") == 1
    finally:
        await runner.cleanup()


async def test_export_is_rate_limited_like_every_authenticated_request(client, make_tenant):
    limited = await make_tenant(rate_limit="1/minute")
    path = export_path(str(uuid.uuid4()), str(uuid.uuid4()))
    resp = await client.get(path, headers=limited.headers)
    assert resp.status == 404  # refused later, but the minute's one token is spent
    resp = await client.get(path, headers={**limited.headers, "X-Request-Id": "trace-429"})
    assert (resp.status, await resp.json()) == (429, error(429, "Too Many Requests"))
    assert resp.headers["Content-Type"].startswith("application/json")  # JSON, not the CSV stream
    assert resp.headers["X-Request-Id"] == "trace-429"
    assert 59 <= int(resp.headers["Retry-After"]) <= 60
    assert resp.headers["RateLimit-Policy"] == '"minute";q=1;w=60'
