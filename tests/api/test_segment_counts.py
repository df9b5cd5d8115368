"""Segment counts and page positions under contact writes (SPEC "Contacts at scale"): what is remembered,
when it is answered, when it is counted again; pages under writes; writers that never queue.

Time is the segment cache's injected clock (tests/contact_helpers.settle), never the wall clock.
"""

from __future__ import annotations

import asyncio
import random
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from service.core.errors import ValidationFailed
from service.core.segment_cache import CACHE_TTL_SECONDS, MAX_AGE, REFRESH_AFTER
from service.db import contacts as contact_db
from service.db import members as members_db
from service.db import segments as segment_db
from service.db.filters import compile_filters
from service.web.contact_schemas import SLICE, BulkContactsSchema, check_contacts
from service.web.fields import load
from service.web.keys import POOL, SEGMENT_CACHE
from tests.contact_helpers import BULK, CONTACTS, SEGMENTS, bulk, create_segment, freeze, page, settle
from tests.helpers import create_survey

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def key_of(tenant, segment: dict) -> str:
    return f"{{o:{tenant.org}}}:seg:{segment['id']}"


async def ids_of(client, tenant, survey: dict, segment: dict, **params) -> list[str]:
    body = await page(client, tenant.headers, survey["id"], segment["id"], **params)
    return [item["contactId"] for item in body["data"]]


async def total_of(client, tenant, survey: dict, segment: dict) -> int:
    return (await page(client, tenant.headers, survey["id"], segment["id"], limit=1))["meta"]["total"]


async def page_order(db, tenant) -> list[str]:
    return [str(r["id"]) for r in await db.fetch(
        "SELECT id FROM contacts WHERE org_id = $1 ORDER BY created_at DESC, id DESC", tenant.org_id)]


@pytest.fixture
async def people(client, tenant):
    freeze(client)
    await bulk(client, tenant.headers, [{"email": f"u{i}@x.io", "plan": "pro"} for i in range(600)])
    survey = await create_survey(client, tenant.headers)
    segment = await create_segment(client, tenant.headers, {"attribute": "plan", "op": "equals", "value": "pro"})
    return survey, segment


async def test_a_count_is_remembered_with_every_250th_member(client, tenant, db, redis_url, people):
    survey, segment = people
    order = await page_order(db, tenant)
    r = aioredis.Redis.from_url(redis_url)
    key = key_of(tenant, segment)
    fields = await r.hgetall(key)
    assert set(fields) == {b"f", b"t", b"s", b"v", b"at", b"n", b"o"}
    # o: the survey's opens version, for reminder lists only (test_reminder_list.py)
    assert (fields[b"t"], fields[b"n"], fields[b"v"], fields[b"o"]) == (b"600", b"3", b"0", b"0")
    rows = await db.fetch("SELECT id, created_at FROM contacts WHERE id = ANY($1::bigint[])",
                          [int(order[i]) for i in (0, 250, 500)])
    at = {str(row["id"]): (row["created_at"] - EPOCH) // timedelta(microseconds=1) for row in rows}
    assert await r.get(key + ":m") == b"".join(struct.pack(">qq", at[order[i]], int(order[i])) for i in (0, 250, 500))
    assert 0 < await r.ttl(key) <= CACHE_TTL_SECONDS and 0 < await r.ttl(key + ":m") <= CACHE_TTL_SECONDS
    # every page is a seek to the remembered member at or before it, then a walk of less than 250
    assert await ids_of(client, tenant, survey, segment, limit=250, skip=250) == order[250:500]
    assert await ids_of(client, tenant, survey, segment, limit=100, skip=420) == order[420:520]
    assert await ids_of(client, tenant, survey, segment, limit=7, skip=599) == order[599:]
    assert await ids_of(client, tenant, survey, segment, limit=7, skip=600) == []
    # the page really starts from the remembered member: a planted one moves it
    markers = await r.get(key + ":m")
    assert isinstance(markers, bytes)
    await r.set(key + ":m", markers[:16] + markers[32:48] + markers[32:])
    assert await ids_of(client, tenant, survey, segment, limit=10, skip=255) == order[505:515]
    # and the total is the remembered one while nothing was written, however old it is
    await r.hset(key, "t", 77)
    settle(client, 3 * MAX_AGE)
    assert await total_of(client, tenant, survey, segment) == 77
    await r.aclose()


async def test_the_total_lags_writes_by_less_than_max_age_and_is_exact_once_they_settle(
        client, tenant, db, people):
    survey, segment = people
    cache = client.app[SEGMENT_CACHE]
    await bulk(client, tenant.headers, [{"email": f"n{i}@x.io", "plan": "pro"} for i in range(3)])
    # counted just now: answered as counted, no recount and no refresh
    assert await total_of(client, tenant, survey, segment) == 600
    assert not cache.tasks
    # counted REFRESH_AFTER ago, written since: still answered, and one refresh runs in the background
    settle(client, REFRESH_AFTER)
    assert await total_of(client, tenant, survey, segment) == 600
    assert len(cache.tasks) == 1
    await cache.settled()
    assert await total_of(client, tenant, survey, segment) == 603
    # MAX_AGE after a count with writes since, the page counts before it answers
    await bulk(client, tenant.headers, [{"email": f"u{i}@x.io", "plan": "free"} for i in range(5)])
    settle(client, MAX_AGE)
    assert await total_of(client, tenant, survey, segment) == 598
    assert not cache.tasks
    assert await total_of(client, tenant, survey, segment) == await db.fetchval(
        "SELECT count(*) FROM contacts WHERE org_id = $1 AND attributes->>'plan' = 'pro'", tenant.org_id)
    # GET /segments/{id} follows the same rules
    resp = await client.post(CONTACTS, json={"attributes": {"plan": "pro"}}, headers=tenant.headers)
    assert resp.status == 201

    async def contact_count() -> int:
        resp = await client.get(f"{SEGMENTS}/{segment['id']}", headers=tenant.headers)
        return (await resp.json())["data"]["contactCount"]

    assert await contact_count() == 598
    settle(client)
    assert await contact_count() == 599


async def test_a_steady_writer_never_gets_the_total_more_than_max_age_behind(client, tenant, db, people):
    """Every 0.5 s of the cache's clock a contact joins; every answer counts all but at most the writes of
    the last MAX_AGE seconds, whether it was answered from the cache or counted."""
    assert MAX_AGE < 5.0  # SPEC: never more than 5 seconds behind the writes (the bound below is MAX_AGE's)
    survey, segment = people
    cache = client.app[SEGMENT_CACHE]
    now = [cache.clock()]
    cache.clock = lambda: now[0]
    written: list[float] = []
    for i in range(30):
        await bulk(client, tenant.headers, [{"email": f"w{i}@x.io", "plan": "pro"}])
        written.append(now[0])
        total = await total_of(client, tenant, survey, segment)
        behind = [at for at in written if at > now[0] - MAX_AGE]
        assert 600 + len(written) - len(behind) <= total <= 600 + len(written), (i, total)
        if i % 3 == 0:
            await cache.settled()
        now[0] += 0.5
    await cache.settled()
    now[0] += MAX_AGE
    assert await total_of(client, tenant, survey, segment) == 630


async def test_one_refresh_at_a_time_across_workers(client, tenant, redis_url, people):
    survey, segment = people
    cache = client.app[SEGMENT_CACHE]
    r = aioredis.Redis.from_url(redis_url)
    lock = key_of(tenant, segment) + ":lock"
    await r.set(lock, "another-worker", px=60_000)  # another worker (or instance) is counting this segment
    await bulk(client, tenant.headers, [{"email": "n@x.io", "plan": "pro"}])
    settle(client, REFRESH_AFTER)
    assert await total_of(client, tenant, survey, segment) == 600
    await cache.settled()
    assert await total_of(client, tenant, survey, segment) == 600  # this worker did not count it too
    assert await r.get(lock) == b"another-worker"  # nor released someone else's lock
    await r.delete(lock)
    assert await total_of(client, tenant, survey, segment) == 600
    await cache.settled()
    assert await total_of(client, tenant, survey, segment) == 601
    assert await r.get(lock) is None  # released after the refresh
    await r.aclose()


async def test_a_write_by_the_previous_release_counts_as_a_write(client, tenant, db, people):
    """During a rolling upgrade, instances of the release before 0007 still bump contact_versions."""
    survey, segment = people
    await db.execute("INSERT INTO contacts (org_id, attributes) VALUES ($1, '{\"plan\": \"pro\"}')", tenant.org_id)
    settle(client)
    assert await total_of(client, tenant, survey, segment) == 600  # no contact_changes row: not seen
    await db.execute("INSERT INTO contact_versions (org_id, version) VALUES ($1, 1)", tenant.org_id)
    settle(client)
    assert await total_of(client, tenant, survey, segment) == 601


async def test_pages_of_one_count_cover_the_segment_as_counted_while_contacts_arrive(client, tenant, db, people):
    survey, segment = people
    order = await page_order(db, tenant)
    first = await ids_of(client, tenant, survey, segment, limit=250)
    await bulk(client, tenant.headers, [{"email": f"n{i}@x.io", "plan": "pro"} for i in range(3)])
    # within the window the pages are those of the last count: no repeat, no skip, new contacts not yet
    second = await ids_of(client, tenant, survey, segment, limit=250, skip=250)
    third = await ids_of(client, tenant, survey, segment, limit=250, skip=500)
    assert first + second + third == order
    # once counted again, the new contacts are the newest: offsets move on by three (a repeat, never a skip)
    settle(client)
    body = await page(client, tenant.headers, survey["id"], segment["id"], limit=250, skip=250)
    assert body["meta"]["total"] == 603
    assert [i["contactId"] for i in body["data"]] == order[247:497]
    new_order = await page_order(db, tenant)
    assert new_order[3:] == order
    # a member that leaves is not answered; the page fills up with the next one (which repeats on the next page)
    await bulk(client, tenant.headers, [{"email": "u300@x.io", "plan": "free"}])
    gone = new_order.index(str(await db.fetchval(
        "SELECT id FROM contacts WHERE org_id = $1 AND attributes->>'email' = 'u300@x.io'", tenant.org_id)))
    assert 250 <= gone < 500
    answered = await ids_of(client, tenant, survey, segment, limit=250, skip=250)
    assert answered == [cid for cid in new_order[250:501] if cid != new_order[gone]]
    assert answered[-1] == (await ids_of(client, tenant, survey, segment, limit=250, skip=500))[0]


async def test_an_edited_segment_is_counted_again(client, tenant, db, redis_url, people):
    survey, segment = people
    r = aioredis.Redis.from_url(redis_url)
    await r.hset(key_of(tenant, segment), "f", "0000000000000000")  # counted for other filters
    await r.hset(key_of(tenant, segment), "t", 77)
    assert await total_of(client, tenant, survey, segment) == 600
    await r.aclose()


async def test_concurrent_bulk_upserts_sharing_emails_make_one_contact_per_email(client, tenant, db):
    shared = [f"s{i}@x.io" for i in range(300)]
    calls = []
    for n in range(8):
        emails = shared + [f"own{n}-{i}@x.io" for i in range(50)]
        random.Random(n).shuffle(emails)  # every call in its own order: rows are locked in one order anyway
        calls.append([{"email": e, f"k{n}": n, "plan": f"p{n}"} for e in emails])
    answers = await asyncio.gather(*(client.put(BULK, json={"contacts": [{"attributes": a} for a in call]},
                                                headers=tenant.headers) for call in calls))
    counts = []
    for resp in answers:
        assert resp.status == 200, await resp.text()
        counts.append((await resp.json())["data"])
    assert all(c["created"] + c["updated"] == 350 for c in counts)
    assert sum(c["created"] for c in counts) == 300 + 8 * 50
    rows = [orjson.loads(a) for a in await db.fetchval(
        "SELECT array_agg(attributes::text) FROM contacts WHERE org_id = $1", tenant.org_id)]
    assert len(rows) == 700
    assert len({row["email"] for row in rows}) == 700
    merged = [row for row in rows if row["email"] in set(shared)]
    assert all(set(a) == {"email", "plan", *(f"k{n}" for n in range(8))} for a in merged)  # every call's keys
    assert await db.fetchval("SELECT count(*) FROM contact_changes WHERE org_id = $1", tenant.org_id) == 8


async def test_a_contact_write_does_not_wait_for_another_writers_transaction(client, tenant, db):
    """A bulk call's transaction still open (as one of 10,000 contacts is, for a while): a single write
    beside it goes through at once (the previous design queued it on the organisation's version row)."""
    await bulk(client, tenant.headers, [{"email": "first@x.io"}])
    await db.set_type_codec("jsonb", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads,
                            schema="pg_catalog")  # as the service's pool speaks it
    async with db.transaction():
        await contact_db.bump_version(db, tenant.org_id)
        await contact_db.upsert_by_email(db, tenant.org_id, [{"email": f"b{i}@x.io"} for i in range(100)])
        resp = await asyncio.wait_for(
            client.post(CONTACTS, json={"attributes": {"email": "single@x.io"}}, headers=tenant.headers), 5)
        assert resp.status == 201
        assert await db.fetchval("SELECT count(*) FROM contacts WHERE org_id = $1", tenant.org_id) == 102
    assert await db.fetchval("SELECT count(*) FROM contacts WHERE org_id = $1", tenant.org_id) == 102
    assert await db.fetchval("SELECT count(*) FROM contact_changes WHERE org_id = $1", tenant.org_id) == 3


async def test_an_upsert_that_meets_an_email_another_writer_is_creating_waits_for_it_then_updates(
        client, tenant, db):
    async with db.transaction():
        await db.execute("INSERT INTO contacts (org_id, attributes) VALUES ($1, $2::jsonb)",
                         tenant.org_id, '{"email": "same@x.io", "a": 1}')
        call = asyncio.create_task(bulk(client, tenant.headers, [{"email": "same@x.io", "b": 2}]))
        done, _ = await asyncio.wait({call}, timeout=0.3)
        assert not done  # the unique index makes it wait for this transaction's row
    assert await call == {"created": 0, "updated": 1}
    rows = await db.fetch("SELECT attributes::text FROM contacts WHERE org_id = $1", tenant.org_id)
    assert [orjson.loads(r[0]) for r in rows] == [{"email": "same@x.io", "a": 1, "b": 2}]


async def test_a_bulk_call_checks_its_items_a_slice_at_a_time():
    """10,000 items are checked with a turn of the event loop every SLICE items: another task runs in between
    (the loop is never held for the whole list), and the problems found are the same as checked at once."""
    items: list[dict[str, Any]] = [{"attributes": {"email": f"c{i}@x.io", "plan": "pro"}} for i in range(10_000)]
    items[7_777] = {"attributes": {"email": ""}, "extra": 1}
    turns = 0
    stop = asyncio.Event()

    async def probe() -> None:
        nonlocal turns
        while not stop.is_set():
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(probe())
    await asyncio.sleep(0)
    before = turns
    checked = await check_contacts({"contacts": items})
    during = turns - before
    stop.set()
    await task
    assert during >= 10_000 // SLICE - 1
    assert checked["contacts"].problems == {7_777: {"extra": ["Unknown field."], "attributes": {
        "email": ["type_error.str::email must be a non-empty string"]}}}
    with pytest.raises(ValidationFailed) as direct:
        load(BulkContactsSchema(), {"contacts": items})
    with pytest.raises(ValidationFailed) as sliced:
        load(BulkContactsSchema(), checked)
    assert direct.value.issues == sliced.value.issues


async def test_equality_filters_read_the_attributes_index_and_keep_their_meaning(client, tenant, db):
    values = ['say "hi"', "back\\slash $.x", "new\nline", "ünï €", "30", "true", "x' OR 1=1 --"]
    stored = [*values, 30, 30.0, True, "other"]
    await bulk(client, tenant.headers, [{"email": f"v{i}@x.io", "tag": v} for i, v in enumerate(stored)])
    survey = await create_survey(client, tenant.headers)

    def text(value) -> str:  # the attribute's text form, as filters compare a string value with it
        return {True: "true", 30.0: "30"}.get(value, value) if not isinstance(value, str) else value

    for value in values:
        segment = await create_segment(client, tenant.headers, {"attribute": "tag", "op": "equals", "value": value})
        body = await page(client, tenant.headers, survey["id"], segment["id"], limit=50, attributeKeys="email")
        expected = {f"v{i}@x.io" for i, v in enumerate(stored) if text(v) == value
                    and not (isinstance(v, float) and value == "30")}  # 30.0 reads "30.0"
        assert {item["attributes"]["email"] for item in body["data"]} == expected, value
    segment = await create_segment(client, tenant.headers, {"attribute": "tag", "op": "in", "value": values})
    assert segment["contactCount"] == len(values) + 2  # and the stored 30 and true
    # the SQL a filter compiles to can be answered by the GIN index (the planner picks it when it pays)
    # (without the organisation's condition, for which this small table would rather walk its btree)
    condition, params = compile_filters({"attribute": "tag", "op": "in", "value": values}, 1)
    async with db.transaction():
        await db.execute("SET LOCAL enable_seqscan = off")
        plan = "\n".join(r[0] for r in await db.fetch(f"EXPLAIN SELECT count(*) FROM contacts WHERE {condition}",
                                                       *params))
    assert "contacts_attributes_idx" in plan


async def test_requests_that_need_the_same_count_at_once_wait_for_one(client, tenant, redis_url, people, monkeypatch):
    _, segment = people
    r = aioredis.Redis.from_url(redis_url)
    await r.delete(key_of(tenant, segment), key_of(tenant, segment) + ":m")  # nothing remembered: a count is due
    await r.aclose()
    counts, arrived, gate, all_in = [], [], asyncio.Event(), asyncio.Event()
    count_members, get_segment = members_db.count_members, segment_db.get_segment

    async def slow_count(*args, **kwargs):
        counts.append(args)
        await gate.wait()
        return await count_members(*args, **kwargs)

    async def seen(*args, **kwargs):
        found = await get_segment(*args, **kwargs)
        arrived.append(1)  # the request goes on to the count in this same step, without yielding
        if len(arrived) == 5:
            all_in.set()
        return found

    monkeypatch.setattr(members_db, "count_members", slow_count)
    monkeypatch.setattr(segment_db, "get_segment", seen)
    answers = [asyncio.create_task(client.get(f"{SEGMENTS}/{segment['id']}", headers=tenant.headers))
               for _ in range(5)]
    await asyncio.wait_for(all_in.wait(), 30)
    gate.set()
    bodies = [await (await answer).json() for answer in answers]
    assert [b["data"]["contactCount"] for b in bodies] == [600] * 5
    assert len(counts) == 1


async def test_contact_changes_older_than_an_hour_are_pruned(tenant, db):
    await db.execute("INSERT INTO contact_changes (org_id, xid, at) VALUES"
                     " ($1, '5'::xid8, now() - interval '61 minutes'), ($1, '6'::xid8, now() - interval '59 minutes')",
                     tenant.org_id)
    async with db.transaction():
        await contact_db.bump_version(db, tenant.org_id)  # this transaction's own row, now
        mine = await db.fetchval("SELECT pg_current_xact_id()::text")
    await contact_db.prune_changes(db)
    left = await db.fetch("SELECT c.xid::text, c.at > now() - interval '1 hour' FROM contact_changes c"
                          " WHERE c.org_id = $1 ORDER BY c.xid", tenant.org_id)
    assert [tuple(r) for r in left] == [("6", True), (mine, True)]


async def test_ids_follow_the_call_although_rows_are_written_in_email_order(client, tenant, db):
    emails = [f"{name}@x.io" for name in ("zoe", "adam", "mia", "bob", "yan")]
    await bulk(client, tenant.headers, [{"email": e} for e in emails])
    rows = await db.fetch("SELECT attributes->>'email' AS e FROM contacts WHERE org_id = $1 ORDER BY id", tenant.org_id)
    assert [r["e"] for r in rows] == emails


async def test_only_statements_with_filter_values_are_planned_with_them(client, tenant, people, monkeypatch):
    """A page or count whose filter has values runs under force_custom_plan (SET LOCAL in its transaction);
    the pool's connections, and so the hot paths' statements, keep PostgreSQL's default plan cache."""
    seen: list[tuple[str, str]] = []
    fetch_planned = members_db._fetch_planned

    async def watching(conn, sql, args, values, walk=False):
        rows = await fetch_planned(conn, sql, args, values, walk)
        # asked on the same connection once the statement's transaction is over: the settings ended with it
        seen.append((sql.split()[0], await conn.fetchval(
            "SELECT current_setting('plan_cache_mode') || ' ' || current_setting('enable_sort')")))
        return rows

    async def planned_mode(values: bool) -> list[asyncpg.Record]:
        async with client.app[POOL].acquire() as conn:
            return await fetch_planned(conn, "SELECT current_setting('plan_cache_mode')", [], values)

    assert [r[0] for r in await planned_mode(True)] == ["force_custom_plan"]
    assert [r[0] for r in await planned_mode(False)] == ["auto"]
    async with client.app[POOL].acquire() as conn:
        assert await conn.fetchval("SHOW plan_cache_mode") == "auto"  # nothing stays on the connection
    monkeypatch.setattr(members_db, "_fetch_planned", watching)
    survey, segment = people
    settle(client)
    await bulk(client, tenant.headers, [{"email": "late@x.io", "plan": "pro"}])
    settle(client)
    assert await total_of(client, tenant, survey, segment) == 601
    assert {word for word, _ in seen} >= {"WITH", "SELECT"}  # the count (numbered) and the page went through it
    assert all(mode == "auto on" for _, mode in seen)
