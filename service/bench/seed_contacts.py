"""Contacts for the contact-link paths: many rows in one SQL statement, the segment through the API."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg

from ..db import contacts as contact_db
from ..db import surveys as survey_db
from .seed import Tenant, _tenant

ATTRIBUTE_KEYS = ("email", "plan", "country")
REDIRECT_URL = "https://surveys.example.com/thanks?src=bench"
# created_at one millisecond apart, newest first: the page order is the insertion order reversed
_INSERT = """
INSERT INTO contacts (org_id, attributes, created_at)
SELECT $1, jsonb_build_object('email', 'c' || g || '@bench.test', 'plan', (ARRAY['free','pro','team'])[1 + g % 3],
                              'country', (ARRAY['FR','DE','US','VN'])[1 + g % 4], 'seats', g % 50),
       now() - make_interval(secs => g / 1000.0)
FROM generate_series($3 + 1, $3 + $2) AS g
"""


@dataclass(frozen=True)
class ContactSeed:
    tenant: Tenant
    survey_id: uuid.UUID
    segment_id: uuid.UUID
    contacts: int
    sample_ids: tuple[int, ...]  # contacts to ask single links for
    short_survey_id: uuid.UUID  # a survey like survey_id whose linkFormat is short (/s/ links)


async def insert_contacts(conn: asyncpg.Connection, org_id: uuid.UUID, count: int, batch: int = 250_000) -> None:
    """`count` contacts in batches (one statement each), their attribute keys, and a contact_changes row."""
    done = 0
    while done < count:
        await conn.execute(_INSERT, org_id, min(batch, count - done), done)
        done += batch
    await contact_db.ensure_attribute_keys(conn, org_id, (*ATTRIBUTE_KEYS, "seats"))
    await contact_db.bump_version(conn, org_id)
    await conn.execute("ANALYZE contacts")


async def seed_contacts(database_url: str, base_url: str, name: str, count: int) -> ContactSeed:
    """An organisation with `count` contacts, a survey with a redirect URL, and an every-contact segment."""
    conn = await asyncpg.connect(database_url)
    try:
        tenant = await _tenant(conn, f"{name}-{uuid.uuid4().hex[:6]}", "off")
        survey = await survey_db.insert_survey(conn, tenant.org_id, "Bench contacts", "inProgress", None,
                                               REDIRECT_URL)
        short = await survey_db.insert_survey(conn, tenant.org_id, "Bench short links", "inProgress", None,
                                              REDIRECT_URL, "short")
        await insert_contacts(conn, tenant.org_id, count)
        ids = [r[0] for r in await conn.fetch(
            "SELECT id FROM contacts WHERE org_id = $1 ORDER BY random() LIMIT 1000", tenant.org_id)]
    finally:
        await conn.close()
    async with aiohttp.ClientSession(base_url) as session, session.post(
        "/api/v2/management/segments", json={"title": "Everyone", "filters": {"and": []}},
        headers=dict(tenant.headers),
    ) as resp:
        if resp.status != 201:
            raise RuntimeError(f"creating the segment failed: {resp.status} {await resp.text()}")
        segment_id = uuid.UUID((await resp.json())["data"]["id"])
    return ContactSeed(tenant, survey.id, segment_id, count, tuple(ids), short.id)


def page_path(seed: ContactSeed, skip: int, limit: int = 250, survey_id: uuid.UUID | None = None) -> str:
    return (f"/api/v2/management/surveys/{survey_id or seed.survey_id}/contact-links/segments/{seed.segment_id}"
            f"?limit={limit}&skip={skip}&expirationDays=7&attributeKeys=email,plan")


def write_paths(path: Path, paths: list[str]) -> Path:
    path.write_text("\n".join(paths) + "\n")
    return path


def page_paths(seed: ContactSeed, pages: int, survey_id: uuid.UUID | None = None) -> list[str]:
    """Pages of 250 at every depth up to `pages`, shuffled so consecutive requests differ (of the
    JWT survey, or of `survey_id`)."""
    skips = [i * 250 for i in range(min(pages, max(1, seed.contacts // 250)))]
    random.Random(7).shuffle(skips)
    return [page_path(seed, skip, survey_id=survey_id) for skip in skips]


def contact_paths(seed: ContactSeed) -> list[str]:
    return [f"/api/v2/management/surveys/{seed.survey_id}/contact-links/contacts/{cid}?expirationDays=7"
            for cid in seed.sample_ids]


async def link_paths(base_url: str, seed: ContactSeed) -> list[str]:
    """The `/c/<token>` paths of the first page's contacts, as the API signs them."""
    async with aiohttp.ClientSession(base_url) as session, session.get(
        page_path(seed, 0), headers=dict(seed.tenant.headers)) as resp:
        if resp.status != 200:
            raise RuntimeError(f"reading a page of links failed: {resp.status} {await resp.text()}")
        data = (await resp.json())["data"]
    return ["/c/" + item["surveyUrl"].rsplit("/c/", 1)[1] for item in data]


def forged(path: str) -> str:
    """The same link with one character of its signature changed."""
    last = path[-2]
    return path[:-2] + ("A" if last != "A" else "B") + path[-1]
