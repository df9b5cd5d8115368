"""Bounds on what one request may hold: a cap on concurrent long streams, and a cut for a stalled reader."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ..core.errors import Busy

# how often, per stall period, a blocked write looks at whether the client took any bytes
CHECKS_PER_PERIOD = 4


class Slots:
    """At most `size` holders at once, per worker; past it a request is refused (503), never queued."""

    def __init__(self, what: str, size: int, retry_after: int, on_refused: Callable[[], None]) -> None:
        self.what, self.size, self.retry_after = what, size, retry_after
        self.on_refused = on_refused
        self.used = 0

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        if self.used >= self.size:
            self.on_refused()
            raise Busy(self.what, self.retry_after)
        self.used += 1
        try:
            yield
        finally:
            self.used -= 1


class ClientStalled(Exception):
    """The client took no byte of a stream for the stall period."""


async def write_or_cut(transport: asyncio.WriteTransport | None, write: Awaitable[Any], stall: float) -> None:
    """Await one write of a stream (aiohttp's write awaits its drain), raising ClientStalled once the
    client has taken no byte for `stall` seconds; a client that reads slowly is never cut.

    Progress is the transport's write buffer shrinking, looked at CHECKS_PER_PERIOD times per period,
    so a client that stops reading is cut between `stall` and 1.5 x `stall` later.
    """
    writing = asyncio.ensure_future(write)
    step = stall / CHECKS_PER_PERIOD
    last_size: int | None = None
    quiet = 0
    try:
        while True:
            done, _ = await asyncio.wait((writing,), timeout=step)
            if done:
                writing.result()
                return
            size = transport.get_write_buffer_size() if transport is not None else 0
            # the first look has nothing to compare with: it counts as progress
            quiet = quiet + 1 if last_size is not None and size >= last_size else 0
            last_size = size
            if quiet >= CHECKS_PER_PERIOD:
                raise ClientStalled()
    finally:
        if not writing.done():
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
