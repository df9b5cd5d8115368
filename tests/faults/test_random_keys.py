"""A flood of random API keys against `serve`: keys that cannot be ours are refused without a
PostgreSQL transaction, and a valid caller's latency holds."""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time

import aiohttp
import asyncpg

from tests.faults.conftest import new_tenant, signing_keys_env, stop_serve
from tests.helpers import links_path

FLOOD = 3000
RATE = 250  # random keys a second, from 4 connections
# the flood runs in its own process, so that sending it does not slow the valid caller's timing
FLOOD_SCRIPT = r"""
import asyncio, json, random, secrets, string, sys
import aiohttp

async def main(base, n, concurrency, rate):
    alphabet = string.ascii_letters + string.digits
    def key(i):
        if i % 3 == 0:  # the new format's shape with a wrong checksum (one in 2**32 would be right)
            return "sls_" + "".join(random.choice(alphabet) for _ in range(71))
        if i % 3 == 1:
            return secrets.token_urlsafe(random.randint(8, 60))
        return "slk_" + secrets.token_urlsafe(random.randint(1, 30))  # never the old format's length
    statuses = {}
    queue = list(range(n))
    async with aiohttp.ClientSession(base) as session:
        print("ready", flush=True)
        async def worker():
            while queue:
                i = queue.pop()
                headers = {"x-api-key": key(i)} if i % 2 else {"Authorization": "Bearer " + key(i)}
                async with session.get("/api/v2/management/metadata-fields", headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                await asyncio.sleep(concurrency / rate)  # a steady flood, not one that saturates the CPU
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    print(json.dumps(statuses))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
"""


async def _transactions(database_url: str) -> int:
    """Committed and rolled-back transactions of the database so far (a fresh connection: no stale snapshot)."""
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval("SELECT xact_commit + xact_rollback FROM pg_stat_database"
                                   " WHERE datname = current_database()")
    finally:
        await conn.close()


async def _replay_latencies(session: aiohttp.ClientSession, url: str, headers, body, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        async with session.post(url, json=body, headers=headers) as resp:
            await resp.read()
            assert resp.status == 200 and resp.headers["Idempotent-Replayed"] == "true"
        out.append(time.perf_counter() - started)
    return out


async def test_random_keys_cost_no_transactions_and_a_valid_caller_keeps_its_latency(serve, database_url,
                                                                                    redis_url):
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "SIGNING_KEYS": signing_keys_env(),
           "UNAUTH_RATE_LIMIT": "100000/second"}  # the format alone is under test here, not the limit
    server = serve(env, workers=1)
    tenant = await new_tenant(database_url)
    async with aiohttp.ClientSession(server.base_url) as session:
        async with session.post("/api/v2/management/surveys", json={"name": "S"}, headers=tenant.headers) as resp:
            survey = (await resp.json())["data"]["id"]
        url, body = links_path(survey), {"name": "valid caller"}
        async with session.post(url, json=body, headers=tenant.headers) as resp:
            assert resp.status == 200
        quiet = statistics.median(await _replay_latencies(session, url, tenant.headers, body, 200))

        before = await _transactions(database_url)
        flood = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FLOOD_SCRIPT, server.base_url, str(FLOOD), "4", str(RATE), stdout=subprocess.PIPE)
        assert flood.stdout is not None
        assert await asyncio.wait_for(flood.stdout.readline(), 30) == b"ready\n"
        busy: list[float] = []
        while flood.returncode is None and len(busy) < 2000:
            busy += await _replay_latencies(session, url, tenant.headers, body, 10)
            await asyncio.sleep(0)
        out, _ = await asyncio.wait_for(flood.communicate(), 120)
    assert json.loads(out) == {"401": FLOOD}
    # the server's backends write their counts when they exit: stop it before counting
    stop_serve(server)
    spent = await _transactions(database_url) - before
    assert spent < 300, spent
    assert len(busy) >= 50
    during = statistics.median(busy)
    print(f"valid caller p50: quiet {quiet * 1000:.2f} ms, during the flood {during * 1000:.2f} ms; "
          f"{spent} transactions for {FLOOD} random keys")
    assert during <= 3 * quiet, (quiet, during)
