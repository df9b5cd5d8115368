"""Typed application and request state."""

from __future__ import annotations

import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from ..core.auth import KeyResolver, Principal
from ..core.ratelimit import Gate
from ..core.signing import LinkSigner
from ..settings import Settings

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", Redis)
GATE = web.AppKey("gate", Gate)
KEYS = web.AppKey("keys", KeyResolver)
SIGNER = web.AppKey("signer", LinkSigner)

PRINCIPAL = web.RequestKey("principal", Principal)
RATE_HEADERS = web.RequestKey("rate_headers", dict)
REQUEST_ID = web.RequestKey("request_id", str)
