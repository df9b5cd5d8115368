"""Request ids, the access log and /metrics, through the whole app on the real servers."""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import replace

import pytest
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError

from service.app import create_app
from service.embedded.redis import EmbeddedRedis
from service.logs import JsonFormatter
from service.metrics import Metrics
from service.web.drain import Drain
from service.web.keys import DRAIN, METRICS
from service.web.middlewares import edge_middleware
from tests.helpers import create_survey, links_path, wait_until
from tests.ops.metrics_text import number, parse_samples, series, value

HEX_ID = re.compile(r"^[0-9a-f]{32}$")
LINKS_ROUTE = "/external/survey-campaigns/{survey_campaign_id}/links"
SURVEY_ROUTE = "/api/v2/management/surveys/{surveyId}"


async def scrape(client) -> dict:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    return parse_samples(await resp.text())


async def test_health_and_ready(client):
    resp = await client.get("/health")
    assert (resp.status, await resp.json()) == (200, {"status": "ok"})
    resp = await client.get("/ready")
    assert (resp.status, await resp.json()) == (200, {"status": "ok", "checks": {"postgresql": "ok", "redis": "ok"}})


@pytest.mark.parametrize("given", ["abc-123", "req.1:2_3", "x" * 128])
async def test_sane_request_id_is_echoed(client, given):
    resp = await client.get("/health", headers={"X-Request-Id": given})
    assert resp.headers["X-Request-Id"] == given


@pytest.mark.parametrize("given", [None, "", "has space", "x" * 129, "semi;colon", "é"])
async def test_missing_or_odd_request_id_is_replaced(client, given):
    headers = {} if given is None else {"X-Request-Id": given}
    resp = await client.get("/health", headers=headers)
    assert HEX_ID.match(resp.headers["X-Request-Id"])
    again = await client.get("/health", headers=headers)
    assert again.headers["X-Request-Id"] != resp.headers["X-Request-Id"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/nowhere", 404), ("DELETE", "/health", 405), ("POST", links_path(str(uuid.uuid4())), 401),
     ("GET", "/api/v2/management/surveys/not-a-uuid", 401)],
)
async def test_every_answer_carries_a_request_id(client, method, path, status):
    resp = await client.request(method, path, headers={"X-Request-Id": "trace-7"})
    assert resp.status == status
    assert resp.headers["X-Request-Id"] == "trace-7"


def _access_lines(caplog) -> list[dict]:
    formatter = JsonFormatter()
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == "service.access"]


async def test_one_json_access_line_per_request_without_secrets(client, tenant, caplog):
    caplog.set_level(logging.INFO, logger="service.access")
    survey = await create_survey(client, tenant.headers)
    caplog.clear()
    resp = await client.get(f"/api/v2/management/surveys/{survey['id']}",
                            headers={**tenant.headers, "X-Request-Id": "req-42"})
    assert resp.status == 200
    bad = await client.post(links_path(survey["id"]), json={"name": ""},
                            headers={"Authorization": f"Bearer {tenant.key}"})
    assert bad.status == 422
    lines = _access_lines(caplog)
    assert len(lines) == 2
    first, second = lines
    assert set(first) == {"ts", "level", "logger", "msg", "request_id", "method", "route", "status", "duration_ms",
                          "org"}
    assert {k: first[k] for k in ("level", "logger", "msg", "request_id", "method", "route", "status", "org")} == {
        "level": "info", "logger": "service.access", "msg": "request", "request_id": "req-42", "method": "GET",
        "route": SURVEY_ROUTE, "status": 200, "org": tenant.org,
    }
    assert isinstance(first["duration_ms"], float) and 0 < first["duration_ms"] < 5000
    assert (second["method"], second["route"], second["status"], second["org"]) == (
        "POST", LINKS_ROUTE, 422, tenant.org)
    assert HEX_ID.match(second["request_id"]) and second["request_id"] == bad.headers["X-Request-Id"]
    text = "\n".join(json.dumps(line) for line in lines)
    assert tenant.key not in text and survey["id"] not in text  # neither the key nor a raw path


async def test_anonymous_and_unmatched_requests_are_logged_without_org(client, caplog):
    caplog.set_level(logging.INFO, logger="service.access")
    await client.get("/c/secret-token-value")
    await client.post(links_path(str(uuid.uuid4())), json={}, headers={"x-api-key": "slk_wrong-key"})
    lines = _access_lines(caplog)
    assert [(x["route"], x["status"], x["org"]) for x in lines][-1] == (LINKS_ROUTE, 401, None)
    text = "\n".join(json.dumps(line) for line in lines)
    assert "secret-token-value" not in text and "slk_wrong-key" not in text


async def test_requests_and_latency_by_route_and_status(client, tenant):
    survey = await create_survey(client, tenant.headers)
    for _ in range(3):
        assert (await client.get(f"/api/v2/management/surveys/{survey['id']}", headers=tenant.headers)).status == 200
    assert (await client.get(f"/api/v2/management/surveys/{uuid.uuid4()}", headers=tenant.headers)).status == 404
    assert (await client.request("PROPFIND", "/health")).status == 405
    samples = await scrape(client)
    total = "sls_http_requests_total"
    assert value(samples, total, method="GET", route=SURVEY_ROUTE, status="200") == 3
    assert value(samples, total, method="GET", route=SURVEY_ROUTE, status="404") == 1
    assert value(samples, total, method="POST", route="/api/v2/management/surveys", status="201") == 1
    # a method nobody knows is one label value, never the caller's string
    assert value(samples, total, method="OTHER", route="unmatched", status="405") == 1
    hist = "sls_http_request_duration_seconds"
    assert value(samples, f"{hist}_count", method="GET", route=SURVEY_ROUTE) == 4
    assert value(samples, f"{hist}_bucket", method="GET", route=SURVEY_ROUTE, le="+Inf") == 4
    assert 0 < number(samples, f"{hist}_sum", method="GET", route=SURVEY_ROUTE) < 20
    assert value(samples, "sls_worker_requests") == 6  # one process here: its own count


async def test_rate_limit_decisions_and_idempotent_replays(client, make_tenant, redis_url):
    tenant = await make_tenant(rate_limit="4/minute")
    survey = await create_survey(client, tenant.headers)  # allowed 1
    body = {"name": "n"}
    first = await client.post(links_path(survey["id"]), json=body, headers=tenant.headers)  # allowed 2, new
    cached = await client.post(links_path(survey["id"]), json=body, headers=tenant.headers)  # allowed 3, cache
    assert (first.status, cached.status, cached.headers["Idempotent-Replayed"]) == (200, 200, "true")
    assert "Idempotent-Replayed" not in first.headers
    # the replay cache lost (Redis flushed of it): the database answers the replay
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(redis_url)
    for key in await r.keys(f"{{o:{tenant.org}}}:lk:*"):
        await r.delete(key)
    await r.aclose()
    from_db = await client.post(links_path(survey["id"]), json=body, headers=tenant.headers)  # allowed 4, database
    assert (from_db.status, from_db.headers["Idempotent-Replayed"]) == (200, "true")
    limited = await client.post(links_path(survey["id"]), json=body, headers=tenant.headers)
    assert limited.status == 429
    samples = await scrape(client)
    decisions = series(samples, "sls_ratelimit_decisions_total")
    assert decisions == {frozenset({("decision", "allowed")}): 4, frozenset({("decision", "limited")}): 1,
                         frozenset({("decision", "degraded")}): 0}
    assert value(samples, "sls_idempotent_replays_total", source="cache") == 1
    assert value(samples, "sls_idempotent_replays_total", source="database") == 1


async def test_redis_down_counts_degraded_decisions_and_failures(aiohttp_client, settings, make_tenant, tmp_path):
    own = EmbeddedRedis(tmp_path / "own")
    port = own.start()
    try:
        client = await aiohttp_client(create_app(replace(settings, redis_url=f"redis://127.0.0.1:{port}/0")))
        tenant = await make_tenant(rate_limit="100/second")
        survey = await create_survey(client, tenant.headers)
        own.stop()
        for _ in range(2):
            resp = await client.get(f"/api/v2/management/surveys/{survey['id']}", headers=tenant.headers)
            assert resp.status == 200  # open failure mode: let through
            assert "RateLimit" not in resp.headers
        samples = await scrape(client)
    finally:
        own.stop()
    assert value(samples, "sls_ratelimit_decisions_total", decision="allowed") == 1
    assert value(samples, "sls_ratelimit_decisions_total", decision="degraded") == 2
    assert value(samples, "sls_redis_failures_total", operation="gate") == 2
    assert value(samples, "sls_redis_failures_total", operation="request") == 0


def _failing_app(exc: BaseException) -> web.Application:
    """The edge middleware around one handler that raises `exc`."""
    app = web.Application(middlewares=[edge_middleware])
    app[METRICS] = Metrics()
    app[DRAIN] = Drain()

    async def handler(request: web.Request) -> web.Response:
        raise exc

    app.router.add_get("/api/v2/management/thing", handler)
    return app


@pytest.mark.parametrize(
    ("exc", "name", "labels"),
    [(ConnectionRefusedError(111, "refused"), "sls_postgres_failures_total", {}),
     (RedisConnectionError("gone"), "sls_redis_failures_total", {"operation": "request"})],
)
async def test_outages_during_a_request_are_counted(aiohttp_client, exc, name, labels):
    client = await aiohttp_client(_failing_app(exc))
    resp = await client.get("/api/v2/management/thing")
    assert resp.status == 503
    client.app[METRICS].flush()
    samples = parse_samples(client.app[METRICS].render().decode())
    assert value(samples, name, **labels) == 1
    assert value(samples, "sls_http_requests_total", method="GET", route="/api/v2/management/thing",
                 status="503") == 1


async def test_a_client_gone_before_its_body_is_read_is_not_a_postgresql_outage(caplog):
    # found by the benchmark: wrk closing its connections at the end of a run made the body read
    # fail with ConnectionResetError, which was logged and counted as PostgreSQL being unavailable
    import asyncio

    import aiohttp

    from service.web.jsonio import read_json

    app = web.Application(middlewares=[edge_middleware])
    app[METRICS] = Metrics()
    app[DRAIN] = Drain()

    async def handler(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.abort()  # the client goes away while the handler is busy elsewhere
        async with asyncio.timeout(10):
            while request.content.exception() is None:  # until the loss reaches the body stream
                await asyncio.sleep(0)
        await read_json(request)
        return web.Response()

    app.router.add_post("/api/v2/management/thing", handler)
    # as `serve` runs it: a handler is not cancelled when its client goes (the test server's is)
    runner = web.AppRunner(app, handler_cancellation=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    caplog.set_level(logging.INFO)
    try:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.post(f"http://127.0.0.1:{port}/api/v2/management/thing", json={"name": "x"},
                                   headers={"X-Request-Id": "gone-1"})
    finally:
        await runner.cleanup()

    async def logged() -> list:
        return [r for r in caplog.records if r.name == "service.access" and getattr(r, "request_id", None) == "gone-1"]

    (line,) = await wait_until(logged, timeout=10, interval=0.01)
    assert line.status == 499  # nginx's "client closed request"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [r.getMessage() for r in caplog.records]
    app[METRICS].flush()
    samples = parse_samples(app[METRICS].render().decode())
    assert value(samples, "sls_postgres_failures_total") == 0
    assert value(samples, "sls_http_requests_total", method="POST", route="/api/v2/management/thing", status="499") == 1
