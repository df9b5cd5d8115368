"""The edge middleware: request ids, error rendering, rate-limit headers and the access log."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError

from ..core.errors import DomainError, Unavailable
from ..db.pool import PoolTimeout
from ..logs import log_access
from .client import ClientGone
from .errors import family_of, render, render_http, render_unexpected
from .keys import CONNECTIONS, DRAIN, METRICS, PRINCIPAL, RATE_HEADERS, REQUEST_ID, SETTINGS

log = logging.getLogger("service.http")

CLIENT_CLOSED_REQUEST = 499
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# what PostgreSQL being unreachable looks like to asyncpg; InternalClientError is a pooled connection
# that the server cut (its FATAL read, its EOF not yet) handed out between the two. Class 53
# (InsufficientResourcesError: 53300 too many connections, out of memory, disk full) and class 58
# (the server's own I/O failing) are the server out of something, not a bug of the request.
PG_DOWN = (
    OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.CannotConnectNowError, asyncpg.InternalClientError,
    asyncpg.exceptions.InsufficientResourcesError, asyncpg.exceptions.PostgresSystemError,
)


def pg_unavailable(exc: BaseException) -> bool:
    """Whether `exc` means PostgreSQL is unreachable (503), not a bug (500).

    asyncpg's InterfaceError also covers misuse, DataError (a wrong parameter type) among it; only
    its closed-connection and closing-pool forms mean the server went away.
    """
    if isinstance(exc, PG_DOWN):
        return True
    return (isinstance(exc, asyncpg.InterfaceError) and not isinstance(exc, asyncpg.DataError)
            and "clos" in str(exc))


def route_name(request: web.Request) -> str:
    """The route's pattern (never the raw path, which holds ids and tokens); an API route's trailing-slash
    twin (app.slash_twins) is named as the route itself, so that one operation is one metric series."""
    info = request.match_info.route.resource
    if info is None:
        return "unmatched"
    canonical = info.canonical
    return canonical[:-1] if len(canonical) > 1 and canonical.endswith("/") else canonical


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, errors rendered per API family, rate-limit headers, metrics and the access line;
    it also counts the requests in flight for the SIGTERM drain (one middleware, not two: hot path)."""
    app = request.app
    drain = app[DRAIN]
    drain.active += 1
    guard = app.get(CONNECTIONS)  # absent from the tests' bare apps
    if guard is not None:
        guard.started(request)  # its headers came in time (service/connections.py)
    try:
        started = time.perf_counter()
        given = request.headers.get("X-Request-Id")
        # 32 random hex digits, like uuid4().hex, at a fifth of its cost
        request_id = given if given and _REQUEST_ID.match(given) else os.urandom(16).hex()
        request[REQUEST_ID] = request_id
        try:
            response = await handler(request)
        except DomainError as error:
            response = render(family_of(request.path), error)
        except web.HTTPException as exc:
            response = render_http(family_of(request.path), exc, app[SETTINGS].max_body_bytes)
        except asyncio.CancelledError:
            raise
        except ClientGone:
            # logged and counted as nginx's 499, "client closed request"; nothing is broken
            response = web.Response(status=CLIENT_CLOSED_REQUEST)
        except RedisError:
            log.warning("redis failed during a request", extra={"request_id": request_id})
            app[METRICS].redis_failure("request")
            response = render(family_of(request.path), Unavailable("redis"))
        except PoolTimeout:
            # every connection of this worker's pool is busy: PostgreSQL itself may be fine
            log.warning("no postgresql connection within the pool's wait limit", extra={"request_id": request_id})
            app[METRICS].limit_reached("pool_wait")
            response = render(family_of(request.path), Unavailable("postgresql"))
        except Exception as exc:
            if pg_unavailable(exc):
                log.warning("postgresql unavailable: %s", type(exc).__name__, extra={"request_id": request_id})
                app[METRICS].pg_failures.inc()
                response = render(family_of(request.path), Unavailable("postgresql"))
            else:
                log.exception("unexpected error", extra={"request_id": request_id, "route": route_name(request)})
                response = render_unexpected(family_of(request.path))
        headers = response.headers
        headers["X-Request-Id"] = request_id
        rate_headers = request.get(RATE_HEADERS)
        if rate_headers:
            headers.update(rate_headers)
        principal = request.get(PRINCIPAL)
        route, elapsed, status = route_name(request), time.perf_counter() - started, response.status
        app[METRICS].observe_request(request.method, route, status, elapsed)
        log_access({
            "request_id": request_id, "method": request.method, "route": route,
            "status": status, "duration_ms": round(elapsed * 1000, 3),
            "org": principal.org if principal else None,
        })
        # draining: a keep-alive client must take its next request elsewhere; a body stream that broke
        # (bytes not in their Content-Encoding): aiohttp drops the connection after this answer, so
        # say so rather than let the client send its next request into a closed socket
        if (drain.draining or request.content.exception() is not None) and not response.prepared:
            response.force_close()
        return response
    finally:
        drain.active -= 1
