"""The application factory. `create_app` does no I/O: resources open in cleanup contexts."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Coroutine, Iterable
from typing import Any, cast

from aiohttp import web

from .connections import ConnectionGuard
from .core.auth import KeyResolver
from .core.create_link import LinkCreation
from .core.cursors import CursorCodec
from .core.opens import OpenCounter
from .core.ratelimit import Gate
from .core.ratepolicy import parse_policy
from .core.redis_pipe import PipelinedRedis
from .core.replay_cache import ReplayCache
from .core.segment_cache import SegmentCache
from .core.short_links import ShortLinks
from .core.signing import LinkSigner
from .core.unauth import UnauthLimiter
from .db.contacts import prune_changes
from .db.migrate import check_current
from .db.pool import create_pool
from .metrics import FLUSH_SECONDS, Metrics
from .redis_client import connect_redis, warn_if_evicting
from .settings import Settings
from .web import (
    batch,
    contact_links,
    contacts,
    created_links,
    docs,
    export,
    filum,
    lists,
    management,
    opening,
    ops,
    qr,
    segments,
)
from .web.drain import Drain
from .web.expect import defer_continue
from .web.fields import any_segment
from .web.keys import (
    CONNECTIONS,
    CURSORS,
    DRAIN,
    EXPORTS,
    GATE,
    KEYS,
    LINKS,
    METRICS,
    OPENS,
    POOL,
    RECENT_BATCHES,
    RECENT_LINKS,
    REDIS,
    SEGMENT_CACHE,
    SETTINGS,
    SHORT_LINKS,
    SIGNER,
    UNAUTH,
)
from .web.limits import Slots
from .web.middlewares import edge_middleware
from .web.render import LinkRenderer

log = logging.getLogger("service.app")
API_PREFIXES = ("/api/", "/external/")
# seconds a refused export is told to wait: exports last seconds, not milliseconds
EXPORT_RETRY_AFTER = 5
PRUNE_SECONDS = 300


async def postgres_ctx(app: web.Application) -> AsyncIterator[None]:
    """The PostgreSQL pool, checked: the database must have exactly this code's migrations.

    The app never migrates: `serve` (its master, once) and `python -m service migrate` do. A
    database another instance migrated past this code is refused here too.
    """
    settings = app[SETTINGS]
    assert settings.database_url
    pool = await create_pool(settings.database_url, settings.pg_pool_max, settings.pg_pool_timeout)
    try:
        async with pool.acquire() as conn:
            await check_current(conn)
    except BaseException:
        await pool.close()  # a refused start leaves no pool reconnecting behind it
        raise
    app[POOL] = pool
    app[KEYS] = KeyResolver(pool, settings.key_cache_seconds)
    yield
    await pool.close()


async def opens_ctx(app: web.Application) -> AsyncIterator[None]:
    """The open counter and its flush every second; registered after postgres_ctx, so that its last
    flush, at shutdown, runs before the pool closes (cleanup contexts end in reverse order)."""
    if not app[SETTINGS].open_counting:
        yield
        return
    counter = app[OPENS] = OpenCounter(app[POOL], app[METRICS].opens_dropped_count)
    task = asyncio.create_task(counter.run())
    yield
    await counter.close(task)


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    """The Redis clients (one server or a cluster each), checked, and the request gate built on them:
    REDIS_URL holds the rate-limit buckets, CACHE_REDIS_URL (when set) the replay and segment caches."""
    settings = app[SETTINGS]
    assert settings.redis_url
    client = await connect_redis(settings.redis_url)
    cache_client = None
    try:
        await warn_if_evicting(client, "REDIS_URL")
        if settings.cache_redis_url and settings.cache_redis_url != settings.redis_url:
            cache_client = await connect_redis(settings.cache_redis_url)
    except BaseException:
        await client.aclose()
        raise
    app[REDIS] = client
    cache = None if cache_client is None else ReplayCache(cache_client, PipelinedRedis.for_client(cache_client))
    app[GATE] = Gate(client, settings.rate_limit_failure_mode, on_redis_failure=app[METRICS].redis_failure,
                     pipe=PipelinedRedis.for_client(client), cache=cache)
    app[SEGMENT_CACHE] = SegmentCache(client if cache_client is None else cache_client)
    yield
    await app[SEGMENT_CACHE].aclose()  # before the pool and the clients its refreshes use go away
    await app[GATE].aclose()
    if cache_client is not None:
        await cache_client.aclose()
    await client.aclose()


async def links_ctx(app: web.Application) -> AsyncIterator[None]:
    """The create-link use case, on the pool and the gate the contexts before it opened."""
    settings, signer = app[SETTINGS], app[SIGNER]
    app[LINKS] = LinkCreation(app[POOL], app[GATE], signer.kid, LinkRenderer(signer, settings.public_base_url),
                              settings.link_cache_seconds, app[METRICS].replay)
    yield


@contextlib.asynccontextmanager
async def in_background(loop_forever: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run a loop as a task while the block runs; then cancel it and wait for it to end."""
    task = asyncio.create_task(loop_forever)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def contact_changes_ctx(app: web.Application) -> AsyncIterator[None]:
    """Deletes contact_changes rows older than an hour, every few minutes (counts are never trusted
    that long: core.segment_cache), so that the table stays the size of the last hour's writes."""

    async def prune_forever() -> None:
        while True:
            await asyncio.sleep(PRUNE_SECONDS)
            try:
                async with app[POOL].acquire() as conn:
                    await prune_changes(conn)
            except Exception as exc:  # PostgreSQL away: the next round tries again
                log.warning("pruning contact_changes failed", extra={"error": type(exc).__name__})

    async with in_background(prune_forever()):
        yield


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """Flushes the request tallies to prometheus-client every FLUSH_SECONDS, and once at the end."""
    metrics = app[METRICS]

    async def flush_forever() -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                metrics.flush()
            except Exception:  # a metrics failure must not stop the flushes, nor the service
                log.exception("flushing the request metrics failed")

    async with in_background(flush_forever()):
        yield
    metrics.flush()


def create_app(settings: Settings) -> web.Application:
    """The whole service for one set of settings (servers must be known: see Settings.with_servers)."""
    app = web.Application(middlewares=[edge_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[SIGNER] = LinkSigner(settings.signing_keys)
    app[CURSORS] = CursorCodec(settings.signing_keys)
    app[SHORT_LINKS] = ShortLinks(settings.signing_keys)
    app[METRICS] = Metrics()
    app[DRAIN] = Drain()
    app[CONNECTIONS] = ConnectionGuard()
    app[RECENT_LINKS] = filum.recent_links()
    app[RECENT_BATCHES] = batch.recent_batches()
    app[UNAUTH] = UnauthLimiter(parse_policy(settings.unauth_rate_limit))
    # an export holds a pool connection while it streams: a few at once leave the pool to the rest
    app[EXPORTS] = Slots("exports", settings.export_concurrency, EXPORT_RETRY_AFTER,
                         on_refused=functools.partial(app[METRICS].limit_reached, "exports"))
    app.cleanup_ctx.append(metrics_ctx)
    app.cleanup_ctx.append(postgres_ctx)
    app.cleanup_ctx.append(opens_ctx)
    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(links_ctx)
    app.cleanup_ctx.append(contact_changes_ctx)
    app.on_startup.append(docs.build_openapi)
    routes = [route for table in (ops.routes, filum.routes, management.routes, contacts.routes, segments.routes,
                                  contact_links.routes, export.routes, opening.routes, qr.routes,
                                  lists.routes, created_links.routes, docs.routes, batch.routes)
              for route in _any_segment_ids(table)]
    app.add_routes(routes)
    # after every route, so that a path without the slash finds its route first and pays nothing for these
    app.add_routes(slash_twins(routes))
    return app


def _any_segment_ids(table: web.RouteTableDef) -> list[web.RouteDef]:
    """The table's routes, each `{name}` matching any one path segment (see fields.any_segment)."""
    # every entry is a RouteDef (no static routes here): a StaticDef would fail loudly, not vanish;
    # a 100 Continue waits until the body is read, after the key checks (web/expect.py)
    return [web.RouteDef(route.method, any_segment(route.path), route.handler,
                         {"expect_handler": defer_continue, **route.kwargs})
            for route in cast("Iterable[web.RouteDef]", table)]


def slash_twins(routes: list[web.RouteDef]) -> list[web.RouteDef]:
    """Each API route again with one trailing slash, the same handler: answered the same, not redirected.

    Formbricks publishes an operation with the slash (`.../contact-links/contacts/{contactId}/`) and
    FastAPI (Filum) redirects one that clients follow, so a generated client works either way. Only the
    APIs: link tokens (`/c/`, `/l/`), the docs and the operational paths keep one spelling.
    """
    return [web.RouteDef(route.method, route.path + "/", route.handler, route.kwargs)
            for route in routes if route.path.startswith(API_PREFIXES)]
