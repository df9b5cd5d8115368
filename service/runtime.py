"""Resolve where the servers are: external ones from the settings, or the embedded ones."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .embedded import EmbeddedServers
from .settings import Settings


@contextlib.contextmanager
def servers(settings: Settings) -> Iterator[Settings]:
    """Settings with database_url, redis_url and signing keys filled in, for as long as needed.

    Without DATABASE_URL or REDIS_URL, this attaches to (or starts) the embedded servers of
    DATA_DIR and leaves them on exit; the last process to leave stops them.
    """
    if not settings.embedded:
        yield settings
        return
    embedded = EmbeddedServers(settings.data_dir)
    try:
        urls = embedded.open()
        yield settings.with_servers(
            settings.database_url or urls.database_url,
            settings.redis_url or urls.redis_url,
            settings.signing_keys or urls.signing_keys,
        )
    finally:
        embedded.close()
