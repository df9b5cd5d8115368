"""The PostgreSQL pool serves acquirers in arrival order (asyncpg's own lets newcomers barge in)."""

from __future__ import annotations

import asyncio

from service.db.pool import create_pool


async def test_nobody_is_overtaken_by_more_than_a_pool_of_newcomers(database_url):
    """40 tasks take turns on 4 connections: nobody is overtaken by more than a pool's worth of later
    askers (asyncpg's own pool lets waiters be overtaken over a thousand times here)."""
    pool = await create_pool(database_url, max_size=4)
    next_ticket, granted, worst = 0, [], 0

    async def worker() -> None:
        nonlocal next_ticket, worst
        for _ in range(30):
            ticket, next_ticket = next_ticket, next_ticket + 1
            async with pool.acquire() as conn:
                worst = max(worst, sum(1 for g in granted if g > ticket))
                granted.append(ticket)
                await conn.fetchval("SELECT 1")
            await asyncio.sleep(0)

    try:
        # every connection opened first: opening one is a wait of its own, during which later askers pass
        await asyncio.gather(*(pool.execute("SELECT pg_sleep(0.05)") for _ in range(4)))
        await asyncio.gather(*(worker() for _ in range(40)))
    finally:
        await pool.close()
    assert len(granted) == 1200
    assert worst <= 4


async def test_turns_are_given_back_once(database_url):
    pool = await create_pool(database_url, max_size=2)
    try:
        conn = await pool.acquire()
        await pool.release(conn)
        await pool.release(conn)  # a second release of the same connection changes nothing
        both = [await pool.acquire(), await pool.acquire()]
        third = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0.05)
        assert not third.done()  # still only two connections' worth of turns
        await pool.release(both[0])
        await pool.release(await asyncio.wait_for(third, 5))
        await pool.release(both[1])
        assert await pool.fetchval("SELECT 41 + 1") == 42
    finally:
        await pool.close()
