"""`python -m service serve` as a subprocess, for the workers and cluster tests.

Every wait is bounded, and `stop()` ends whatever was started: the master and its workers (their
own process group) and, for embedded mode, the servers under DATA_DIR.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg

from service.admin import new_tenant
from service.embedded.postgres import EmbeddedPostgres
from service.embedded.process import free_port
from service.embedded.redis import EmbeddedRedis

REPO = Path(__file__).resolve().parents[2]
# settings of the test process that must not leak into the server's environment
SCRUBBED = ("DATABASE_URL", "REDIS_URL", "SIGNING_KEYS", "DATA_DIR", "PROMETHEUS_MULTIPROC_DIR", "PUBLIC_BASE_URL",
            "CACHE_REDIS_URL")


def alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def children(pid: int) -> dict[int, str]:
    """{child pid: command line} of the live children of `pid`."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


@dataclass
class Served:
    proc: subprocess.Popen
    port: int
    log_path: Path
    data_dir: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_pids(self) -> set[int]:
        """The master's worker processes (not multiprocessing's resource tracker)."""
        return {pid for pid, cmd in children(self.proc.pid).items() if "spawn_main" in cmd}

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_exit(self, timeout: float) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.proc.wait(timeout=timeout)
        return None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the whole group if it lingers; embedded servers stopped too."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            if self.wait_exit(20) is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # workers that outlived their master, if any
        if self.data_dir is not None:
            EmbeddedRedis(self.data_dir).stop()
            EmbeddedPostgres(self.data_dir).stop()


def start(env: dict[str, str], workers: int, log_path: Path, data_dir: Path | None = None) -> Served:
    """Start `serve` on a free port; the caller waits for it with `wait_healthy`."""
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    # the workers' metrics directory goes under the test's directory, even when the master is killed
    full_env.update({"LOG_FORMAT": "json", "LOG_LEVEL": "INFO", "TMPDIR": str(log_path.parent), **env})
    if data_dir is not None:
        full_env["DATA_DIR"] = str(data_dir)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers)],
            cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return Served(proc, port, log_path, data_dir)


async def wait_healthy(served: Served, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if served.proc.poll() is not None:
                raise AssertionError(f"serve exited with {served.proc.returncode}:\n{served.logs()[-3000:]}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(served.base_url + "/health") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise AssertionError(f"serve not healthy within {timeout} s:\n{served.logs()[-3000:]}")


async def wait_for(check, timeout: float, interval: float = 0.1):
    """Poll `check()` (sync or async) until it answers something true; that answer, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)


async def embedded_tenant(data_dir: Path, name: str = "served") -> str:
    """An organisation (rate limit off) and a key with every scope, in the embedded database that
    `serve` started for `data_dir`; answers the key."""
    port = EmbeddedPostgres(data_dir).running_port()
    assert port is not None
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres")
    try:
        _, key = await new_tenant(conn, name, 50, "off", "test")
    finally:
        await conn.close()
    return key
