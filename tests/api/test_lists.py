"""The management lists (surveys, segments, contacts): each set paged exactly once while rows are added
between pages, limits, `?email=`, cursors refused when altered or foreign, isolation, exact bodies."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import pytest

from service.core.cursors import CursorCodec
from service.db import contacts as contact_db
from service.db import segments as segment_db
from service.db import surveys as survey_db
from service.settings import SigningKey
from service.web.paging import BAD_CURSOR
from tests.conftest import TEST_KEYS
from tests.contact_helpers import CONTACTS, MANAGEMENT, SEGMENTS, bulk, create_segment, error
from tests.helpers import create_survey

SURVEYS = f"{MANAGEMENT}/surveys"
CURSOR_REFUSED = error(422, "Unprocessable Entity", [{"field": "cursor", "issue": BAD_CURSOR}])
EMPTY = {"data": [], "meta": {"nextCursor": None}}


async def get_page(client, path: str, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    resp = await client.get(path, params=params, headers=headers)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert set(body) == {"data", "meta"} and set(body["meta"]) == {"nextCursor"}
    return body


async def read_all(client, path: str, headers: dict[str, str], limit: int,
                   between: Callable[[], Awaitable[None]] | None = None, **params: Any) -> list[list[dict]]:
    """Every page of a list, following nextCursor; `between` runs after each page is read."""
    pages: list[list[dict]] = []
    cursor = None
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        body = await get_page(client, path, headers, **query)
        pages.append(body["data"])
        cursor = body["meta"]["nextCursor"]
        if cursor is None:
            return pages
        assert len(body["data"]) == limit  # only the last page may be short
        if between is not None:
            await between()


async def newest_first(db, table: str, org_id: uuid.UUID) -> list[str]:
    """The ids of the organisation's rows, in the lists' order, as PostgreSQL sees them now."""
    rows = await db.fetch(f"SELECT id FROM {table} WHERE org_id = $1 ORDER BY created_at DESC, id DESC", org_id)
    return [str(r["id"]) for r in rows]


async def test_surveys_are_paged_exactly_once_while_surveys_are_added(client, tenant, make_tenant, db):
    other = await make_tenant()
    for i in range(23):
        await create_survey(client, tenant.headers, name=f"S{i}")
    await create_survey(client, other.headers, name="theirs")
    # equal timestamps: the order falls back to the id, and a page boundary may fall inside the tie
    tied = await db.fetch("SELECT id FROM surveys WHERE org_id = $1 ORDER BY id LIMIT 9", tenant.org_id)
    await db.execute("UPDATE surveys SET created_at = (SELECT max(created_at) FROM surveys WHERE org_id = $1)"
                     " WHERE id = ANY($2::uuid[])", tenant.org_id, [r["id"] for r in tied])
    existing = await newest_first(db, "surveys", tenant.org_id)
    added: list[str] = []

    async def add_two() -> None:
        for _ in range(2):
            added.append((await create_survey(client, tenant.headers, name="new"))["id"])

    pages = await read_all(client, SURVEYS, tenant.headers, 5, add_two)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [item["id"] for page in pages for item in page] == existing  # each once, in order, none added
    assert len(added) == 8 and set(await newest_first(db, "surveys", tenant.org_id)) == {*existing, *added}
    # each item exactly as GET one answers it
    for item in (item for page in pages for item in page):
        one = await client.get(f"{SURVEYS}/{item['id']}", headers=tenant.headers)
        assert item == (await one.json())["data"]
    # the new ones are on a fresh first page, newest first
    first = await get_page(client, SURVEYS, tenant.headers, limit=8)
    assert [s["id"] for s in first["data"]] == added[::-1]


async def test_segments_are_paged_exactly_once_without_their_counts(client, tenant, make_tenant, db):
    other = await make_tenant()
    await bulk(client, tenant.headers, [{"email": f"p{i}@x.io", "plan": "pro" if i % 2 else "free"} for i in range(6)])
    filters = [{}, {"attribute": "plan", "op": "equals", "value": "pro"}]
    for i in range(12):
        await create_segment(client, tenant.headers, filters[i % 2], title=f"G{i}")
    await create_segment(client, other.headers, {}, title="theirs")
    existing = await newest_first(db, "segments", tenant.org_id)

    async def add_one() -> None:
        await create_segment(client, tenant.headers, {}, title="new")

    pages = await read_all(client, SEGMENTS, tenant.headers, 4, add_one)
    assert [len(p) for p in pages] == [4, 4, 4]
    assert [item["id"] for page in pages for item in page] == existing
    assert len(await newest_first(db, "segments", tenant.org_id)) == 12 + 2
    for item in (item for page in pages for item in page):
        one = (await (await client.get(f"{SEGMENTS}/{item['id']}", headers=tenant.headers)).json())["data"]
        assert one.pop("contactCount") == (6 if one["filters"] == {} else 3)
        assert item == one  # the single GET's body, less the count


async def test_contacts_are_paged_exactly_once_while_contacts_are_added(client, tenant, make_tenant, db):
    other = await make_tenant()
    # one call: 120 contacts with the same created_at, ordered by id alone
    await bulk(client, tenant.headers, [{"email": f"c{i}@x.io", "n": i} for i in range(120)])
    for i in range(3):
        resp = await client.post(CONTACTS, json={"attributes": {"email": f"single{i}@x.io"}}, headers=tenant.headers)
        assert resp.status == 201
    await bulk(client, other.headers, [{"email": "c1@x.io"}])
    existing = await newest_first(db, "contacts", tenant.org_id)
    rounds = iter(range(100))

    async def add_some() -> None:
        n = next(rounds)
        await bulk(client, tenant.headers, [{"email": f"new{n}.{i}@x.io"} for i in range(7)])
        # and an existing contact updated: it keeps its place
        await bulk(client, tenant.headers, [{"email": "c5@x.io", "seen": n}])

    pages = await read_all(client, CONTACTS, tenant.headers, 50, add_some)
    assert [len(p) for p in pages] == [50, 50, 23]
    items = [item for page in pages for item in page]
    assert [item["id"] for item in items] == existing
    assert len(await newest_first(db, "contacts", tenant.org_id)) == 123 + 2 * 7
    rows = {str(r["id"]): r for r in await db.fetch(
        "SELECT id, created_at FROM contacts WHERE org_id = $1", tenant.org_id)}
    by_email = {item["attributes"]["email"]: item for item in items}
    # the body of POST /contacts: id as a string, attributes as stored when the page was read
    assert by_email["c7@x.io"] == {"id": by_email["c7@x.io"]["id"], "attributes": {"email": "c7@x.io", "n": 7},
                                   "createdAt": iso(rows[by_email["c7@x.io"]["id"]]["created_at"])}
    assert by_email["single2@x.io"] == items[0] and items[-1]["attributes"] == {"email": "c0@x.io", "n": 0}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@pytest.mark.parametrize("path", [SURVEYS, SEGMENTS, CONTACTS])
async def test_an_empty_list_and_the_last_page(client, tenant, path):
    assert await get_page(client, path, tenant.headers) == EMPTY


async def test_limit_default_bounds_and_the_last_page(client, tenant, db):
    await bulk(client, tenant.headers, [{"email": f"l{i}@x.io"} for i in range(251)])
    order = await newest_first(db, "contacts", tenant.org_id)
    default = await get_page(client, CONTACTS, tenant.headers)
    assert [c["id"] for c in default["data"]] == order[:50] and default["meta"]["nextCursor"]
    most = await get_page(client, CONTACTS, tenant.headers, limit=250)
    assert [c["id"] for c in most["data"]] == order[:250]
    last = await get_page(client, CONTACTS, tenant.headers, limit=250, cursor=most["meta"]["nextCursor"])
    assert [c["id"] for c in last["data"]] == order[250:] and last["meta"]["nextCursor"] is None
    # exactly `limit` left: this page is the last, no empty page after it
    one = await get_page(client, CONTACTS, tenant.headers, limit=1)
    rest = await get_page(client, CONTACTS, tenant.headers, limit=250, cursor=one["meta"]["nextCursor"])
    assert [c["id"] for c in rest["data"]] == order[1:] and rest["meta"]["nextCursor"] is None
    assert len((await get_page(client, CONTACTS, tenant.headers, limit="1.0"))["data"]) == 1
    assert len((await get_page(client, CONTACTS, tenant.headers, limit="2e1"))["data"]) == 20


@pytest.mark.parametrize(("query", "details"), [
    ("limit=0", [{"field": "limit", "issue": "ensure this value is greater than or equal to 1"}]),
    ("limit=251", [{"field": "limit", "issue": "ensure this value is less than or equal to 250"}]),
    ("limit=ten", [{"field": "limit", "issue": "value is not a valid integer"}]),
    ("limit=1.5", [{"field": "limit", "issue": "value is not a valid integer"}]),
    ("limit=", [{"field": "limit", "issue": "value is not a valid integer"}]),
    ("limit=5&limit=6", [{"field": "limit", "issue": "give this parameter at most once"}]),
    ("skip=10&limit=0", [{"field": "skip", "issue": "unknown query parameter; accepted: limit, cursor"},
                         {"field": "limit", "issue": "ensure this value is greater than or equal to 1"}]),
    ("email=a@x.io", [{"field": "email", "issue": "unknown query parameter; accepted: limit, cursor"}]),
    ("cursor=", [{"field": "cursor", "issue": BAD_CURSOR}]),
    ("cursor=" + "a" * 513, [{"field": "cursor", "issue": "ensure this value has at most 512 characters"}]),
])
async def test_invalid_queries_are_422_naming_each(client, tenant, query, details):
    resp = await client.get(f"{SURVEYS}?{query}", headers=tenant.headers)
    assert resp.status == 422
    assert await resp.json() == error(422, "Unprocessable Entity", details)


async def test_contact_query_names_email_among_the_accepted(client, tenant):
    resp = await client.get(f"{CONTACTS}?e-mail=a@x.io&email=", headers=tenant.headers)
    assert resp.status == 422
    assert await resp.json() == error(422, "Unprocessable Entity", [
        {"field": "e-mail", "issue": "unknown query parameter; accepted: limit, cursor, email"},
        {"field": "email", "issue": "ensure this value has at least 1 characters"}])
    resp = await client.get(CONTACTS, params={"email": "a\x00@x.io"}, headers=tenant.headers)
    assert resp.status == 422
    assert (await resp.json())["error"]["details"] == [{"field": "email", "issue": "NUL characters are not allowed"}]


async def test_email_finds_exactly_one_or_none(client, tenant, make_tenant, db):
    other = await make_tenant()
    await bulk(client, tenant.headers, [{"email": f"e{i}@x.io", "n": i} for i in range(30)] + [{"email": " Ann@X.io "}])
    await bulk(client, other.headers, [{"email": "only-theirs@x.io"}, {"email": "e3@x.io", "theirs": True}])
    row = await db.fetchrow("SELECT id, created_at FROM contacts WHERE org_id = $1 AND attributes->>'email' = $2",
                            tenant.org_id, "e3@x.io")
    found = await get_page(client, CONTACTS, tenant.headers, email="e3@x.io")
    assert found == {"data": [{"id": str(row["id"]), "attributes": {"email": "e3@x.io", "n": 3},
                               "createdAt": iso(row["created_at"])}], "meta": {"nextCursor": None}}
    assert (await get_page(client, CONTACTS, tenant.headers, email=" Ann@X.io "))["data"][0]["attributes"] == {
        "email": " Ann@X.io "}
    for absent in ("E3@x.io", "e3@x.io ", "ann@x.io", "only-theirs@x.io", "e%@x.io"):
        assert await get_page(client, CONTACTS, tenant.headers, email=absent) == EMPTY
    assert await get_page(client, CONTACTS, tenant.headers, email="e3@x.io", limit=1) == found


async def test_cursors_refused_when_altered_or_foreign(client, tenant, make_tenant):
    other = await make_tenant()
    for headers in (tenant.headers, other.headers):
        for i in range(3):
            await create_survey(client, headers, name=f"S{i}")
            await create_segment(client, headers, {}, title=f"G{i}")
        await bulk(client, headers, [{"email": f"k{i}@x.io"} for i in range(3)])
    cursors = {path: (await get_page(client, path, tenant.headers, limit=1))["meta"]["nextCursor"]
               for path in (SURVEYS, SEGMENTS, CONTACTS)}
    theirs = (await get_page(client, SURVEYS, other.headers, limit=1))["meta"]["nextCursor"]
    for path, cursor in cursors.items():
        assert (await client.get(path, params={"cursor": cursor}, headers=tenant.headers)).status == 200
        payload, mac = cursor.split(".")
        flipped = payload[:-1] + ("A" if payload[-1] != "A" else "B")
        altered = [f"{flipped}.{mac}", f"{payload}.{mac[:-1]}", f"{payload}.{mac}x", f"{payload}=.{mac}",
                   payload, "garbage", "é" * 10, f"{payload}.{mac}.{mac}"]
        foreign = [c for p, c in cursors.items() if p != path]  # another list's
        for bad in [*altered, *foreign]:
            resp = await client.get(path, params={"cursor": bad}, headers=tenant.headers)
            assert (resp.status, await resp.json()) == (422, CURSOR_REFUSED), (path, bad)
        # this list's cursor, made for another organisation: refused to the other, whatever it names
        resp = await client.get(path, params={"cursor": cursor}, headers=other.headers)
        assert (resp.status, await resp.json()) == (422, CURSOR_REFUSED)
    resp = await client.get(SURVEYS, params={"cursor": theirs}, headers=tenant.headers)
    assert (resp.status, await resp.json()) == (422, CURSOR_REFUSED)


async def test_cursors_signed_with_another_key_or_holding_another_shape_are_refused(client, tenant):
    await create_survey(client, tenant.headers)
    stranger = CursorCodec((SigningKey("x", b"another-signing-secret-0123456789abcdef"),))
    ours = CursorCodec(TEST_KEYS)
    now = int(datetime.now(UTC).timestamp() * 1_000_000)
    good = ours.encode("surveys", tenant.org_id, [now, str(uuid.uuid4())])
    assert (await client.get(SURVEYS, params={"cursor": good}, headers=tenant.headers)).status == 200
    bad = [stranger.encode("surveys", tenant.org_id, [now, str(uuid.uuid4())]),
           ours.encode("surveys", tenant.org_id, [now]),
           ours.encode("surveys", tenant.org_id, [str(now), str(uuid.uuid4())]),
           ours.encode("surveys", tenant.org_id, [now, 7]),
           ours.encode("surveys", tenant.org_id, [2**62, str(uuid.uuid4())]),  # past datetime's range
           ours.encode("contacts", tenant.org_id, [now, str(uuid.uuid4())])]
    for cursor in bad:
        resp = await client.get(SURVEYS, params={"cursor": cursor}, headers=tenant.headers)
        assert (resp.status, await resp.json()) == (422, CURSOR_REFUSED), cursor
    resp = await client.get(CONTACTS, params={"cursor": ours.encode("contacts", tenant.org_id, [now, 0])},
                            headers=tenant.headers)
    assert (resp.status, await resp.json()) == (422, CURSOR_REFUSED)


async def test_lists_need_the_manage_scope(client, make_tenant):
    reader = await make_tenant(scopes=("links:read", "links:write"))
    for path in (SURVEYS, SEGMENTS, CONTACTS):
        resp = await client.get(path, headers=reader.headers)
        assert resp.status == 403
        assert await resp.json() == error(403, "Forbidden", [{"field": "scope",
                                                               "issue": "this key lacks the manage scope"}])
        assert (await client.get(path)).status == 401


class Recorder:
    """Stands in for a connection: keeps each statement a db function sends, answers no rows."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, tuple]] = []

    async def fetch(self, sql: str, *args: Any) -> list:
        self.statements.append((sql, args))
        return []


def plan_nodes(plan: dict) -> list[dict]:
    return [plan, *(node for child in plan.get("Plans", []) for node in plan_nodes(child))]


async def test_each_list_reads_through_its_index(make_tenant, db):
    """EXPLAIN of the statements the lists send, on 3 organisations of 3,000 rows each: a seek on the
    list's index that delivers the order (no sort, no sequential scan); `email` through contacts_email_idx,
    unsorted."""
    orgs = [(await make_tenant()).org_id for _ in range(3)]
    for org in orgs:
        await db.execute("INSERT INTO surveys (id, org_id, name, created_at) SELECT gen_random_uuid(), $1, 's',"
                         " now() - g * interval '1 second' FROM generate_series(1, 3000) g", org)
        await db.execute("INSERT INTO segments (id, org_id, title, filters, created_at) SELECT gen_random_uuid(), $1,"
                         " 'g', '{}', now() - g * interval '1 second' FROM generate_series(1, 3000) g", org)
        await db.execute("INSERT INTO contacts (org_id, attributes, created_at) SELECT $1,"
                         " jsonb_build_object('email', 'u' || g || '@x.io'), now() - g * interval '1 second'"
                         " FROM generate_series(1, 3000) g", org)
    await db.execute("ANALYZE surveys; ANALYZE segments; ANALYZE contacts")
    org = orgs[1]
    middle = (datetime.now(UTC), uuid.uuid4())
    recorder = Recorder()
    conn = cast(asyncpg.Connection, recorder)  # a stand-in for the db functions: it records, answers no rows
    for after in (None, middle):
        await survey_db.list_surveys(conn, org, 51, after)
        await segment_db.list_segments(conn, org, 51, after)
    for seek in (None, (middle[0], 1500)):
        await contact_db.list_contacts(conn, org, 51, seek)
        await contact_db.list_contacts(conn, org, 51, seek, "u7@x.io")
    expected = ["surveys_page_idx", "segments_page_idx"] * 2 + ["contacts_page_idx", "contacts_email_idx"] * 2
    assert len(recorder.statements) == len(expected)
    for (sql, args), index in zip(recorder.statements, expected, strict=True):
        plan = json.loads(await db.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args))
        nodes = plan_nodes(plan[0]["Plan"])
        kinds = {node["Node Type"] for node in nodes}
        assert index in {node.get("Index Name") for node in nodes}, (sql, nodes)
        # no sort: the index gives the order; by email, one row needs none (with an ORDER BY there, the planner
        # walks contacts_page_idx and filters every contact once an organisation holds some 300,000)
        assert not kinds & {"Seq Scan", "Sort", "Incremental Sort"}, (sql, kinds)


async def test_a_cursor_outlives_the_item_it_names(client, tenant, db):
    """The cursor holds a position, not a row: deleting the item it was made after changes nothing."""
    await bulk(client, tenant.headers, [{"email": f"d{i}@x.io"} for i in range(9)])
    order = await newest_first(db, "contacts", tenant.org_id)
    first = await get_page(client, CONTACTS, tenant.headers, limit=4)
    assert [c["id"] for c in first["data"]] == order[:4]
    await db.execute("DELETE FROM contacts WHERE id = $1", int(order[3]))
    rest = await get_page(client, CONTACTS, tenant.headers, limit=10, cursor=first["meta"]["nextCursor"])
    assert [c["id"] for c in rest["data"]] == order[4:] and rest["meta"]["nextCursor"] is None


async def test_paging_while_contacts_are_written_concurrently(client, tenant, db):
    """Writers running all the while (not only between pages): every contact that existed at the first page
    comes exactly once, in order; nothing comes twice; anything else is one of the writers' contacts."""
    await bulk(client, tenant.headers, [{"email": f"x{i}@x.io"} for i in range(200)])
    existing = await newest_first(db, "contacts", tenant.org_id)
    stop = asyncio.Event()
    written = 0

    async def writer(n: int) -> None:
        nonlocal written
        while not stop.is_set():
            await bulk(client, tenant.headers, [{"email": f"w{n}.{written}.{i}@x.io"} for i in range(5)])
            written += 1

    writers = [asyncio.create_task(writer(n)) for n in range(3)]
    try:
        # between pages, the writers get the loop once (asyncio.sleep(0)): pages and writes interleave
        pages = await read_all(client, CONTACTS, tenant.headers, 7, lambda: asyncio.sleep(0))
    finally:
        stop.set()
        await asyncio.gather(*writers)
    ids = [item["id"] for page in pages for item in page]
    assert len(ids) == len(set(ids))
    assert [i for i in ids if i in set(existing)] == existing
    added = set(await newest_first(db, "contacts", tenant.org_id)) - set(existing)
    assert written >= 1 and len(added) == 5 * written and set(ids) - set(existing) <= added
