"""Read a Prometheus text exposition into {(sample name, labels): value}."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_samples(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample's value, or None when the exposition does not have it."""
    return samples.get((name, frozenset(labels.items())))


def number(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value, which the exposition must have."""
    found = value(samples, name, **labels)
    assert found is not None, f"no sample {name} {labels}"
    return found


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """Every labelled sample of one name."""
    return {labels: v for (n, labels), v in samples.items() if n == name}
