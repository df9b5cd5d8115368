"""Slow and idle connections against `serve`: half-sent requests are cut within the header timeout
while fresh clients are served, idle keep-alive connections are closed, the soft open-files limit is
raised to the hard one, and open connections near that limit are logged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import aiohttp
import pytest
from aiohttp import web

from service.connections import ConnectionGuard, Sweeper
from tests.faults.conftest import signing_keys_env

HALF_SENT = 1200
HEADER_TIMEOUT = 2.0
KEEPALIVE_TIMEOUT = 7.0  # longer than the half-sent test's deadline: aiohttp's own timer must not be what cuts them


@contextlib.contextmanager
def soft_files_limit(limit: int) -> Iterator[None]:
    """The test process's soft RLIMIT_NOFILE for a while (children started meanwhile inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _files_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-files line")


@pytest.fixture
def one_worker(serve, database_url, redis_url):
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "SIGNING_KEYS": signing_keys_env(),
           "HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT), "KEEPALIVE_TIMEOUT_SECONDS": str(KEEPALIVE_TIMEOUT)}
    # started under the common 1,024 soft limit: 1,200 connections only fit once the server raised it
    with soft_files_limit(1024):
        return serve(env, workers=1)


async def _closed_within(reader: asyncio.StreamReader, limit: float) -> bool:
    """Whether the server closes the connection (EOF or reset) within `limit` seconds."""
    try:
        async with asyncio.timeout(limit):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def test_half_sent_requests_are_cut_within_the_header_timeout_and_fresh_clients_are_served(one_worker):
    server = one_worker
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard > HALF_SENT + 200, "the test needs room for its own sockets"
    soft_now, hard_now = _files_limits(server.proc.pid)
    assert soft_now == hard_now  # raised from the 1,024 it started with

    conns = []
    opened = time.monotonic()
    try:
        for i in range(HALF_SENT):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: {i}\r\n".encode())  # no blank line: never ends
            conns.append((reader, writer))
        await asyncio.gather(*(w.drain() for _, w in conns))
        # a fresh client is served at once, while all of them wait on the server
        async with aiohttp.ClientSession() as session:
            started = time.monotonic()
            async with session.get(f"{server.base_url}/health") as resp:
                assert resp.status == 200
            fresh = time.monotonic() - started
            assert fresh < 1.0
        # and every half-sent one is cut within the header timeout (counted from when it was opened)
        # plus the sweep interval and this loaded machine's slack
        deadline = HEADER_TIMEOUT + 3.0 - (time.monotonic() - opened)
        closed = await asyncio.gather(*(_closed_within(r, max(deadline, 0.1)) for r, _ in conns))
        assert sum(closed) == HALF_SENT
        print(f"fresh client answered in {fresh * 1000:.1f} ms; {HALF_SENT} half-sent requests cut "
              f"{time.monotonic() - opened:.2f} s after the first was opened")
    finally:
        for _, writer in conns:
            writer.close()
    assert '"msg":"connections closed: no request headers in time"' in server.logs()


async def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(one_worker):
    reader, writer = await asyncio.open_connection("127.0.0.1", one_worker.port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        await asyncio.wait_for(reader.readexactly(length), 5)
        idle_since = time.monotonic()
        # not cut at the header timeout (it served a request): kept until the keep-alive timeout
        assert not await _closed_within(reader, HEADER_TIMEOUT + 0.6)
        assert await _closed_within(reader, KEEPALIVE_TIMEOUT + 2.0)
        assert KEEPALIVE_TIMEOUT - 0.1 <= time.monotonic() - idle_since <= KEEPALIVE_TIMEOUT + 2.5
    finally:
        writer.close()


class _Handler:
    """What the sweeper reads of a connection: its transport, and force_close()."""

    def __init__(self) -> None:
        self.transport = _Transport()
        self.cuts = 0

    def force_close(self) -> None:
        self.cuts += 1


def _handlers(*fakes: _Handler) -> list[web.RequestHandler]:
    """The fakes where the sweeper takes aiohttp's handlers (it reads only what _Handler has)."""
    return cast(list[web.RequestHandler], list(fakes))


class _Transport:
    pass


def test_the_sweeper_cuts_only_connections_without_a_request_and_warns_near_the_files_limit(caplog):
    guard = ConnectionGuard()
    sweeper = Sweeper(guard, header_timeout=2.0, files_limit=10)
    fresh, served = _Handler(), _Handler()
    guard.served.add(served.transport)
    caplog.set_level(logging.WARNING, "service.connections")
    assert sweeper.sweep(_handlers(fresh, served), now=100.0) == 0
    assert sweeper.sweep(_handlers(fresh, served), now=101.9) == 0 and fresh.cuts == 0
    assert sweeper.sweep(_handlers(fresh, served), now=102.0) == 1 and (fresh.cuts, served.cuts) == (1, 0)
    assert not caplog.records  # 2 connections of 10 files
    many = [_Handler() for _ in range(8)]
    for handler in many:
        guard.served.add(handler.transport)
    assert sweeper.sweep(_handlers(*many), now=103.0) == 0
    assert [r.getMessage() for r in caplog.records] == ["open connections near the open-files limit"]
    assert (caplog.records[0].connections, caplog.records[0].limit) == (8, 10)
    sweeper.sweep(_handlers(*many), now=110.0)  # once a minute at most
    assert len(caplog.records) == 1
