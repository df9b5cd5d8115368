"""The PostgreSQL pool (the schema is service/db/migrate.py's)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads,
                              schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a connection without asyncpg's reset query (one more round trip per request).

    The service keeps no session state: no SET, LISTEN, session advisory lock or cursor outside a
    transaction. asyncpg still rolls back a transaction left open before this is called.
    """


class FairPool(asyncpg.Pool):
    """asyncpg's pool, with connections handed out in the order they were asked for.

    asyncpg hands connections out through an asyncio.Queue, whose get() lets a newcomer take a
    connection just put back for a waiter; the waiter goes to the end of the line again, and
    under steady load some requests lose that race for seconds (the bench saw a 4.5 s p99 with
    64 connections on a pool of 10). A FIFO semaphore in front lets through only as many
    acquirers as there are connections.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns = asyncio.Semaphore(kwargs["max_size"])

    async def _acquire(self, timeout: float | None) -> Any:
        if timeout is None:
            await self._turns.acquire()
        else:
            await asyncio.wait_for(self._turns.acquire(), timeout)
        try:
            return await super()._acquire(timeout)
        except BaseException:
            self._turns.release()
            raise

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:
        # only a connection of this pool that is still out gives its turn back, and only once
        held = (type(connection) is PoolConnectionProxy and connection._holder._pool is self
                and connection._con is not None)
        try:
            await super().release(connection, timeout=timeout)
        finally:
            if held:
                self._turns.release()


async def create_pool(dsn: str, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose connections speak jsonb as Python values."""
    pool = FairPool(
        dsn, min_size=1, max_size=max_size, init=_init_connection, command_timeout=30, reset=_keep_session,
        # fail fast when the server is gone instead of hanging requests
        timeout=5,
        init_size=None, max_queries=50000, max_inactive_connection_lifetime=300.0, loop=None,
        connection_class=asyncpg.Connection, record_class=asyncpg.Record,
    )
    return await pool

