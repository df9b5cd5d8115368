"""Redis killed, frozen, restarted or flushed of its scripts, mid-traffic.

PostgreSQL stays the truth throughout: with RATE_LIMIT_FAILURE_MODE=open the service keeps
creating and replaying links without Redis; with `closed` it answers a clear 503; and once Redis
is back (a new process on the same port, its script cache empty) it recovers without a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from dataclasses import replace
from typing import NamedTuple

import pytest
import redis.asyncio as aioredis
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.core.breaker import BREAKER_SECONDS
from service.core.errors import Unavailable
from service.core.ratelimit import GATE_SCRIPT, Gate
from service.core.ratepolicy import parse_policy
from service.core.redis_pipe import PipelinedRedis
from service.redis_client import OPTIONS, SINGLE_SERVER_RETRY
from service.web.keys import GATE
from tests.conftest import Tenant
from tests.faults.conftest import OwnRedis
from tests.helpers import create_metadata_field, create_survey, links_path, wait_until

FILUM_503 = {"detail": "Service temporarily unavailable: redis is not answering, retry shortly"}
FORMBRICKS_503 = {"error": {"code": 503, "message": FILUM_503["detail"], "details": []}}
GATE_SHA = hashlib.sha1(GATE_SCRIPT.encode()).hexdigest()
# a policy generous enough never to refuse here, but real, so every request runs the Lua gate
POLICY = "1000/second"
REDIS_TIMEOUT = OPTIONS["socket_timeout"]


@pytest.fixture
def app_on(aiohttp_client, settings):
    """Factory: a test client of the whole app on `redis` (and the module's PostgreSQL)."""

    async def make(redis: OwnRedis, mode: str):
        return await aiohttp_client(create_app(replace(settings, redis_url=redis.url, rate_limit_failure_mode=mode)))

    return make


async def _campaign(client, tenant) -> tuple[str, int]:
    survey = await create_survey(client, tenant.headers)
    field = await create_metadata_field(client, tenant.headers, f"f{uuid.uuid4().hex[:6]}")
    return survey["id"], field["id"]


def _body(field: int, value: object, name: str = "n") -> dict:
    return {"name": name, "metadata_mapping": [{"metadata_id": field, "value": value}]}


class Setup(NamedTuple):
    """The app on one test's Redis, a tenant, and a campaign with one metadata field to create links on."""

    client: TestClient
    tenant: Tenant
    survey_id: str
    field: int
    path: str


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _still_clock(client: TestClient) -> Clock:
    """The app's gate (and its breaker) on a clock that moves only when the test moves it."""
    clock = Clock()
    client.app[GATE]._clock = clock
    return clock


def _redis_asked(caplog: pytest.LogCaptureFixture) -> int:
    """Gate calls that went to Redis and failed (a resting breaker answers without asking, and without this line)."""
    return sum(r.name == "service.ratelimit" and r.getMessage().startswith("redis unavailable for the rate limiter")
               for r in caplog.records)


async def _at_least(items: list, count: int) -> bool:
    return len(items) >= count


async def _setup(app_on, redis: OwnRedis, make_tenant, mode: str, rate_limit: str = POLICY,
                 link_quota: int = 1000) -> Setup:
    client = await app_on(redis, mode)
    tenant = await make_tenant(rate_limit=rate_limit, link_quota=link_quota)
    survey_id, field = await _campaign(client, tenant)
    return Setup(client, tenant, survey_id, field, links_path(survey_id))


async def _create(s: Setup, value: object) -> ClientResponse:
    return await s.client.post(s.path, json=_body(s.field, value), headers=s.tenant.headers)


async def _rate_limited_again(s: Setup, clock: Clock | None = None) -> bool:
    """A create answered with a real rate-limit decision (headers), not the degraded path (each try past
    the breaker, when the test holds the gate's clock)."""
    if clock is not None:
        clock.now += BREAKER_SECONDS
    resp = await _create(s, "after")
    return resp.status == 200 and "RateLimit" in resp.headers


async def _answered(s: Setup) -> ClientResponse | None:
    """A create's answer once it is not Redis's 503."""
    resp = await _create(s, "x")
    return resp if resp.status != 503 else None


async def _count(db, survey_id: str) -> int:
    return await db.fetchval("SELECT count(*) FROM survey_links WHERE survey_id = $1", uuid.UUID(survey_id))


async def _script_loaded(redis: OwnRedis) -> bool:
    client = aioredis.Redis.from_url(redis.url)
    try:
        return (await client.script_exists(GATE_SHA))[0]
    finally:
        await client.aclose()


async def test_open_mode_keeps_creating_and_replaying_when_redis_dies(app_on, own_redis, make_tenant, db):
    s = await _setup(app_on, own_redis, make_tenant, "open")
    client, tenant, survey_id, field, path = s
    before = await client.post(path, json=_body(field, "before"), headers=tenant.headers)
    assert before.status == 200 and "RateLimit" in before.headers
    before_body = await before.json()

    # traffic of distinct creates runs while Redis is killed under it
    statuses: list[int] = []
    durations: list[float] = []

    async def traffic() -> None:
        for i in range(60):
            started = time.perf_counter()
            resp = await client.post(path, json=_body(field, f"t{i}"), headers=tenant.headers)
            durations.append(time.perf_counter() - started)
            statuses.append(resp.status)
            await asyncio.sleep(0.01)

    runner = asyncio.create_task(traffic())
    await wait_until(lambda: _at_least(statuses, 5), timeout=10, interval=0.01)  # the traffic is under way
    own_redis.kill()
    await asyncio.wait_for(runner, 30)
    assert statuses == [200] * 60
    # a dead Redis is noticed fast: no request waits on reconnect attempts and backoff
    assert max(durations) < 1.0, max(durations)

    # creates still succeed without Redis (and without rate-limit headers: nothing was counted)
    created = await client.post(path, json=_body(field, "during"), headers=tenant.headers)
    assert created.status == 200 and "Idempotent-Replayed" not in created.headers
    assert "RateLimit" not in created.headers
    # replays are answered from PostgreSQL, identical to the first answer
    replay = await client.post(path, json=_body(field, "before", name="other"), headers=tenant.headers)
    assert replay.status == 200 and replay.headers["Idempotent-Replayed"] == "true"
    assert await replay.json() == before_body
    # 16 identical concurrent creates still give one row
    burst = await asyncio.gather(*(client.post(path, json=_body(field, "burst"), headers=tenant.headers)
                                   for _ in range(16)))
    assert [r.status for r in burst] == [200] * 16
    assert len({(await r.json())["id"] for r in burst}) == 1
    assert sum("Idempotent-Replayed" not in r.headers for r in burst) == 1
    assert await _count(db, survey_id) == 1 + 60 + 1 + 1
    assert await db.fetchval("SELECT link_count FROM surveys WHERE id = $1", uuid.UUID(survey_id)) == 63

    ready = await client.get("/ready")
    assert ready.status == 503
    assert await ready.json() == {"status": "unavailable", "checks": {"postgresql": "ok", "redis": "unavailable"}}

    # Redis comes back empty of scripts: the service recovers by itself, rate limiting included
    own_redis.restart()

    await wait_until(lambda: _rate_limited_again(s), timeout=5)
    assert await _script_loaded(own_redis)
    assert (await client.get("/ready")).status == 200
    assert await _count(db, survey_id) == 64


async def test_closed_mode_answers_503_then_recovers(app_on, own_redis, make_tenant, db, caplog):
    client, tenant, survey_id, field, path = await _setup(app_on, own_redis, make_tenant, "closed")
    clock = _still_clock(client)
    own_redis.kill()

    resp = await client.post(path, json=_body(field, "x"), headers=tenant.headers)
    assert resp.status == 503
    assert await resp.json() == FILUM_503
    assert resp.headers["Retry-After"] == "1"
    assert resp.headers["Content-Type"].startswith("application/json")
    assert _redis_asked(caplog) == 1
    # while the breaker rests (Redis is not asked), and once it has expired and Redis is asked again
    clock.now += BREAKER_SECONDS - 0.001
    resp = await client.get(f"/api/v2/management/surveys/{survey_id}", headers=tenant.headers)
    assert resp.status == 503
    assert await resp.json() == FORMBRICKS_503
    assert _redis_asked(caplog) == 1
    statuses = []
    for i in range(5):
        clock.now += BREAKER_SECONDS
        statuses.append((await client.post(path, json=_body(field, i), headers=tenant.headers)).status)
    assert statuses == [503] * 5
    assert _redis_asked(caplog) == 1 + 5
    assert await _count(db, survey_id) == 0  # a refused request writes nothing

    own_redis.restart()

    async def recovered():
        clock.now += BREAKER_SECONDS
        return (await client.post(path, json=_body(field, "x"), headers=tenant.headers)).status == 200

    await wait_until(recovered, timeout=5)
    resp = await client.post(path, json=_body(field, "y"), headers=tenant.headers)
    assert resp.status == 200 and "RateLimit" in resp.headers
    assert await _count(db, survey_id) == 2


async def test_frozen_redis_is_bounded_in_open_mode(app_on, own_redis, make_tenant, db, caplog):
    """A hung Redis (accepts connections, never answers) costs at most about one socket timeout."""
    s = await _setup(app_on, own_redis, make_tenant, "open")
    client, tenant, survey_id, field, path = s
    clock = _still_clock(client)
    own_redis.freeze()
    try:
        durations = []
        for i in range(4):
            clock.now += BREAKER_SECONDS  # past the breaker: each of these requests asks Redis
            started = time.perf_counter()
            resp = await asyncio.wait_for(client.post(path, json=_body(field, i), headers=tenant.headers), 30)
            durations.append(time.perf_counter() - started)
            assert resp.status == 200 and "RateLimit" not in resp.headers
        assert _redis_asked(caplog) == 4, caplog.text
        # each waited out the socket timeout (1 s), and no more: a retry after a timeout, or backoff,
        # would cost another whole timeout (2 s or more), however fast or slow the machine
        assert all(REDIS_TIMEOUT <= d < 2 * REDIS_TIMEOUT for d in durations), durations
        # while the breaker rests, Redis is not asked and nobody waits for it
        clock.now += BREAKER_SECONDS - 0.001
        resp = await client.post(path, json=_body(field, "resting"), headers=tenant.headers)
        assert resp.status == 200 and "RateLimit" not in resp.headers
        assert _redis_asked(caplog) == 4
    finally:
        own_redis.thaw()

    await wait_until(lambda: _rate_limited_again(s, clock), timeout=5)
    assert await _count(db, survey_id) == 6


@pytest.mark.parametrize("mode", ["open", "closed"])
async def test_script_flush_reloads_the_gate(app_on, own_redis, make_tenant, mode):
    client, tenant, _, field, path = await _setup(app_on, own_redis, make_tenant, mode)
    assert (await client.post(path, json=_body(field, 1), headers=tenant.headers)).status == 200
    assert await _script_loaded(own_redis)
    direct = aioredis.Redis.from_url(own_redis.url)
    await direct.script_flush()
    await direct.aclose()
    assert not await _script_loaded(own_redis)
    # the next request reloads the script: a real decision (headers), not the degraded path
    resp = await client.post(path, json=_body(field, 2), headers=tenant.headers)
    assert resp.status == 200 and "RateLimit" in resp.headers
    assert await _script_loaded(own_redis)


@pytest.mark.parametrize("how", ["kill", "stop"])
async def test_redis_replaced_by_an_empty_server_reloads_the_gate(app_on, own_redis, make_tenant, how):
    """Redis comes back without its data (a replacement server): scripts load again, buckets start full."""
    s = await _setup(app_on, own_redis, make_tenant, "closed", rate_limit="3/minute", link_quota=50)  # spends 2 tokens
    client, tenant, _, field, path = s
    own_redis.kill() if how == "kill" else own_redis.stop()
    own_redis.wipe()
    own_redis.restart()
    assert not await _script_loaded(own_redis)

    resp = await wait_until(lambda: _answered(s), timeout=5)
    assert resp.status == 200 and resp.headers["RateLimit"].startswith('"minute";r=2;')
    assert await _script_loaded(own_redis)
    statuses = [(await client.post(path, json=_body(field, i), headers=tenant.headers)).status for i in range(3)]
    assert statuses == [200, 200, 429]


async def test_redis_restarted_with_its_data_keeps_limiting(app_on, own_redis, make_tenant):
    """A clean restart keeps the buckets (append-only file): nobody gets a fresh quota of requests."""
    s = await _setup(app_on, own_redis, make_tenant, "closed", rate_limit="3/minute", link_quota=50)  # spends 2 tokens
    client, tenant, _, field, path = s
    own_redis.stop()
    own_redis.restart()

    resp = await wait_until(lambda: _answered(s), timeout=5)
    assert resp.status == 200 and resp.headers["RateLimit"].startswith('"minute";r=0;')
    refused = await client.post(path, json=_body(field, "y"), headers=tenant.headers)
    assert refused.status == 429 and await refused.json() == {"detail": "Rate limit exceeded"}


@pytest.fixture
async def loading_redis():
    """A server that answers every command as a Redis still loading its data set would."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(65536):
                writer.write(b"-LOADING Redis is loading the dataset in memory\r\n")
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("mode", ["open", "closed"])
@pytest.mark.parametrize("pipelined", [True, False])
async def test_a_loading_redis_is_an_outage_not_an_error(loading_redis, mode, pipelined):
    """LOADING (a restarted Redis reading its append-only file) is fail-open or 503, never a 500."""
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{loading_redis}/0", socket_timeout=1.0,
                                     socket_connect_timeout=1.0, retry=SINGLE_SERVER_RETRY)
    pipe = PipelinedRedis.for_client(client) if pipelined else None
    clock = Clock()
    gate = Gate(client, mode, pipe=pipe, clock=clock)
    try:
        for _ in range(2):  # the first call, and one after the breaker
            if mode == "open":
                decision = await asyncio.wait_for(gate.check("org", parse_policy("5/second"), ("k", "ke")), 5)
                assert decision.allowed and decision.degraded
            else:
                with pytest.raises(Unavailable):
                    await asyncio.wait_for(gate.check("org", parse_policy("5/second"), ("k", "ke")), 5)
            clock.now += BREAKER_SECONDS
    finally:
        await gate.aclose()
        await client.aclose()
