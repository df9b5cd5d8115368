#!/usr/bin/env python3
"""Soak: mixed traffic on the real server (2 workers) for a while, Redis restarted once midway.

Starts its own embedded PostgreSQL and Redis under a temporary directory (free ports on
127.0.0.1), runs `python -m service serve --workers 2` against them, sends bounded concurrent
traffic (creates, replays, identical bursts, quota refusals, rate-limited callers, contact-link
pages, opened links, management calls and hostile requests), stops and restarts Redis in the
middle, and then checks PostgreSQL. It prints requests by status and the four figures that must be
0: server errors other than the documented 503s, duplicate rows, campaigns over quota, and
replays that answered another link than the first answer. Exit status 0 when all are 0.

    python scripts/soak.py [--seconds 300] [--workers 2] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a plain script from a checkout

from service.admin import new_tenant  # noqa: E402
from service.core.auth import new_secret  # noqa: E402
from service.core.ratepolicy import DEFAULT_POLICY  # noqa: E402
from service.embedded.postgres import EmbeddedPostgres  # noqa: E402
from service.embedded.process import free_port  # noqa: E402
from service.embedded.redis import EmbeddedRedis  # noqa: E402

M = "/api/v2/management"
# the documented 503: a backing server is not answering (the gate in closed mode, PostgreSQL down)
UNAVAILABLE = "Service temporarily unavailable"
VALUES_PER_SURVEY = 60  # more distinct mappings than a survey's quota, so refusals happen


@dataclass
class Org:
    key: str
    org_id: str
    surveys: list[str] = field(default_factory=list)
    field_id: int = 0
    segment: str = ""
    contacts: list[str] = field(default_factory=list)


@dataclass
class Tally:
    statuses: collections.Counter = field(default_factory=collections.Counter)
    by_kind: dict[str, collections.Counter] = field(default_factory=lambda: collections.defaultdict(
        collections.Counter))
    server_errors: list[str] = field(default_factory=list)
    documented_503: int = 0
    transport_errors: collections.Counter = field(default_factory=collections.Counter)
    # (survey, value) -> the link id of the first 200; any other id later is an idempotency break
    first_answer: dict[tuple[str, str], int] = field(default_factory=dict)
    inconsistent: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)
    # "before", "during" and "after" the Redis restart: rate limiting must come back after it
    phase: str = "before"
    refused_by_phase: collections.Counter = field(default_factory=collections.Counter)

    def record(self, kind: str, path: str, status: int, body: Any, elapsed: float) -> None:
        self.statuses[status] += 1
        self.by_kind[kind][status] += 1
        self.latencies.append(elapsed)
        if status == 429:
            self.refused_by_phase[self.phase] += 1
        if status >= 500:
            text = str(body)
            # /ready's 503 names the server that does not answer: documented too
            ready = path == "/ready" and isinstance(body, dict) and body.get("status") == "unavailable"
            if status == 503 and (UNAVAILABLE in text or ready):
                self.documented_503 += 1
            else:
                self.server_errors.append(f"{kind} {status} {text[:200]}")


class Soak:
    def __init__(self, base: str, orgs_: list[Org], tally: Tally, http: aiohttp.ClientSession) -> None:
        self.base, self.orgs, self.tally, self.http = base, orgs_, tally, http
        self.burst_seq = 0

    async def call(self, kind: str, method: str, path: str, headers: dict[str, str] | None = None,
                   **kw: Any) -> tuple[int, Any]:
        started = time.perf_counter()
        try:
            async with self.http.request(method, self.base + path, headers=headers, allow_redirects=False,
                                         **kw) as resp:
                raw = await resp.read()
                body: Any = raw.decode(errors="replace")
                if resp.content_type == "application/json":
                    with contextlib.suppress(ValueError):
                        body = await resp.json()
                self.tally.record(kind, path, resp.status, body, time.perf_counter() - started)
                return resp.status, body
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.tally.transport_errors[f"{kind}: {type(exc).__name__}"] += 1
            return 0, None

    def check_idempotent(self, survey: str, value: str, status: int, body: Any) -> None:
        if status != 200 or not isinstance(body, dict):
            return
        first = self.tally.first_answer.setdefault((survey, value), body["id"])
        if first != body["id"]:
            self.tally.inconsistent.append(f"{survey} {value}: {first} then {body['id']}")
        if len(self.tally.opened) < 500:
            self.tally.opened.append(body["survey_url"].removeprefix(self.base))

    async def create(self, org: Org) -> None:
        # the small-quota surveys fill up early (then replays and refusals); the big one keeps growing
        survey = random.choice(org.surveys)
        value = str(random.randrange(VALUES_PER_SURVEY if survey != org.surveys[-1] else 1_000_000))
        body = {"name": f"soak {value}", "metadata_mapping": [{"metadata_id": org.field_id, "value": value}]}
        status, answer = await self.call("create", "POST", f"/external/survey-campaigns/{survey}/links",
                                         {"x-api-key": org.key}, json=body)
        self.check_idempotent(survey, value, status, answer)

    async def burst(self, org: Org) -> None:
        """Eight identical creates at once, of a mapping never sent before."""
        self.burst_seq += 1
        survey = org.surveys[-1] if random.random() < 0.8 else random.choice(org.surveys)
        value = f"burst-{self.burst_seq}-{secrets.token_hex(3)}"
        body = {"name": "burst", "metadata_mapping": [{"metadata_id": org.field_id, "value": value}]}
        answers = await asyncio.gather(*(self.call("burst", "POST", f"/external/survey-campaigns/{survey}/links",
                                                   {"x-api-key": org.key}, json=body) for _ in range(8)))
        for status, answer in answers:
            self.check_idempotent(survey, value, status, answer)

    async def segment_page(self, org: Org) -> None:
        params = {"limit": random.choice([10, 50, 250]), "skip": random.randrange(0, 300),
                  "attributeKeys": "plan,email"}
        if random.random() < 0.5:
            params["expirationDays"] = random.randrange(1, 30)
        status, body = await self.call(
            "segment links", "GET", f"{M}/surveys/{org.surveys[0]}/contact-links/segments/{org.segment}",
            {"x-api-key": org.key}, params=params)
        if status == 200 and body["data"] and len(self.tally.opened) < 1000:
            self.tally.opened.append(body["data"][0]["surveyUrl"].removeprefix(self.base))

    async def export(self, org: Org) -> None:
        await self.call("export", "GET", f"{M}/surveys/{org.surveys[0]}/contact-links/segments/{org.segment}/export",
                        {"x-api-key": org.key}, params={"attributeKeys": "plan"})

    async def contact_link(self, org: Org) -> None:
        await self.call("contact link", "GET",
                        f"{M}/surveys/{org.surveys[0]}/contact-links/contacts/{random.choice(org.contacts)}",
                        {"x-api-key": org.key})

    async def open_link(self, org: Org) -> None:
        if self.tally.opened:
            await self.call("open", "GET", random.choice(self.tally.opened))

    async def manage(self, org: Org) -> None:
        choice = random.random()
        if choice < 0.4:
            await self.call("manage", "GET", f"{M}/surveys/{random.choice(org.surveys)}", {"x-api-key": org.key})
        elif choice < 0.7:
            await self.call("manage", "GET", f"{M}/metadata-fields", {"x-api-key": org.key})
        elif choice < 0.9:
            await self.call("manage", "PATCH", f"{M}/surveys/{random.choice(org.surveys)}", {"x-api-key": org.key},
                            json={"name": f"renamed {random.randrange(1000)}"})
        else:
            await self.call("manage", "GET", f"{M}/segments/{org.segment}", {"x-api-key": org.key})

    async def hostile(self, org: Org) -> None:
        survey = random.choice(org.surveys)
        kind = random.randrange(6)
        json_headers = {"x-api-key": org.key, "Content-Type": "application/json"}
        if kind == 0:
            await self.call("hostile", "POST", f"/external/survey-campaigns/{survey}/links", json_headers,
                            data=b'{"name": "\xff\xfe", "metadata_mapping": [[[[')
        elif kind == 1:
            await self.call("hostile", "GET", f"/c/{secrets.token_urlsafe(random.randrange(10, 400))}")
        elif kind == 2:
            await self.call("hostile", "GET", f"{M}/metadata-fields", {"x-api-key": new_secret()})
        elif kind == 3:
            await self.call("hostile", "POST", f"{M}/surveys", json_headers, data=b"[" * 5000)
        elif kind == 4:
            await self.call("hostile", "GET", f"{M}/surveys/1'%20OR%20'1'='1", {"x-api-key": org.key})
        else:
            await self.call("hostile", "POST", f"/external/survey-campaigns/{survey}/links", json_headers,
                            data=b'{"name": "x", "metadata_mapping": [{"metadata_id": 1, "value": NaN}]}')

    async def ops(self, org: Org) -> None:
        await self.call("ops", "GET", random.choice(["/health", "/ready"]))

    async def worker(self, deadline: float) -> None:
        actions = [(self.create, 40), (self.burst, 3), (self.segment_page, 12), (self.export, 1),
                   (self.contact_link, 8), (self.open_link, 12), (self.manage, 10), (self.hostile, 8), (self.ops, 2)]
        funcs, weights = zip(*actions, strict=True)
        while time.monotonic() < deadline:
            action = random.choices(funcs, weights)[0]
            # mostly the unlimited organisation; the rate-limited ones see enough to be refused often
            await action(random.choices(self.orgs, (8, 1, 2))[0])


async def setup(base: str, database_url: str, http: aiohttp.ClientSession) -> list[Org]:
    """Three organisations (unlimited, the Filum default policy, a tight one), four surveys each."""
    # no migrate: the server migrated the database before it answered /ready
    conn = await asyncpg.connect(database_url)
    made = []
    try:
        for name, policy in (("unlimited", "off"), ("default", DEFAULT_POLICY), ("tight", "20/second")):
            org, key = await new_tenant(conn, f"soak-{name}", 40, policy, "soak")
            made.append(Org(key, str(org.id)))
    finally:
        await conn.close()
    for org in made:
        h = {"x-api-key": org.key}
        # setup calls may meet the rate limit of the stricter organisations: wait and retry
        async def post(path: str, body: dict, headers: dict[str, str] = h, method: str = "POST") -> dict:
            for _ in range(200):
                async with http.request(method, base + path, json=body, headers=headers) as resp:
                    if resp.status != 429:
                        assert resp.status in (200, 201), await resp.text()
                        return (await resp.json())["data"]
                await asyncio.sleep(0.25)
            raise RuntimeError(f"setup call {path} stayed rate-limited")

        for quota in (None, 25, 10, 1_000_000):  # the organisation's 40, two smaller, and a big one last
            survey = await post(f"{M}/surveys", {"name": "soak", "linkQuota": quota})
            org.surveys.append(survey["id"])
        org.field_id = (await post(f"{M}/metadata-fields", {"name": "value"}))["id"]
        contacts = [{"attributes": {"email": f"c{i}@soak.io", "plan": random.choice(["pro", "free"])}}
                    for i in range(300)]
        await post(f"{M}/contacts/bulk", {"contacts": contacts}, method="PUT")
        org.segment = (await post(f"{M}/segments", {"title": "pro", "filters": {
            "attribute": "plan", "op": "equals", "value": "pro"}}))["id"]
        conn = await asyncpg.connect(database_url)
        try:
            rows = await conn.fetch("SELECT id FROM contacts WHERE org_id = $1::uuid", org.org_id)
        finally:
            await conn.close()
        org.contacts = [str(r["id"]) for r in rows]
    return made


async def integrity(database_url: str) -> dict[str, Any]:
    """What PostgreSQL holds after the run: duplicates, quotas, counters."""
    conn = await asyncpg.connect(database_url)
    try:
        duplicates = await conn.fetchval(
            "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM survey_links"
            " GROUP BY survey_id, mapping_hash HAVING count(*) > 1) d")
        over = await conn.fetchval(
            "SELECT count(*) FROM surveys s JOIN organizations o ON o.id = s.org_id"
            " WHERE (SELECT count(*) FROM survey_links l WHERE l.survey_id = s.id)"
            " > coalesce(s.link_quota, o.link_quota)")
        drift = await conn.fetchval(
            "SELECT count(*) FROM surveys s WHERE s.link_count <> (SELECT count(*) FROM survey_links l"
            " WHERE l.survey_id = s.id)")
        links = await conn.fetchval("SELECT count(*) FROM survey_links")
        full = await conn.fetchval(
            "SELECT count(*) FROM surveys s JOIN organizations o ON o.id = s.org_id"
            " WHERE s.link_count = coalesce(s.link_quota, o.link_quota)")
    finally:
        await conn.close()
    return {"duplicates": duplicates, "over_quota": over, "counter_drift": drift, "links": links, "full": full}


def start_server(env: dict[str, str], workers: int, log_path: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    inherited = {k: v for k, v in os.environ.items()
                 if k not in ("DATABASE_URL", "REDIS_URL", "SIGNING_KEYS", "DATA_DIR", "PROMETHEUS_MULTIPROC_DIR")}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "serve", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers)],
            cwd=REPO, env={**inherited, **env}, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    return proc, port


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


async def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(base + "/ready") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError("the server did not get ready")


async def run(args: argparse.Namespace, root: Path) -> int:
    postgres, redis = EmbeddedPostgres(root), EmbeddedRedis(root)
    pg_port = postgres.start()
    redis_port = redis.start()
    proc = None
    try:
        database_url = f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"
        env = {"DATABASE_URL": database_url, "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
               "SIGNING_KEYS": f"soak:{secrets.token_urlsafe(40)}", "LOG_LEVEL": "WARNING",
               "RATE_LIMIT_FAILURE_MODE": "open",
               # every caller here is 127.0.0.1: its hostile requests must not get the others refused
               "UNAUTH_RATE_LIMIT": "off"}
        log_path = root / "serve.log"
        proc, port = start_server(env, args.workers, log_path)
        base = f"http://127.0.0.1:{port}"
        await wait_ready(base, proc)
        tally = Tally()
        connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=15)) as http:
            made = await setup(base, database_url, http)
            soak = Soak(base, made, tally, http)
            started = time.monotonic()
            deadline = started + args.seconds
            workers = [asyncio.create_task(soak.worker(deadline)) for _ in range(args.concurrency)]
            await asyncio.sleep(args.seconds / 2)
            outage = time.monotonic()
            tally.phase = "during"
            await asyncio.to_thread(redis.stop)
            await asyncio.sleep(args.redis_down_seconds)
            await asyncio.to_thread(redis.start, redis_port)
            outage = time.monotonic() - outage
            await asyncio.sleep(1.5)  # the gate's breaker (1 s) lets Redis be asked again
            tally.phase = "after"
            await asyncio.gather(*workers)
            elapsed = time.monotonic() - started
        stop_server(proc)
        logs = log_path.read_text(errors="replace")
        checks = await integrity(database_url)
    finally:
        if proc is not None:
            stop_server(proc)
        redis.stop()
        postgres.stop()

    total = sum(tally.statuses.values())
    unexpected_logged = logs.count('"msg":"unexpected error"')
    lat = sorted(tally.latencies)
    print(f"soak: {elapsed:.0f} s, {args.workers} workers, {args.concurrency} concurrent callers, "
          f"Redis stopped for {outage:.1f} s at {args.seconds / 2:.0f} s")
    print(f"requests: {total} ({total / elapsed:.0f}/s), latency p50 {statistics.median(lat) * 1000:.1f} ms, "
          f"p99 {lat[int(len(lat) * 0.99)] * 1000:.1f} ms, max {lat[-1] * 1000:.0f} ms")
    print("requests by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(tally.statuses.items())))
    for kind, counts in sorted(tally.by_kind.items()):
        print(f"  {kind:<14} " + ", ".join(f"{s}: {n}" for s, n in sorted(counts.items())))
    refused = tally.refused_by_phase
    print(f"429s before / during / after the Redis restart: {refused['before']} / {refused['during']} / "
          f"{refused['after']}")
    print(f"links created: {checks['links']}, campaigns filled to their quota: {checks['full']}")
    print(f"documented 503s (/ready while Redis was down, or a server not answering): {tally.documented_503}")
    print(f"transport errors: {sum(tally.transport_errors.values())}"
          + "".join(f"\n  {k}: {n}" for k, n in tally.transport_errors.items()))
    failures = {
        "server errors other than the documented 503s": len(tally.server_errors) + unexpected_logged,
        "duplicate rows": checks["duplicates"],
        "campaigns over quota": checks["over_quota"],
        "replays answering another link": len(tally.inconsistent),
        "quota counters that disagree with the rows": checks["counter_drift"],
        "rate limiting not back after the restart": int(refused["after"] == 0),
    }
    for name, count in failures.items():
        print(f"{name}: {count}")
    for line in (tally.server_errors + tally.inconsistent)[:20]:
        print(f"  {line}")
    ok = not any(failures.values()) and not tally.transport_errors
    print("result: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300, help="how long traffic runs (default 300)")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent callers (default 32)")
    parser.add_argument("--redis-down-seconds", type=float, default=3.0,
                        help="how long Redis stays stopped midway (default 3)")
    args = parser.parse_args()
    if args.seconds < 10 or not 1 <= args.concurrency <= 512 or not 1 <= args.workers <= 16:
        parser.error("--seconds >= 10, --concurrency 1-512, --workers 1-16")
    root = Path(tempfile.mkdtemp(prefix="sls-soak-"))
    try:
        return asyncio.run(run(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
