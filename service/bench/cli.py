"""`python -m service bench`: start everything, seed, drive load with wrk, print the table."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from ..runtime import servers
from ..settings import Settings
from . import checks, profile, scale
from .cases import Case, batch_cases, contact_cases, link_cases, reference_cases
from .procs import RssSampler, Server, cpu_seconds, start_reference, start_service, worker_pids
from .report import Check, Row, Target, checks_table, fill_ratios, table
from .seed import Seed, seed
from .seed_contacts import link_paths, seed_contacts
from .wrk import WrkMissing, WrkResult, find_wrk, run_wrk

RSS_LIMIT_MB = 150


class Bench:
    """One run: the servers it started, its rows and checks."""

    def __init__(self, args: argparse.Namespace, wrk: str, data_dir: Path, ready: Settings) -> None:
        self.args, self.wrk, self.data_dir, self.ready = args, wrk, data_dir, ready
        self.seconds = 2.0 if args.quick else args.seconds
        self.warmup = 1.0 if args.quick else args.warmup
        self.only = {k.strip() for k in args.only.split(",") if k.strip()}
        self.contacts = min(args.contacts, 50_000) if args.quick else args.contacts
        self.export_contacts = 0 if args.no_export else (
            min(args.export_contacts, 100_000) if args.quick else args.export_contacts)
        self.log_dir = data_dir / "bench-logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[Row] = []
        self.checks: list[Check] = []
        self.servers: dict[str, Server] = {}
        self.rss = RssSampler()
        self.service_env = dict(item.split("=", 1) for item in args.env)

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    async def verify(self, case: Case, server: Server) -> None:
        """One request by hand first: the path answers what the run will count on."""
        load = case.load
        body = load.body
        if load.body_template is not None:
            body = load.body_template.replace("%N%", f"check{time.time_ns()}").encode()
        path = load.path
        if load.paths_file is not None:
            path = load.paths_file.read_text().split("\n", 1)[0]
        async with aiohttp.ClientSession() as session, session.request(
            load.method, server.url + path, data=body, headers=dict(load.headers), allow_redirects=False,
        ) as resp:
            text = await resp.text()
            if resp.status != case.status or (case.header and case.header not in resp.headers):
                raise RuntimeError(f"{case.label}: expected {case.status} (header {case.header}), got "
                                   f"{resp.status}: {text[:300]}")

    async def measure(self, case: Case, server: Server | None = None) -> Row:
        """Verify, warm up, then the measured wrk run; every answer must have the expected status."""
        server = server or self.servers[case.server]
        await self.verify(case, server)
        connections = case.connections or self.args.connections

        async def run(secs: float) -> WrkResult:
            return await run_wrk(self.wrk, server.url, case.load, secs, connections, self.args.threads)

        await run(self.warmup)
        spy = None
        if self.args.profile and server.proc.pid:
            out = Path(self.args.profile) / f"{case.key}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            spy = await profile.record(server.proc.pid, self.seconds, out)
        pids = worker_pids(server)
        cpu_before = cpu_seconds(pids)
        result = await run(self.seconds)
        cpu = cpu_seconds(pids) - cpu_before
        if spy is not None:
            await spy.wait()
            self.say(profile.summarize(out))
        bad = result.status_errors if case.status < 400 else result.requests - result.status_errors
        if bad or result.errors:
            raise RuntimeError(f"{case.label}: {bad} answers with another status than {case.status}, "
                               f"{result.errors} socket errors")
        cpu_us = cpu * 1e6 / result.requests if result.requests else 0.0
        share = cpu / result.seconds if result.seconds else None
        self.say(f"  {case.label}: {result.rps:,.0f} req/s, p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms,"
                 f" {cpu_us:.0f} CPU us/req (server at {share or 0:.0%} of a core, wrk {result.wrk_cpu:.0%})"
                 + (f", {result.rps * case.target.per_call:,.0f} items/s" if case.target.per_call > 1 else ""))
        row = Row(case.key, case.label, result, case.reference, case.target, cpu_us=cpu_us, cpu_share=share)
        self.rows.append(row)
        return row

    def wanted(self, case: Case) -> bool:
        """References always; a case named in --only, or its group (`f` is f-valid and f-forged)."""
        return (case.key.startswith("ref-") or not self.only or case.key in self.only
                or case.key.split("-")[0] in self.only)

    async def run(self) -> None:
        ready = self.ready
        assert ready.redis_url and ready.database_url
        self.say(f"bench: {os.cpu_count()} cores, wrk -t{self.args.threads} -c{self.args.connections}, "
                 f"{self.seconds:g} s per path; data in {self.data_dir}")
        for kind in ("fixed", "evalsha", "pyjwt"):
            self.servers[kind] = await start_reference(kind, self.log_dir, ready.redis_url)
        self.servers["service"] = service = await start_service(self.data_dir, 1, self.log_dir, self.service_env)
        self.rss.watch(service)
        self.rss.start()
        data = await seed(ready.database_url, service.url)
        refs = {c.key: c for c in reference_cases()}
        groups = [("ref-evalsha", link_cases(data) + batch_cases(data))]
        if not self.only or self.only & {"d", "d-short", "e", "f", "f-valid", "f-forged", "qr", "deep"}:
            self.say(f"seeding {self.contacts:,} contacts...")
            people = await seed_contacts(ready.database_url, service.url, "bench-contacts", self.contacts)
            # before (d), which teaches the service where deep pages start
            self.checks += await checks.deep_page(service.url, people, skip=min(100_000, self.contacts // 3))
            cases = contact_cases(people, self.log_dir, await link_paths(service.url, people))
            groups += [("ref-pyjwt", cases[:2]), ("ref-fixed", cases[2:])]
        measured = set()
        valid = None
        for ref_key, cases in groups:
            chosen = [case for case in cases if self.wanted(case)]
            if chosen:
                await self.measure(refs[ref_key])
                measured.add(ref_key)
            for case in chosen:
                row = await self.measure(case)
                if case.key == "f-valid":
                    valid = (case, row)
        for ref_key in refs.keys() - measured:
            await self.measure(refs[ref_key])
        if self.export_contacts and (not self.only or "export" in self.only):
            self.say(f"seeding {self.export_contacts:,} contacts for the export...")
            crowd = await seed_contacts(ready.database_url, service.url, "bench-export", self.export_contacts)
            self.checks += await checks.export(service, crowd, self.rss)
        if self.args.scale_contacts and (not self.only or "scale" in self.only):
            size = min(self.args.scale_contacts, 100_000) if self.args.quick else self.args.scale_contacts
            self.checks += await scale.run(service.url, ready.database_url, (size, size // 4),
                                           5.0 if self.args.quick else 20.0, self.args.bulk_calls, self.say)
        if valid is not None:  # last on the first service: it replaces that service with another
            await self.counting_off(*valid)
        if not self.args.no_workers and self.wanted(link_cases(data)[0]):
            await self.two_workers(data)
        await self.rss.stop()
        peak = self.rss.peak_kb / 1024
        self.checks.append(Check(f"peak worker RSS, whole run ({self.rss.samples} samples)", f"{peak:.0f} MB",
                                 f"< {RSS_LIMIT_MB} MB", peak < RSS_LIMIT_MB))

    async def counting_off(self, case: Case, on: Row) -> None:
        """(f) valid again on a service with OPEN_COUNTING=off: what counting opens costs the open path."""
        one = self.servers.pop("service")
        self.rss.forget(one)
        await one.stop()
        service = await start_service(self.data_dir, 1, self.log_dir, {**self.service_env, "OPEN_COUNTING": "off"})
        self.servers["service"] = service
        self.rss.watch(service)
        off = await self.measure(case, service)
        off.key, off.label = "f-valid-off", "(f) open a valid link (302), open counting off"
        ratio = on.result.rps / off.result.rps if off.result.rps else 0.0
        # CPU per request too: less sensitive than req/s to whatever else the machine runs meanwhile
        cpu = f" ({on.cpu_us or 0:,.0f} vs {off.cpu_us or 0:,.0f} CPU us/req)"
        self.checks.append(Check("(f) valid link: req/s with open counting on / off", f"{ratio:.2f}x{cpu}",
                                 ">= 0.90x", ratio >= 0.9))

    async def two_workers(self, data: Seed) -> None:
        """(a) again with `--workers 2`, against (a) with one worker in this run."""
        one = self.servers.pop("service")
        self.rss.forget(one)
        await one.stop()
        service = await start_service(self.data_dir, 2, self.log_dir, self.service_env)
        self.servers["service-w2"] = service
        self.rss.watch(service)
        case = link_cases(data)[0]
        await asyncio.sleep(1.0)  # both workers up
        row = await self.measure(case, service)
        row.key, row.label, row.reference, row.target = "a-w2", "(a) replay, --workers 2", "a", Target(ratio=1.5)

    async def stop(self) -> None:
        await self.rss.stop()
        for server in self.servers.values():
            await server.stop()
        self.servers.clear()

    def report(self) -> str:
        fill_ratios(self.rows)
        return (f"{os.cpu_count()} cores; one worker unless stated; wrk -t{self.args.threads} "
                f"-c{self.args.connections}, {self.seconds:g} s per path\n\n"
                + table(self.rows) + "\n\n" + checks_table(self.checks))


def run(args: argparse.Namespace) -> int:
    """Entry point of `python -m service bench`."""
    try:
        wrk = find_wrk(args.install_wrk)
    except WrkMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    temporary = args.data_dir is None
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="sls-bench-")).resolve()
    try:
        # the bench's own embedded servers, whatever DATABASE_URL / REDIS_URL say
        for name in ("DATABASE_URL", "REDIS_URL", "SIGNING_KEYS"):
            os.environ.pop(name, None)
        with servers(Settings(data_dir=data_dir)) as ready:
            bench = Bench(args, wrk, data_dir, ready)
            failed = None
            try:
                asyncio.run(_main(bench))
            except Exception as exc:  # the table of what ran is still printed
                failed = exc
            print(bench.report())
            if failed is not None:
                print(f"bench failed: {failed}", file=sys.stderr)
                return 1
    finally:
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


async def _main(bench: Bench) -> None:
    try:
        await bench.run()
    finally:
        await bench.stop()
