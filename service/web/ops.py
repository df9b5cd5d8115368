"""Operational endpoints: liveness, readiness and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from aiohttp import web
from redis.exceptions import RedisError

from ..core.breaker import refusal
from ..metrics import CONTENT_TYPE
from ..redis_client import RedisClient
from .jsonio import json_response
from .keys import METRICS, POOL, REDIS

routes = web.RouteTableDef()
# /ready's write probe: one small key with a TTL, overwritten by every probe of every instance
READY_KEY = "sls:ready"


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """The process is up."""
    return json_response({"status": "ok"})


async def _probe(coro: Awaitable[object]) -> bool:
    try:
        await asyncio.wait_for(coro, timeout=1.0)
        return True
    except Exception:
        return False


async def _redis_state(redis: RedisClient) -> str:
    """'ok' when Redis takes a write (spending a token is one), else 'refusing writes' or 'unavailable'."""
    try:
        await asyncio.wait_for(redis.set(READY_KEY, b"1", px=10_000), timeout=1.0)
    except RedisError as exc:
        return "unavailable" if refusal(exc) is None else "refusing writes"
    except Exception:
        return "unavailable"
    return "ok"


@routes.get("/ready")
async def ready(request: web.Request) -> web.Response:
    """PostgreSQL and Redis both answer (Redis taking writes); 503 naming the one that does not."""
    # side by side, so two dead servers cost one probe timeout, not two
    pg, rd = await asyncio.gather(_probe(request.app[POOL].ping()), _redis_state(request.app[REDIS]))
    checks = {"postgresql": "ok" if pg else "unavailable", "redis": rd}
    ok = pg and rd == "ok"
    return json_response({"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition (of every worker when several share the port)."""
    loop = asyncio.get_running_loop()
    request.app[METRICS].flush()  # this process's tallies, up to this request
    # in multiprocess mode this reads one file per worker: keep it off the event loop
    body = await loop.run_in_executor(None, request.app[METRICS].render)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
