"""`serve --workers 2`: one port, embedded servers started once, SIGTERM drains and stops everything."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from service.embedded.postgres import EmbeddedPostgres
from service.embedded.redis import EmbeddedRedis
from tests.conftest import TEST_KEYS
from tests.ops import serving
from tests.ops.metrics_text import parse_samples, series

# real processes: embedded servers started from scratch, then drained and stopped (~20 s)
pytestmark = pytest.mark.slow


async def _worker_counts(served: serving.Served) -> dict[int, float]:
    """Requests answered per worker pid, from /metrics, each request on a new connection."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
        for _ in range(10):
            async with http.get(served.base_url + "/health") as resp:
                assert resp.status == 200
        async with http.get(served.base_url + "/metrics") as resp:
            samples = parse_samples(await resp.text())
    return {int(dict(labels)["pid"]): v for labels, v in series(samples, "sls_worker_requests").items()}


def _accepted_by_a_worker(served: serving.Served, client_port: int) -> bool:
    """Whether a worker process holds the server end of our connection (accepted, not in the backlog)."""
    sockets = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.rpartition(":")[2], 16) == served.port and int(remote.rpartition(":")[2], 16) == client_port:
            sockets.add(f"socket:[{fields[9]}]")
    for pid in served.worker_pids():
        with contextlib.suppress(OSError):  # a worker that just went
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in sockets:
                        return True
    return False


async def _port_closed(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


@pytest.fixture
def embedded_served(tmp_path):
    data_dir = tmp_path / "data"
    served = serving.start({}, workers=2, log_path=tmp_path / "serve.log", data_dir=data_dir)
    yield served
    served.stop()


async def test_two_workers_share_the_port_and_sigterm_drains_then_stops_everything(embedded_served, tmp_path):
    served = embedded_served
    await serving.wait_healthy(served, timeout=90)
    data_dir = tmp_path / "data"
    pg_pid = int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    redis_pid = json.loads((data_dir / "redis" / "state.json").read_text())["pid"]
    workers = await serving.wait_for(lambda: len(served.worker_pids()) == 2 and served.worker_pids(), 30)
    assert len(list(tmp_path.glob("sls-metrics-*"))) == 1  # the workers' shared metrics directory, fresh

    # both workers answer on the one port: each has counted requests of its own
    counts = await serving.wait_for(
        lambda: _answered_by_both(served, workers), timeout=30, interval=0.2)
    assert set(counts) == workers

    # a request in flight when SIGTERM arrives: headers sent, the body still to come
    key = await serving.embedded_tenant(data_dir)
    body = json.dumps({"name": "drained"}).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
    writer.write(
        b"POST /api/v2/management/surveys HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"x-api-key: {key}\r\nX-Request-Id: slow-1\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[:5]
    )
    await writer.drain()
    client_port = writer.get_extra_info("sockname")[1]
    # a worker has accepted the connection, and with it the headers: its handler waits for the rest
    await serving.wait_for(lambda: _accepted_by_a_worker(served, client_port), timeout=10, interval=0.01)
    served.proc.send_signal(signal.SIGTERM)
    # the listening sockets close at once, while the slow request is still being served
    await serving.wait_for(lambda: _port_closed(served.port), timeout=10)
    writer.write(body[5:])
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), timeout=15)
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 201 "), raw[:300]
    assert b"X-Request-Id: slow-1" in head
    assert json.loads(payload)["data"]["name"] == "drained"

    assert served.wait_exit(30) == 0, served.logs()[-3000:]
    deadline = time.monotonic() + 10
    while any(serving.alive(p) for p in (*workers, pg_pid, redis_pid)) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert [p for p in (*workers, pg_pid, redis_pid) if serving.alive(p)] == []
    assert EmbeddedRedis(data_dir).running_port() is None and EmbeddedPostgres(data_dir).running_port() is None
    assert list(tmp_path.glob("sls-metrics-*")) == []
    # every line the server wrote is one JSON object (workers and master alike)
    lines = [line for line in served.logs().splitlines() if line.strip()]
    assert lines and all(json.loads(line)["level"] for line in lines)
    assert any(json.loads(line).get("request_id") == "slow-1" for line in lines)


async def _answered_by_both(served: serving.Served, workers: set[int]) -> dict[int, float] | None:
    counts = await _worker_counts(served)
    return counts if set(counts) == workers and all(v > 0 for v in counts.values()) else None


async def test_workers_leave_when_their_master_is_killed(servers, database_url, tmp_path):
    env = {"DATABASE_URL": database_url, "REDIS_URL": servers.redis_url,
           "SIGNING_KEYS": ",".join(f"{k.kid}:{k.secret.decode()}" for k in TEST_KEYS)}
    served = serving.start(env, workers=2, log_path=tmp_path / "serve.log")
    try:
        await serving.wait_healthy(served)
        workers = await serving.wait_for(lambda: len(served.worker_pids()) == 2 and served.worker_pids(), 30)
        served.proc.send_signal(signal.SIGKILL)
        served.proc.wait(timeout=10)
        await serving.wait_for(lambda: not any(serving.alive(p) for p in workers), timeout=15)
    finally:
        served.stop()
    gone = [json.loads(line) for line in served.logs().splitlines() if "master process gone" in line]
    assert len(gone) == 2 and {x["level"] for x in gone} == {"warning"}
