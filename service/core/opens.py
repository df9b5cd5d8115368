"""Counting opens without a PostgreSQL round trip on the open path: tallied in the worker, written in batches.

An open adds to an in-memory tally (a dictionary update). A flush, every FLUSH_SECONDS and once
more at shutdown (before the pool closes), swaps the tallies out and writes them with one statement
per table (service/db/opens.py). A flush that fails (PostgreSQL down) puts its tallies back, merged
with the opens that came meanwhile, and the next tick tries again; past MAX_PENDING distinct links
and contacts the newest ones are dropped, counted in a metric and warned about. So a SIGTERM loses
nothing, and a process killed outright loses at most the last second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ..db import opens as opens_db
from ..db.pool import Pool

log = logging.getLogger("service.opens")
FLUSH_SECONDS = 1.0
# a batch PostgreSQL has not written within this is kept for the next flush
WRITE_TIMEOUT = 10.0
# distinct links plus (survey, contact) pairs held while PostgreSQL does not take them (~200 bytes each)
MAX_PENDING = 200_000

# [count, first, last], times as epoch seconds: cheap to update on the open path
_Tally = list[Any]


class OpenCounter:
    """The opens of one worker not yet written: `link_opened` / `contact_opened` on the open path,
    `flush` (or `run` every FLUSH_SECONDS) to write them."""

    def __init__(self, pool: Pool, on_dropped: Callable[[int], None], max_pending: int = MAX_PENDING,
                 clock: Callable[[], float] = time.time) -> None:
        self.pool = pool
        self.on_dropped = on_dropped
        self.max_pending = max_pending
        self.clock = clock
        # by (organisation, link id) and (organisation, survey, contact): every key names its organisation
        self.links: dict[tuple[uuid.UUID, int], _Tally] = {}
        self.contacts: dict[tuple[uuid.UUID, uuid.UUID, int], _Tally] = {}
        self._flushing = asyncio.Lock()
        self._warned_at = 0.0

    @property
    def pending(self) -> int:
        return len(self.links) + len(self.contacts)

    def link_opened(self, org_id: uuid.UUID, link_id: int) -> None:
        self._add(self.links, (org_id, link_id), 1, self.clock())

    def contact_opened(self, org_id: uuid.UUID, survey_id: uuid.UUID, contact_id: int) -> None:
        self._add(self.contacts, (org_id, survey_id, contact_id), 1, self.clock())

    def _add(self, tallies: dict[Any, _Tally], key: object, count: int, at: float, last: float | None = None) -> None:
        tally = tallies.get(key)
        if tally is not None:
            tally[0] += count
            tally[1] = min(tally[1], at)
            tally[2] = max(tally[2], at if last is None else last)
        elif self.pending < self.max_pending:
            tallies[key] = [count, at, at if last is None else last]
        else:
            self._drop(count)

    def _drop(self, count: int) -> None:
        self.on_dropped(count)
        now = time.monotonic()
        if now - self._warned_at >= 1.0:  # once a second, not once per open
            self._warned_at = now
            log.warning("open counts dropped: too many waiting to be written", extra={"pending": self.pending})

    async def flush(self) -> None:
        """Write what is tallied (one statement per table); on failure keep it for the next flush."""
        async with self._flushing:
            links, self.links = self.links, {}
            contacts, self.contacts = self.contacts, {}
            if links:
                await self._write(links, self.links, opens_db.add_link_opens)
            if contacts:
                await self._write(contacts, self.contacts, opens_db.add_contact_opens)

    async def _write(self, batch: dict[Any, _Tally], tallies: dict[Any, _Tally],
                     write: Callable[..., Awaitable[object]]) -> None:
        try:
            async with self.pool.acquire() as conn:
                await write(conn, {key: _stored(tally) for key, tally in batch.items()}, WRITE_TIMEOUT)
        except Exception:
            log.warning("writing open counts failed; kept for the next flush", exc_info=True,
                        extra={"rows": len(batch)})
            for key, (count, first, last) in batch.items():
                self._add(tallies, key, count, first, last)

    async def run(self) -> None:
        """Flush every FLUSH_SECONDS until cancelled."""
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            # shielded: a cancel (shutdown) lets a write in flight finish, and close() flushes after it
            await asyncio.shield(self.flush())

    async def close(self, task: asyncio.Task[None]) -> None:
        """Stop the periodic flush and write what is left (call before the pool closes)."""
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await self.flush()
        if self.pending:
            log.error("open counts lost at shutdown: PostgreSQL did not take them", extra={"pending": self.pending})


def _stored(tally: _Tally) -> opens_db.Tally:
    count, first, last = tally
    return opens_db.Tally(count, datetime.fromtimestamp(first, UTC), datetime.fromtimestamp(last, UTC))
