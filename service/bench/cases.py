"""What the benchmark measures: each path's load, the status it must answer, its reference and target."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson

from .report import Target
from .seed import Seed
from .seed_contacts import ContactSeed, contact_paths, forged, page_paths, write_paths
from .wrk import Load

JSON_HEADERS = (("Content-Type", "application/json"),)


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    server: str  # "service" or a reference kind
    load: Load
    status: int  # the status every answer must have
    reference: str | None = None
    target: Target = field(default_factory=Target)
    header: str | None = None  # a header every answer must carry (checked on one request)
    connections: int | None = None  # wrk's connections, when not the run's (large bodies: fewer at once)


def reference_cases() -> list[Case]:
    return [
        Case("ref-fixed", "reference: aiohttp fixed body", "fixed", Load("/"), 200),
        Case("ref-evalsha", "reference: aiohttp + 1 EVALSHA", "evalsha", Load("/"), 200),
        Case("ref-pyjwt", "reference: aiohttp + 250 PyJWT", "pyjwt", Load("/"), 200),
    ]


def link_cases(seed: Seed) -> list[Case]:
    """(a) replay, (b) new links, (c) 429, on the Filum path."""
    path = f"/external/survey-campaigns/{seed.survey_id}/links"
    refused_path = f"/external/survey-campaigns/{seed.refused_survey_id}/links"
    return [
        Case("a", "(a) create-link replay", "service",
             Load(path, "POST", JSON_HEADERS + seed.fast.headers, body=seed.replay_body), 200,
             "ref-evalsha", Target(ratio=1.0), header="Idempotent-Replayed"),
        Case("b", "(b) new links", "service",
             Load(path, "POST", JSON_HEADERS + seed.fast.headers, body_template=seed.new_link_template), 200,
             "ref-evalsha", Target(minimum=1000)),
        Case("c", "(c) 429 rejection", "service",
             Load(refused_path, "POST", JSON_HEADERS + seed.refused.headers, body=seed.refused_body), 429,
             "ref-evalsha", Target(ratio=1.0), header="Retry-After"),
    ]


BATCH_ITEMS = 1000


def batch_cases(seed: Seed) -> list[Case]:
    """(g) batch create: calls of 1,000 new mappings each, and the same 1,000 again (replays, which
    the check request creates before the run); the targets are in links per second."""
    path = f"/external/survey-campaigns/{seed.survey_id}/links/batch"
    sku, *rest = seed.field_ids

    def body(sku_value: str) -> str:
        links = [{"name": f"SKU {sku_value}-{i}", "metadata_mapping": [
            {"metadata_id": sku, "value": f"SKU-{sku_value}-{i}"},
            *({"metadata_id": fid, "value": "Store 42"} for fid in rest[:1])]} for i in range(BATCH_ITEMS)]
        return orjson.dumps({"links": links}).decode()

    headers = JSON_HEADERS + seed.fast.headers
    return [
        Case("g-new", "(g) batch create, 1,000 new links per call", "service",
             Load(path, "POST", headers, body_template=body("%N%")), 200, "b",
             Target(minimum=20_000, per_call=BATCH_ITEMS), connections=8),
        Case("g-replay", "(g) batch replay, 1,000 links per call", "service",
             Load(path, "POST", headers, body=body("replayed").encode()), 200, "a",
             Target(minimum=100_000, per_call=BATCH_ITEMS), connections=8),
    ]


def contact_cases(seed: ContactSeed, log_dir: Path, link_paths: list[str]) -> list[Case]:
    """(d) a page of 250 (JWT links; `d-short`: short links, at no less than the JWT page's rate),
    (e) one contact's link, (f) opening a valid and a forged link, (qr) a link's QR code as SVG
    (250 distinct links in a loop, each code drawn anew: nothing caches them)."""
    headers = seed.tenant.headers
    pages = write_paths(log_dir / "pages.txt", page_paths(seed, 400))
    short_pages = write_paths(log_dir / "short-pages.txt", page_paths(seed, 400, seed.short_survey_id))
    contacts = write_paths(log_dir / "contacts.txt", contact_paths(seed))
    links = write_paths(log_dir / "links.txt", link_paths)
    codes = write_paths(log_dir / "qr.txt", [f"{path}/qr.svg" for path in link_paths])
    return [
        Case("d", "(d) segment page of 250", "service", Load("/", headers=headers, paths_file=pages), 200,
             "ref-pyjwt", Target(ratio=2.0)),
        Case("d-short", "(d) segment page of 250, short links", "service",
             Load("/", headers=headers, paths_file=short_pages), 200, "d", Target(ratio=1.0)),
        Case("e", "(e) single contact link", "service", Load("/", headers=headers, paths_file=contacts), 200,
             "ref-fixed"),
        Case("f-valid", "(f) open a valid link (302)", "service", Load("/", paths_file=links), 302,
             "ref-fixed", Target(ratio=0.5), header="Location"),
        Case("f-forged", "(f) open a forged link (404)", "service", Load(forged(link_paths[0])), 404,
             "ref-fixed", Target(ratio=0.8)),
        Case("qr", "(qr) QR code of a link (SVG)", "service", Load("/", paths_file=codes), 200,
             "ref-fixed", Target(minimum=500), header="Cache-Control"),
    ]
