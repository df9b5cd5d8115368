"""The benchmark's own data: organisations, keys, surveys, metadata fields, a link to replay."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import asyncpg
import orjson

from ..admin import new_tenant
from ..db import surveys as survey_db

# a tiny policy: the first request of the 429 org spends its only token, every later one is refused
REFUSING_POLICY = "1/hour"
# large enough for every new link a long run creates
BENCH_QUOTA = 100_000_000


@dataclass(frozen=True)
class Tenant:
    org_id: uuid.UUID
    key: str

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        return (("x-api-key", self.key),)


@dataclass(frozen=True)
class Seed:
    fast: Tenant  # rate limit off
    refused: Tenant  # REFUSING_POLICY, its token already spent
    survey_id: uuid.UUID
    refused_survey_id: uuid.UUID
    field_ids: tuple[int, ...]
    replay_body: bytes
    refused_body: bytes  # the same mapping, with the refusing organisation's field ids
    new_link_template: str  # %N% is replaced by wrk with a number unique to the request


async def _tenant(conn: asyncpg.Connection, name: str, policy: str) -> Tenant:
    org, secret = await new_tenant(conn, name, BENCH_QUOTA, policy, "bench")
    return Tenant(org.id, secret)


def link_body(field_ids: tuple[int, ...], values: Sequence[object], name: str = "Bench link") -> bytes:
    mapping = [{"metadata_id": fid, "value": v} for fid, v in zip(field_ids, values, strict=True)]
    return orjson.dumps({"name": name, "metadata_mapping": mapping})


async def seed(database_url: str, base_url: str) -> Seed:
    """Create the tenants and the survey; create the replayed link through the API itself."""
    # no migrate: the service migrated the database before it answered /health
    conn = await asyncpg.connect(database_url)
    try:
        run = secrets.token_hex(3)
        fast = await _tenant(conn, f"bench-{run}", "off")
        refused = await _tenant(conn, f"bench-429-{run}", REFUSING_POLICY)
        survey = await survey_db.insert_survey(conn, fast.org_id, "Bench survey", "inProgress", None, None)
        refused_survey = await survey_db.insert_survey(conn, refused.org_id, "Bench 429", "inProgress", None, None)
        field_ids: dict[uuid.UUID, list[int]] = {fast.org_id: [], refused.org_id: []}
        for name in ("SKU Number", "Store", "Date"):
            for org_id, org_fields in field_ids.items():
                field = await survey_db.insert_metadata_field(conn, org_id, name, name.lower().replace(" ", "_"))
                assert field is not None
                org_fields.append(field.id)
    finally:
        await conn.close()
    values = ["SKU-12345", "Store 42", "2024-01-15"]
    ids = tuple(field_ids[fast.org_id])
    replay = link_body(ids, values, "SKU 12345 - Link 001")
    refused_body = link_body(tuple(field_ids[refused.org_id]), values, "SKU 12345 - Link 001")
    template = link_body(ids, ["SKU-%N%", *values[1:]], "SKU %N%").decode()
    async with aiohttp.ClientSession(base_url) as session:
        for tenant, survey_id, body in ((fast, survey.id, replay), (refused, refused_survey.id, refused_body)):
            # the first creates the replayed link; the second spends the refusing org's only token
            async with session.post(f"/external/survey-campaigns/{survey_id}/links", data=body,
                                    headers={**dict(tenant.headers), "Content-Type": "application/json"}) as resp:
                if resp.status != 200:
                    raise RuntimeError(f"seeding the replayed link failed: {resp.status} {await resp.text()}")
    return Seed(fast, refused, survey.id, refused_survey.id, ids, replay, refused_body, template)
