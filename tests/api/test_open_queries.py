"""Counting opens adds no database query to the open path: opening a created link (`/l/`), a contact
link (`/c/`) and a short contact link (`/s/`) runs exactly the statements it runs with OPEN_COUNTING=off.
The flush that writes the counts is separate (one statement per table per batch: test_opens.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from service.app import create_app
from service.core import opens
from service.web.keys import OPENS
from tests.contact_helpers import bulk, contact_link_path
from tests.helpers import create_metadata_field, create_survey, links_path
from tests.query_log import recording

BASE = "http://links.test"


@pytest.fixture
async def links(client, tenant, db) -> dict[str, str]:
    """One open path of each kind: a created link, a contact link, a short contact link."""
    survey = await create_survey(client, tenant.headers)
    short = await create_survey(client, tenant.headers, linkFormat="short")
    field = await create_metadata_field(client, tenant.headers, "sku", "sku")
    resp = await client.post(links_path(survey["id"]), headers=tenant.headers, json={
        "name": "SKU", "metadata_mapping": [{"metadata_id": field["id"], "value": "A-1"}]})
    assert resp.status == 200, await resp.text()
    paths = {"l": (await resp.json())["survey_url"]}
    await bulk(client, tenant.headers, [{"email": "o@x.io"}])
    contact_id = await db.fetchval("SELECT id FROM contacts WHERE org_id = $1", tenant.org_id)
    for kind, target in (("c", survey), ("s", short)):
        resp = await client.get(contact_link_path(target["id"], str(contact_id)), headers=tenant.headers)
        assert resp.status == 200, await resp.text()
        paths[kind] = (await resp.json())["data"]["surveyUrl"]
    for kind, url in paths.items():
        assert url.startswith(f"{BASE}/{kind}/"), url
    return {kind: url.removeprefix(BASE) for kind, url in paths.items()}


async def statements_per_open(aiohttp_client, settings, paths: dict[str, str], counting: bool) -> dict[str, list[str]]:
    """What each open runs on an app with one pool connection, once that connection knows the statements."""
    client = await aiohttp_client(create_app(replace(settings, open_counting=counting, pg_pool_max=1)))
    try:
        for path in paths.values():  # the first open on a connection also learns the statements' types
            assert (await client.get(path)).status == 200
        ran = {}
        for kind, path in paths.items():
            async with recording(client.app) as records:
                resp = await client.get(path)
                assert resp.status == 200, await resp.text()
            ran[kind] = [r.query for r in records]
        if counting:
            # every open was tallied and none written yet: no flush ran among the recorded statements
            counter = client.app[OPENS]
            assert (len(counter.links), sum(t[0] for t in counter.contacts.values())) == (1, 4)
        else:
            assert OPENS not in client.app
    finally:
        await client.close()
    return ran


async def test_counting_opens_adds_no_statement_to_the_open_path(aiohttp_client, settings, links, monkeypatch):
    monkeypatch.setattr(opens, "FLUSH_SECONDS", 3600.0)  # the flush would write on the same pool: only at close
    off = await statements_per_open(aiohttp_client, settings, links, counting=False)
    on = await statements_per_open(aiohttp_client, settings, links, counting=True)
    assert on == off
    assert all(len(ran) == 1 for ran in off.values()), off  # one lookup per open, recorded
