"""Revoking a created link (DELETE) and a survey's contact links (generations), against the real
PostgreSQL and Redis: 410 at once, no replay hands a revoked link out again (also when the replay
cache held it, also for a replay in flight), the mapping makes a new link, the quota counts live links."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import time
import uuid
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest
import redis.asyncio as aioredis

from service.app import create_app
from service.core.create_link import epoch_key, replay_key
from service.core.mapping import canonical_mapping, legacy_mapping_hash, mapping_hash
from service.core.ratepolicy import parse_policy
from service.settings import SigningKey
from service.web.keys import GATE, SETTINGS
from service.web.render import iso
from tests.conftest import TEST_KEYS
from tests.contact_helpers import error
from tests.faults.conftest import new_tenant, signing_keys_env, start_serve, stop_serve
from tests.helpers import create_metadata_field, create_survey, links_path

SURVEYS = "/api/v2/management/surveys"
GONE = error(410, "Gone", [{"field": "link", "issue": "the link was revoked"}])
CACHE_SECONDS = 24 * 3600


def path_of(url: str) -> str:
    assert url.startswith("http://links.test/")
    return url.removeprefix("http://links.test")


def link_path(survey_id: str, link_id: int) -> str:
    return f"{SURVEYS}/{survey_id}/links/{link_id}"


@pytest.fixture
async def campaign(client, tenant):
    survey = await create_survey(client, tenant.headers)
    field = await create_metadata_field(client, tenant.headers, f"sku-{uuid.uuid4().hex[:6]}")
    return {"id": survey["id"], "field": field["id"]}


def mapping(campaign: dict, value: object) -> dict:
    return {"name": "n", "metadata_mapping": [{"metadata_id": campaign["field"], "value": value}]}


async def post(client, tenant, campaign, value) -> tuple[int, dict, bool]:
    resp = await client.post(links_path(campaign["id"]), json=mapping(campaign, value), headers=tenant.headers)
    return resp.status, await resp.json(), resp.headers.get("Idempotent-Replayed") == "true"


async def make(client, tenant, campaign, value) -> dict:
    status, body, _ = await post(client, tenant, campaign, value)
    assert status == 200, body
    return body


async def revoke(client, tenant, survey_id: str, link_id: int) -> int:
    resp = await client.delete(link_path(survey_id, link_id), headers=tenant.headers)
    assert await resp.read() == b""
    return resp.status


async def rows(db, survey_id: str) -> list[tuple[int, bool]]:
    """(id, live) of the survey's links, oldest first."""
    return [tuple(r) for r in await db.fetch(
        "SELECT id, revoked_at IS NULL FROM survey_links WHERE survey_id = $1 ORDER BY id", uuid.UUID(survey_id))]


async def link_count(db, survey_id: str) -> int:
    return await db.fetchval("SELECT link_count FROM surveys WHERE id = $1", uuid.UUID(survey_id))


async def test_a_revoked_link_answers_410_and_its_mapping_makes_a_new_link(client, tenant, campaign, db):
    status, old, _ = await post(client, tenant, campaign, "SKU-1")
    assert status == 200 and await link_count(db, campaign["id"]) == 1
    opened = path_of(old["survey_url"])
    assert (await client.get(opened, allow_redirects=False)).status == 200
    assert (await client.get(opened + "/qr.svg")).status == 200

    assert await revoke(client, tenant, campaign["id"], old["id"]) == 204
    for path in (opened, opened + "/qr.svg", opened + "/qr.png"):
        resp = await client.get(path, allow_redirects=False)
        assert (resp.status, await resp.json()) == (410, GONE), path
    revoked_at = await db.fetchval("SELECT revoked_at FROM survey_links WHERE id = $1", old["id"])
    resp = await client.get(link_path(campaign["id"], old["id"]), headers=tenant.headers)
    assert (await resp.json())["data"]["revokedAt"] == iso(revoked_at)
    assert await link_count(db, campaign["id"]) == 0
    survey = await (await client.get(f"{SURVEYS}/{campaign['id']}", headers=tenant.headers)).json()
    assert survey["data"]["linkCount"] == 0

    # a second DELETE: 204, and nothing moves (the instant, the count)
    assert await revoke(client, tenant, campaign["id"], old["id"]) == 204
    assert await db.fetchval("SELECT revoked_at FROM survey_links WHERE id = $1", old["id"]) == revoked_at
    assert await link_count(db, campaign["id"]) == 0

    status, new, replayed = await post(client, tenant, campaign, "SKU-1")
    assert (status, replayed) == (200, False)
    assert new["id"] != old["id"] and new["public_id"] != old["public_id"]
    assert await rows(db, campaign["id"]) == [(old["id"], False), (new["id"], True)]
    assert await link_count(db, campaign["id"]) == 1
    assert await post(client, tenant, campaign, "SKU-1") == (200, new, True)
    assert (await client.get(path_of(new["survey_url"]), allow_redirects=False)).status == 200
    resp = await client.get(f"{SURVEYS}/{campaign['id']}/links", headers=tenant.headers)
    assert [(i["id"], i["revokedAt"]) for i in (await resp.json())["data"]] == [
        (new["id"], None), (old["id"], iso(revoked_at))]


async def test_a_replay_after_revocation_never_returns_the_revoked_link_the_cache_held(
        client, tenant, campaign, db, redis_url):
    old = await make(client, tenant, campaign, "cached")
    assert await post(client, tenant, campaign, "cached") == (200, old, True)  # from the replay cache
    r = aioredis.Redis.from_url(redis_url)
    digest = mapping_hash(canonical_mapping([(campaign["field"], "cached")])).hex()
    key = replay_key(tenant.org, TEST_KEYS[0].kid, f"{campaign['id']}:{digest}")
    held = await r.get(key)
    assert held is not None and old["public_id"].encode() in held
    try:
        assert await revoke(client, tenant, campaign["id"], old["id"]) == 204
        assert await r.get(key) == held  # the entry is still there: it is its epoch that stopped answering
        for _ in range(3):
            status, body, _ = await post(client, tenant, campaign, "cached")
            assert status == 200 and body["id"] != old["id"]
        new_ids = {(await post(client, tenant, campaign, "cached"))[1]["id"] for _ in range(3)}
        assert len(new_ids) == 1 and old["id"] not in new_ids
        assert await rows(db, campaign["id"]) == [(old["id"], False), (new_ids.pop(), True)]
    finally:
        await r.aclose()


async def test_every_cache_entry_of_the_revoked_link_stops_answering_legacy_aliases_too(client, tenant, campaign, db):
    """A link stored under the legacy hash is replayed for 2**53 + 1 and for 2**53: two cache entries
    under two current hashes. Revoking names neither, and both stop answering it."""
    legacy = legacy_mapping_hash([(campaign["field"], 2**53 + 1)])
    stored = await db.fetchval(
        "INSERT INTO survey_links (org_id, public_id, survey_id, mapping_hash, name, metadata_mapping)"
        " VALUES ((SELECT org_id FROM surveys WHERE id = $1), '00000000legacy00', $1, $2, 'before', $3)"
        " RETURNING id",
        uuid.UUID(campaign["id"]), legacy,
        json.dumps([{"metadata_id": campaign["field"], "value": 9007199254740992.0}]))
    await db.execute("UPDATE surveys SET link_count = 1 WHERE id = $1", uuid.UUID(campaign["id"]))
    for number in (2**53 + 1, 2**53, 2**53 + 1, 2**53):  # from PostgreSQL, then from the cache
        status, body, replayed = await post(client, tenant, campaign, number)
        assert (status, body["id"], replayed) == (200, stored, True)
    assert await revoke(client, tenant, campaign["id"], stored) == 204
    answers = {number: (await post(client, tenant, campaign, number))[1]["id"] for number in (2**53 + 1, 2**53)}
    assert stored not in answers.values() and len(set(answers.values())) == 2
    assert sorted(await rows(db, campaign["id"])) == sorted(
        [(stored, False), (answers[2**53 + 1], True), (answers[2**53], True)])


async def test_entries_under_another_signing_key_stop_answering_too(client, aiohttp_client, settings, tenant,
                                                                    campaign, db):
    """An instance that signs with a rotated-in key caches its answers under its own kid: revoking
    through another instance makes those stale as well."""
    rotated = await aiohttp_client(create_app(dataclasses.replace(
        settings, signing_keys=(SigningKey("t2", b"the-rotated-in-signing-secret-0123456789"), *TEST_KEYS))))
    old = await make(client, tenant, campaign, "rotating")
    for instance in (client, rotated, client, rotated):  # each caches it under its kid, then replays it
        status, body, replayed = await post(instance, tenant, campaign, "rotating")
        assert (status, body["id"], replayed) == (200, old["id"], True)
    assert await revoke(client, tenant, campaign["id"], old["id"]) == 204
    status, new, replayed = await post(rotated, tenant, campaign, "rotating")
    assert (status, replayed) == (200, False) and new["id"] != old["id"]
    assert (await post(client, tenant, campaign, "rotating"))[1]["id"] == new["id"]
    assert await rows(db, campaign["id"]) == [(old["id"], False), (new["id"], True)]


@pytest.fixture(params=["REDIS_URL", "CACHE_REDIS_URL"])
async def app_client(request, aiohttp_client, settings, redis_url):
    """The app with the replay cache read by the gate's script, or on a Redis of its own."""
    if request.param == "CACHE_REDIS_URL":
        settings = dataclasses.replace(settings, cache_redis_url=redis_url.rsplit("/", 1)[0] + "/1")
    return await aiohttp_client(create_app(settings))


async def test_a_replay_in_flight_cannot_write_the_revoked_link_back(app_client, tenant, db):
    """A replay that read the cache before the revocation and its link from PostgreSQL before the commit
    writes its answer after the revocation: the write is refused, whether or not the survey had an epoch."""
    client = app_client
    survey = await create_survey(client, tenant.headers)
    field = await create_metadata_field(client, tenant.headers, f"f-{uuid.uuid4().hex[:6]}")
    campaign = {"id": survey["id"], "field": field["id"]}
    gate = client.app[GATE]
    off = parse_policy("off")
    for value, warm in (("no epoch yet", False), ("epoch in place", True)):
        old = await make(client, tenant, campaign, value)
        digest = mapping_hash(canonical_mapping([(field["id"], value)])).hex()
        key = replay_key(tenant.org, TEST_KEYS[0].kid, f"{survey['id']}:{digest}")
        epoch = epoch_key(tenant.org, survey["id"])
        if not warm:  # the lookup of a request that came before any answer was cached
            await _flush(client)
        seen = await gate.check(tenant.org, off, (key, epoch))  # the replay's lookup, before the revocation
        assert (seen.cached is not None) == warm and (seen.epoch is not None) == warm
        assert await revoke(client, tenant, survey["id"], old["id"]) == 204
        stale = b'{"id": %d}' % old["id"]
        await gate.remember(key, stale, CACHE_SECONDS, epoch, seen.epoch)  # the replay's late write
        after = await gate.check(tenant.org, off, (key, epoch))
        assert after.cached is None and after.epoch not in (None, seen.epoch)
        status, new, replayed = await post(client, tenant, campaign, value)
        assert (status, replayed) == (200, False) and new["id"] != old["id"]
        assert (await gate.check(tenant.org, off, (key, epoch))).cached == _answer_bytes(new)


async def _flush(client) -> None:
    settings = client.app[SETTINGS]
    for url in {settings.redis_url, settings.cache_redis_url} - {None}:
        r = aioredis.Redis.from_url(url)
        await r.flushdb()
        await r.aclose()


def _answer_bytes(body: dict) -> bytes:
    return orjson.dumps(body)


async def test_the_quota_counts_live_links(client, make_tenant, db):
    tenant = await make_tenant(link_quota=1)
    survey = await create_survey(client, tenant.headers)
    field = await create_metadata_field(client, tenant.headers, "q")
    campaign = {"id": survey["id"], "field": field["id"]}
    full = {"detail": {"message": "threshold_exceeded", "params": {"model": "survey_link", "threshold": 1}}}
    status, first, _ = await post(client, tenant, campaign, "first")
    assert status == 200
    assert (await post(client, tenant, campaign, "second"))[:2] == (422, full)
    assert await revoke(client, tenant, survey["id"], first["id"]) == 204
    status, second, replayed = await post(client, tenant, campaign, "second")
    assert (status, replayed) == (200, False)
    assert await link_count(db, survey["id"]) == 1
    assert (await post(client, tenant, campaign, "first"))[:2] == (422, full)  # its place is taken again
    assert await post(client, tenant, campaign, "second") == (200, second, True)
    assert await rows(db, survey["id"]) == [(first["id"], False), (second["id"], True)]


async def test_fifty_concurrent_creates_of_a_just_revoked_mapping_make_one_link(client, tenant, campaign, db):
    old = await make(client, tenant, campaign, "again")
    assert await revoke(client, tenant, campaign["id"], old["id"]) == 204
    answers = await asyncio.gather(*(post(client, tenant, campaign, "again") for _ in range(50)))
    assert {status for status, _, _ in answers} == {200}
    ids = {body["id"] for _, body, _ in answers}
    assert len(ids) == 1 and old["id"] not in ids
    assert sum(not replayed for _, _, replayed in answers) == 1  # one made it, 49 replayed it
    assert await rows(db, campaign["id"]) == [(old["id"], False), (ids.pop(), True)]
    assert await link_count(db, campaign["id"]) == 1


async def test_revoking_while_replays_are_in_flight(client, tenant, campaign, db):
    """50 replays and the DELETE at once, five times: answers during the storm are the old link or the
    new one; after the DELETE's 204, no replay answers the revoked link, from the cache or PostgreSQL."""
    for round_ in range(5):
        value = f"storm {round_}"
        old = await make(client, tenant, campaign, value)
        replays = [post(client, tenant, campaign, value) for _ in range(50)]
        results = await asyncio.gather(*replays[:25], revoke(client, tenant, campaign["id"], old["id"]), *replays[25:])
        assert results[25] == 204
        storm = [r for i, r in enumerate(results) if i != 25 and isinstance(r, tuple)]
        assert len(storm) == 50
        assert {status for status, _, _ in storm} == {200}
        after = await asyncio.gather(*(post(client, tenant, campaign, value) for _ in range(20)))
        after_ids = {body["id"] for _, body, _ in after}
        assert len(after_ids) == 1 and old["id"] not in after_ids, round_
        new_id = after_ids.pop()
        assert {body["id"] for _, body, _ in storm} <= {old["id"], new_id}
        # and once more, from the cache now
        assert (await post(client, tenant, campaign, value))[1]["id"] == new_id
        live = [(link_id, is_live) for link_id, is_live in await rows(db, campaign["id"])
                if link_id in (old["id"], new_id)]
        assert live == [(old["id"], False), (new_id, True)]


async def test_a_revocation_redis_cannot_take_changes_nothing(client, tenant, campaign, db, redis_url):
    """Redis refusing writes: the DELETE answers 503 before anything is committed; once Redis takes
    writes again, it succeeds."""
    old = await make(client, tenant, campaign, "kept")
    r = aioredis.Redis.from_url(redis_url)
    try:
        await r.config_set("min-replicas-to-write", 1)  # every write refused (NOREPLICAS), reads still answer
        resp = await client.delete(link_path(campaign["id"], old["id"]), headers=tenant.headers)
        assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        assert await resp.json() == error(503, "Service temporarily unavailable: redis is not answering, "
                                               "retry shortly")
        assert await rows(db, campaign["id"]) == [(old["id"], True)] and await link_count(db, campaign["id"]) == 1
    finally:
        await r.config_set("min-replicas-to-write", 0)
        await r.aclose()
    assert await revoke(client, tenant, campaign["id"], old["id"]) == 204
    assert await rows(db, campaign["id"]) == [(old["id"], False)]


# the real server: `serve --workers 2`


@pytest.fixture
def two_workers(database_url, redis_url, tmp_path):
    """Two workers on the module's database and the session's Redis, configured by environment only."""
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "SIGNING_KEYS": signing_keys_env()}
    server = start_serve(env, 2, tmp_path / "serve.log")
    yield server
    stop_serve(server)


def connection_owners(port: int, pids: list[int]) -> dict[int, int]:
    """{client port: worker pid} of the connections the workers accepted on `port`, from /proc."""
    by_inode: dict[int, int] = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    by_inode[int(target[8:-1])] = pid
    owners: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, remote = (int(fields[i].rsplit(":", 1)[1], 16) for i in (1, 2))
            inode = int(fields[9])
            if local == port and inode in by_inode:
                owners[remote] = by_inode[inode]
    return owners


class KeptAlive:
    """One HTTP/1.1 connection kept open, so that its requests all go to the worker that accepted it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.port = writer.get_extra_info("sockname")[1]

    @classmethod
    async def open(cls, port: int) -> KeptAlive:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def get(self, path: str) -> tuple[int, bytes]:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


async def test_a_revoked_link_is_410_on_both_workers_within_one_second(two_workers, database_url):
    base = two_workers.base_url
    tenant = await new_tenant(database_url)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}{SURVEYS}", json={"name": "S"}, headers=tenant.headers) as r:
            survey_id = (await r.json())["data"]["id"]
        async with http.post(f"{base}{links_path(survey_id)}", json={"name": "n"}, headers=tenant.headers) as r:
            assert r.status == 200
            link = await r.json()
    opened = link["survey_url"].removeprefix(base)
    # connections kept open until both workers hold some: each connection's requests go to its worker
    connections: list[KeptAlive] = []
    owners: dict[int, int] = {}
    try:
        for _ in range(64):
            conn = await KeptAlive.open(two_workers.port)
            connections.append(conn)
            assert (await conn.get(opened))[0] == 200
            owners = connection_owners(two_workers.port, two_workers.worker_pids())
            if len({owners.get(c.port) for c in connections} - {None}) == 2 and len(connections) >= 8:
                break
        workers = {owners[c.port] for c in connections}
        assert workers == set(two_workers.worker_pids()) and len(workers) == 2

        async with aiohttp.ClientSession() as http, http.delete(
                f"{base}{SURVEYS}/{survey_id}/links/{link['id']}", headers=tenant.headers) as r:
            assert r.status == 204
        revoked = time.monotonic()
        answers = await asyncio.gather(*(conn.get(opened) for conn in connections))
        elapsed = time.monotonic() - revoked
        assert [(status, orjson.loads(body)) for status, body in answers] == [(410, GONE)] * len(connections)
        assert elapsed < 1.0, elapsed
    finally:
        for conn in connections:
            conn.close()


async def test_revoking_while_replays_are_in_flight_on_two_workers(two_workers, database_url):
    """50 replays over fresh connections (both workers) and the DELETE at once: afterwards no replay,
    on either worker, answers the revoked link."""
    base = two_workers.base_url
    tenant = await new_tenant(database_url)
    connector = aiohttp.TCPConnector(limit=200, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.post(f"{base}{SURVEYS}", json={"name": "S"}, headers=tenant.headers) as r:
            survey_id = (await r.json())["data"]["id"]
        async with http.post(f"{base}/api/v2/management/metadata-fields", json={"name": "f"},
                             headers=tenant.headers) as r:
            field = (await r.json())["data"]["id"]
        body = {"name": "n", "metadata_mapping": [{"metadata_id": field, "value": "in flight"}]}

        async def replay() -> tuple[int, int]:
            async with http.post(f"{base}{links_path(survey_id)}", json=body, headers=tenant.headers) as r:
                return r.status, (await r.json())["id"]

        async def delete(link_id: int) -> int:
            async with http.delete(f"{base}{SURVEYS}/{survey_id}/links/{link_id}", headers=tenant.headers) as r:
                return r.status

        for _ in range(3):
            status, old = await replay()
            assert status == 200 and (await replay()) == (200, old)  # the cache holds it
            storm = await asyncio.gather(*[replay() for _ in range(25)], delete(old), *[replay() for _ in range(25)])
            assert storm[25] == 204
            replays = [r for r in storm[:25] + storm[26:] if isinstance(r, tuple)]
            assert len(replays) == 50
            after = await asyncio.gather(*[replay() for _ in range(30)])
            new = {link_id for _, link_id in after}
            assert {status for status, _ in after} == {200} and len(new) == 1 and old not in new
            assert {link_id for _, link_id in replays} <= {old, *new}
            conn = await asyncpg.connect(database_url)
            try:
                assert await conn.fetchval("SELECT count(*) FROM survey_links WHERE survey_id = $1"
                                           " AND revoked_at IS NULL", uuid.UUID(survey_id)) == 1
            finally:
                await conn.close()


async def test_a_batch_never_replays_a_revoked_link_and_single_and_batch_share_the_epoch(client, tenant, campaign, db):
    """The batch create reads and writes the replay cache under the survey's epoch as the single create
    does: after a revocation, neither the single path's entries nor the batch's own answer it again."""
    batch_path = links_path(campaign["id"]) + "/batch"
    items = [mapping(campaign, "SKU-A"), mapping(campaign, "SKU-B")]
    single = await make(client, tenant, campaign, "SKU-A")  # cached by the single create
    resp = await client.post(batch_path, json={"links": items}, headers=tenant.headers)
    first = (await resp.json())["results"]
    assert [(r["status"], r["replayed"]) for r in first] == [(200, True), (200, False)]
    assert first[0]["link"] == single
    resp = await client.post(batch_path, json={"links": items}, headers=tenant.headers)
    assert (await resp.json())["results"] == [{**r, "replayed": True} for r in first]  # from the cache
    assert await post(client, tenant, campaign, "SKU-B") == (200, first[1]["link"], True)  # the batch's entry

    assert await revoke(client, tenant, campaign["id"], single["id"]) == 204
    resp = await client.post(batch_path, json={"links": items}, headers=tenant.headers)
    again = (await resp.json())["results"]
    assert [(r["status"], r["replayed"]) for r in again] == [(200, False), (200, True)]
    assert again[0]["link"]["id"] not in (single["id"], first[1]["link"]["id"])
    assert again[1]["link"] == first[1]["link"]
    assert await rows(db, campaign["id"]) == [(single["id"], False), (first[1]["link"]["id"], True),
                                              (again[0]["link"]["id"], True)]
    assert await post(client, tenant, campaign, "SKU-A") == (200, again[0]["link"], True)
