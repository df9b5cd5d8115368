"""The cost of a page does not grow with the segment (SPEC "Contacts at scale"): a page near the end of
a segment of 5,000 and of 20,000 contacts reads a bounded number of contact rows, measured by
EXPLAIN (ANALYZE) of the very statements the app ran for it, with their arguments. Not a timing."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson
import pytest

from service.core.segment_cache import STEP
from tests.contact_helpers import CONTACTS, create_segment, freeze, segment_links_path
from tests.helpers import create_survey
from tests.query_log import recording

SIZES = (5_000, 20_000)
LIMIT = 50
# a filter with a value (planned with it, in its own transaction), and every contact
FILTERS: tuple[dict[str, Any], ...] = ({"attribute": "plan", "op": "equals", "value": "pro"}, {})


async def seed(db, org_id: uuid.UUID, count: int) -> list[int]:
    """`count` contacts written set-wise (as an import would), one a second apart; their ids in page order."""
    await db.execute(
        "INSERT INTO contacts (org_id, attributes, created_at)"
        " SELECT $1, jsonb_build_object('email', 'c' || g || '@x.io', 'plan', 'pro'),"
        " timestamptz '2026-01-01' + g * interval '1 second' FROM generate_series(1, $2) AS g",
        org_id, count)
    return [r["id"] for r in await db.fetch(
        "SELECT id FROM contacts WHERE org_id = $1 ORDER BY created_at DESC, id DESC", org_id)]


def contact_rows(plan: dict[str, Any]) -> float:
    """Rows of `contacts` a plan's scans read (returned or filtered out), over all their loops."""
    rows = 0.0
    if plan.get("Relation Name") == "contacts":
        removed = plan.get("Rows Removed by Filter", 0) + plan.get("Rows Removed by Index Recheck", 0)
        rows += (plan["Actual Rows"] + removed) * plan["Actual Loops"]
    for child in plan.get("Plans", ()):
        rows += contact_rows(child)
    return rows


def literal(value: Any) -> str:
    """An argument as an SQL literal of unknown type (EXECUTE casts it to its parameter's type)."""
    return "'" + _text(value).replace("'", "''") + "'"


def _text(value: Any) -> str:
    if isinstance(value, list | tuple):  # an array's text form
        return "{" + ",".join('"' + _text(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in value) + "}"
    return value.isoformat() if isinstance(value, datetime) else str(value)


async def rows_read(db, records) -> tuple[float, int]:
    """EXPLAIN (ANALYZE) each query the app ran, with its arguments, planned with them (a custom plan,
    as the app plans a filter with values) and without (the generic plan a cached statement may get):
    the contact rows the worse of the two read, summed, and how many of the statements read any."""
    total, reading = 0.0, 0
    for record in records:
        if not record.query.lstrip().upper().startswith(("SELECT", "WITH")):
            continue  # BEGIN, SET LOCAL, COMMIT: nothing to explain
        await db.execute(f"PREPARE page_cost AS {record.query}")
        try:
            rows = 0.0
            for mode in ("force_custom_plan", "force_generic_plan"):
                async with db.transaction():
                    await db.execute(f"SET LOCAL plan_cache_mode = {mode}")
                    args = f"({', '.join(map(literal, record.args))})" if record.args else ""
                    (explained,) = orjson.loads(await db.fetchval(
                        f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE page_cost{args}"))
                rows = max(rows, contact_rows(explained["Plan"]))
        finally:
            await db.execute("DEALLOCATE page_cost")
        total += rows
        reading += rows > 0
    return total, reading


@pytest.mark.parametrize("filters", FILTERS, ids=["filtered", "everyone"])
async def test_a_deep_page_reads_a_bounded_number_of_rows_whatever_the_segment_size(
        client, make_tenant, db, filters):
    freeze(client)  # the segment cache's clock: a count stays young however slow the test runs
    measured = {}
    for size in SIZES:
        tenant = await make_tenant(rate_limit="off")
        order = await seed(db, tenant.org_id, size)
        survey = await create_survey(client, tenant.headers)
        segment = await create_segment(client, tenant.headers, filters)
        path = segment_links_path(survey["id"], segment["id"])
        params = {"limit": LIMIT, "skip": size - LIMIT, "attributeKeys": "email"}
        # the first page counts the segment (a walk of all of it) and remembers where its pages start
        first = await client.get(path, params=params, headers=tenant.headers)
        assert first.status == 200, await first.text()
        # a contact written since: the remembered count is answered while young, the page still seeks
        resp = await client.post(CONTACTS, json={"attributes": {"email": "new@x.io", "plan": "pro"}},
                                 headers=tenant.headers)
        assert resp.status == 201, await resp.text()
        async with recording(client.app) as records:
            resp = await client.get(path, params=params, headers=tenant.headers)
            assert resp.status == 200, await resp.text()
        body = await resp.json()
        # the count may be behind the write (by at most MAX_AGE), and so may the remembered positions
        assert body["meta"]["total"] in (size, size + 1) and body["meta"]["offset"] == size - LIMIT
        now = [await db.fetchval("SELECT id FROM contacts WHERE org_id = $1 AND attributes->>'email' = 'new@x.io'",
                                 tenant.org_id), *order]
        ids = [int(item["contactId"]) for item in body["data"]]
        assert ids in (now[size - LIMIT:size], now[size - LIMIT + 1:]), ids
        assert body["data"][-1]["attributes"] == {"email": f"c{1 if ids[-1] == order[-1] else 2}@x.io"}
        measured[size] = await rows_read(db, records)
    for size, (rows, statements) in measured.items():
        assert statements == 1, measured  # the page; no count (the segment's count is remembered)
        # a seek to the remembered member at or before the page, a walk of under STEP, the page's rows
        # (and the page's rows again, joined back for their attributes)
        assert rows <= STEP + 2 * LIMIT, (size, measured)
