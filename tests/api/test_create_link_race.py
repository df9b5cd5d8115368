"""The create-link race that tests otherwise reach only by chance: two identical creates that both
wait on the survey's lock, so the second finds the first's link only through ON CONFLICT and the
replay that follows it (core/links.py)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from service.db import links as link_db
from tests.helpers import create_metadata_field, create_survey, links_path, wait_until


async def test_the_creator_that_loses_on_conflict_replays_the_winners_link(client, tenant, db, database_url,
                                                                           monkeypatch):
    survey = await create_survey(client, tenant.headers)
    field = await create_metadata_field(client, tenant.headers, "SKU Number")
    body = {"name": "raced", "metadata_mapping": [{"metadata_id": field["id"], "value": "SKU-1"}]}
    survey_id = uuid.UUID(survey["id"])
    fallbacks = []
    find_link = link_db.find_link

    async def counted_find_link(*args):
        fallbacks.append(args[1:])
        return await find_link(*args)

    monkeypatch.setattr(link_db, "find_link", counted_find_link)

    locker = await asyncpg.connect(database_url)
    try:
        lock = locker.transaction()
        await lock.start()
        await locker.execute("SELECT 1 FROM surveys WHERE id = $1 FOR UPDATE", survey_id)
        creates = [asyncio.ensure_future(client.post(links_path(survey["id"]), json=body, headers=tenant.headers))
                   for _ in range(2)]

        async def both_wait_on_our_lock() -> bool:
            # the first waits for our transaction, the second for the first's tuple lock; each has taken
            # its statement's snapshot already, so neither will see a link the other stores (asked on
            # another connection: within a transaction, pg_stat_activity keeps showing its first answer)
            return await db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE '%WITH stored AS%'") == 2

        await wait_until(both_wait_on_our_lock, timeout=10, interval=0.02)
        assert not any(create.done() for create in creates)
        await lock.rollback()
        responses = await asyncio.gather(*creates)
    finally:
        await locker.close()

    assert [r.status for r in responses] == [200, 200]
    answers = [await r.json() for r in responses]
    assert answers[0] == answers[1]
    assert sorted(r.headers.get("Idempotent-Replayed", "") for r in responses) == ["", "true"]
    # the loser's one statement answered nothing (ON CONFLICT), and the fallback read found the link
    assert len(fallbacks) == 1 and fallbacks[0][1] == survey_id
    rows = await db.fetch("SELECT id, public_id FROM survey_links WHERE survey_id = $1", survey_id)
    assert [(row["id"], row["public_id"]) for row in rows] == [(answers[0]["id"], answers[0]["public_id"])]
    assert await db.fetchval("SELECT link_count FROM surveys WHERE id = $1", survey_id) == 1
