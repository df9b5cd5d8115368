"""Running wrk (the load generator) and reading its result.

wrk is a C load generator on epoll: one thread of it drives far more requests per second than one
Python worker answers, so it is not the bottleneck (its own CPU time is printed with each run).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import orjson

SCRIPT = resources.files("service.bench").joinpath("lua/bench.lua")
INSTALL_HINT = (
    "wrk (the HTTP load generator) is not installed.\n"
    "  Debian/Ubuntu: sudo apt-get update && sudo apt-get install -y wrk\n"
    "  macOS: brew install wrk\n"
    "or run the bench with --install-wrk as root to have it run apt-get for you."
)


class WrkMissing(RuntimeError):
    """wrk is not on PATH."""


def find_wrk(install: bool) -> str:
    """The wrk binary; with `install` (and root on a Debian-like system) apt-get installs it first."""
    found = shutil.which("wrk")
    if found:
        return found
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        import subprocess

        print("installing wrk with apt-get...", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
        found = shutil.which("wrk")
        if found:
            return found
    raise WrkMissing(INSTALL_HINT)


@dataclass(frozen=True)
class Load:
    """What to send: a method, a path (or a file of paths), headers, a body or a body template."""

    path: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    body_template: str | None = None
    paths_file: Path | None = None


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    errors: int  # connect, read, write and timeouts
    status_errors: int  # answers with a status >= 400
    p50_ms: float
    p99_ms: float
    wrk_cpu: float  # wrk's own CPU seconds per wall second (1.0 = one core)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def run_wrk(wrk: str, base_url: str, load: Load, seconds: float, connections: int = 64,
                  threads: int = 1) -> WrkResult:
    """One wrk run; raises if wrk fails or prints no result."""
    env = dict(os.environ)
    env["BENCH_METHOD"] = load.method
    env["BENCH_HEADERS"] = "\n".join(f"{k}: {v}" for k, v in load.headers)
    for name in ("BENCH_BODY", "BENCH_BODY_TEMPLATE", "BENCH_PATHS_FILE"):
        env.pop(name, None)
    if load.body is not None:
        env["BENCH_BODY"] = load.body.decode()
    if load.body_template is not None:
        env["BENCH_BODY_TEMPLATE"] = load.body_template
    if load.paths_file is not None:
        env["BENCH_PATHS_FILE"] = str(load.paths_file)
    duration = max(1, round(seconds))
    with resources.as_file(SCRIPT) as script:
        args = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", str(script),
                base_url.rstrip("/") + load.path]
        before = os.times()
        proc = await asyncio.create_subprocess_exec(*args, env=env, stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), timeout=duration + 60)
        after = os.times()
    text = out.decode(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("BENCH_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode(errors='replace')}\n{text}")
    data = orjson.loads(line.removeprefix("BENCH_RESULT "))
    wall = data["duration_us"] / 1e6
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return WrkResult(
        requests=data["requests"], seconds=wall,
        errors=data["connect_errors"] + data["read_errors"] + data["write_errors"] + data["timeouts"],
        status_errors=data["status_errors"], p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000,
        wrk_cpu=cpu / wall if wall else 0.0,
    )
