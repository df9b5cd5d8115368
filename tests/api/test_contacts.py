"""Contacts and contact attribute keys: exact bodies, the bulk upsert's counts and rows, isolation."""

from __future__ import annotations

import io
import re

import orjson

from tests.contact_helpers import ATTRIBUTE_KEYS, BULK, CONTACTS, bulk, error

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def stored(db, tenant) -> dict[str, dict]:
    rows = await db.fetch("SELECT attributes::text AS a FROM contacts WHERE org_id = $1", tenant.org_id)
    return {(a := orjson.loads(r["a"]))["email"]: a for r in rows}


async def keys_of(db, tenant) -> list[str]:
    rows = await db.fetch("SELECT key FROM contact_attribute_keys WHERE org_id = $1 ORDER BY key", tenant.org_id)
    return [r["key"] for r in rows]


async def version_of(db, tenant) -> int:
    """How many transactions recorded a contact write (one contact_changes row each)."""
    return await db.fetchval("SELECT count(*) FROM contact_changes WHERE org_id = $1", tenant.org_id)


async def test_attribute_keys_create_and_list(client, tenant, make_tenant, db):
    resp = await client.post(ATTRIBUTE_KEYS, json={"key": "firstName", "name": "First name"}, headers=tenant.headers)
    assert resp.status == 201
    created = (await resp.json())["data"]
    assert set(created) == {"id", "key", "name", "createdAt"}
    assert (created["key"], created["name"]) == ("firstName", "First name")
    assert created["id"].isdigit() and ISO.match(created["createdAt"])
    resp = await client.post(ATTRIBUTE_KEYS, json={"key": "plan"}, headers=tenant.headers)
    assert resp.status == 201 and (await resp.json())["data"]["name"] == "plan"

    other = await make_tenant()
    assert (await client.post(ATTRIBUTE_KEYS, json={"key": "plan"}, headers=other.headers)).status == 201
    listed = await client.get(ATTRIBUTE_KEYS, headers=tenant.headers)
    assert listed.status == 200
    assert [k["key"] for k in (await listed.json())["data"]] == ["firstName", "plan"]
    assert (await listed.json())["data"][0] == created
    assert await keys_of(db, tenant) == ["firstName", "plan"]


async def test_attribute_key_validation_and_duplicates(client, tenant, db):
    await client.post(ATTRIBUTE_KEYS, json={"key": "plan"}, headers=tenant.headers)
    resp = await client.post(ATTRIBUTE_KEYS, json={"key": "plan", "name": "Again"}, headers=tenant.headers)
    assert resp.status == 422
    assert await resp.json() == error(422, "Unprocessable Entity", [
        {"field": "key", "issue": "attribute key 'plan' already exists"}])
    resp = await client.post(ATTRIBUTE_KEYS, json={"key": "first name", "name": "", "x": 1}, headers=tenant.headers)
    assert resp.status == 422
    assert await resp.json() == error(422, "Unprocessable Entity", [
        {"field": "key", "issue": "an attribute key is 1-64 letters, digits, _ or -, not starting with a digit"},
        {"field": "name", "issue": "ensure this value has at least 1 characters"},
        {"field": "x", "issue": "extra fields not permitted"},
    ])
    resp = await client.post(ATTRIBUTE_KEYS, json={"key": "contactId"}, headers=tenant.headers)
    assert (await resp.json())["error"]["details"] == [
        {"field": "key", "issue": "contactId is reserved for the contact's id"}]
    assert await keys_of(db, tenant) == ["plan"]


async def test_create_contact(client, tenant, db):
    before = await version_of(db, tenant)
    body = {"attributes": {"email": "ann@example.com", "age": 31, "vip": True, "score": 2.5, "gone": None}}
    resp = await client.post(CONTACTS, json=body, headers=tenant.headers)
    assert resp.status == 201
    data = (await resp.json())["data"]
    assert set(data) == {"id", "attributes", "createdAt"}
    assert data["attributes"] == {"email": "ann@example.com", "age": 31, "vip": True, "score": 2.5}
    assert isinstance(data["id"], str) and data["id"].isdigit() and ISO.match(data["createdAt"])
    row = await db.fetchrow("SELECT org_id, attributes::text AS a FROM contacts WHERE id = $1", int(data["id"]))
    assert row["org_id"] == tenant.org_id
    assert orjson.loads(row["a"]) == data["attributes"]
    # keys it introduced exist now (also the one whose value was null); the write moved the version
    assert await keys_of(db, tenant) == ["age", "email", "gone", "score", "vip"]
    assert await version_of(db, tenant) == before + 1


async def test_contact_without_email_and_duplicate_email(client, tenant, make_tenant, db):
    resp = await client.post(CONTACTS, json={"attributes": {}}, headers=tenant.headers)
    assert resp.status == 201 and (await resp.json())["data"]["attributes"] == {}
    first = await client.post(CONTACTS, json={"attributes": {"email": "a@x.io"}}, headers=tenant.headers)
    assert first.status == 201
    version = await version_of(db, tenant)
    again = await client.post(CONTACTS, json={"attributes": {"email": "a@x.io", "newKey": 1}}, headers=tenant.headers)
    assert again.status == 422
    assert await again.json() == error(422, "Unprocessable Entity", [
        {"field": "attributes.email", "issue": "a contact with this email already exists"}])
    # all or nothing: no key created, version unchanged
    assert "newKey" not in await keys_of(db, tenant)
    assert await version_of(db, tenant) == version
    other = await make_tenant()
    assert (await client.post(CONTACTS, json={"attributes": {"email": "a@x.io"}}, headers=other.headers)).status == 201


async def test_contact_validation_names_each_problem(client, tenant, db):
    body = {"attributes": {"email": 5, "bad key": 1, "list": [1], "obj": {"a": 1}, "long": "x" * 2001,
                           "contactId": 1, "nul": "a\u0000b"}, "extra": True}
    resp = await client.post(CONTACTS, json=body, headers=tenant.headers)
    assert resp.status == 422
    assert await resp.json() == error(422, "Unprocessable Entity", [
        {"field": "attributes.bad key", "issue": "an attribute key is 1-64 letters, digits, _ or -, not starting "
                                                 "with a digit"},
        {"field": "attributes.list", "issue": "value must be a string, a finite number, a boolean or null"},
        {"field": "attributes.obj", "issue": "value must be a string, a finite number, a boolean or null"},
        {"field": "attributes.long", "issue": "ensure this value has at most 2000 characters"},
        {"field": "attributes.contactId", "issue": "contactId is reserved for the contact's id"},
        {"field": "attributes.nul", "issue": "NUL characters are not allowed"},
        {"field": "attributes.email", "issue": "email must be a non-empty string"},
        {"field": "extra", "issue": "extra fields not permitted"},
    ])
    for bad, issue in (({}, "field required"), ({"attributes": None}, "none is not an allowed value"),
                       ({"attributes": []}, "value is not a valid dict")):
        resp = await client.post(CONTACTS, json=bad, headers=tenant.headers)
        assert (resp.status, (await resp.json())["error"]["details"]) == (422, [
            {"field": "attributes", "issue": issue}])
    assert await db.fetchval("SELECT count(*) FROM contacts WHERE org_id = $1", tenant.org_id) == 0


async def test_bulk_creates_then_updates_by_email(client, tenant, db):
    counts = await bulk(client, tenant.headers, [
        {"email": "a@x.io", "plan": "free", "age": 20},
        {"email": "b@x.io", "plan": "pro"},
        {"email": "c@x.io"},
    ])
    assert counts == {"created": 3, "updated": 0}
    version = await version_of(db, tenant)
    counts = await bulk(client, tenant.headers, [
        {"email": "a@x.io", "plan": "pro", "age": None, "city": "Oslo"},  # merge; null removes
        {"email": "d@x.io", "plan": "free"},
        {"email": "d@x.io", "age": 40},  # the same email twice in one call: merged, counted once
        {"email": "b@x.io"},
    ])
    assert counts == {"created": 1, "updated": 2}
    assert await stored(db, tenant) == {
        "a@x.io": {"email": "a@x.io", "plan": "pro", "city": "Oslo"},
        "b@x.io": {"email": "b@x.io", "plan": "pro"},
        "c@x.io": {"email": "c@x.io"},
        "d@x.io": {"email": "d@x.io", "plan": "free", "age": 40},
    }
    assert await keys_of(db, tenant) == ["age", "city", "email", "plan"]
    assert await version_of(db, tenant) == version + 1
    updated = await db.fetchval("SELECT count(*) FROM contacts WHERE org_id = $1 AND updated_at > created_at",
                                tenant.org_id)
    assert updated == 2


async def test_bulk_is_per_organisation(client, tenant, make_tenant, db):
    other = await make_tenant()
    await bulk(client, tenant.headers, [{"email": "a@x.io", "plan": "free"}])
    assert await bulk(client, other.headers, [{"email": "a@x.io", "plan": "pro"}]) == {"created": 1, "updated": 0}
    assert (await stored(db, tenant))["a@x.io"]["plan"] == "free"


async def test_bulk_of_ten_thousand_beyond_the_default_body_limit(client, tenant, db):
    contacts = [{"attributes": {"email": f"user{i:05d}@example.com", "firstName": f"Name{i}" + "x" * 100, "n": i}}
                for i in range(10_000)]
    body = orjson.dumps({"contacts": contacts})
    assert len(body) > 1024 * 1024
    headers = {**tenant.headers, "Content-Type": "application/json"}
    resp = await client.put(BULK, data=io.BytesIO(body), headers=headers)
    assert resp.status == 200, await resp.text()
    assert await resp.json() == {"data": {"created": 10_000, "updated": 0}}
    resp = await client.put(BULK, data=io.BytesIO(body), headers=headers)
    assert await resp.json() == {"data": {"created": 0, "updated": 10_000}}
    assert await db.fetchval("SELECT count(*) FROM contacts WHERE org_id = $1", tenant.org_id) == 10_000
    # ids follow the order of the call
    first, last = await db.fetchrow(
        "SELECT min(id), max(id) FROM contacts WHERE org_id = $1", tenant.org_id)
    email_of = "SELECT attributes->>'email' FROM contacts WHERE id = $1"
    assert await db.fetchval(email_of, first) == "user00000@example.com"
    assert await db.fetchval(email_of, last) == "user09999@example.com"


async def test_bulk_limits_and_validation(client, tenant, db, settings):
    too_many = {"contacts": [{"attributes": {"email": f"{i}@x.io"}} for i in range(10_001)]}
    resp = await client.put(BULK, json=too_many, headers=tenant.headers)
    assert resp.status == 422
    assert (await resp.json())["error"]["details"] == [
        {"field": "contacts", "issue": "ensure this value has at most 10000 items"}]
    resp = await client.put(BULK, json={"contacts": []}, headers=tenant.headers)
    assert (await resp.json())["error"]["details"] == [
        {"field": "contacts", "issue": "ensure this value has at least 1 items"}]
    resp = await client.put(BULK, headers=tenant.headers, json={"contacts": [
        {"attributes": {"email": "ok@x.io"}}, {"attributes": {"plan": "pro"}}, "x", {"attributes": {"email": ""}},
        {"attrs": {}},
    ]})
    assert resp.status == 422
    assert await resp.json() == error(422, "Unprocessable Entity", [
        {"field": "contacts.1.attributes.email", "issue": "field required"},
        {"field": "contacts.2", "issue": "value is not a valid dict"},
        {"field": "contacts.3.attributes.email", "issue": "email must be a non-empty string"},
        {"field": "contacts.4.attrs", "issue": "extra fields not permitted"},
        {"field": "contacts.4.attributes", "issue": "field required"},
    ])
    huge = b'{"contacts": [' + b" " * settings.bulk_max_body_bytes + b"]}"
    resp = await client.put(BULK, data=io.BytesIO(huge), headers={**tenant.headers, "Content-Type": "application/json"})
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == 413
    assert await db.fetchval("SELECT count(*) FROM contacts WHERE org_id = $1", tenant.org_id) == 0


async def test_keys_and_scopes(client, make_tenant):
    reader = await make_tenant(scopes=("links:read",))
    for method, path, body in (("POST", CONTACTS, {"attributes": {}}), ("PUT", BULK, {"contacts": []}),
                               ("GET", ATTRIBUTE_KEYS, None), ("POST", ATTRIBUTE_KEYS, {"key": "k"})):
        resp = await client.request(method, path, json=body, headers=reader.headers)
        assert resp.status == 403
        assert await resp.json() == error(403, "Forbidden", [
            {"field": "scope", "issue": "this key lacks the manage scope"}])
        resp = await client.request(method, path, json=body)
        assert resp.status == 401
        assert await resp.json() == error(401, "Unauthorized", [
            {"field": "x-api-key", "issue": "missing, unknown or revoked API key"}])
