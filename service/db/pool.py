"""The PostgreSQL pool (the schema is service/db/migrate.py's)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Generator
from typing import Any

import asyncpg
import orjson


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads,
                              schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a connection without asyncpg's reset query (one more round trip per request).

    The service keeps no session state: no SET, LISTEN, session advisory lock or cursor outside a
    transaction. asyncpg still rolls back a transaction left open before this is called.
    """


class PoolTimeout(TimeoutError):
    """No pool connection within the pool's wait limit (PG_POOL_TIMEOUT): every one is in use."""


class Turns:
    """At most `size` holders at once, the others served strictly in the order they came.

    asyncio's Semaphore is first-come first-served only since its 2022 rewrite (CPython gh-90155) and
    its documentation promises no order: these few lines make the order ours, and tested.
    """

    def __init__(self, size: int) -> None:
        self.free = size
        self._line: deque[asyncio.Future[None]] = deque()

    async def take(self) -> None:
        if self.free and not self._line:
            self.free -= 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.cancelled():
                with contextlib.suppress(ValueError):  # give_back may have dropped it already
                    self._line.remove(turn)
            else:
                self.give_back()  # granted, then cancelled before it could use it: the next one's
            raise

    @property
    def waiting(self) -> int:
        """How many are in line for a turn (what tests wait on instead of sleeping)."""
        return sum(not turn.done() for turn in self._line)

    def give_back(self) -> None:
        while self._line:
            turn = self._line.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.free += 1


class Pool:
    """asyncpg's pool (its public API only) behind a FIFO line, with a limit on the whole wait.

    asyncpg hands connections out through an asyncio.Queue, whose get() lets a newcomer take a
    connection just put back for a waiter; the waiter goes to the end of the line again, and
    under steady load some requests lose that race for seconds (the bench saw a 4.5 s p99 with
    64 connections on a pool of 10). The line lets through only as many acquirers as there are
    connections, in the order they came, so asyncpg always has one ready for them; past `wait`
    seconds in the line, acquire() raises PoolTimeout.
    """

    def __init__(self, pool: asyncpg.Pool, size: int, wait: float) -> None:
        self._pool = pool
        self._turns = Turns(size)
        self._wait = wait
        self._out: set[Any] = set()  # connections handed out, each giving its turn back once

    @property
    def waiting(self) -> int:
        """How many acquirers are in line for a connection."""
        return self._turns.waiting

    def acquire(self) -> Acquire:
        """`async with pool.acquire() as conn:` (or `conn = await pool.acquire()`, then release)."""
        return Acquire(self)

    async def take(self) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        try:
            async with asyncio.timeout_at(deadline):
                await self._turns.take()
        except TimeoutError:
            raise PoolTimeout(f"no PostgreSQL connection within {self._wait:g} s") from None
        try:
            # a connection is free or being opened: what is left of the limit bounds the opening
            conn = await self._pool.acquire(timeout=max(deadline - loop.time(), 0.001))
        except BaseException:
            self._turns.give_back()
            raise
        self._out.add(conn)
        return conn

    async def release(self, conn: Any) -> None:
        held = conn in self._out
        self._out.discard(conn)
        try:
            await self._pool.release(conn)  # asyncpg ignores a second release of the same one
        finally:
            if held:
                self._turns.give_back()

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await conn.fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        async with self.acquire() as conn:
            status: str = await conn.execute(query, *args)
            return status

    async def close(self) -> None:
        await self._pool.close()


class Acquire:
    """What Pool.acquire() answers: an async context manager, or an awaitable of a connection."""

    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._conn: Any = None

    async def __aenter__(self) -> Any:
        self._conn = await self._pool.take()
        return self._conn

    async def __aexit__(self, *exc_info: object) -> None:
        await self._pool.release(self._conn)

    def __await__(self) -> Generator[Any, None, Any]:
        return self._pool.take().__await__()


async def create_pool(dsn: str, max_size: int = 10, wait: float = 5.0) -> Pool:
    """A pool whose connections speak jsonb as Python values, waited for at most `wait` seconds."""
    pool = await asyncpg.create_pool(
        dsn, min_size=1, max_size=max_size, init=_init_connection, command_timeout=30, reset=_keep_session,
        # fail fast when the server is gone instead of hanging requests
        timeout=5,
        max_queries=50000, max_inactive_connection_lifetime=300.0,
    )
    return Pool(pool, max_size, wait)

