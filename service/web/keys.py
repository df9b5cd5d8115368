"""Typed application and request state."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from ..core.auth import KeyResolver, Principal
from ..core.ratelimit import Gate
from ..core.segment_cache import SegmentCache
from ..core.signing import LinkSigner
from ..metrics import Metrics
from ..redis_client import RedisClient
from ..settings import Settings
from .drain import Drain

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey[RedisClient]("redis")  # one server or a cluster
GATE = web.AppKey("gate", Gate)
SEGMENT_CACHE = web.AppKey("segment_cache", SegmentCache)
KEYS = web.AppKey("keys", KeyResolver)
SIGNER = web.AppKey("signer", LinkSigner)
METRICS = web.AppKey("metrics", Metrics)
DRAIN = web.AppKey("drain", Drain)  # requests in flight, for the SIGTERM drain
OPENAPI = web.AppKey("openapi", bytes)  # the JSON document, built at startup

PRINCIPAL = web.RequestKey("principal", Principal)
RATE_HEADERS = web.RequestKey("rate_headers", dict)
REQUEST_ID = web.RequestKey("request_id", str)
