"""Prometheus metrics: a registry of this process, or files shared by every worker (multiprocess mode).

`serve --workers N` points PROMETHEUS_MULTIPROC_DIR at a fresh directory before it spawns the
workers, so prometheus-client is imported in multiprocess mode there and every scrape, whichever
worker answers it, adds up the values of all of them.

The per-request counts are tallied in plain Python numbers and handed to prometheus-client by
`flush()`: before every scrape this process answers, every FLUSH_SECONDS (so another worker's
scrape sees them), and when the process stops. A request then costs a few dictionary and list
operations instead of five locked updates (a tenth of its own cost on the replay path was here).
The flush uses only the public `inc` and `observe`: a histogram has no call that adds many
observations at once, so each latency bucket's requests are observed one by one at the mean of
their latencies (which lies in that bucket: the buckets, the count and the sum come out as if each
latency had been observed), ~0.7 us a request (~1.9 us in multiprocess mode, where each update is
a write to a shared file), once a second, off the request's own path.
What this costs: another worker's last second may be missing from a scrape, a worker killed
outright loses its last second of counts, and a scrape that meets a flush half-way may show a
request counter one flush ahead of its histogram; the next scrape is whole again.
"""

from __future__ import annotations

import math
import os
from bisect import bisect_left
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
# label values a caller controls are bounded, so no request can grow the series without end
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# seconds; the replay hot path answers in about a millisecond, a bulk upload may take seconds
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# each bucket's range (lower, upper]: a bucket's mean is clamped into it against rounding
_BUCKET_RANGES = tuple(zip((-math.inf, *LATENCY_BUCKETS), (*LATENCY_BUCKETS, math.inf), strict=True))
DECISIONS = ("allowed", "limited", "degraded")
REPLAY_SOURCES = ("cache", "database")
REDIS_OPERATIONS = ("gate", "request")
# the bounds a caller can reach: a pool wait past PG_POOL_TIMEOUT, an export past EXPORT_CONCURRENCY,
# a streaming client that stopped reading past STREAM_STALL_SECONDS
LIMITS = ("pool_wait", "exports", "stream_stall")
# how stale another worker's request counts may be in a scrape (multiprocess mode)
FLUSH_SECONDS = 1.0


def multiprocess_dir() -> str | None:
    """The shared directory if prometheus-client was imported in multiprocess mode, else None."""
    if values.ValueClass is values.MutexValue:
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


class Metrics:
    """Every metric of the service; the hot path only tallies, `flush` hands the tallies over."""

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
                                 "or degraded (Redis unreachable or refusing writes, let through in open failure mode)",
                                 ("decision",), registry=reg)
        self.replays = Counter("sls_idempotent_replays", "Create-link requests answered with an existing link, "
                               "by where it came from", ("source",), registry=reg)
        self.redis_failures = Counter("sls_redis_failures", "Redis calls that failed: in the rate-limit gate "
                                      "(or skipped while it is known down) or during a request", ("operation",),
                                      registry=reg)
        self.pg_failures = Counter("sls_postgres_failures", "Requests that found PostgreSQL unavailable", registry=reg)
        self.limits = Counter("sls_limits_reached", "Requests refused (503) or cut at a limit: pool_wait, exports, "
                              "stream_stall", ("limit",), registry=reg)
        self.opens_dropped = Counter("sls_opens_dropped", "Link opens not counted: more links and contacts were "
                                     "waiting to be written than a worker holds (PostgreSQL not taking them)",
                                     registry=reg)
        # per worker process: shows how evenly the kernel spreads connections over the workers
        self.worker_requests = Gauge("sls_worker_requests", "Requests answered by each live worker process",
                                     registry=reg, multiprocess_mode="liveall")
        self._decision = {name: self.decisions.labels(name) for name in DECISIONS}
        self._replay = {name: self.replays.labels(name) for name in REPLAY_SOURCES}
        self._redis = {name: self.redis_failures.labels(name) for name in REDIS_OPERATIONS}
        self._limits = {name: self.limits.labels(name) for name in LIMITS}
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        # not yet flushed: per (method, route, status), [count, count per latency bucket, seconds per bucket]
        self._requests: dict[tuple[str, str, int], list[Any]] = {}
        self._decisions = dict.fromkeys(DECISIONS, 0)
        self._replays = dict.fromkeys(REPLAY_SOURCES, 0)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency (tallied until the next flush)."""
        if method not in METHODS:
            method = "OTHER"  # a caller's made-up methods must not grow the keys without end
        tally = self._requests.get((method, route, status))
        if tally is None:
            tally = self._requests[(method, route, status)] = [0, [0] * len(_BUCKET_RANGES),
                                                               [0.0] * len(_BUCKET_RANGES)]
        tally[0] += 1
        # prometheus buckets are `le`: the first bound at or above the value (the last is +Inf)
        bucket = bisect_left(LATENCY_BUCKETS, seconds)
        tally[1][bucket] += 1
        tally[2][bucket] += seconds

    def decision(self, name: str) -> None:
        """One rate-limit decision: allowed, limited or degraded."""
        self._decisions[name] += 1

    def replay(self, source: str) -> None:
        """One idempotent replay, answered from the cache or the database."""
        self._replays[source] += 1

    def flush(self) -> None:
        """Hand the tallied counts to prometheus-client (to the shared files in multiprocess mode)."""
        requests, self._requests = self._requests, {}
        answered = 0
        for (method, route, status), (count, hits, seconds) in requests.items():
            children = self._request_children.get((method, route, status))
            if children is None:
                children = (self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
                self._request_children[(method, route, status)] = children
            counter, histogram = children
            counter.inc(count)
            observe = histogram.observe
            for n, total, (lower, upper) in zip(hits, seconds, _BUCKET_RANGES, strict=True):
                if n:
                    mean = min(max(total / n, math.nextafter(lower, upper)), upper)
                    for _ in range(n):
                        observe(mean)
            answered += count
        if answered:
            self.worker_requests.inc(answered)
        for tallies, labelled in ((self._decisions, self._decision), (self._replays, self._replay)):
            for name, count in tallies.items():
                if count:
                    labelled[name].inc(count)
                    tallies[name] = 0

    def redis_failure(self, operation: str = "gate") -> None:
        """One Redis call that failed (or was skipped because Redis is known to be down)."""
        self._redis[operation].inc()

    def limit_reached(self, limit: str) -> None:
        """One request refused or cut at a limit (rare: counted at once, not tallied)."""
        self._limits[limit].inc()

    def opens_dropped_count(self, count: int) -> None:
        """Opens dropped because too many were waiting to be written (rare: counted at once)."""
        self.opens_dropped.inc(count)

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (of every worker in multiprocess mode).

        Call flush() first, on the event loop: render may run in another thread."""
        if self.shared_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.shared_dir)
        return generate_latest(registry)
