"""Opens: every open answered 302 or 200 is counted per created link and per (survey, contact),
tallied in the worker and written in batches of one statement per table."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime

import pytest

from service.app import create_app
from service.core.opens import OpenCounter
from service.db.pool import create_pool
from service.web.keys import OPENS
from tests.contact_helpers import bulk, contact_link_path
from tests.helpers import create_survey, links_path

BASE = "http://links.test"


def path_of(url: str) -> str:
    assert url.startswith(BASE + "/")
    return url.removeprefix(BASE)


async def contact_link(client, tenant, survey_id: str, contact_id: int) -> str:
    resp = await client.get(contact_link_path(survey_id, str(contact_id)), headers=tenant.headers)
    assert resp.status == 200
    return path_of((await resp.json())["data"]["surveyUrl"])


async def created_link(client, tenant, survey_id: str, name: str) -> str:
    """A created link of its own: the metadata mapping (its idempotency key) holds the name."""
    fields = await client.get("/api/v2/management/metadata-fields", headers=tenant.headers)
    known = (await fields.json())["data"]
    if known:  # made by an earlier call of this test
        field_id = known[0]["id"]
    else:
        field = await client.post("/api/v2/management/metadata-fields", json={"name": "sku", "variable": "sku"},
                                  headers=tenant.headers)
        assert field.status == 201, await field.text()
        field_id = (await field.json())["data"]["id"]
    resp = await client.post(links_path(survey_id), json={
        "name": name, "metadata_mapping": [{"metadata_id": field_id, "value": name}]}, headers=tenant.headers)
    assert resp.status == 200, await resp.text()
    return path_of((await resp.json())["survey_url"])


async def contacts(client, tenant, db, count: int) -> list[int]:
    await bulk(client, tenant.headers, [{"email": f"p{i}@x.io"} for i in range(count)])
    return [r["id"] for r in await db.fetch("SELECT id FROM contacts WHERE org_id = $1 ORDER BY id", tenant.org_id)]


async def link_opens(db, survey_id: str) -> dict[str, tuple]:
    rows = await db.fetch(
        "SELECT l.public_id, o.count, o.first_at, o.last_at, o.org_id FROM link_opens o"
        " JOIN survey_links l ON l.id = o.link_id WHERE l.survey_id = $1", uuid.UUID(survey_id))
    return {r["public_id"]: (r["count"], r["first_at"], r["last_at"], r["org_id"]) for r in rows}


async def contact_opens(db, survey_id: str) -> dict[int, tuple]:
    rows = await db.fetch("SELECT contact_id, count, first_at, last_at, org_id FROM contact_opens"
                          " WHERE survey_id = $1", uuid.UUID(survey_id))
    return {r["contact_id"]: (r["count"], r["first_at"], r["last_at"], r["org_id"]) for r in rows}


def public_id(path: str) -> str:
    return path.removeprefix("/l/").split(".")[1]


async def link_key(db, path: str) -> tuple[uuid.UUID, int]:
    """The open counter's key of a created link: (organisation id, link id)."""
    row = await db.fetchrow("SELECT org_id, id FROM survey_links WHERE public_id = $1", public_id(path))
    return row["org_id"], row["id"]


async def test_opens_of_both_kinds_are_counted_with_first_and_last(client, tenant, db):
    from service.core.opens import FLUSH_SECONDS

    assert FLUSH_SECONDS <= 1.0  # SPEC: a process killed outright loses at most the last second of opens
    survey = await create_survey(client, tenant.headers)
    people = await contacts(client, tenant, db, 2)
    c0 = await contact_link(client, tenant, survey["id"], people[0])  # people[1] never opens
    link = await created_link(client, tenant, survey["id"], "SKU")
    counter = client.app[OPENS]
    times = iter([1_000.0, 1_001.5, 1_002.0, 1_003.25, 1_004.0, 1_010.0])
    counter.clock = lambda: next(times)

    for path in (c0, link, c0, link, c0):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 200
    await counter.flush()

    at = lambda s: datetime.fromtimestamp(s, UTC)  # noqa: E731
    assert await contact_opens(db, survey["id"]) == {people[0]: (3, at(1_000.0), at(1_004.0), tenant.org_id)}
    assert await link_opens(db, survey["id"]) == {public_id(link): (2, at(1_001.5), at(1_003.25), tenant.org_id)}

    # a later batch adds to the stored counts: first stays, last moves
    assert (await client.get(c0, allow_redirects=False)).status == 200
    await counter.flush()
    assert await contact_opens(db, survey["id"]) == {people[0]: (4, at(1_000.0), at(1_010.0), tenant.org_id)}
    assert counter.pending == 0


async def test_redirects_count_and_refusals_do_not(client, tenant, db):
    survey = await create_survey(client, tenant.headers, redirectUrl="https://example.com/s")
    (person,) = await contacts(client, tenant, db, 1)
    path = await contact_link(client, tenant, survey["id"], person)
    link = await created_link(client, tenant, survey["id"], "SKU")
    for target in (path, link):
        assert (await client.get(target, allow_redirects=False)).status == 302
    assert (await client.get(path[:-3] + "abc", allow_redirects=False)).status == 404  # forged
    resp = await client.patch(f"/api/v2/management/surveys/{survey['id']}", json={"status": "paused"},
                              headers=tenant.headers)
    assert resp.status == 200
    for target in (path, link):
        assert (await client.get(target, allow_redirects=False)).status == 410
    await client.app[OPENS].flush()
    assert [v[0] for v in (await contact_opens(db, survey["id"])).values()] == [1]
    assert [v[0] for v in (await link_opens(db, survey["id"])).values()] == [1]


async def test_concurrent_opens_are_counted_exactly(client, tenant, db):
    survey = await create_survey(client, tenant.headers)
    people = await contacts(client, tenant, db, 5)
    paths = [await contact_link(client, tenant, survey["id"], c) for c in people]
    links = [await created_link(client, tenant, survey["id"], f"SKU {i}") for i in range(3)]
    every = paths + links
    answers = await asyncio.gather(*(client.get(every[i % len(every)], allow_redirects=False) for i in range(400)))
    assert [r.status for r in answers] == [200] * 400
    await client.app[OPENS].flush()
    per = 400 // len(every)  # 50 each
    assert {c: v[0] for c, v in (await contact_opens(db, survey["id"])).items()} == dict.fromkeys(people, per)
    assert {p: v[0] for p, v in (await link_opens(db, survey["id"])).items()} == {public_id(x): per for x in links}


class Recorder:
    """A pool whose connections record the statements they run."""

    def __init__(self, pool) -> None:
        self.pool = pool
        self.statements: list[str] = []

    @contextlib.asynccontextmanager
    async def acquire(self):
        async with self.pool.acquire() as conn:
            conn.add_query_logger(self._log)
            try:
                yield conn
            finally:
                conn.remove_query_logger(self._log)

    def _log(self, record) -> None:
        self.statements.append(record.query)


async def test_a_batch_is_one_statement_per_table_and_skips_erased_contacts(client, tenant, db, database_url):
    survey = await create_survey(client, tenant.headers)
    people = await contacts(client, tenant, db, 300)
    pool = await create_pool(database_url, 2)
    recorder = Recorder(pool)
    dropped: list[int] = []
    counter = OpenCounter(recorder, dropped.append)  # type: ignore[arg-type]
    links = [await created_link(client, tenant, survey["id"], f"SKU {i}") for i in range(20)]
    survey_id = uuid.UUID(survey["id"])
    # a first batch: asyncpg learns the statements' types on a new connection with queries of its own
    keys = [await link_key(db, x) for x in links]
    counter.contact_opened(tenant.org_id, survey_id, people[-1])
    counter.link_opened(*keys[-1])
    await counter.flush()
    recorder.statements.clear()
    for i in range(1_000):
        counter.contact_opened(tenant.org_id, survey_id, people[i % 300])
        counter.link_opened(*keys[i % 20])
    counter.contact_opened(tenant.org_id, survey_id, 10**12)  # no such contact (erased before the flush)
    await db.execute("DELETE FROM contacts WHERE id = $1", people[0])
    try:
        await counter.flush()
    finally:
        await pool.close()
    assert len(recorder.statements) == 2
    assert "link_opens" in recorder.statements[0] and "contact_opens" in recorder.statements[1]
    expected = {c: 4 if i < 100 or i == 299 else 3 for i, c in enumerate(people) if i}
    assert {c: v[0] for c, v in (await contact_opens(db, survey["id"])).items()} == expected
    assert {p: v[0] for p, v in (await link_opens(db, survey["id"])).items()} == {
        public_id(x): 51 if x == links[-1] else 50 for x in links}
    assert counter.pending == 0 and dropped == []
    assert await db.fetchval("SELECT version FROM contact_opens_versions WHERE survey_id = $1", survey_id) == 2


async def test_erasing_a_contact_erases_its_opens(client, tenant, db):
    survey = await create_survey(client, tenant.headers)
    people = await contacts(client, tenant, db, 2)
    for person in people:
        assert (await client.get(await contact_link(client, tenant, survey["id"], person))).status == 200
    await client.app[OPENS].flush()
    await db.execute("DELETE FROM contacts WHERE id = $1", people[0])
    assert set(await contact_opens(db, survey["id"])) == {people[1]}
    assert await db.fetchval("SELECT count(*) FROM contact_opens WHERE contact_id = $1", people[0]) == 0


class DownPool:
    """A pool whose PostgreSQL is down, until it comes back."""

    def __init__(self, pool) -> None:
        self.pool = pool
        self.down = True

    def acquire(self):
        if self.down:
            raise ConnectionRefusedError("PostgreSQL is down")
        return self.pool.acquire()


async def test_a_failed_flush_keeps_the_counts_bounded_and_the_next_one_writes_them(
        client, tenant, db, database_url, caplog):
    survey = await create_survey(client, tenant.headers)
    people = await contacts(client, tenant, db, 3)
    pool = await create_pool(database_url, 2)
    down = DownPool(pool)
    dropped: list[int] = []
    times = iter(range(100, 200))
    counter = OpenCounter(down, dropped.append, max_pending=2, clock=lambda: float(next(times)))  # type: ignore[arg-type]
    survey_id = uuid.UUID(survey["id"])
    try:
        counter.contact_opened(tenant.org_id, survey_id, people[0])  # t=100
        counter.contact_opened(tenant.org_id, survey_id, people[1])  # t=101
        with caplog.at_level(logging.WARNING, "service.opens"):
            await counter.flush()
        assert "writing open counts failed; kept for the next flush" in caplog.messages
        counter.contact_opened(tenant.org_id, survey_id, people[0])  # t=102, merged with the kept one
        counter.contact_opened(tenant.org_id, survey_id, people[2])  # t=103: a third pair is past the cap
        assert dropped == [1] and counter.pending == 2
        down.down = False
        await counter.flush()
    finally:
        await pool.close()
    at = lambda s: datetime.fromtimestamp(s, UTC)  # noqa: E731
    assert await contact_opens(db, survey["id"]) == {people[0]: (2, at(100), at(102), tenant.org_id),
                                                     people[1]: (1, at(101), at(101), tenant.org_id)}


async def test_counting_off_counts_nothing(aiohttp_client, settings, tenant, db):
    from dataclasses import replace

    client = await aiohttp_client(create_app(replace(settings, open_counting=False)))
    survey = await create_survey(client, tenant.headers)
    (person,) = await contacts(client, tenant, db, 1)
    assert (await client.get(await contact_link(client, tenant, survey["id"], person))).status == 200
    assert OPENS not in client.app
    await client.close()
    assert await contact_opens(db, survey["id"]) == {}


@pytest.mark.parametrize("kind", ["c", "l"])
async def test_shutdown_writes_what_is_left(aiohttp_client, settings, tenant, db, kind):
    client = await aiohttp_client(create_app(settings))
    survey = await create_survey(client, tenant.headers)
    (person,) = await contacts(client, tenant, db, 1)
    path = await (contact_link(client, tenant, survey["id"], person) if kind == "c"
                  else created_link(client, tenant, survey["id"], "SKU"))
    client.app[OPENS].clock = lambda: 5_000.0
    for _ in range(7):
        assert (await client.get(path)).status == 200
    await client.close()  # the app's cleanup: the last flush, then the pool closes
    rows = await (contact_opens(db, survey["id"]) if kind == "c" else link_opens(db, survey["id"]))
    assert [v[0] for v in rows.values()] == [7]
