"""Contacts at scale (SPEC "Contacts at scale"): pages while a CRM writes, a single write beside bulk calls,
bulk ingest, and what the attribute index buys. Driven by an aiohttp client, not wrk: the figures are
latencies of requests answered while other requests (writes) run, which wrk cannot interleave.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import asyncpg
import orjson

from ..core.segment_cache import STEP
from ..db.filters import compile_filters
from ..db.members import count_members
from .report import Check
from .seed_contacts import ContactSeed, page_path, seed_contacts

PAGE_P99_MS = 50
SINGLE_WRITE_P50_MS = 50
INGEST_RATE = 40_000
WRITES_PER_SECOND = 50
MAX_SKIP = 60_000
BULK = "/api/v2/management/contacts/bulk"
CONTACTS = "/api/v2/management/contacts"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Writer:
    """POST /contacts at a steady rate (new contacts, as a CRM sync creates them), until stopped."""

    session: aiohttp.ClientSession
    headers: dict[str, str]
    rate: float
    written: int = 0
    failed: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        started = time.perf_counter()
        while not stop.is_set():
            body = {"attributes": {"email": f"w{time.time_ns()}-{self.written}@crm.test",
                                   "plan": random.choice(("free", "pro", "team")), "country": "FR"}}
            async with self.session.post(CONTACTS, json=body, headers=self.headers) as resp:
                await resp.read()
                if resp.status == 201:
                    self.written += 1
                else:
                    self.failed += 1
            # the next write when the rate says, whatever this one cost
            delay = started + (self.written + self.failed) / self.rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)


async def pages_under_writes(base_url: str, seed: ContactSeed, seconds: float, say: Callable[[str], None],
                             segment: str = "every contact") -> Check:
    """Pages of 250 at random skips in 0..MAX_SKIP (multiples of 250 and not), two readers, while a writer
    adds WRITES_PER_SECOND contacts a second to the same organisation."""
    latencies: list[float] = []
    stop = asyncio.Event()
    headers = dict(seed.tenant.headers)
    rng = random.Random(7)
    async with aiohttp.ClientSession(base_url) as session:
        writer = Writer(session, headers, WRITES_PER_SECOND)
        writing = asyncio.create_task(writer.run(stop))

        async def reader() -> None:
            while not stop.is_set():
                skip = min(rng.randrange(0, MAX_SKIP + 1, 250) + rng.choice((0, 0, 0, 17)), seed.contacts - 250)
                started = time.perf_counter()
                async with session.get(page_path(seed, skip), headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"page answered {resp.status}")
                latencies.append((time.perf_counter() - started) * 1000)

        readers = [asyncio.create_task(reader()) for _ in range(2)]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(writing, *readers)
    p50, p99 = _percentile(latencies, 0.5), _percentile(latencies, 0.99)
    say(f"  pages under writes, {segment}, {seed.contacts:,} contacts: {len(latencies)} pages, p50 {p50:.1f} ms, "
        f"p99 {p99:.1f} ms, {writer.written} writes ({writer.written / seconds:.0f}/s), {writer.failed} failed")
    return Check(f"page of 250 at skip 0..{MAX_SKIP:,} of {seed.contacts:,} ({segment}), "
                 f"{writer.written / seconds:.0f} writes/s: p50 {p50:.1f} ms, p99", f"{p99:.1f} ms",
                 f"< {PAGE_P99_MS} ms", p99 < PAGE_P99_MS)


def _bulk_body(start: int, count: int) -> bytes:
    return orjson.dumps({"contacts": [
        {"attributes": {"email": f"b{start + i}@bulk.test", "plan": ("free", "pro", "team")[i % 3],
                        "country": "DE", "seats": i % 50, "firstName": f"Name {i}"}}
        for i in range(count)]})


async def writes_beside_bulk(base_url: str, seed: ContactSeed, calls: int, say: Callable[[str], None]) -> list[Check]:
    """`calls` bulk calls of 10,000 new contacts, two at a time; meanwhile a single contact write every
    50 ms (its latency) and a GET /health every 5 ms (the longest wait: how long the worker's event loop
    was held). Then the ingest rate of the bulk calls alone."""
    headers = {**dict(seed.tenant.headers), "content-type": "application/json"}
    bodies = [_bulk_body(i * 10_000 + int(time.time()) % 1000 * 10**7, 10_000) for i in range(calls)]
    singles: list[float] = []
    probes: list[float] = []
    stop = asyncio.Event()
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(base_url, timeout=timeout) as session:
        async def bulk(body: bytes) -> None:
            async with session.put(BULK, data=body, headers=headers) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise RuntimeError(f"bulk answered {resp.status}: {text[:200]}")

        async def single() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                started = time.perf_counter()
                async with session.post(CONTACTS, json={"attributes": {"email": f"s{time.time_ns()}-{n}@one.test"}},
                                        headers=headers) as resp:
                    await resp.read()
                singles.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.05)

        async def probe() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                async with session.get("/health") as resp:
                    await resp.read()
                probes.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.005)

        side = [asyncio.create_task(single()), asyncio.create_task(probe())]
        started = time.perf_counter()
        for pair in range(0, calls, 2):
            await asyncio.gather(*(bulk(b) for b in bodies[pair:pair + 2]))
        beside = time.perf_counter() - started
        stop.set()
        await asyncio.gather(*side)
        # ingest alone: the same number of calls, nothing else running
        alone = [_bulk_body(10**9 + i * 10_000 + int(time.time()) % 1000 * 10**7, 10_000) for i in range(calls)]
        started = time.perf_counter()
        for pair in range(0, calls, 2):
            await asyncio.gather(*(bulk(b) for b in alone[pair:pair + 2]))
        ingest = calls * 10_000 / (time.perf_counter() - started)
    p50 = statistics.median(singles)
    stall = max(probes)
    say(f"  beside {calls} bulk calls ({calls * 10_000 / beside:,.0f} contacts/s): {len(singles)} single writes, "
        f"p50 {p50:.1f} ms, p99 {_percentile(singles, 0.99):.1f} ms; /health longest {stall:.1f} ms; "
        f"ingest alone {ingest:,.0f} contacts/s")
    return [
        Check(f"single contact write beside 10,000-contact bulk calls ({len(singles)} writes), p50", f"{p50:.1f} ms",
              f"< {SINGLE_WRITE_P50_MS} ms", p50 < SINGLE_WRITE_P50_MS),
        Check("longest GET /health during those bulk calls (the event loop held)", f"{stall:.1f} ms", "", None),
        Check(f"bulk ingest, {calls} calls of 10,000 new contacts, two at a time", f"{ingest:,.0f} contacts/s",
              f">= {INGEST_RATE:,}/s", ingest >= INGEST_RATE),
    ]


async def index_figures(database_url: str, seed: ContactSeed, say: Callable[[str], None]) -> list[Check]:
    """EXPLAIN ANALYZE of counts by an attribute's equality, with the GIN index allowed and not."""
    cases: list[tuple[str, dict[str, Any]]] = [
        ("email equals one address", {"attribute": "email", "op": "equals", "value": "c123@bench.test"}),
        ("plan in [pro, team] (2/3 of all)", {"attribute": "plan", "op": "in", "value": ["pro", "team"]}),
        ("country equals VN (1/4)", {"attribute": "country", "op": "equals", "value": "VN"})]
    checks = []
    conn = await asyncpg.connect(database_url)
    try:
        for label, tree in cases:
            condition, params = compile_filters(tree, 2)
            sql = f"EXPLAIN (ANALYZE, FORMAT JSON) SELECT count(*) FROM contacts WHERE org_id = $1 AND {condition}"
            figures = []
            for bitmap in ("on", "off"):
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL enable_bitmapscan = {bitmap}")
                    plan = await conn.fetchval(sql, seed.tenant.org_id, *params)
                figures.append(orjson.loads(plan)[0]["Execution Time"])
            say(f"  count where {label}: {figures[0]:.1f} ms as planned, {figures[1]:.1f} ms walking without the index")
            checks.append(Check(f"count where {label}, of {seed.contacts:,}: as planned / without the index",
                                f"{figures[0]:.1f} / {figures[1]:.1f} ms", "", None))
        # what a recount costs: the count alone (the previous design, on every page after a write) and the
        # count with every 250th member's key (this design, at most once a second per segment read)
        recounts: list[tuple[str, dict[str, Any]]] = [("everyone", {}), ("plan in [pro, team]", cases[1][1])]
        for label, tree in recounts:
            started = time.perf_counter()
            condition, params = compile_filters(tree, 2)
            await conn.fetchval(f"SELECT count(*) FROM contacts WHERE org_id = $1 AND {condition}",
                                seed.tenant.org_id, *params)
            alone = (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            await count_members(conn, seed.tenant.org_id, tree, STEP)
            both = (time.perf_counter() - started) * 1000
            say(f"  recount of {label}: count alone {alone:.0f} ms, with positions {both:.0f} ms")
            checks.append(Check(f"recount of '{label}' of {seed.contacts:,}: count alone / with every 250th position",
                                f"{alone:.0f} / {both:.0f} ms", "", None))
    finally:
        await conn.close()
    return checks


async def _segment(base_url: str, seed: ContactSeed, filters: dict[str, Any]) -> ContactSeed:
    """Another segment of the same contacts, created through the API (which counts it)."""
    async with aiohttp.ClientSession(base_url) as session, session.post(
        "/api/v2/management/segments", json={"title": "Filtered", "filters": filters},
        headers=dict(seed.tenant.headers),
    ) as resp:
        if resp.status != 201:
            raise RuntimeError(f"creating the segment failed: {resp.status} {await resp.text()}")
        return replace(seed, segment_id=uuid.UUID((await resp.json())["data"]["id"]))


async def run(base_url: str, database_url: str, sizes: tuple[int, int], seconds: float, bulk_calls: int,
              say: Callable[[str], None]) -> list[Check]:
    """Every figure of this module, at the two sizes (the page cost must not grow with the segment)."""
    checks: list[Check] = []
    for size in sizes:
        say(f"seeding {size:,} contacts for the scale cases...")
        seed = await seed_contacts(database_url, base_url, f"bench-scale-{size}", size)
        checks.append(await pages_under_writes(base_url, seed, seconds, say))
        if size == sizes[0]:
            filtered = await _segment(base_url, seed, {"attribute": "plan", "op": "in", "value": ["pro", "team"]})
            checks.append(await pages_under_writes(base_url, filtered, seconds, say, "plan in [pro, team], 2/3"))
            checks += await index_figures(database_url, seed, say)
            checks += await writes_beside_bulk(base_url, seed, bulk_calls, say)
    return checks
