"""The Redis client for REDIS_URL: one server, or a Redis Cluster.

A cluster is named explicitly (`redis+cluster://host:port`, `rediss+cluster://...`) or found out
at start: a plain `redis://` URL whose server answers `cluster_enabled:1` to `INFO cluster` gets
a cluster client too, so a managed cluster's endpoint works as given. Either way one node is
enough; the client discovers the others and follows MOVED/ASK redirections.
"""

from __future__ import annotations

import logging
from typing import Any, TypeAlias

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

log = logging.getLogger("service.redis")

RedisClient: TypeAlias = Redis | RedisCluster
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
# short timeouts, so a dead Redis is noticed quickly (fail-open or 503)
OPTIONS: dict[str, Any] = {"socket_timeout": 1.0, "socket_connect_timeout": 1.0, "health_check_interval": 0}
# per server (per node in a cluster)
MAX_CONNECTIONS = 256
# redis-py retries a cluster command 10 times by default, sleeping 0.25 s after each CLUSTERDOWN: about
# 3 s per request while a master is lost. The gate fails open (or closed) instead, so give up sooner
CLUSTER_RETRIES = 2
# one immediate retry on a fresh connection absorbs a pooled connection that a Redis restart broke;
# redis-py's default (10 retries with backoff, timeouts included) holds a request for seconds while
# Redis is down or hung, before the breaker or the 503 can answer
SINGLE_SERVER_RETRY = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


def cluster_url(url: str) -> str | None:
    """The plain URL of an explicit `redis+cluster://` (or `rediss+cluster://`) URL, else None."""
    scheme, sep, rest = url.partition("://")
    plain = CLUSTER_SCHEMES.get(scheme.lower()) if sep else None
    return f"{plain}://{rest}" if plain else None


async def _cluster(url: str) -> RedisCluster:
    retry = Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries=CLUSTER_RETRIES)
    client = RedisCluster.from_url(url, max_connections=MAX_CONNECTIONS, retry=retry, **OPTIONS)
    try:
        await client.initialize()
    except BaseException:
        await client.aclose()
        raise
    log.info("redis cluster", extra={"nodes": len(client.get_nodes())})
    return client


async def _is_cluster_node(client: Redis) -> bool:
    try:
        info = await client.info("cluster")
    except ResponseError:  # INFO renamed or refused (some proxies): treat it as one server
        return False
    return str(info.get("cluster_enabled", "0")) == "1"


async def connect_redis(url: str) -> RedisClient:
    """A checked client: PING answered by a single server, or the cluster's slots mapped."""
    explicit = cluster_url(url)
    if explicit is not None:
        return await _cluster(explicit)
    client = Redis.from_url(url, max_connections=MAX_CONNECTIONS, retry=SINGLE_SERVER_RETRY, **OPTIONS)
    try:
        await client.ping()
        if not await _is_cluster_node(client):
            return client
    except BaseException:
        await client.aclose()
        raise
    await client.aclose()
    return await _cluster(url)


async def eviction_policy(client: RedisClient) -> str | None:
    """The server's `maxmemory-policy` (from `INFO memory`), or None where it cannot be read (a cluster,
    a proxy that refuses INFO)."""
    if not isinstance(client, Redis):
        return None
    try:
        info = await client.info("memory")
    except ResponseError:
        return None
    policy = info.get("maxmemory_policy")
    return None if policy is None else str(policy)


async def warn_if_evicting(client: RedisClient, role: str) -> None:
    """Log a warning when REDIS_URL's server may evict keys: the rate-limit buckets must not be evicted."""
    policy = await eviction_policy(client)
    if policy is not None and policy != "noeviction":
        log.warning("%s's Redis evicts keys (maxmemory-policy %s): cache churn can reset rate limits; use "
                    "noeviction there, and CACHE_REDIS_URL for an evicting cache", role, policy)
