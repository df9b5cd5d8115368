"""API keys: generation, hashing, and resolution with a short in-process cache."""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from ..db import orgs
from ..db.pool import Pool
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


# New keys: `sls_` + the key's id (22) + 256 random bits (43) + a CRC32 of all that (6), in base62,
# so a mistyped or made-up key is refused without a query (the checksum is not a secret: a forged
# well-formed key is one query, and counts against the unauthenticated rate limit)
KEY_PREFIX = "sls_"
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_NEW_KEY = re.compile(r"sls_[0-9A-Za-z]{71}")
# every key issued before: `slk_` + token_urlsafe(32), whose shape is as fixed
_LEGACY_KEY = re.compile(r"slk_[A-Za-z0-9_-]{43}")


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(_B62[digit])
    assert number == 0, "does not fit"
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), 6)


def new_secret(key_id: uuid.UUID | None = None) -> str:
    """A new API key for `key_id` (its row's id): prefix, id, 256 random bits, checksum."""
    key_id = key_id or uuid.uuid4()
    body = KEY_PREFIX + _base62(key_id.int, 22) + _base62(int.from_bytes(secrets.token_bytes(32), "big"), 43)
    return body + _checksum(body)


def issue_key() -> tuple[uuid.UUID, str]:
    """A new key's id and secret: insert the row under this id (orgs.insert_key's key_id)."""
    key_id = uuid.uuid4()
    return key_id, new_secret(key_id)


def key_id_of(secret: str) -> uuid.UUID | None:
    """The key id a well-formed new key carries (its api_keys row's id), else None."""
    if not (_NEW_KEY.fullmatch(secret) and could_be_ours(secret)):
        return None
    number = 0
    for char in secret[4:26]:
        number = number * 62 + _B62.index(char)
    return uuid.UUID(int=number) if number < 1 << 128 else None


def could_be_ours(secret: str) -> bool:
    """Whether `secret` has the shape of a key this service issued (new: checksum included; or the old one)."""
    if _NEW_KEY.fullmatch(secret):
        return hmac.compare_digest(_checksum(secret[:-6]), secret[-6:])
    return _LEGACY_KEY.fullmatch(secret) is not None


def hash_secret(secret: str) -> bytes:
    """Keys carry 256 bits of entropy, so a plain SHA-256 is a safe one-way store."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


class KeyResolver:
    """Resolves a presented key to a Principal.

    Answers (including "no such key") are cached in-process for `ttl` seconds, so the hot path
    makes no database query; a revocation therefore takes effect within `ttl` seconds. A key that
    cannot be ours (could_be_ours) is refused without a query. `clock` (seconds, monotonic) is what
    the cache's ages are read from; tests may replace it.
    """

    def __init__(self, pool: Pool, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._pool = pool
        self._ttl = ttl
        self.clock = clock
        self._cache: dict[bytes, tuple[float, Principal | None]] = {}

    def cached(self, secret: str) -> tuple[Principal | None, bytes]:
        """The principal of a key resolved within the cache time (else None), and the key's hash for
        resolve() (empty for an empty or overlong key); no query."""
        if not secret or len(secret) > 256:
            return None, b""
        digest = hash_secret(secret)
        hit = self._cache.get(digest)
        return (hit[1] if hit is not None and hit[0] > self.clock() else None), digest

    async def resolve(self, secret: str, digest: bytes) -> Principal | None:
        """The principal of `secret`, whose hash cached() answered: from the cache, else one query."""
        if not digest or not could_be_ours(secret):
            return None
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
