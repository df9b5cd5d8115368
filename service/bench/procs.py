"""The processes of a benchmark run: the service, the reference servers, and an RSS sampler."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from ..embedded.process import free_port


@dataclass
class Server:
    """A server process this run started, listening on `port`."""

    name: str
    proc: asyncio.subprocess.Process
    port: int
    log_path: Path
    workers: int = 1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it lingers; always reaped."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()


async def _spawn(name: str, args: list[str], env: dict[str, str], log_path: Path, port: int,
                 ready_path: str, workers: int = 1) -> Server:
    with open(log_path, "wb") as log:
        proc = await asyncio.create_subprocess_exec(sys.executable, *args, env=env, stdout=log, stderr=log,
                                                    stdin=asyncio.subprocess.DEVNULL)
    server = Server(name, proc, port, log_path, workers)
    deadline = time.monotonic() + 120
    async with aiohttp.ClientSession() as session:
        while True:
            if proc.returncode is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {log_path}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(server.url + ready_path) as resp:
                    if resp.status < 500:
                        return server
            if time.monotonic() > deadline:
                await server.stop()
                raise RuntimeError(f"{name} did not answer on port {port}; see {log_path}")
            await asyncio.sleep(0.1)


async def start_service(data_dir: Path, workers: int, log_dir: Path, extra_env: dict[str, str]) -> Server:
    """`python -m service serve` on a free port, attached to the embedded servers of `data_dir`."""
    port = free_port()
    env = {**os.environ, "DATA_DIR": str(data_dir), "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", **extra_env}
    args = ["-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return await _spawn(f"service ({workers} worker{'s' if workers > 1 else ''})", args, env,
                        log_dir / f"service-w{workers}.log", port, "/health", workers)


async def start_reference(kind: str, log_dir: Path, redis_url: str) -> Server:
    """One reference server (see refs.py)."""
    port = free_port()
    args = ["-m", "service.bench.refs", kind, str(port), redis_url]
    return await _spawn(f"reference {kind}", args, dict(os.environ), log_dir / f"ref-{kind}.log", port, "/")


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (0 for one that is gone)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def worker_pids(server: Server) -> list[int]:
    """The processes that answer requests: the server process itself, or its children (several workers)."""
    assert server.proc.pid is not None
    return [server.proc.pid] if server.workers <= 1 else _children(server.proc.pid)


def _children(pid: int) -> list[int]:
    """Direct children, from /proc (no psutil needed)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # the command name may hold spaces: the ppid is the 2nd field after the last ')'
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


@dataclass
class RssSampler:
    """Samples the RSS of the watched servers' worker processes every `interval` seconds, keeping the peak."""

    interval: float = 0.25
    peak_kb: int = 0
    samples: int = 0
    _servers: list[Server] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def watch(self, server: Server) -> None:
        self._servers.append(server)

    def forget(self, server: Server) -> None:
        self._servers = [s for s in self._servers if s is not server]

    async def _run(self) -> None:
        while True:
            for server in self._servers:
                for pid in worker_pids(server):
                    self.peak_kb = max(self.peak_kb, rss_kb(pid))
            self.samples += 1
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
