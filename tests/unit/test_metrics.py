"""The tallied request metrics, once flushed, are what prometheus-client's own calls would have recorded."""

from __future__ import annotations

import math
import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from service.metrics import LATENCY_BUCKETS, Metrics


def _samples(registry: CollectorRegistry, prefix: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name.startswith(prefix) and not sample.name.endswith("_created"):
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def test_flushed_tallies_equal_direct_observations():
    rng = random.Random(7)
    metrics = Metrics()
    direct = CollectorRegistry()
    histogram = Histogram("sls_http_request_duration_seconds", "", ("method", "route"), buckets=LATENCY_BUCKETS,
                          registry=direct)
    # values on bucket bounds too: `le` means a value equal to a bound is in that bucket
    values = [*LATENCY_BUCKETS, 0.0, 99.0] + [rng.expovariate(200) for _ in range(500)]
    for i, seconds in enumerate(values):
        route = ("/a", "/b")[i % 2]
        metrics.observe_request("GET", route, 200, seconds)
        histogram.labels("GET", route).observe(seconds)
        if i == 250:
            metrics.flush()  # two flushes add up
    # only what was flushed at i == 250 is seen so far: 126 of the 251 on /a
    counts = _samples(metrics.registry, "sls_http_request_duration_seconds_count")
    assert counts[("sls_http_request_duration_seconds_count", frozenset({("method", "GET"), ("route", "/a")}))] == 126
    metrics.flush()
    ours = _samples(metrics.registry, "sls_http_request_duration_seconds")
    theirs = _samples(direct, "sls_http_request_duration_seconds")
    assert ours.keys() == theirs.keys() and len(ours) == 2 * (len(LATENCY_BUCKETS) + 3)
    for key, expected in theirs.items():
        assert abs(ours[key] - expected) < 1e-9, key
    requests = _samples(metrics.registry, "sls_http_requests_total")
    assert requests == {("sls_http_requests_total", frozenset({("method", "GET"), ("route", r), ("status", "200")})):
                        len(values[i::2]) for i, r in enumerate(("/a", "/b"))}
    assert _samples(metrics.registry, "sls_worker_requests") == {("sls_worker_requests", frozenset()): len(values)}


def test_decisions_and_replays_are_tallied_until_flushed():
    metrics = Metrics()
    for name in ("allowed", "allowed", "limited"):
        metrics.decision(name)
    metrics.replay("cache")
    assert b"sls_ratelimit_decisions_total{decision=\"allowed\"} 0.0" in generate_latest(metrics.registry)
    metrics.flush()
    metrics.flush()  # a second flush adds nothing
    text = generate_latest(metrics.registry).decode()
    assert 'sls_ratelimit_decisions_total{decision="allowed"} 2.0' in text
    assert 'sls_ratelimit_decisions_total{decision="limited"} 1.0' in text
    assert 'sls_ratelimit_decisions_total{decision="degraded"} 0.0' in text
    assert 'sls_idempotent_replays_total{source="cache"} 1.0' in text


def test_made_up_methods_share_one_key():
    metrics = Metrics()
    for n in range(50):
        metrics.observe_request(f"X-METHOD-{n}", "unmatched", 405, 0.001)
    assert len(metrics._requests) == 1
    metrics.flush()
    assert len(metrics._request_children) == 1
    text = generate_latest(metrics.registry).decode()
    assert 'sls_http_requests_total{method="OTHER",route="unmatched",status="405"} 50.0' in text


def test_many_latencies_on_and_just_past_a_bound_stay_in_their_buckets():
    # each bucket's latencies are observed at their mean: rounding must not carry it across a bound
    metrics = Metrics()
    just_past = math.nextafter(0.01, 1.0)
    # 100 times 0.005 add up to a mean just above 0.005, 1000 times just_past to one at or below 0.01
    for _ in range(100):
        metrics.observe_request("GET", "/a", 200, 0.005)
        metrics.observe_request("GET", "/a", 200, 0.1)
    for _ in range(1000):
        metrics.observe_request("GET", "/a", 200, just_past)
    metrics.flush()
    buckets = {dict(labels)["le"]: value for (name, labels), value
               in _samples(metrics.registry, "sls_http_request_duration_seconds_bucket").items()}
    assert buckets["0.0025"] == 0 and buckets["0.005"] == 100 and buckets["0.01"] == 100
    assert buckets["0.025"] == 1100 and buckets["0.05"] == 1100 and buckets["0.1"] == 1200 and buckets["+Inf"] == 1200
    total = _samples(metrics.registry, "sls_http_request_duration_seconds_sum")
    assert abs(sum(total.values()) - (100 * (0.005 + 0.1) + 1000 * just_past)) < 1e-9
