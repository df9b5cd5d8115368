"""Resolve where the servers are: external ones from the settings, or the embedded ones."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Iterator

from .db.migrate import Report, migrate_url
from .embedded import EmbeddedServers
from .settings import Settings

log = logging.getLogger("service.runtime")


def migrate_database(settings: Settings) -> Report:
    """Bring the database to this code's schema (before any event loop runs); MigrationError if it cannot."""
    assert settings.database_url
    report = asyncio.run(migrate_url(settings.database_url))
    for migration in report.applied:
        log.info("migration applied", extra={"migration": migration.label})
    return report


@contextlib.contextmanager
def servers(settings: Settings, *, migrate: bool = False) -> Iterator[Settings]:
    """Settings with database_url, redis_url and signing keys filled in, for as long as needed.

    For each of DATABASE_URL and REDIS_URL that is not set, this attaches to (or starts) that
    embedded server of DATA_DIR and leaves it on exit; the last process to leave stops them.
    With `migrate`, the database is migrated first (serve, admin, demo), and a MigrationError
    leaves the embedded servers as any other error does.
    """
    if not settings.embedded:
        if migrate:
            migrate_database(settings)
        yield settings
        return
    embedded = EmbeddedServers(settings.data_dir)
    try:
        urls = embedded.open(postgres=settings.database_url is None, redis=settings.redis_url is None)
        database_url = settings.database_url or urls.database_url
        redis_url = settings.redis_url or urls.redis_url
        assert database_url and redis_url
        ready = settings.with_servers(database_url, redis_url, settings.signing_keys or urls.signing_keys)
        if migrate:
            migrate_database(ready)
        yield ready
    finally:
        embedded.close()


# in DATA_DIR while `serve` runs on it: where it listens, for `demo` to print commands that reach it
ADDRESS_FILE = "serve.json"


@contextlib.contextmanager
def announced(settings: Settings) -> Iterator[None]:
    """While the block runs, DATA_DIR tells other commands the base URL of this server (embedded mode only:
    with external servers DATA_DIR may not be writable, and PUBLIC_BASE_URL says it)."""
    if not settings.embedded:
        yield
        return
    path = settings.data_dir / ADDRESS_FILE
    path.write_text(json.dumps({"pid": os.getpid(), "url": settings.public_base_url}))
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError, KeyError):
            if json.loads(path.read_text())["pid"] == os.getpid():
                path.unlink()


def served_url(settings: Settings) -> str | None:
    """The base URL of the `serve` running on this DATA_DIR, if one runs."""
    try:
        found = json.loads((settings.data_dir / ADDRESS_FILE).read_text())
        pid, url = int(found["pid"]), str(found["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # left behind by a server that was killed
    except PermissionError:
        pass  # alive, another user's
    return url
