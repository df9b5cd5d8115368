"""Figures that are not wrk runs: a deep page's latency, and the streaming export's rate and memory."""

from __future__ import annotations

import time

import aiohttp

from .procs import RssSampler, Server, rss_kb, worker_pids
from .report import Check
from .seed_contacts import ContactSeed, page_path

DEEP_PAGE_MS = 100
EXPORT_RATE = 100_000
# how much a worker's RSS may grow while it streams (allocator noise, not the export's size)
EXPORT_RSS_GROWTH_MB = 20


async def _timed_get(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    async with session.get(url, headers=headers) as resp:
        await resp.read()
        return (time.perf_counter() - started) * 1000, resp.status


async def deep_page(base_url: str, seed: ContactSeed, skip: int) -> list[Check]:
    """A page of 250 at `skip`: the first time (nothing known about the segment's positions) and again."""
    url = base_url + page_path(seed, skip)
    headers = dict(seed.tenant.headers)
    checks = []
    async with aiohttp.ClientSession() as session:
        for label in ("first request", "asked again"):
            ms, status = await _timed_get(session, url, headers)
            if status != 200:
                raise RuntimeError(f"deep page answered {status}")
            checks.append(Check(f"deep page skip={skip:,} of {seed.contacts:,}, {label}", f"{ms:.1f} ms",
                                f"< {DEEP_PAGE_MS} ms", ms < DEEP_PAGE_MS))
    return checks


def export_path(seed: ContactSeed) -> str:
    return (f"/api/v2/management/surveys/{seed.survey_id}/contact-links/segments/{seed.segment_id}/export"
            "?expirationDays=7&attributeKeys=email,plan")


async def export(server: Server, seed: ContactSeed, whole_run: RssSampler) -> list[Check]:
    """Stream every link of the segment as CSV; rows per second, and the worker's RSS before and at peak."""
    pids = worker_pids(server)
    before_kb = max(rss_kb(pid) for pid in pids)
    sampler = RssSampler(interval=0.05)
    sampler.watch(server)
    lines = size = 0
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        sampler.start()
        started = time.perf_counter()
        async with session.get(server.url + export_path(seed), headers=dict(seed.tenant.headers)) as resp:
            if resp.status == 404 and "text/csv" not in resp.headers.get("Content-Type", ""):
                await sampler.stop()
                return [Check("streaming export", "no export endpoint", f">= {EXPORT_RATE:,} links/s", None)]
            if resp.status != 200:
                raise RuntimeError(f"export answered {resp.status}: {(await resp.text())[:300]}")
            async for chunk in resp.content.iter_chunked(1 << 20):
                lines += chunk.count(b"\n")
                size += len(chunk)
        seconds = time.perf_counter() - started
        await sampler.stop()
    links = lines - 1  # the header
    if links != seed.contacts:
        raise RuntimeError(f"export gave {links} links for {seed.contacts} contacts")
    rate = links / seconds
    growth = (sampler.peak_kb - before_kb) / 1024
    whole_run.peak_kb = max(whole_run.peak_kb, sampler.peak_kb)
    return [
        Check(f"export of {links:,} links as CSV ({size / 1e6:.0f} MB in {seconds:.1f} s)", f"{rate:,.0f} links/s",
              f">= {EXPORT_RATE:,} links/s", rate >= EXPORT_RATE),
        Check("worker RSS during the export: before / peak",
              f"{before_kb / 1024:.0f} / {sampler.peak_kb / 1024:.0f} MB",
              f"growth < {EXPORT_RSS_GROWTH_MB} MB", growth < EXPORT_RSS_GROWTH_MB),
    ]
