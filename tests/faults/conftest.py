"""Fault-test fixtures: servers each test owns (so killing them never disturbs the session's), and
the service run as a real `python -m service serve` subprocess.

Everything here is bounded: every wait has a deadline, and every process started is stopped (and
reaped) at teardown whatever the test did.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from service.core.auth import SCOPES, hash_secret, issue_key
from service.db import orgs
from service.db.migrate import migrate, migrate_url
from service.embedded.postgres import EmbeddedPostgres
from service.embedded.process import free_port
from service.embedded.redis import EmbeddedRedis
from tests.conftest import TEST_KEYS, Tenant
from tests.ops.serving import alive as _running

REPO = Path(__file__).resolve().parents[2]
SCRUBBED = ("DATABASE_URL", "REDIS_URL", "SIGNING_KEYS", "DATA_DIR", "PROMETHEUS_MULTIPROC_DIR", "KEY_CACHE_SECONDS",
            "RATE_LIMIT_FAILURE_MODE", "TRUSTED_PROXIES", "UNAUTH_RATE_LIMIT", "HEADER_TIMEOUT_SECONDS",
            "BODY_TIMEOUT_SECONDS", "KEEPALIVE_TIMEOUT_SECONDS", "CACHE_REDIS_URL")


def _parent_of(pid: int) -> int | None:
    """The parent of a process, from /proc (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _signal_and_wait(pid: int, signum: int, timeout: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
    deadline = time.monotonic() + timeout
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    if _running(pid):
        raise AssertionError(f"process {pid} still running after signal {signum}")


class OwnRedis:
    """A Redis server of one test, on a fixed port for its whole life, so clients can find it again."""

    def __init__(self, root: Path) -> None:
        self.server = EmbeddedRedis(root)
        self.port = self.server.start()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int:
        state = self.server.read_state()
        assert state is not None
        return state[0]

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye, as when the host loses the process."""
        _signal_and_wait(self.pid, signal.SIGKILL)

    def freeze(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers (a hung server)."""
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM: Redis flushes its append-only file and exits."""
        with contextlib.suppress(ProcessLookupError):
            self.thaw()
        _signal_and_wait(self.pid, signal.SIGTERM)

    def wipe(self) -> None:
        """Forget every key and script, as a replacement server would (only while stopped)."""
        for path in self.server.dir.glob("appendonly*"):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    def restart(self) -> None:
        """Start again on the same port (after kill() or stop())."""
        self.server.start(self.port)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    root = Path(tempfile.mkdtemp(prefix="sls-fault-redis-"))
    server = OwnRedis(root)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


class OwnPostgres:
    """A PostgreSQL cluster of one test module that the tests may stop and start on the same port."""

    def __init__(self, root: Path) -> None:
        self.server = EmbeddedPostgres(root)
        self.port = self.server.start()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        asyncio.run(migrate_url(self.url))  # the app starts only on a migrated database

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start(self.port)

    def kill(self) -> None:
        """SIGKILL to the postmaster and every backend at once, as when the host loses them: no
        checkpoint, no goodbye; the next start recovers from the write-ahead log."""
        postmaster = int((self.server.pgdata / "postmaster.pid").read_text().split()[0])
        family = [postmaster] + [int(entry.name) for entry in Path("/proc").iterdir()
                                 if entry.name.isdigit() and _parent_of(int(entry.name)) == postmaster]
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(_running(pid) for pid in family) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not any(_running(pid) for pid in family), "PostgreSQL still running after SIGKILL"
        # a killed postmaster whose parent does not reap it stays a zombie, which PostgreSQL's lock check
        # takes for a live postmaster: its lock file goes, as it would with the lost host's processes
        (self.server.pgdata / "postmaster.pid").unlink(missing_ok=True)

    @property
    def running(self) -> bool:
        return self.server.running_port() == self.port


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    root = Path(tempfile.mkdtemp(prefix="sls-fault-pg-"))
    server = OwnPostgres(root)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


async def new_tenant(database_url: str, link_quota: int = 50, rate_limit: str = "off") -> Tenant:
    """An organisation and a key with every scope, written straight to the database."""
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        org = await orgs.insert_org(conn, f"org-{uuid.uuid4().hex[:6]}", link_quota, rate_limit)
        key_id, secret = issue_key()
        await orgs.insert_key(conn, org.id, "fault", hash_secret(secret), list(SCOPES), key_id)
    finally:
        await conn.close()
    return Tenant(org.id, secret, key_id)


def signing_keys_env() -> str:
    return ",".join(f"{k.kid}:{k.secret.decode()}" for k in TEST_KEYS)


@dataclass
class ServeProcess:
    """`python -m service serve --workers N` in a subprocess, with its stderr kept in a file."""

    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> list[int]:
        """The master's spawned workers (its resource tracker excluded)."""
        pids = []
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        with contextlib.suppress(FileNotFoundError):
            for raw in children.read_text().split():
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    cmdline = Path(f"/proc/{raw}/cmdline").read_bytes()
                    if b"spawn_main" in cmdline and _running(int(raw)):
                        pids.append(int(raw))
        return pids

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


def listening_sockets(port: int) -> int:
    """How many sockets listen on the TCP port (one per worker with SO_REUSEPORT)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def start_serve(env: dict[str, str], workers: int, log_path: Path, timeout: float = 30.0) -> ServeProcess:
    """Start the server and wait until every worker answers /health (or fail with its log)."""
    port = free_port()
    # the test process's own settings must not leak into the server's
    inherited = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    full_env = {**inherited, "LOG_LEVEL": "INFO", "LOG_FORMAT": "json", **env}
    log_file = open(log_path, "wb")  # noqa: SIM115 - closed below once the child has it
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers)],
            cwd=REPO, env=full_env, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        log_file.close()
    server = ServeProcess(proc, port, log_path)
    deadline = time.monotonic() + timeout
    import urllib.request

    while True:
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}:\n{server.logs()[-3000:]}")
        if time.monotonic() > deadline:
            stop_serve(server)
            raise AssertionError(f"server not healthy within {timeout}s:\n{server.logs()[-3000:]}")
        # a worker listens once its startup (pool, schema) is done: wait for every worker's socket
        if listening_sockets(port) == max(workers, 1):
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{server.base_url}/ready", timeout=1) as r:
                if r.status == 200:
                    break
        time.sleep(0.1)
    return server


def stop_serve(server: ServeProcess) -> None:
    """SIGTERM (drain), then SIGKILL the whole process group if it lingers; always reap."""
    proc = server.proc
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    # workers are in the master's session: none may outlive the test
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """Factory: `server = serve(env, workers=2)`; every server started is stopped at teardown."""
    started: list[ServeProcess] = []

    def start(env: dict[str, str], workers: int = 2) -> ServeProcess:
        server = start_serve(env, workers, tmp_path / f"serve-{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        stop_serve(server)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session that opens a new connection for each concurrent request (spread over workers)."""
    connector = aiohttp.TCPConnector(limit=400, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session
