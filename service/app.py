"""The application factory. `create_app` does no I/O: resources open in cleanup contexts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from .core.auth import KeyResolver
from .core.ratelimit import Gate
from .core.redis_pipe import PipelinedRedis
from .core.segment_cache import SegmentCache
from .core.signing import LinkSigner
from .db.pool import apply_schema, create_pool
from .metrics import FLUSH_SECONDS, Metrics
from .redis_client import connect_redis
from .settings import Settings
from .web import contact_links, contacts, docs, export, filum, management, opening, ops, segments
from .web.drain import Drain
from .web.fields import any_segment
from .web.keys import DRAIN, GATE, KEYS, METRICS, POOL, REDIS, SEGMENT_CACHE, SETTINGS, SIGNER
from .web.middlewares import edge_middleware

log = logging.getLogger("service.app")


async def postgres_ctx(app: web.Application) -> AsyncIterator[None]:
    """The PostgreSQL pool, checked with SELECT 1, schema applied."""
    settings = app[SETTINGS]
    assert settings.database_url
    pool = await create_pool(settings.database_url, settings.pg_pool_max)
    async with pool.acquire() as conn:
        await conn.fetchval("SELECT 1")
        await apply_schema(conn)
    app[POOL] = pool
    app[KEYS] = KeyResolver(pool, settings.key_cache_seconds)
    yield
    await pool.close()


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    """The Redis client (one server or a cluster), checked, and the request gate and segment cache on it."""
    settings = app[SETTINGS]
    assert settings.redis_url
    client = await connect_redis(settings.redis_url)
    app[REDIS] = client
    app[GATE] = Gate(client, settings.rate_limit_failure_mode, on_redis_failure=app[METRICS].redis_failure,
                     pipe=PipelinedRedis.for_client(client))
    app[SEGMENT_CACHE] = SegmentCache(client)
    yield
    await app[GATE].aclose()
    await client.aclose()


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

    task = asyncio.create_task(flush_forever())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        metrics.flush()


def create_app(settings: Settings) -> web.Application:
    """The whole service for one set of settings (servers must be known: see Settings.with_servers)."""
    app = web.Application(middlewares=[edge_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[SIGNER] = LinkSigner(settings.signing_keys)
    app[METRICS] = Metrics()
    app[DRAIN] = Drain()
    app.cleanup_ctx.append(metrics_ctx)
    app.cleanup_ctx.append(postgres_ctx)
    app.cleanup_ctx.append(redis_ctx)
    app.on_startup.append(docs.build_openapi)
    for table in (ops.routes, filum.routes, management.routes, contacts.routes, segments.routes,
                  contact_links.routes, export.routes, opening.routes, docs.routes):
        app.add_routes(_any_segment_ids(table))
    return app


def _any_segment_ids(table: web.RouteTableDef) -> list[web.RouteDef]:
    """The table's routes, each `{name}` matching any one path segment (see fields.any_segment)."""
    # every entry is a RouteDef (no static routes here): a StaticDef would fail loudly, not vanish
    return [web.RouteDef(route.method, any_segment(route.path), route.handler, route.kwargs)  # type: ignore[attr-defined]
            for route in table]
