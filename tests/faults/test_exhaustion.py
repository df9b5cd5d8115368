"""One tenant must not stall the service through the PostgreSQL pool (the real `serve`): stalled
exports are capped and cut, a pool wait has a limit, PostgreSQL out of connections is 503, and
`serve` refuses pools that cannot fit the server."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time

import aiohttp
import asyncpg

from service.embedded.process import free_port
from tests.conftest import Tenant
from tests.faults.conftest import REPO, OwnPostgres, new_tenant, signing_keys_env
from tests.helpers import links_path, wait_until
from tests.ops.metrics_text import number, parse_samples, value

BASE = "/api/v2/management"
PG_DETAIL = "Service temporarily unavailable: postgresql is not answering, retry shortly"
FORMBRICKS_503 = {"error": {"code": 503, "message": PG_DETAIL, "details": []}}
FILUM_503 = {"detail": PG_DETAIL}
EXPORTS_503 = {"error": {"code": 503, "details": [],
                         "message": "Service temporarily unavailable: too many exports in progress, retry shortly"}}
CONTACTS = 30_000  # about 4.5 MB of CSV: far more than the socket buffers hold
STALL = 3.0


async def _campaign(http: aiohttp.ClientSession, base: str, database_url: str) -> tuple[Tenant, str, str]:
    """A tenant, a survey and one link of it: (tenant, survey id, link path `/l/...`)."""
    tenant = await new_tenant(database_url, link_quota=1000)
    async with http.post(f"{base}{BASE}/surveys", json={"name": "S"}, headers=tenant.headers) as r:
        assert r.status == 201, await r.text()
        survey_id = (await r.json())["data"]["id"]
    async with http.post(base + links_path(survey_id), json={"name": "l"}, headers=tenant.headers) as r:
        assert r.status == 200, await r.text()
        link = "/l/" + (await r.json())["survey_url"].split("/l/")[1]
    return tenant, survey_id, link


async def _limit_count(http: aiohttp.ClientSession, base: str, limit: str) -> float:
    async with http.get(base + "/metrics") as r:
        return value(parse_samples(await r.text()), "sls_limits_reached_total", limit=limit) or 0


class RawClient:
    """An HTTP/1.1 GET over a socket with a tiny receive buffer, read only as far as the test says."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: sets the window
        self.sock.setblocking(False)
        self.data = b""

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
        """Send the request and read just the status line and headers: the status and the headers."""
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, ("127.0.0.1", self.port))
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}", *(f"{k}: {v}" for k, v in headers.items())]
        await loop.sock_sendall(self.sock, ("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.data:
            chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 512), 10)
            assert chunk, "closed before the headers"
            self.data += chunk
        head, _, self.data = self.data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode().split("\r\n")
        parsed = dict(line.split(": ", 1) for line in header_lines)
        return int(status_line.split()[1]), {k.lower(): v for k, v in parsed.items()}

    async def read_exactly(self, length: int) -> bytes:
        loop = asyncio.get_running_loop()
        while len(self.data) < length:
            chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 1 << 16), 10)
            assert chunk, "closed before the end of the body"
            self.data += chunk
        return self.data

    async def read_to_end(self) -> tuple[bytes, bool]:
        """Everything left, and whether the server reset the connection."""
        loop = asyncio.get_running_loop()
        try:
            while chunk := await asyncio.wait_for(loop.sock_recv(self.sock, 1 << 16), 10):
                self.data += chunk
        except ConnectionResetError:
            return self.data, True
        return self.data, False

    def close(self) -> None:
        self.sock.close()


async def test_stalled_exports_are_capped_and_cut_while_everything_else_answers(serve, http, database_url, redis_url,
                                                                                db):
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "SIGNING_KEYS": signing_keys_env(),
           "STREAM_STALL_SECONDS": str(STALL)}
    server = serve(env, workers=2)
    base = server.base_url
    tenant, survey_id, link = await _campaign(http, base, database_url)
    await db.execute("INSERT INTO contacts (org_id, attributes) SELECT $1, jsonb_build_object('n', i)"
                     " FROM generate_series(1, $2) AS i", tenant.org_id, CONTACTS)
    async with http.post(f"{base}{BASE}/segments", json={"title": "all", "filters": {}}, headers=tenant.headers) as r:
        assert r.status == 201, await r.text()
        segment_id = (await r.json())["data"]["id"]
    export = f"{BASE}/surveys/{survey_id}/contact-links/segments/{segment_id}/export"

    clients = [RawClient(server.port) for _ in range(16)]
    try:
        answers = await asyncio.gather(*(c.get(export, tenant.headers) for c in clients))
        stalled_at = time.monotonic()
        streaming = [c for c, (status, _) in zip(clients, answers, strict=True) if status == 200]
        refused = [(c, h) for c, (status, h) in zip(clients, answers, strict=True) if status != 200]
        # EXPORT_CONCURRENCY (2) per worker stream; the kernel may give one worker every connection
        assert 2 <= len(streaming) <= 4, [s for s, _ in answers]
        for c, headers in refused:
            body = await c.read_exactly(int(headers["content-length"]))
            assert (json.loads(body), headers["retry-after"]) == (EXPORTS_503, "5")

        # the stalled exports leave the pool to everyone else: each answer within 2 s
        async def timed(path: str, headers: dict[str, str] | None = None) -> int:
            async with asyncio.timeout(2):
                async with http.get(base + path, headers=headers) as r:
                    await r.read()
                    return r.status

        statuses = await asyncio.gather(*(timed(f"{BASE}/surveys/{survey_id}", tenant.headers) for _ in range(20)),
                                        *(timed(link) for _ in range(20)), timed("/ready"))
        assert statuses == [200] * 41
        assert await _limit_count(http, base, "stream_stall") == 0  # all that while, still stalled, not cut

        # each stalled client is cut within 1.5 x STREAM_STALL_SECONDS of its last read
        async def all_cut() -> bool:
            return await _limit_count(http, base, "stream_stall") == len(streaming)

        await wait_until(all_cut, timeout=STALL * 1.5 + 3)
        assert time.monotonic() - stalled_at <= STALL * 1.5 + 3
        for c in streaming:
            body, reset = await c.read_to_end()
            assert reset or not body.endswith(b"\r\n0\r\n\r\n")  # cut: never a clean end
        assert await _limit_count(http, base, "exports") == len(refused)
    finally:
        for c in clients:
            c.close()

    # their connections and export slots are back: a reader that reads gets the whole file
    async with http.get(base + export, headers=tenant.headers) as r:
        assert r.status == 200
        assert (await r.read()).count(b"\r\n") == CONTACTS + 1
    assert "unexpected error" not in server.logs()


async def test_a_pool_wait_past_pg_pool_timeout_is_503(serve, http, database_url, redis_url):
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "SIGNING_KEYS": signing_keys_env(),
           "PG_POOL_MAX": "2", "PG_POOL_TIMEOUT": "0.5", "KEY_CACHE_SECONDS": "60"}
    server = serve(env, workers=1)
    base = server.base_url
    tenant, survey_id, _ = await _campaign(http, base, database_url)
    survey = f"{base}{BASE}/surveys/{survey_id}"

    async def get() -> tuple[int, dict, dict[str, str]]:
        async with http.get(survey, headers=tenant.headers) as r:
            return r.status, await r.json(), dict(r.headers)

    locker, watcher = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE surveys IN ACCESS EXCLUSIVE MODE")
            holders = [asyncio.create_task(get()) for _ in range(2)]  # both pool connections, blocked

            async def both_blocked() -> bool:
                # from another connection: a transaction sees one snapshot of pg_stat_activity
                return await watcher.fetchval("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                              " AND datname = current_database()") == 2

            await wait_until(both_blocked, timeout=10)
            started = time.monotonic()
            status, body, headers = await get()
            waited = time.monotonic() - started
            assert (status, body, headers["Retry-After"]) == (503, FORMBRICKS_503, "1")
            assert 0.5 <= waited < 2.0
        assert [s for s, _, _ in await asyncio.gather(*holders)] == [200, 200]
    finally:
        await asyncio.gather(locker.close(), watcher.close())
    assert (await get())[0] == 200
    assert await _limit_count(http, base, "pool_wait") == 1
    assert "unexpected error" not in server.logs()


async def _hold_every_connection(url: str) -> list[asyncpg.Connection]:
    """Connections to the server until it refuses one (53300)."""
    held: list[asyncpg.Connection] = []
    while True:
        batch = await asyncio.gather(*(asyncpg.connect(url) for _ in range(20)), return_exceptions=True)
        held += [c for c in batch if isinstance(c, asyncpg.Connection)]
        refused = [e for e in batch if isinstance(e, BaseException)]
        if refused:
            assert all(isinstance(e, asyncpg.TooManyConnectionsError) for e in refused), refused
            return held


async def test_postgres_out_of_connections_is_503_then_recovers(serve, http, own_postgres: OwnPostgres, redis_url):
    if not own_postgres.running:
        own_postgres.start()
    env = {"DATABASE_URL": own_postgres.url, "REDIS_URL": redis_url, "SIGNING_KEYS": signing_keys_env(),
           "KEY_CACHE_SECONDS": "60"}
    server = serve(env, workers=2)
    base = server.base_url
    tenant, survey_id, link = await _campaign(http, base, own_postgres.url)

    async def burst() -> list[tuple[int, object, str | None]]:
        async def one(method: str, path: str, body: object = None) -> tuple[int, object, str | None]:
            async with http.request(method, base + path, json=body, headers=tenant.headers) as r:
                return r.status, await r.json(), r.headers.get("Retry-After")

        return await asyncio.gather(
            *(one("GET", f"{BASE}/surveys/{survey_id}") for _ in range(20)),
            *(one("POST", links_path(survey_id), {"name": f"n{i}"}) for i in range(10)),
            *(one("GET", link) for _ in range(10)))

    held = await _hold_every_connection(own_postgres.url)
    try:
        answers = await burst()
        assert {status for status, _, _ in answers} <= {200, 503}, answers
        unavailable = [(body, retry) for status, body, retry in answers if status == 503]
        assert unavailable  # the pools had to open connections the server refused
        for i, (status, body, retry) in enumerate(answers):
            if status == 503:
                assert (body, retry) == (FILUM_503 if 20 <= i < 30 else FORMBRICKS_503, "1")
    finally:
        await asyncio.gather(*(c.close() for c in held))

    async def recovered() -> bool:
        return all(status == 200 for status, _, _ in await burst())

    await wait_until(recovered, timeout=15, interval=0.2)
    logs = server.logs()
    assert "unexpected error" not in logs and "Traceback" not in logs
    assert "TooManyConnectionsError" in logs  # logged as "postgresql unavailable", a warning
    async with http.get(base + "/metrics") as r:
        assert number(parse_samples(await r.text()), "sls_postgres_failures_total") >= len(unavailable)


def test_serve_refuses_pools_that_cannot_fit(own_postgres: OwnPostgres, redis_url, tmp_path):
    if not own_postgres.running:
        own_postgres.start()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update({"DATABASE_URL": own_postgres.url, "REDIS_URL": redis_url, "SIGNING_KEYS": signing_keys_env(),
                "PG_POOL_MAX": "100", "LOG_FORMAT": "json", "TMPDIR": str(tmp_path)})
    command = [sys.executable, "-m", "service", "serve", "--port", str(free_port()), "--workers", "2"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = (done.stdout + done.stderr).splitlines()
    assert len(lines) == 1, lines
    line = json.loads(lines[0])
    assert (line["level"], line["logger"]) == ("error", "service.capacity")
    assert line["msg"] == (
        "refusing to start: PG_POOL_MAX=100 x 2 workers + 3 for admin commands = 203 PostgreSQL connections,"
        " but the server allows 197 (max_connections=200 - 3 superuser_reserved_connections"
        " - 0 reserved_connections)")
