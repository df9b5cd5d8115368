"""The upgrade in place: a database made by the release before migrations (commit 2a02fae), with data
written in SQL, is migrated by the new code and served by it; every row stays, and its links answer."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace

import asyncpg

from service.app import create_app
from service.core.auth import SCOPES, hash_secret, new_secret
from service.core.mapping import canonical_mapping, mapping_hash
from service.core.signing import LinkSigner
from service.db.migrate import load_migrations
from tests.contact_helpers import contact_link_path, segment_links_path
from tests.helpers import links_path
from tests.ops.databases import (
    PREVIOUS_RELEASE_SCHEMA,
    catalog,
    cli,
    columns_of,
    fresh_database,
    run_sql_file,
    tables_of,
)

OLD_TABLES = tables_of(PREVIOUS_RELEASE_SCHEMA.read_text())
OLD_COLUMNS = columns_of(PREVIOUS_RELEASE_SCHEMA.read_text())
EMAILS = ("ada@example.com", "ben@example.com", "chloe@example.com")


async def write_old_data(url: str) -> dict:
    """An organisation, a key, a survey, a metadata field, a created link, contacts and a segment, as that
    release stored them, in plain SQL."""
    org, survey, segment, key = uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), new_secret()
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute("INSERT INTO organizations (id, name, link_quota, rate_limit)"
                               " VALUES ($1, 'Acme', 5, 'off')", org)
            await conn.execute("INSERT INTO api_keys (id, org_id, name, key_hash, scopes)"
                               " VALUES ($1, $2, 'ops', $3, $4)", uuid.uuid4(), org, hash_secret(key), list(SCOPES))
            seq = await conn.fetchval("INSERT INTO surveys (id, org_id, name, link_count)"
                                      " VALUES ($1, $2, 'Post-purchase', 1) RETURNING seq", survey, org)
            field = await conn.fetchval("INSERT INTO metadata_fields (org_id, name, variable)"
                                        " VALUES ($1, 'SKU Number', 'sku') RETURNING id", org)
            mapping = [{"metadata_id": field, "value": "SKU-12345"}]
            digest = mapping_hash(canonical_mapping([(field, "SKU-12345")]))
            await conn.execute("INSERT INTO survey_links (public_id, survey_id, mapping_hash, name, metadata_mapping)"
                               " VALUES ('a1b2c3d4e5f60718', $1, $2, 'SKU 12345', $3::jsonb)",
                               survey, digest, json.dumps(mapping))
            contacts = [await conn.fetchval(
                "INSERT INTO contacts (org_id, attributes) VALUES ($1, $2::jsonb) RETURNING id",
                org, json.dumps({"email": email, "plan": "pro"})) for email in EMAILS]
            await conn.execute("INSERT INTO contact_attribute_keys (org_id, key, name)"
                               " VALUES ($1, 'email', 'email'), ($1, 'plan', 'plan')", org)
            await conn.execute("INSERT INTO contact_versions (org_id, version) VALUES ($1, 3)", org)
            await conn.execute("INSERT INTO segments (id, org_id, title, filters) VALUES ($1, $2, 'Pro', $3::jsonb)",
                               segment, org, json.dumps({"attribute": "plan", "op": "equals", "value": "pro"}))
    finally:
        await conn.close()
    return {"org": org, "survey": survey, "seq": seq, "segment": segment, "key": key, "field": field,
            "contacts": contacts}


async def every_row(url: str) -> dict[str, list[str]]:
    conn = await asyncpg.connect(url)
    try:
        # the columns that release had: later migrations may add columns, never change these
        return {t: [r[0] for r in await conn.fetch(
            f"SELECT ({', '.join(OLD_COLUMNS[t])})::text FROM {t} ORDER BY 1")] for t in OLD_TABLES}
    finally:
        await conn.close()


async def test_a_database_of_the_previous_release_upgrades_in_place(servers, aiohttp_client, settings):
    async with fresh_database(servers.database_url) as url, fresh_database(servers.database_url) as new:
        await run_sql_file(url, PREVIOUS_RELEASE_SCHEMA)
        data = await write_old_data(url)
        before = await every_row(url)
        assert [len(before[t]) for t in OLD_TABLES] == [1, 1, 1, 1, 1, 3, 2, 1, 1]  # every table has data

        urls = {"database_url": url, "redis_url": servers.redis_url}
        known = load_migrations()
        applied = "".join(f"applied {m.label}\n" for m in known)
        assert await cli("migrate", **urls) == (0, applied, "")  # recognised as version 1, then upgraded
        conn = await asyncpg.connect(url)
        recorded = [tuple(r) for r in await conn.fetch(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version")]
        await conn.close()
        assert recorded == [(m.version, m.name, m.checksum) for m in known]
        assert await every_row(url) == before
        conn = await asyncpg.connect(url)
        # 0008: the link learnt its organisation from its survey
        assert [tuple(r) for r in await conn.fetch("SELECT public_id, org_id FROM survey_links")] == [
            ("a1b2c3d4e5f60718", data["org"])]
        await conn.close()
        # the upgraded database is the schema a new one gets
        await cli("migrate", database_url=new, redis_url=servers.redis_url)
        assert await catalog(url) == await catalog(new)

        client = await aiohttp_client(create_app(replace(settings, database_url=url)))
        headers = {"x-api-key": data["key"]}
        signer = LinkSigner(settings.signing_keys)

        # the created link: the URL handed out before the upgrade opens, and the same mapping replays it
        handed_out = f"/l/{signer.created_link_token('a1b2c3d4e5f60718')}"
        opened = {"data": {"surveyId": str(data["survey"]), "publicId": "a1b2c3d4e5f60718",
                           "metadata": {"sku": "SKU-12345"}}}
        resp = await client.get(handed_out)
        assert (resp.status, await resp.json()) == (200, opened)
        body = {"name": "SKU 12345", "metadata_mapping": [{"metadata_id": data["field"], "value": "SKU-12345"}]}
        filum = {"Authorization": f"Bearer {data['key']}", "organization-id": str(data["org"]), "auth-type": "token"}
        resp = await client.post(links_path(str(data["survey"])), json=body, headers=filum)
        assert resp.status == 200 and resp.headers["Idempotent-Replayed"] == "true"
        link = await resp.json()
        assert (link["public_id"], link["survey_url"]) == ("a1b2c3d4e5f60718", f"http://links.test{handed_out}")
        resp = await client.get(handed_out)
        assert (resp.status, await resp.json()) == (200, opened)

        # contact links: one made before the upgrade, and the segment's page with the same contacts
        newest_first = sorted(data["contacts"], reverse=True)
        for contact in data["contacts"]:
            resp = await client.get(f"/c/{signer.contact_token(data['seq'], contact, None)}")
            assert (resp.status, await resp.json()) == (
                200, {"data": {"surveyId": str(data["survey"]), "contactId": str(contact)}})
        resp = await client.get(segment_links_path(str(data["survey"]), str(data["segment"])),
                                params={"attributeKeys": "email"}, headers=headers)
        page = await resp.json()
        assert resp.status == 200 and page["meta"] == {"total": 3, "limit": 50, "offset": 0}
        assert [(item["contactId"], item["attributes"]) for item in page["data"]] == [
            (str(c), {"email": EMAILS[data["contacts"].index(c)]}) for c in newest_first]
        for item in page["data"]:
            resp = await client.get(item["surveyUrl"].removeprefix("http://links.test"))
            assert (resp.status, await resp.json()) == (
                200, {"data": {"surveyId": str(data["survey"]), "contactId": item["contactId"]}})
        resp = await client.get(contact_link_path(str(data["survey"]), str(data["contacts"][0])), headers=headers)
        assert resp.status == 200

        # reading and replaying wrote nothing: every row is still the one the old release stored
        assert await every_row(url) == before
