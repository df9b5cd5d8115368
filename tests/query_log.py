"""What an app's PostgreSQL pool runs: asyncpg's query logger (its public API) on every pool connection."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from service.web.keys import POOL, SETTINGS


@contextlib.asynccontextmanager
async def recording(app: web.Application) -> AsyncIterator[list[Any]]:
    """The statements (with their arguments) every connection of the app's pool runs meanwhile.

    All the pool's connections are taken at once, so each gets the logger; it stays on a connection
    released to the pool (asyncpg keeps its query loggers until the connection closes)."""
    records: list[Any] = []  # asyncpg's LoggedQuery: .query, .args, ...

    def log(record: Any) -> None:
        records.append(record)

    pool, size = app[POOL], app[SETTINGS].pg_pool_max
    held = [await pool.acquire() for _ in range(size)]
    for conn in held:
        conn.add_query_logger(log)
        await pool.release(conn)
    try:
        yield records
        await asyncio.sleep(0)  # asyncpg hands the last records to the logger with call_soon
    finally:
        held = [await pool.acquire() for _ in range(size)]
        for conn in held:
            conn.remove_query_logger(log)
            await pool.release(conn)
