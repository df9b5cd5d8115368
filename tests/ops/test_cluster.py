"""Scale-out on a Redis Cluster: a 3-master cluster on loopback, two `serve` workers, limits and idempotency exact."""

from __future__ import annotations

import asyncio
import math
import time
import uuid

import aiohttp
import pytest
from redis.asyncio import Redis, RedisCluster

from service.core.ratelimit import org_key
from service.metrics import FLUSH_SECONDS
from service.redis_client import cluster_url, connect_redis
from tests.conftest import TEST_KEYS
from tests.ops import serving
from tests.ops.cluster import LocalCluster
from tests.ops.metrics_text import number, parse_samples, series, value

pytestmark = pytest.mark.cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    local = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        local.start()
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def on_cluster(cluster, database_url, tmp_path_factory):
    """`serve --workers 2` on the module's PostgreSQL and the cluster (a plain redis:// URL: detected)."""
    env = {"DATABASE_URL": database_url, "REDIS_URL": cluster.url,
           "SIGNING_KEYS": ",".join(f"{k.kid}:{k.secret.decode()}" for k in TEST_KEYS)}
    served = serving.start(env, workers=2, log_path=tmp_path_factory.mktemp("serve") / "serve.log")
    try:
        asyncio.run(_ready(served))
        yield served
    finally:
        served.stop()


async def _ready(served: serving.Served) -> None:
    await serving.wait_healthy(served)
    await serving.wait_for(lambda: len(served.worker_pids()) == 2, 30)
    async with aiohttp.ClientSession() as http, http.get(served.base_url + "/ready") as resp:
        assert resp.status == 200, await resp.text()


async def _metrics(http: aiohttp.ClientSession, served: serving.Served) -> dict:
    async with http.get(served.base_url + "/metrics") as resp:
        return parse_samples(await resp.text())


async def _settled_metrics(http: aiohttp.ClientSession, served: serving.Served, settled) -> dict:
    """A scrape once `settled(samples)` holds: each worker hands its request tallies to the shared
    files every FLUSH_SECONDS, so a scrape may not have the other worker's last second yet.
    After a few flushes, the last scrape, whatever it says (the assertions then tell what is off)."""
    deadline = time.monotonic() + 4 * FLUSH_SECONDS
    while True:
        samples = await _metrics(http, served)
        if settled(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.1)


def _per_worker(samples: dict) -> dict[str, float]:
    return {dict(labels)["pid"]: v for labels, v in series(samples, "sls_worker_requests").items()}


@pytest.fixture
async def http():
    # a new connection per request, so the kernel spreads the requests over both workers
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0)) as session:
        yield session


def test_cluster_url_forms():
    assert cluster_url("redis+cluster://h:7000/0") == "redis://h:7000/0"
    assert cluster_url("rediss+cluster://u:p@h:7000") == "rediss://u:p@h:7000"
    assert cluster_url("redis://h:7000/0") is None


async def test_client_is_a_cluster_client_when_the_url_or_the_server_says_so(cluster, servers):
    for url in (cluster.url, "redis+cluster://" + cluster.url.split("://", 1)[1]):
        client = await connect_redis(url)
        assert isinstance(client, RedisCluster) and len(client.get_nodes()) == 3
        await client.aclose()
    single = await connect_redis(servers.redis_url)
    assert type(single) is Redis
    await single.aclose()


async def test_burst_across_two_workers_passes_exactly_the_limit(on_cluster, make_tenant, http, cluster):
    # a minute window refills one token in 12 s: no slow machine earns a sixth during the burst
    tenant = await make_tenant(rate_limit="5/minute")
    url = on_cluster.base_url + "/api/v2/management/metadata-fields"
    await asyncio.sleep(1.5 * FLUSH_SECONDS)  # every earlier request's counts in the files first
    before = await _metrics(http, on_cluster)
    statuses: list[int] = []  # of every request of this tenant

    async def one() -> tuple[int, str | None]:
        async with http.get(url, headers=tenant.headers) as resp:
            statuses.append(resp.status)
            return resp.status, resp.headers.get("Retry-After")

    await asyncio.gather(*(one() for _ in range(6)))  # warm: connections, key caches, the script on its node
    bucket = org_key(tenant.org, "rl")
    client = await connect_redis(cluster.url)
    try:
        await client.delete(bucket)  # a full bucket again
    finally:
        await client.aclose()
    started = time.monotonic()
    results = await asyncio.gather(*(one() for _ in range(20)))
    elapsed = time.monotonic() - started
    assert elapsed < 12, "the burst took longer than the window needs to refill one token"
    assert sorted(status for status, _ in results) == [200] * 5 + [429] * 15
    # 12 s for a token from the first spend (at or after `started`), rounded up: never a second early
    assert all(retry is not None and math.ceil(12 - elapsed) <= int(retry) <= 12
               for status, retry in results if status == 429), results
    decisions = "sls_ratelimit_decisions_total"

    def counted(samples: dict, decision: str) -> float:
        return number(samples, decisions, decision=decision) - number(before, decisions, decision=decision)

    after = await _settled_metrics(http, on_cluster, lambda samples: all(
        counted(samples, decision) == statuses.count(status) for decision, status in (("allowed", 200),
                                                                                     ("limited", 429))))
    served = {pid: n - _per_worker(before).get(pid, 0) for pid, n in _per_worker(after).items()}
    assert len(served) == 2 and all(n > 0 for n in served.values()), served  # both workers took part
    # every scrape adds up both workers' counters: each decision counted once, wherever it was made
    for decision, status in (("allowed", 200), ("limited", 429)):
        assert counted(after, decision) == statuses.count(status), decision
    assert value(after, "sls_redis_failures_total", operation="gate") == 0
    assert value(after, decisions, decision="degraded") == 0
    # the bucket lives on the master that owns the organisation's slot
    client = await connect_redis(cluster.url)
    try:
        assert await client.exists(bucket) == 1 and await client.ttl(bucket) > 0
    finally:
        await client.aclose()
    # asked directly, not through the cluster client: the owner of the slot holds the key itself
    owner = Redis(host="127.0.0.1", port=cluster.node_of(bucket))
    try:
        assert await owner.exists(bucket) == 1 and await owner.ttl(bucket) > 0
    finally:
        await owner.aclose()


async def test_fifty_identical_creates_across_two_workers_make_one_row(on_cluster, make_tenant, http, db, cluster):
    # a real policy, so every request runs the gate script with three keys (bucket, replay cache, epoch)
    tenant = await make_tenant(rate_limit="1000/second")
    base = on_cluster.base_url
    async with http.post(f"{base}/api/v2/management/surveys", json={"name": "S"}, headers=tenant.headers) as r:
        assert r.status == 201
        survey_id = (await r.json())["data"]["id"]
    async with http.post(f"{base}/api/v2/management/metadata-fields", json={"name": "sku"},
                         headers=tenant.headers) as r:
        field = (await r.json())["data"]["id"]
    body = {"name": "n", "metadata_mapping": [{"metadata_id": field, "value": "same"}]}
    await asyncio.sleep(1.5 * FLUSH_SECONDS)  # every earlier request's counts in the files first
    before = await _metrics(http, on_cluster)

    def replays(samples: dict, source: str) -> float:
        return (value(samples, "sls_idempotent_replays_total", source=source) or 0) - (
            value(before, "sls_idempotent_replays_total", source=source) or 0)

    async def create() -> tuple[int, int, bool]:
        async with http.post(f"{base}/external/survey-campaigns/{survey_id}/links", json=body,
                             headers=tenant.headers) as resp:
            data = await resp.json()
            return resp.status, data.get("id"), resp.headers.get("Idempotent-Replayed") == "true"

    results = await asyncio.wait_for(asyncio.gather(*(create() for _ in range(50))), 60)
    assert [status for status, _, _ in results] == [200] * 50
    assert len({link_id for _, link_id, _ in results}) == 1
    assert sum(not replayed for _, _, replayed in results) == 1
    rows = await db.fetchval("SELECT count(*) FROM survey_links WHERE survey_id = $1", uuid.UUID(survey_id))
    assert rows == 1
    # one more, now answered from the replay cache on the cluster
    status, link_id, replayed = await create()
    assert (status, link_id, replayed) == (200, results[0][1], True)
    # every replay (49 of the burst, then this one) counted once, whichever worker answered it
    samples = await _settled_metrics(
        http, on_cluster, lambda samples: replays(samples, "cache") + replays(samples, "database") >= 50)
    assert replays(samples, "cache") + replays(samples, "database") == 50
    assert replays(samples, "cache") >= 1
    assert value(samples, "sls_redis_failures_total", operation="gate") == 0
    assert value(samples, "sls_redis_failures_total", operation="request") == 0


async def test_a_lost_master_degrades_to_fail_open_not_errors(on_cluster, make_tenant, http, cluster):
    """Last in this module: it kills a node of the module's cluster."""
    tenant = await make_tenant(rate_limit="1000/second")
    victim = cluster.ports[-1]
    while cluster.node_of(org_key(tenant.org, "rl")) == victim:  # the organisation's slot survives
        tenant = await make_tenant(rate_limit="1000/second")
    url = on_cluster.base_url + "/api/v2/management/metadata-fields"
    async with http.get(url, headers=tenant.headers) as resp:
        assert resp.status == 200 and "RateLimit" in resp.headers
    cluster.kill(victim)
    # the survivors declare the cluster down (CLUSTERDOWN for every slot) after the node timeout
    await serving.wait_for(lambda: cluster.state(cluster.ports[0]) == "fail", timeout=20, interval=0.2)
    for _ in range(5):
        async with http.get(url, headers=tenant.headers) as resp:
            assert resp.status == 200, await resp.text()  # RATE_LIMIT_FAILURE_MODE=open: let through
            assert "RateLimit" not in resp.headers
    samples = await _settled_metrics(http, on_cluster, lambda samples: (value(
        samples, "sls_ratelimit_decisions_total", decision="degraded") or 0) >= 5)
    assert number(samples, "sls_ratelimit_decisions_total", decision="degraded") >= 5
    assert number(samples, "sls_redis_failures_total", operation="gate") >= 5
    assert value(samples, "sls_redis_failures_total", operation="request") == 0
