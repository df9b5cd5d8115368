"""The benchmark's table: each path with its figures, its ratio to its reference, and its target."""

from __future__ import annotations

from dataclasses import dataclass, field

from .wrk import WrkResult


@dataclass(frozen=True)
class Target:
    """`ratio` to the reference (None: no ratio target) or an absolute `minimum` of requests/s."""

    ratio: float | None = None
    minimum: float | None = None
    per_call: int = 1  # items per request (a batch): `minimum` counts items per second

    def text(self) -> str:
        if self.ratio is not None:
            return f">= {self.ratio:.1f}x"
        if self.minimum is not None:
            return f">= {self.minimum:,.0f}/s" + (" items" if self.per_call > 1 else "")
        return ""

    def met(self, rps: float, ratio: float | None) -> bool | None:
        if self.ratio is not None:
            return ratio is not None and ratio >= self.ratio
        if self.minimum is not None:
            return rps * self.per_call >= self.minimum
        return None


@dataclass
class Row:
    key: str
    label: str
    result: WrkResult
    reference: str | None = None  # key of the reference row
    target: Target = field(default_factory=Target)
    ratio: float | None = None
    cpu_us: float | None = None  # the server's CPU time per request (its workers, not Redis or PostgreSQL)
    cpu_share: float | None = None  # the server's CPU time per second of the run (1.0 = one core)


def fill_ratios(rows: list[Row]) -> None:
    """Each row's requests/s over its reference's (measured in the same run)."""
    by_key = {r.key: r for r in rows}
    for row in rows:
        ref = by_key.get(row.reference or "")
        if ref is not None and ref.result.rps:
            # a batch row compares its items per second with the reference's requests (single creates)
            row.ratio = row.result.rps * row.target.per_call / ref.result.rps


def _mark(met: bool | None) -> str:
    return "" if met is None else ("ok" if met else "MISS")


def table(rows: list[Row]) -> str:
    """A Markdown table (readable in a terminal, pasteable into the README)."""
    head = "| path | req/s | p50 ms | p99 ms | CPU us/req | server CPU | ratio | vs | target | |"
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |"]
    for row in rows:
        res = row.result
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        met = row.target.met(res.rps, row.ratio)
        cpu = f"{row.cpu_us:,.0f}" if row.cpu_us is not None else ""
        share = f"{row.cpu_share:.0%}" if row.cpu_share is not None else ""
        lines.append(f"| {row.label} | {res.rps:,.0f} | {res.p50_ms:.2f} | {res.p99_ms:.2f} | {cpu} | {share} | "
                     f"{ratio} | {row.reference or ''} | {row.target.text()} | {_mark(met)} |")
    return "\n".join(lines)


@dataclass(frozen=True)
class Check:
    """A figure that is not a wrk run: peak RSS, a deep page's latency, the export's rate."""

    label: str
    value: str
    target: str
    met: bool | None


def checks_table(checks: list[Check]) -> str:
    lines = ["| check | value | target | |", "| --- | ---: | --- | --- |"]
    lines += [f"| {c.label} | {c.value} | {c.target} | {_mark(c.met)} |" for c in checks]
    return "\n".join(lines)
