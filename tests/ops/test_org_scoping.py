"""Every table and query scoped by organisation (SPEC "Contacts at scale"), so the schema distributes on
Citus by org_id: read from the migrated database's catalog, and from every statement the service runs
while every API route is used once."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from service.db import pool as pool_module
from service.db.migrate import MIGRATIONS_TABLE
from service.web.keys import OPENS
from tests.contact_helpers import (
    ATTRIBUTE_KEYS,
    BULK,
    CONTACTS,
    MANAGEMENT,
    SEGMENTS,
    contact_link_path,
    segment_links_path,
)
from tests.helpers import links_path

# Citus reference tables (copied to every node): an organisation itself, and the keys that find it
REFERENCE = {"organizations", "api_keys"}
# The statements that cannot name an organisation, each for its reason (a fragment that identifies it)
UNSCOPED = {
    # opening a created link: the link (its public id) is all the request carries
    "WHERE l.public_id = $1": "survey_links",
    # opening a contact link: the survey's seq is all the token carries
    "WHERE s.seq = $1": "surveys",
}
# run by the worker's maintenance task, not by a request: forgetting old contact changes of every organisation
MAINTENANCE = "DELETE FROM contact_changes WHERE at <"
SKIPPED_ROUTES = {"/health", "/ready", "/metrics", "/openapi.json", "/docs", "/docs/{asset}"}


async def organisation_tables(db) -> list[str]:
    rows = await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
    return [r["tablename"] for r in rows if r["tablename"] not in REFERENCE | {MIGRATIONS_TABLE}]


async def test_every_table_of_an_organisations_data_has_org_id_first_in_every_key(db):
    tables = await organisation_tables(db)
    assert len(tables) == 11, tables
    columns = {(r["table_name"], r["is_nullable"], r["data_type"]) for r in await db.fetch(
        "SELECT table_name, is_nullable, data_type FROM information_schema.columns"
        " WHERE table_schema = 'public' AND column_name = 'org_id'")}
    assert {t for t, nullable, kind in columns if nullable == "NO" and kind == "uuid"} >= set(tables)
    # every primary key and unique index: its first column is org_id (Citus: the distribution column in each)
    keys = await db.fetch(
        "SELECT c.relname AS tbl, i.relname AS idx, x.indisprimary AS pk,"
        " (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = x.indrelid AND a.attnum = x.indkey[0]) AS first"
        " FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND x.indisunique")
    scoped = [k for k in keys if k["tbl"] in tables]
    assert {k["tbl"] for k in scoped if k["pk"]} == set(tables)  # each has a primary key
    assert [(k["tbl"], k["idx"]) for k in scoped if k["first"] != "org_id"] == []
    # every foreign key between two of them carries org_id on both sides, onto org_id
    foreign = await db.fetch(
        "SELECT c.conname, s.relname AS source, t.relname AS target,"
        " array(SELECT a.attname FROM unnest(c.conkey) k JOIN pg_attribute a ON a.attrelid = c.conrelid"
        "       AND a.attnum = k ORDER BY a.attname) AS cols,"
        " (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.confrelid AND a.attnum = c.confkey[1]) AS onto,"
        " (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = c.conrelid AND a.attnum = c.conkey[1]) AS first"
        " FROM pg_constraint c JOIN pg_class s ON s.oid = c.conrelid JOIN pg_class t ON t.oid = c.confrelid"
        " WHERE c.contype = 'f'")
    between = [f for f in foreign if f["source"] in tables and f["target"] in tables]
    assert len(between) == 5, [f["conname"] for f in between]
    assert [f["conname"] for f in between if (f["first"], f["onto"]) != ("org_id", "org_id")] == []
    # onto a reference table: only organizations, by its id
    assert {(f["target"], f["onto"]) for f in foreign if f["target"] in REFERENCE} == {("organizations", "id")}


# a table named after FROM / JOIN / UPDATE / INTO, and the alias it is given (if any)
_REFERENCE = re.compile(r"\b(?:FROM|JOIN|UPDATE|INTO)\s+([a-z_]+)(?:\s+(?:AS\s+)?([a-z_]+))?", re.IGNORECASE)
_NOT_ALIAS = {"where", "on", "set", "using", "left", "join", "cross", "order", "group", "limit", "values", "select",
              "returning", "default", "overriding", "as", "for", "union", "inner", "with", "having", "offset"}


def unscoped_references(statement: str, tables: set[str]) -> list[str]:
    """The references to an organisation's table in `statement` that name no org_id of their own: an
    aliased table needs `<alias>.org_id`, an unaliased one `org_id`, an INSERT org_id in its columns."""
    found = []
    for match in _REFERENCE.finditer(statement):
        table, alias = match.group(1).lower(), (match.group(2) or "").lower()
        if table not in tables:
            continue
        if match.group(0).upper().startswith("INTO"):
            columns = statement[match.end(1):].lstrip()
            scoped = columns.startswith("(") and "org_id" in columns[:columns.index(")")]
        elif alias and alias not in _NOT_ALIAS:
            scoped = re.search(rf"\b{alias}\.org_id\b", statement) is not None
        else:
            scoped = re.search(r"\borg_id\b", statement) is not None
        if not scoped:
            found.append(match.group(0))
    return found


def test_the_reference_check_finds_a_missing_organisation():
    tables = {"surveys", "contact_opens_versions", "survey_links"}
    assert unscoped_references("SELECT 1 FROM surveys s WHERE s.id = $1", tables) == ["FROM surveys s"]
    assert unscoped_references("SELECT v.version FROM surveys s JOIN contact_opens_versions v ON v.survey_id = s.id"
                               " WHERE s.org_id = $1", tables) == ["JOIN contact_opens_versions v"]
    assert unscoped_references("INSERT INTO survey_links (public_id) VALUES ($1) RETURNING org_id",
                               tables) == ["INTO survey_links"]
    assert unscoped_references("UPDATE surveys SET n = 1 WHERE org_id = $1 AND id = $2", tables) == []
    assert unscoped_references("SELECT 1 FROM pg_class", tables) == []


class Calls:
    """The test client, remembering which route each request reached."""

    def __init__(self, client, headers: dict[str, str]) -> None:
        self.client, self.headers = client, headers
        self.routes: set[tuple[str, str]] = set()

    async def __call__(self, method: str, path: str, status: int, **kwargs: Any) -> Any:
        match = await self.client.app.router.resolve(make_mocked_request(method, path.split("?")[0]))
        self.routes.add((method, match.route.resource.canonical))
        resp = await self.client.request(method, path, headers=self.headers, allow_redirects=False, **kwargs)
        assert resp.status == status, (method, path, await resp.text())
        if resp.content_type == "application/json":
            return await resp.json()
        await resp.read()
        return None


@pytest.fixture
def statements(monkeypatch) -> list[str]:
    """Every statement the app's pool connections run (the pool's connection setup hook, wrapped)."""
    seen: list[str] = []
    original = pool_module._init_connection

    async def init(conn) -> None:
        await original(conn)
        conn.add_query_logger(lambda record: seen.append(record.query))

    monkeypatch.setattr(pool_module, "_init_connection", init)
    return seen


async def test_every_statement_of_every_route_names_the_organisation(statements, client, tenant, db):
    call = Calls(client, tenant.headers)
    field = (await call("POST", f"{MANAGEMENT}/metadata-fields", 201, json={"name": "SKU", "variable": "sku"}))["data"]
    await call("GET", f"{MANAGEMENT}/metadata-fields", 200)
    survey = (await call("POST", f"{MANAGEMENT}/surveys", 201, json={"name": "S"}))["data"]
    short = (await call("POST", f"{MANAGEMENT}/surveys", 201, json={"name": "T", "linkFormat": "short"}))["data"]
    await call("GET", f"{MANAGEMENT}/surveys", 200)
    await call("GET", f"{MANAGEMENT}/surveys/{survey['id']}", 200)
    await call("PATCH", f"{MANAGEMENT}/surveys/{survey['id']}", 200, json={"name": "S2"})
    mapping = [{"metadata_id": field["id"], "value": "a"}]
    created = await call("POST", links_path(survey["id"]), 200, json={"name": "a", "metadata_mapping": mapping})
    await call("POST", links_path(survey["id"]), 200, json={"name": "a", "metadata_mapping": mapping})
    await call("POST", f"{links_path(survey['id'])}/batch", 200, json={"links": [
        {"name": n, "metadata_mapping": [{"metadata_id": field["id"], "value": n}]} for n in ("a", "b", "c")]})
    created_links = f"{MANAGEMENT}/surveys/{survey['id']}/links"
    await call("GET", created_links, 200)
    await call("GET", f"{created_links}/{created['id']}", 200)
    link_path = created["survey_url"].removeprefix("http://links.test")
    await call("GET", link_path, 200)
    await call("GET", f"{link_path}/qr.svg", 200)
    await call("GET", f"{link_path}/qr.png", 200)

    await call("POST", ATTRIBUTE_KEYS, 201, json={"key": "plan", "name": "Plan"})
    await call("GET", ATTRIBUTE_KEYS, 200)
    person = (await call("POST", CONTACTS, 201, json={"attributes": {"email": "a@x.io", "plan": "pro"}}))["data"]
    await call("PUT", BULK, 200, json={"contacts": [{"attributes": {"email": f"{i}@x.io", "plan": "pro"}}
                                                   for i in range(5)]})
    await call("GET", CONTACTS, 200)
    await call("GET", f"{CONTACTS}?email=a@x.io", 200)
    await call("PATCH", f"{CONTACTS}/{person['id']}", 200, json={"attributes": {"plan": "team"}})
    segment = (await call("POST", SEGMENTS, 201, json={"title": "Pro", "filters": {
        "attribute": "plan", "op": "in", "value": ["pro", "team"]}}))["data"]
    await call("GET", SEGMENTS, 200)
    await call("GET", f"{SEGMENTS}/{segment['id']}", 200)
    await call("PATCH", f"{SEGMENTS}/{segment['id']}", 200, json={"title": "Paying"})
    for target in (survey, short):
        contact_link = (await call("GET", contact_link_path(target["id"], person["id"]), 200))["data"]["surveyUrl"]
        contact_path = contact_link.removeprefix("http://links.test")
        await call("GET", contact_path, 200)
        await call("GET", f"{contact_path}/qr.svg", 200)
        await call("GET", f"{contact_path}/qr.png", 200)
    await client.app[OPENS].flush()
    members = segment_links_path(survey["id"], segment["id"])
    await call("GET", members, 200)
    await call("GET", f"{members}?opened=false", 200)
    await call("GET", f"{members}/export", 200)
    await call("POST", f"{MANAGEMENT}/surveys/{survey['id']}/contact-links/revoke", 200)
    await call("DELETE", f"{created_links}/{created['id']}", 204)
    await call("DELETE", f"{CONTACTS}/{person['id']}", 204)
    await call("DELETE", f"{SEGMENTS}/{segment['id']}", 204)

    # every route of the app was used (HEAD is GET's, and a trailing slash the same handler's)
    every = {(r.method, r.resource.canonical) for r in client.app.router.routes()
             if r.method != "HEAD" and not r.resource.canonical.endswith("/")}
    assert every - call.routes == {("GET", route) for route in SKIPPED_ROUTES}
    tables = set(await organisation_tables(db))
    ours = [s for s in statements if any(re.search(rf"\b{t}\b", s) for t in tables)]
    assert len(ours) > 40
    exceptions = {fragment for fragment in UNSCOPED if any(fragment in s for s in ours)}
    assert exceptions == set(UNSCOPED)  # each exception is still real (the list does not outlive its reason)
    unscoped = {s: refs for s in ours if not any(f in s for f in UNSCOPED) and not s.startswith(MAINTENANCE)
                for refs in [unscoped_references(s, tables)] if refs}
    assert unscoped == {}
