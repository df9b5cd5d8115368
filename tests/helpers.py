"""Small helpers shared by the API tests."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient

from service.db.migrate import MIGRATIONS_TABLE, load_migrations

JSON = {"Content-Type": "application/json"}


async def create_survey(client: TestClient | aiohttp.ClientSession, headers: dict[str, str],
                        **fields: Any) -> dict[str, Any]:
    body = {"name": "Survey", **fields}
    resp = await client.post("/api/v2/management/surveys", json=body, headers=headers)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["data"]


async def create_metadata_field(client: TestClient, headers: dict[str, str], name: str,
                                variable: str | None = None) -> dict[str, Any]:
    body = {"name": name} if variable is None else {"name": name, "variable": variable}
    resp = await client.post("/api/v2/management/metadata-fields", json=body, headers=headers)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["data"]


def links_path(survey_id: str) -> str:
    return f"/external/survey-campaigns/{survey_id}/links"


# every table the migrations create, and theirs, so "nothing was written" checks hold for tables added later too
TABLES = (*(table for m in load_migrations() for table in re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", m.sql)),
          MIGRATIONS_TABLE)


async def table_snapshot(db: asyncpg.Connection) -> dict[str, tuple[int, str]]:
    """Each table's row count and a digest of its rows: 'nothing was written' also sees an UPDATE."""
    snapshot = {}
    for t in TABLES:
        [row] = await db.fetch(
            f"SELECT count(*), md5(coalesce(string_agg(r::text, ',' ORDER BY r::text), '')) FROM {t} r")
        snapshot[t] = (row[0], row[1])
    return snapshot


def as_bytes(reply: object) -> bytes:
    """A Redis reply that must be bytes (the suite's clients do not decode replies), checked as such."""
    assert isinstance(reply, bytes), reply
    return reply


async def wait_until(check, timeout: float, interval: float = 0.1):
    """Poll the async `check` until it answers something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"not reached within {timeout}s (last answer {last!r})")
