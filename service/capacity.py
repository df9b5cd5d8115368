"""Whether the PostgreSQL server has room for every worker's pool: checked once by `serve`.

What must fit: workers x PG_POOL_MAX, plus OTHER_CONNECTIONS for what runs beside the workers.
What it must fit in: max_connections less the slots only superusers (superuser_reserved_connections)
or pg_use_reserved_connections roles (reserved_connections, PostgreSQL 16) may use, since the
service's role is usually neither. Connections already open are not subtracted: they may be an
instance this one replaces (a rolling restart) and come and go; when they leave too little room,
a warning says so, and requests that find no connection are answered 503.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from .settings import Settings

log = logging.getLogger("service.capacity")

# beside the workers' pools: one admin command (1 connection) and the demo (a pool of 2) at once
OTHER_CONNECTIONS = 3

_LIMITS = """
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       coalesce(current_setting('reserved_connections', true)::int, 0),
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int - 1
"""


class PoolTooLarge(Exception):
    """workers x PG_POOL_MAX cannot fit in the server's max_connections."""


async def _limits(database_url: str) -> tuple[int, int, int, int]:
    conn = await asyncpg.connect(database_url, timeout=5)
    try:
        row = await conn.fetchrow(_LIMITS, timeout=5)
    finally:
        await conn.close()
    assert row is not None  # settings and counts: one row
    return row[0], row[1], row[2], row[3]


def pool_fits(database_url: str, workers: int, pool_max: int) -> None:
    """Raise PoolTooLarge (with the one line to print) when the pools cannot fit the server.

    A server that cannot be reached is not this check's to judge: it logs a warning and lets the
    workers start, which answer 503 until PostgreSQL is there.
    """
    try:
        max_connections, superuser, reserved, in_use = asyncio.run(_limits(database_url))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log.warning("could not read max_connections; pool size not checked: %s", type(exc).__name__)
        return
    room = max_connections - superuser - reserved
    need = max(workers, 1) * pool_max + OTHER_CONNECTIONS
    if need > room:
        raise PoolTooLarge(
            f"PG_POOL_MAX={pool_max} x {max(workers, 1)} workers + {OTHER_CONNECTIONS} for admin commands = {need}"
            f" PostgreSQL connections, but the server allows {room} (max_connections={max_connections}"
            f" - {superuser} superuser_reserved_connections - {reserved} reserved_connections)")
    if need + in_use > room:
        log.warning("PostgreSQL connections may run out: other clients hold some already",
                    extra={"need": need, "room": room, "in_use": in_use})


def refuse_oversized_pools(settings: Settings, workers: int) -> None:
    """`serve`'s check: one error line and exit code 1 when the pools cannot fit the server."""
    assert settings.database_url
    try:
        pool_fits(settings.database_url, workers, settings.pg_pool_max)
    except PoolTooLarge as exc:
        log.error("refusing to start: %s", exc)
        raise SystemExit(1) from None
