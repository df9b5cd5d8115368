"""The PostgreSQL pool: asyncpg's public pool behind our FIFO line (Turns), with a limit on the wait."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.db.pool import Pool, PoolTimeout, Turns, create_pool
from tests.helpers import wait_until


async def _in_line(line: Turns | Pool, count: int) -> None:
    """Until `count` are waiting in `line`: what the test does next must find them queued."""

    async def queued() -> bool:
        return line.waiting == count

    await wait_until(queued, timeout=5, interval=0)


async def _queued(turns: Turns, count: int, order: list[int]) -> list[asyncio.Task]:
    """`count` tasks waiting in line, in the order of their number; each records when it got its turn."""

    async def wait(i: int) -> None:
        await turns.take()
        order.append(i)

    tasks = [asyncio.create_task(wait(i)) for i in range(count)]
    await _in_line(turns, count)  # each task has run up to its wait in the line, in creation order
    return tasks


async def test_turns_go_in_arrival_order_and_newcomers_queue_behind():
    turns, order = Turns(1), list[int]()
    await turns.take()
    tasks = await _queued(turns, 5, order)
    turns.give_back()  # for task 0, which has not run yet: a newcomer must not take it
    late = asyncio.create_task(turns.take())
    for _ in range(5):
        await asyncio.sleep(0)
        turns.give_back()
    await asyncio.wait_for(asyncio.gather(*tasks, late), 5)
    assert order == [0, 1, 2, 3, 4]
    assert turns.free == 0  # the newcomer holds the one turn


async def test_a_waiter_cancelled_in_line_or_just_granted_passes_its_turn_on():
    turns, order = Turns(1), list[int]()
    await turns.take()
    tasks = await _queued(turns, 3, order)
    tasks[0].cancel()  # still waiting: leaves the line
    turns.give_back()  # goes to task 1
    tasks[1].cancel()  # granted but not yet running: its turn goes to task 2
    await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 5)
    assert [t.cancelled() for t in tasks] == [True, True, False]
    assert order == [2]
    turns.give_back()
    assert turns.free == 1


async def test_nobody_is_overtaken_by_more_than_a_pool_of_newcomers(database_url):
    """40 tasks take turns on 4 connections: nobody is overtaken by more than a pool's worth of later
    askers (asyncpg's own pool lets waiters be overtaken over a thousand times here)."""
    pool = await create_pool(database_url, max_size=4, wait=30)
    next_ticket, worst = 0, 0
    granted: list[int] = []

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


async def test_a_wait_past_the_limit_is_pool_timeout_and_a_release_serves_the_next(database_url):
    pool = await create_pool(database_url, max_size=2, wait=0.3)
    try:
        held = [await pool.acquire(), await pool.acquire()]
        started = time.monotonic()
        with pytest.raises(PoolTimeout):
            await pool.acquire()
        waited = time.monotonic() - started
        assert 0.3 <= waited < 2.0
        waiter = asyncio.create_task(pool.fetchval("SELECT 41 + 1"))
        await _in_line(pool, 1)  # the release must serve a waiter, not a newcomer finding a free turn
        await pool.release(held[0])
        assert await asyncio.wait_for(waiter, 5) == 42
        await pool.release(held[1])
    finally:
        await pool.close()


async def test_turns_are_given_back_once(database_url):
    pool = await create_pool(database_url, max_size=2, wait=0.2)
    try:
        conn = await pool.acquire()
        await pool.release(conn)
        await pool.release(conn)  # a second release of the same connection changes nothing
        both = [await pool.acquire(), await pool.acquire()]
        with pytest.raises(PoolTimeout):  # still only two connections' worth of turns
            await pool.acquire()
        for conn in both:
            await pool.release(conn)
        assert await pool.fetchval("SELECT 41 + 1") == 42
    finally:
        await pool.close()


async def test_a_cancelled_holder_or_waiter_gives_its_connection_back(database_url):
    pool = await create_pool(database_url, max_size=1, wait=5)
    inside = asyncio.Event()

    async def hold_forever() -> None:
        async with pool.acquire() as conn:
            await conn.fetchval("SELECT 1")
            inside.set()
            await asyncio.Event().wait()

    try:
        holder = asyncio.create_task(hold_forever())
        await inside.wait()
        waiter = asyncio.create_task(pool.fetchval("SELECT 1"))
        await _in_line(pool, 1)  # behind the holder
        waiter.cancel()
        holder.cancel()
        await asyncio.gather(holder, waiter, return_exceptions=True)
        assert holder.cancelled() and waiter.cancelled()
        # the one connection is back and no turn was lost: two uses in a row, each within the limit
        assert await asyncio.wait_for(pool.fetchval("SELECT 1"), 1) == 1
        assert await asyncio.wait_for(pool.fetchval("SELECT 2"), 1) == 2
    finally:
        await pool.close()
