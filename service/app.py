"""The application factory. `create_app` does no I/O: resources open in cleanup contexts."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import Redis

from .core.auth import KeyResolver
from .core.ratelimit import Gate
from .core.signing import LinkSigner
from .db.pool import apply_schema, create_pool
from .settings import Settings
from .web import filum, management, ops
from .web.keys import GATE, KEYS, POOL, REDIS, SETTINGS, SIGNER
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


def redis_client(url: str) -> Redis:
    """A client with short timeouts, so a dead Redis is noticed quickly (fail-open or 503)."""
    return Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0, health_check_interval=0,
                          max_connections=256)


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    """The Redis client, checked with PING, and the request gate built on it."""
    settings = app[SETTINGS]
    assert settings.redis_url
    client = redis_client(settings.redis_url)
    await client.ping()
    app[REDIS] = client
    app[GATE] = Gate(client, settings.rate_limit_failure_mode)
    yield
    await client.aclose()


def create_app(settings: Settings) -> web.Application:
    """The whole service for one set of settings (servers must be known: see Settings.with_servers)."""
    app = web.Application(middlewares=[edge_middleware], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[SIGNER] = LinkSigner(settings.signing_keys)
    app.cleanup_ctx.append(postgres_ctx)
    app.cleanup_ctx.append(redis_ctx)
    for table in (ops.routes, filum.routes, management.routes):
        app.add_routes(table)
    return app
