"""Prometheus metrics: a registry of this process, or files shared by every worker (multiprocess mode).

`serve --workers N` points PROMETHEUS_MULTIPROC_DIR at a fresh directory before it spawns the
workers, so prometheus-client is imported in multiprocess mode there and every scrape, whichever
worker answers it, adds up the values of all of them.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# label values a caller controls are bounded, so no request can grow the series without end
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# seconds; the replay hot path answers in about a millisecond, a bulk upload may take seconds
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DECISIONS = ("allowed", "limited", "degraded")
REPLAY_SOURCES = ("cache", "database")
REDIS_OPERATIONS = ("gate", "request")


def multiprocess_dir() -> str | None:
    """The shared directory if prometheus-client was imported in multiprocess mode, else None."""
    if values.ValueClass is values.MutexValue:
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class Metrics:
    """Every metric of the service; label children are cached so the hot path only increments."""

    def __init__(self) -> None:
        self.shared_dir = multiprocess_dir()
        # in multiprocess mode the values live in files, read by a fresh collector at each scrape
        self.registry = CollectorRegistry()
        reg = None if self.shared_dir else self.registry
        self.requests = Counter("sls_http_requests", "HTTP requests answered, by method, route pattern and status",
                                ("method", "route", "status"), registry=reg)
        self.latency = Histogram("sls_http_request_duration_seconds", "Time to answer, by method and route pattern",
                                 ("method", "route"), buckets=LATENCY_BUCKETS, registry=reg)
        self.decisions = Counter("sls_ratelimit_decisions", "Rate-limit decisions: allowed, limited (429), "
                                 "or degraded (Redis unreachable, let through in open failure mode)",
                                 ("decision",), registry=reg)
        self.replays = Counter("sls_idempotent_replays", "Create-link requests answered with an existing link, "
                               "by where it came from", ("source",), registry=reg)
        self.redis_failures = Counter("sls_redis_failures", "Redis calls that failed: in the rate-limit gate "
                                      "(or skipped while it is known down) or during a request", ("operation",),
                                      registry=reg)
        self.pg_failures = Counter("sls_postgres_failures", "Requests that found PostgreSQL unavailable", registry=reg)
        # per worker process: shows how evenly the kernel spreads connections over the workers
        self.worker_requests = Gauge("sls_worker_requests", "Requests answered by each live worker process",
                                     registry=reg, multiprocess_mode="liveall")
        self._decision = {name: self.decisions.labels(name) for name in DECISIONS}
        self._replay = {name: self.replays.labels(name) for name in REPLAY_SOURCES}
        self._redis = {name: self.redis_failures.labels(name) for name in REDIS_OPERATIONS}
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            label = method if method in METHODS else "OTHER"
            children = (self.requests.labels(label, route, str(status)), self.latency.labels(label, route))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        self.worker_requests.inc()

    def decision(self, name: str) -> None:
        """One rate-limit decision: allowed, limited or degraded."""
        self._decision[name].inc()

    def replay(self, source: str) -> None:
        """One idempotent replay, answered from the cache or the database."""
        self._replay[source].inc()

    def redis_failure(self, operation: str = "gate") -> None:
        """One Redis call that failed (or was skipped because Redis is known to be down)."""
        self._redis[operation].inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (of every worker in multiprocess mode)."""
        if self.shared_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.shared_dir)
        return generate_latest(registry)
