"""Requests in flight, counted by the edge middleware so that shutdown can wait for them."""

from __future__ import annotations

import asyncio
import time


class Drain:
    """Counts the requests in flight (in the edge middleware), so that shutdown can wait for them.

    aiohttp's own graceful stop closes every connection first and then ignores the bytes that still
    arrive on it, so a request whose body is still coming in would be cut; waiting here, with only
    the listening socket closed, lets it finish (service/server.py).
    """

    def __init__(self) -> None:
        self.active = 0
        self.draining = False

    async def wait(self, timeout: float) -> bool:
        """Wait until no request is in flight; False if some still were after `timeout` seconds."""
        self.draining = True
        deadline = time.monotonic() + timeout
        while self.active and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return not self.active
