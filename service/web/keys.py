"""Typed application and request state."""

from __future__ import annotations

import uuid

from aiohttp import web

from ..connections import ConnectionGuard
from ..core.auth import KeyResolver, Principal
from ..core.create_link import LinkCreation
from ..core.cursors import CursorCodec
from ..core.links import LinkRequest
from ..core.opens import OpenCounter
from ..core.ratelimit import Gate
from ..core.segment_cache import SegmentCache
from ..core.short_links import ShortLinks
from ..core.signing import LinkSigner
from ..core.unauth import UnauthLimiter
from ..db.pool import Pool
from ..metrics import Metrics
from ..redis_client import RedisClient
from ..settings import Settings
from .drain import Drain
from .limits import Slots
from .recent import Recent

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", Pool)
REDIS = web.AppKey[RedisClient]("redis")  # one server or a cluster: the rate-limit buckets (truth)
GATE = web.AppKey("gate", Gate)
LINKS = web.AppKey("links", LinkCreation)  # the create-link use case, on the pool and the gate
SEGMENT_CACHE = web.AppKey("segment_cache", SegmentCache)
KEYS = web.AppKey("keys", KeyResolver)
UNAUTH = web.AppKey("unauth", UnauthLimiter)  # the limit on requests without a valid key
SIGNER = web.AppKey("signer", LinkSigner)
CURSORS = web.AppKey("cursors", CursorCodec)  # signs and reads the lists' cursors
SHORT_LINKS = web.AppKey("short_links", ShortLinks)  # the /s/ tokens (core/short_links.py)
METRICS = web.AppKey("metrics", Metrics)
CONNECTIONS = web.AppKey("connections", ConnectionGuard)  # which connections carried a request
DRAIN = web.AppKey("drain", Drain)  # requests in flight, for the SIGTERM drain
EXPORTS = web.AppKey("exports", Slots)  # exports streaming on this worker, capped
OPENS = web.AppKey("opens", OpenCounter)  # opens not yet written (absent with OPEN_COUNTING=off)
OPENAPI = web.AppKey("openapi", bytes)  # the JSON document, built at startup
# create-link requests read lately, by (path segment, raw body): web/filum.py, web/batch.py
RECENT_LINKS = web.AppKey[Recent[LinkRequest]]("recent_links")
RECENT_BATCHES = web.AppKey[Recent[tuple[uuid.UUID, list[bytes | None], list[LinkRequest | None]]]]("recent_batches")

PRINCIPAL = web.RequestKey("principal", Principal)
RATE_HEADERS = web.RequestKey("rate_headers", dict)
REQUEST_ID = web.RequestKey("request_id", str)
