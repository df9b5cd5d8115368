"""Bounds on client connections: header and keep-alive timeouts, and the open-files limit.

aiohttp (3.14) has a keep-alive timeout (`keepalive_timeout`, given to the runner) and no header
timeout. Its keep-alive timer also closes a connection whose next request's headers are still
incomplete when it fires, so after a first request KEEPALIVE_TIMEOUT_SECONDS bounds both the idle
time and the next headers. For the first request, `watch_connections` sweeps the server's
connections (`web.Server.connections`, public): a connection whose transport has not carried a
request (the edge middleware notes each request's transport in `ConnectionGuard.served`) within
HEADER_TIMEOUT_SECONDS of being seen is closed.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import weakref

from aiohttp import web

log = logging.getLogger("service.connections")
# warn when open connections pass this share of the open-files limit (again each WARN_EVERY seconds)
NEAR_LIMIT = 0.8
WARN_EVERY = 60.0


def raise_open_files_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (each connection is a file); answers the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # an unlimited hard limit is above the kernel's nr_open
            log.warning("could not raise the open-files limit", extra={"soft": soft, "hard": hard,
                                                                        "error": str(exc)})
    log.info("open-files limit", extra={"limit": soft})
    return soft



class ConnectionGuard:
    """The transports that have carried a request (weakly held: closed ones leave by themselves)."""

    def __init__(self) -> None:
        self.served: weakref.WeakSet[object] = weakref.WeakSet()

    def started(self, request: web.Request) -> None:
        transport = request.transport
        if transport is not None:
            self.served.add(transport)


class Sweeper:
    def __init__(self, guard: ConnectionGuard, header_timeout: float, files_limit: int) -> None:
        self.guard = guard
        self.header_timeout = header_timeout
        self.files_limit = files_limit
        self.first_seen: weakref.WeakKeyDictionary[object, float] = weakref.WeakKeyDictionary()
        self.warned_at = float("-inf")

    def sweep(self, connections: list[web.RequestHandler], now: float) -> int:
        """Close the connections past their header time; answers how many."""
        cut = 0
        for handler in connections:
            transport = handler.transport
            if transport is None or transport in self.guard.served:
                continue
            if now - self.first_seen.setdefault(transport, now) >= self.header_timeout:
                handler.force_close()
                cut += 1
        if len(connections) >= NEAR_LIMIT * self.files_limit and now - self.warned_at >= WARN_EVERY:
            self.warned_at = now
            log.warning("open connections near the open-files limit",
                        extra={"connections": len(connections), "limit": self.files_limit})
        return cut


async def watch_connections(runner: web.AppRunner, guard: ConnectionGuard, header_timeout: float,
                            files_limit: int) -> None:
    """Sweep the runner's connections until cancelled (see the module's docstring)."""
    sweeper = Sweeper(guard, header_timeout, files_limit)
    tick = min(1.0, header_timeout / 4)
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(tick)
        server = runner.server
        if server is None:
            continue
        cut = sweeper.sweep(server.connections, loop.time())
        if cut:
            log.warning("connections closed: no request headers in time",
                        extra={"count": cut, "header_timeout": header_timeout})
