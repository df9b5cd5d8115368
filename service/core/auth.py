"""API keys: generation, hashing, and resolution with a short in-process cache."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from ..db import orgs
from .ratepolicy import RatePolicy, parse_policy

SCOPES = ("links:write", "links:read", "manage")
_CACHE_MAX = 10_000


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key, its organisation and scopes, and the organisation's rate policy."""

    key_id: uuid.UUID
    org_id: uuid.UUID
    scopes: frozenset[str]
    policy: RatePolicy

    @functools.cached_property
    def org(self) -> str:
        """The organisation id as text (computed once: the hot paths ask for it several times)."""
        return str(self.org_id)


def new_secret() -> str:
    """A new API key: 256 random bits."""
    return "slk_" + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> bytes:
    """Keys carry 256 bits of entropy, so a plain SHA-256 is a safe one-way store."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


class KeyResolver:
    """Resolves a presented key to a Principal.

    Answers (including "no such key") are cached in-process for `ttl` seconds, so the hot path
    makes no database query; a revocation therefore takes effect within `ttl` seconds. `clock`
    (seconds, monotonic) is what the cache's ages are read from; tests may replace it.
    """

    def __init__(self, pool: asyncpg.Pool, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._pool = pool
        self._ttl = ttl
        self.clock = clock
        self._cache: dict[bytes, tuple[float, Principal | None]] = {}

    async def resolve(self, secret: str) -> Principal | None:
        if not secret or len(secret) > 256:
            return None
        digest = hash_secret(secret)
        now = self.clock()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        async with self._pool.acquire() as conn:
            record = await orgs.active_key_by_hash(conn, digest)
        principal = None
        # the lookup is by hash already; the constant-time compare keeps it so if the query changes
        if record is not None and hmac.compare_digest(record.key_hash, digest):
            principal = Principal(record.key_id, record.org_id, frozenset(record.scopes),
                                  parse_policy(record.rate_limit))
        if len(self._cache) >= _CACHE_MAX:
            self._cache.pop(next(iter(self._cache)))
        self._cache[digest] = (now + self._ttl, principal)
        return principal
