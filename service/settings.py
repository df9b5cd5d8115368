"""Service settings: one frozen object, read once from the environment."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from .core.ratepolicy import PolicyError, parse_policy


class SettingsError(ValueError):
    """A setting is missing or malformed; the process must not start."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    secret: bytes

    def __repr__(self) -> str:  # never print a secret, not even in a traceback
        return f"SigningKey(kid={self.kid!r}, secret=<hidden>)"


def parse_signing_keys(raw: str) -> tuple[SigningKey, ...]:
    """Parse `kid:secret,kid:secret`; the first key signs, every key verifies."""
    keys: list[SigningKey] = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        kid, sep, secret = part.partition(":")
        kid, secret = kid.strip(), secret.strip()
        if not sep or not kid or not secret:
            raise SettingsError("SIGNING_KEYS must look like kid:secret,kid:secret")
        if len(secret.encode()) < 32:
            raise SettingsError(f"SIGNING_KEYS: the secret of kid {kid!r} must be at least 32 bytes")
        if any(k.kid == kid for k in keys):
            raise SettingsError(f"SIGNING_KEYS: kid {kid!r} is listed twice")
        keys.append(SigningKey(kid, secret.encode()))
    return tuple(keys)


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    redis_url: str | None = None
    # the replay and segment caches' Redis (None: REDIS_URL's), which may evict; buckets stay on REDIS_URL
    cache_redis_url: str | None = None
    data_dir: Path = Path(".data")
    public_base_url: str = "http://127.0.0.1:8080"
    # False: PUBLIC_BASE_URL was not set, and `serve` points links at the address it listens on
    public_base_url_set: bool = False
    signing_keys: tuple[SigningKey, ...] = ()
    rate_limit_failure_mode: str = "open"
    log_level: str = "INFO"
    log_format: str = "json"
    # how long a resolved API key is trusted in-process; bounds how late a revocation takes effect
    key_cache_seconds: float = 5.0
    # largest accepted request body (bulk contact uploads have their own, larger limit)
    max_body_bytes: int = 1024 * 1024
    bulk_max_body_bytes: int = 16 * 1024 * 1024
    # seconds a created link's answer stays in the Redis replay cache
    link_cache_seconds: int = 24 * 3600
    pg_pool_max: int = 10
    # seconds a request waits for a pool connection before it is answered 503
    pg_pool_timeout: float = 5.0
    # exports streaming at once per worker, each holding a pool connection: fewer than pg_pool_max
    export_concurrency: int = 2
    # seconds a streaming client may take no byte before it is cut
    stream_stall_seconds: float = 30.0
    # proxy addresses or networks whose X-Forwarded-For names the client (for the unauthenticated limit)
    trusted_proxies: frozenset[str] = field(default_factory=frozenset)
    # requests without a valid key, per client address (a rate-limit policy)
    unauth_rate_limit: str = "20/second;600/minute"
    # a new connection's first request headers must arrive within this
    header_timeout_seconds: float = 10.0
    # a request body must arrive whole within this once its handler reads it
    body_timeout_seconds: float = 60.0
    # an idle keep-alive connection (or one whose next request's headers are incomplete) is closed after this
    keepalive_timeout_seconds: float = 75.0
    # count opens of links (link_opens, contact_opens); off only to measure what counting costs
    open_counting: bool = True

    @property
    def embedded(self) -> bool:
        return self.database_url is None or self.redis_url is None

    def with_servers(self, database_url: str, redis_url: str, signing_keys: tuple[SigningKey, ...]) -> Settings:
        """The same settings once the embedded servers (or external ones) are known."""
        return replace(self, database_url=database_url, redis_url=redis_url, signing_keys=signing_keys)

    def listening_at(self, url: str) -> Settings:
        """The settings of a server reachable at `url`: its links point there unless PUBLIC_BASE_URL says otherwise."""
        return self if self.public_base_url_set else replace(self, public_base_url=url)

    def __repr__(self) -> str:
        return (
            f"Settings(data_dir={str(self.data_dir)!r}, public_base_url={self.public_base_url!r}, "
            f"signing_kids={[k.kid for k in self.signing_keys]}, "
            f"rate_limit_failure_mode={self.rate_limit_failure_mode!r})"
        )


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer") from None
    # 0 or less would refuse every body or leave no connection: a misconfiguration, not a setting
    if value < 1:
        raise SettingsError(f"{name} must be a whole number of at least 1")
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, most: float = 3600.0) -> float:
    """A number of seconds above 0 and at most `most` (a wait without limit is what these bound)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= most:  # NaN and infinity fail this too
        raise SettingsError(f"{name} must be a number of seconds above 0 and at most {most:g}")
    return value


def _export_concurrency(env: Mapping[str, str], pool_max: int) -> int:
    """Exports at once per worker: by default 2, but always fewer than the pool (unless it is 1)."""
    if not env.get("EXPORT_CONCURRENCY"):
        return max(1, min(Settings.export_concurrency, pool_max - 1))
    value = _int(env, "EXPORT_CONCURRENCY", Settings.export_concurrency)
    # exports hold their connection for as long as they stream: they must leave others some
    if pool_max > 1 and value >= pool_max:
        raise SettingsError(f"EXPORT_CONCURRENCY must be smaller than PG_POOL_MAX ({pool_max})")
    return value


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


# a revoked key must stop working within seconds: a longer key cache is a misconfiguration
MAX_KEY_CACHE_SECONDS = 60.0


def _key_cache_seconds(env: Mapping[str, str]) -> float:
    raw = env.get("KEY_CACHE_SECONDS")
    if raw is None or raw == "":
        return Settings.key_cache_seconds
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= MAX_KEY_CACHE_SECONDS:  # NaN and infinity fail this too
        raise SettingsError(f"KEY_CACHE_SECONDS must be a number of seconds from 0 to {MAX_KEY_CACHE_SECONDS:g}")
    return value


def _trusted_proxies(env: Mapping[str, str]) -> frozenset[str]:
    """Addresses or networks (`10.0.0.0/8`), normalised; anything else stops the start."""
    found = set()
    for part in env.get("TRUSTED_PROXIES", "").split(","):
        if part.strip():
            try:
                found.add(str(ipaddress.ip_network(part.strip(), strict=False)))
            except ValueError:
                raise SettingsError(f"TRUSTED_PROXIES: {part.strip()!r} is not an IP address or network") from None
    return frozenset(found)


def _unauth_rate_limit(env: Mapping[str, str]) -> str:
    try:
        return parse_policy(env.get("UNAUTH_RATE_LIMIT") or Settings.unauth_rate_limit).text
    except PolicyError as exc:
        raise SettingsError(f"UNAUTH_RATE_LIMIT: {exc}") from None


REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


def _cache_redis_url(env: Mapping[str, str]) -> str | None:
    raw = (env.get("CACHE_REDIS_URL") or "").strip()
    if not raw:
        return None
    scheme, sep, rest = raw.partition("://")
    if not sep or not rest or scheme.lower() not in REDIS_SCHEMES:
        raise SettingsError("CACHE_REDIS_URL must be a redis://, rediss://, unix://, redis+cluster:// "
                            "or rediss+cluster:// URL")
    return raw


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read every setting from the environment once."""
    env = os.environ if env is None else env
    mode = env.get("RATE_LIMIT_FAILURE_MODE", Settings.rate_limit_failure_mode).strip().lower()
    if mode not in ("open", "closed"):
        raise SettingsError("RATE_LIMIT_FAILURE_MODE must be 'open' or 'closed'")
    log_format = env.get("LOG_FORMAT", Settings.log_format).strip().lower()
    if log_format not in ("json", "text"):
        raise SettingsError("LOG_FORMAT must be 'json' or 'text'")
    log_level = env.get("LOG_LEVEL", Settings.log_level).strip().upper()
    # refused here: an unknown level would otherwise crash logging setup with a traceback
    if log_level not in LOG_LEVELS:
        raise SettingsError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
    # empty is unset, as for the other URLs: then `serve` links to the address it listens on
    base_url_set = env.get("PUBLIC_BASE_URL", "").strip()
    base_url = (base_url_set or Settings.public_base_url).rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise SettingsError("PUBLIC_BASE_URL must start with http:// or https://")
    pool_max = _int(env, "PG_POOL_MAX", Settings.pg_pool_max)
    open_counting = (env.get("OPEN_COUNTING") or "on").strip().lower()
    if open_counting not in ("on", "off"):
        raise SettingsError("OPEN_COUNTING must be 'on' or 'off'")
    settings = Settings(
        database_url=env.get("DATABASE_URL") or None,
        redis_url=env.get("REDIS_URL") or None,
        cache_redis_url=_cache_redis_url(env),
        data_dir=Path(env["DATA_DIR"]) if env.get("DATA_DIR") else Settings.data_dir,
        public_base_url=base_url,
        public_base_url_set=bool(base_url_set),
        signing_keys=parse_signing_keys(env.get("SIGNING_KEYS", "")),
        rate_limit_failure_mode=mode,
        log_level=log_level,
        log_format=log_format,
        key_cache_seconds=_key_cache_seconds(env),
        max_body_bytes=_int(env, "MAX_BODY_BYTES", Settings.max_body_bytes),
        pg_pool_max=pool_max,
        pg_pool_timeout=_seconds(env, "PG_POOL_TIMEOUT", Settings.pg_pool_timeout, 60),
        export_concurrency=_export_concurrency(env, pool_max),
        stream_stall_seconds=_seconds(env, "STREAM_STALL_SECONDS", Settings.stream_stall_seconds, 600),
        trusted_proxies=_trusted_proxies(env),
        unauth_rate_limit=_unauth_rate_limit(env),
        header_timeout_seconds=_seconds(env, "HEADER_TIMEOUT_SECONDS", Settings.header_timeout_seconds),
        body_timeout_seconds=_seconds(env, "BODY_TIMEOUT_SECONDS", Settings.body_timeout_seconds),
        keepalive_timeout_seconds=_seconds(env, "KEEPALIVE_TIMEOUT_SECONDS", Settings.keepalive_timeout_seconds),
        open_counting=open_counting == "on",
    )
    if settings.database_url and not settings.signing_keys:
        raise SettingsError("SIGNING_KEYS is required with an external DATABASE_URL")
    return settings
