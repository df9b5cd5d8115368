"""A segment's count reads each contact of the organisation about once, whatever PostgreSQL's statistics say
(docs/design.md, "Counts with stale statistics"): measured by EXPLAIN (ANALYZE) of the very count statement
the app ran, with its arguments and its SET LOCAL settings, at two sizes. Not a timing.

The statistics are stale as after a bulk import that autovacuum has not analysed yet: the table was
analysed while it held a few contacts of another organisation, and each organisation here is written after.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from service.core.segment_cache import STEP
from tests.api.test_page_cost import contact_rows, literal
from tests.contact_helpers import create_segment, freeze, segment_links_path
from tests.helpers import create_survey
from tests.query_log import recording

SIZES = (5_000, 20_000)
# every contact (hops through the page index), a filter the attribute index could answer that matches 90%,
# one it answers for a single contact, and one no index answers (hops, the filter checked on each row)
FILTERS: dict[str, dict[str, Any]] = {
    "everyone": {},
    "most": {"attribute": "plan", "op": "in", "value": ["pro", "team"]},
    "one": {"attribute": "email", "op": "equals", "value": "c7@x.io"},
    "unindexed": {"attribute": "plan", "op": "contains", "value": "ro"},
}
# the same members, counted in SQL
WHERE = {
    "everyone": "TRUE",
    "most": "attributes->>'plan' IN ('pro', 'team')",
    "one": "attributes->>'email' = 'c7@x.io'",
    "unindexed": "attributes->>'plan' LIKE '%ro%'",
}


async def seed(db, org_id: uuid.UUID, count: int) -> None:
    """`count` contacts written set-wise (as an import would): plan `free` for every tenth, `pro` otherwise."""
    await db.execute(
        "INSERT INTO contacts (org_id, attributes, created_at)"
        " SELECT $1, jsonb_build_object('email', 'c' || g || '@x.io',"
        " 'plan', CASE WHEN g % 10 = 0 THEN 'free' ELSE 'pro' END),"
        " timestamptz '2026-01-01' + g * interval '1 second' FROM generate_series(1, $2) AS g",
        org_id, count)


async def explained(db, records: list[Any]) -> list[dict[str, Any]]:
    """EXPLAIN (ANALYZE) of each count statement among `records`, planned as the app planned it: with the
    SET LOCAL settings its transaction ran before it, and without them under the default plan cache and a
    generic plan (what a cached statement may get), the plan that read the most contact rows."""
    plans: list[dict[str, Any]] = []
    settings: list[str] = []
    for record in records:
        query = record.query.strip()
        if query.upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            settings = []
        elif query.upper().startswith("SET LOCAL"):
            settings.append(query)
        elif "pg_current_snapshot()" in query:  # the count
            await db.execute(f"PREPARE count_cost AS {query}")
            try:
                worst: dict[str, Any] = {}
                for mode in ("force_custom_plan", "force_generic_plan"):
                    async with db.transaction():
                        await db.execute(f"SET LOCAL plan_cache_mode = {mode}")
                        for setting in settings:
                            await db.execute(setting)
                        args = f"({', '.join(map(literal, record.args))})" if record.args else ""
                        (plan,) = orjson.loads(await db.fetchval(
                            f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE count_cost{args}"))
                    if contact_rows(plan["Plan"]) >= contact_rows(worst.get("Plan", {})):
                        worst = plan
                plans.append(worst)
            finally:
                await db.execute("DEALLOCATE count_cost")
    return plans


async def count_rows(client, db, tenant, survey: dict[str, Any], filters: dict[str, Any]) -> tuple[int, float]:
    """A new segment (its contactCount counts it) and its first page: the page's meta.total and the contact
    rows the count read."""
    async with recording(client.app) as records:
        segment = await create_segment(client, tenant.headers, filters)
        resp = await client.get(segment_links_path(survey["id"], segment["id"]), params={"limit": 1},
                                headers=tenant.headers)
        assert resp.status == 200, await resp.text()
    assert segment["contactCount"] == (await resp.json())["meta"]["total"]
    plans = await explained(db, records)
    assert len(plans) == 1, [r.query for r in records]  # one count, one statement
    return (await resp.json())["meta"]["total"], contact_rows(plans[0]["Plan"])


@pytest.fixture
async def stale(db):
    """Statistics taken while the table held 50 contacts; autovacuum kept from analysing it during the test."""
    org_id = await db.fetchval("INSERT INTO organizations (id, name) VALUES ($1, 'other') RETURNING id", uuid.uuid4())
    await seed(db, org_id, 50)
    await db.execute("ALTER TABLE contacts SET (autovacuum_enabled = off)")
    await db.execute("ANALYZE contacts")
    yield
    await db.execute("ALTER TABLE contacts RESET (autovacuum_enabled)")


async def test_a_count_reads_each_contact_about_once_with_stale_statistics(client, make_tenant, db, stale):
    freeze(client)  # no count ages (and none recounts in the background) however slow the test runs
    measured = {}
    for size in SIZES:
        tenant = await make_tenant()
        await seed(db, tenant.org_id, size)
        survey = await create_survey(client, tenant.headers)
        for name, filters in FILTERS.items():
            total, rows = await count_rows(client, db, tenant, survey, filters)
            measured[size, name] = rows
            assert total == await db.fetchval(
                f"SELECT count(*) FROM contacts WHERE org_id = $1 AND {WHERE[name]}", tenant.org_id), (size, name)
            assert total == {"everyone": size, "one": 1}.get(name, size - size // 10), (size, name)
    for (size, name), rows in measured.items():
        # each contact of the organisation read at most twice (the hops' last walk reads up to STEP again)
        assert rows <= 2 * size + 2 * STEP, (size, name, measured)


async def test_with_fresh_statistics_a_rare_value_is_counted_through_the_attribute_index(
        client, make_tenant, db, stale):
    freeze(client)
    tenant = await make_tenant()
    await seed(db, tenant.org_id, SIZES[0])
    await db.execute("ANALYZE contacts")
    survey = await create_survey(client, tenant.headers)
    total, rows = await count_rows(client, db, tenant, survey, FILTERS["one"])
    # the index's few candidates (the other organisation has a c7@x.io too), not a walk of 5,000
    assert total == 1 and rows <= 50, rows
    total, rows = await count_rows(client, db, tenant, survey, FILTERS["everyone"])
    assert total == SIZES[0] and rows <= SIZES[0] + STEP  # hops: the segment once, the last STEP again


async def test_a_segment_whose_numbered_count_was_slow_is_counted_in_hops_with_the_same_answer(
        client, make_tenant, db, redis_url):
    """core/count_forms.py: the form is chosen by the last timings; both forms count the same members."""
    import redis.asyncio as aioredis

    from service.core.count_forms import TRY_HOPS_SECONDS
    from service.core.segment_cache import cache_key, filters_digest
    from service.web.keys import SEGMENT_CACHE

    freeze(client)
    tenant = await make_tenant()
    await seed(db, tenant.org_id, SIZES[0])
    survey = await create_survey(client, tenant.headers)
    filters = FILTERS["most"]
    segment = await create_segment(client, tenant.headers, filters)
    forms = client.app[SEGMENT_CACHE].forms
    key = (cache_key(tenant.org_id, uuid.UUID(segment["id"])), filters_digest(filters))
    numbered = forms.timings[key][0]
    assert numbered is not None and forms.timings[key][1] is None  # counted numbered, the default
    path = segment_links_path(survey["id"], segment["id"])

    async def answer() -> tuple[list[Any], list[str]]:
        """A recount (the cached count dropped first) and a deep page; the statements the app ran."""
        r = aioredis.Redis.from_url(redis_url)
        await r.delete(key[0], key[0] + ":m")
        await r.aclose()
        async with recording(client.app) as records:
            resp = await client.get(path, params={"limit": 3, "skip": 4000}, headers=tenant.headers)
            assert resp.status == 200, await resp.text()
        body = await resp.json()
        return [body["meta"], [item["contactId"] for item in body["data"]]], [r.query for r in records]

    before, statements = await answer()
    assert not any("enable_sort" in s for s in statements)  # fast enough: still numbered
    forms.took(key, False, TRY_HOPS_SECONDS + 1.0)  # as if the numbered count had taken over a second
    after, statements = await answer()
    assert any("SET LOCAL enable_sort = off" in s for s in statements)  # the hops, walking
    assert any("WITH RECURSIVE" in s for s in statements)
    assert after == before  # the same total and the same members at the same depth
    assert before[0]["total"] == SIZES[0] - SIZES[0] // 10
    hops = forms.timings[key][1]
    assert hops is not None and forms.hops(key) == (hops < TRY_HOPS_SECONDS + 1.0)
