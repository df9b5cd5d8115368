"""Opens tallied while PostgreSQL restarts: the failed flushes keep them, and once it is back they are
written exactly once."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import asyncpg
import pytest

from service.app import create_app
from service.core import opens
from service.web.keys import OPENS
from tests.faults.conftest import OwnPostgres
from tests.faults.test_postgres_faults import _data, _setup
from tests.helpers import wait_until


@pytest.fixture
async def pg_client(aiohttp_client, settings, own_postgres: OwnPostgres, monkeypatch):
    """The app on the test's own PostgreSQL; opens are written only when the test flushes them."""
    if not own_postgres.running:
        own_postgres.start()
    monkeypatch.setattr(opens, "FLUSH_SECONDS", 3600.0)
    return await aiohttp_client(create_app(replace(settings, database_url=own_postgres.url)))


async def test_counts_survive_a_postgres_restart_mid_buffer(pg_client, own_postgres):
    client = pg_client
    tenant, survey_id, _ = await _setup(client, own_postgres.url)
    data = await _data(client, tenant.headers, survey_id)
    for _ in range(30):
        for kind in ("c", "l"):
            assert (await client.get(f"/{kind}/{data[kind]}")).status == 200
    counter = client.app[OPENS]
    assert counter.pending == 2

    await asyncio.to_thread(own_postgres.stop)
    await counter.flush()  # refused: kept
    assert counter.pending == 2
    await asyncio.to_thread(own_postgres.start)

    async def written() -> bool:
        await counter.flush()  # the pool's connections from before the restart may fail once each
        return counter.pending == 0

    await wait_until(written, timeout=30, interval=0.2)
    conn = await asyncpg.connect(own_postgres.url)
    try:
        contact = await conn.fetchval("SELECT count FROM contact_opens WHERE survey_id = $1 AND contact_id = $2",
                                      uuid.UUID(survey_id), int(data["contact"]))
        link = await conn.fetchval("SELECT o.count FROM link_opens o JOIN survey_links l ON l.id = o.link_id"
                                   " WHERE l.survey_id = $1", uuid.UUID(survey_id))
    finally:
        await conn.close()
    assert (contact, link) == (30, 30)
