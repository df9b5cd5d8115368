"""Resolve where the servers are: external ones from the settings, or the embedded ones."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .embedded import EmbeddedServers
from .settings import Settings


@contextlib.contextmanager
def servers(settings: Settings) -> Iterator[Settings]:
    """Settings with database_url, redis_url and signing keys filled in, for as long as needed.

    For each of DATABASE_URL and REDIS_URL that is not set, this attaches to (or starts) that
    embedded server of DATA_DIR and leaves it on exit; the last process to leave stops them.
    """
    if not settings.embedded:
        yield settings
        return
    embedded = EmbeddedServers(settings.data_dir)
    try:
        urls = embedded.open(postgres=settings.database_url is None, redis=settings.redis_url is None)
        database_url = settings.database_url or urls.database_url
        redis_url = settings.redis_url or urls.redis_url
        assert database_url and redis_url
        yield settings.with_servers(database_url, redis_url, settings.signing_keys or urls.signing_keys)
    finally:
        embedded.close()
