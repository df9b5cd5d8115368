"""PATCH and DELETE /contacts/{id}: merge semantics, validation, email uniqueness, erasure, concurrency."""

from __future__ import annotations

import asyncio

import orjson

from tests.contact_helpers import CONTACTS, bulk, contact_link_path, create_segment, error, freeze, page, settle
from tests.helpers import TABLES, create_survey, table_snapshot

KEY_RULE = "an attribute key is 1-64 letters, digits, _ or -, not starting with a digit"


async def create_contact(client, headers, attributes) -> dict:
    resp = await client.post(CONTACTS, json={"attributes": attributes}, headers=headers)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["data"]


async def patch(client, headers, contact_id, body):
    return await client.patch(f"{CONTACTS}/{contact_id}", json=body, headers=headers)


async def stored(db, contact_id) -> dict | None:
    text = await db.fetchval("SELECT attributes::text FROM contacts WHERE id = $1", int(contact_id))
    return None if text is None else orjson.loads(text)


async def changes_of(db, tenant) -> int:
    """The organisation's contact write transactions recorded (core.segment_cache reads them)."""
    return await db.fetchval("SELECT count(*) FROM contact_changes WHERE org_id = $1", tenant.org_id)


async def keys_of(db, tenant) -> list[str]:
    rows = await db.fetch("SELECT key FROM contact_attribute_keys WHERE org_id = $1 ORDER BY key", tenant.org_id)
    return [r["key"] for r in rows]


async def test_patch_merges_removes_and_creates_keys(client, tenant, db):
    made = await create_contact(client, tenant.headers, {"email": "ann@x.io", "plan": "pro", "age": 30, "city": "Bern"})
    before = await changes_of(db, tenant)
    resp = await patch(client, tenant.headers, made["id"], {"attributes": {"plan": "team", "city": None, "score": 1.5,
                                                                          "vip": True, "gone": None}})
    assert resp.status == 200
    expected = {"email": "ann@x.io", "plan": "team", "age": 30, "score": 1.5, "vip": True}
    assert await resp.json() == {"data": {"id": made["id"], "attributes": expected, "createdAt": made["createdAt"]}}
    assert await stored(db, made["id"]) == expected
    # keys are created as the bulk upsert creates them: every key named, also the one given as null
    assert await keys_of(db, tenant) == ["age", "city", "email", "gone", "plan", "score", "vip"]
    assert await changes_of(db, tenant) == before + 1  # cached segment counts are known to be stale
    assert await db.fetchval("SELECT updated_at > created_at FROM contacts WHERE id = $1", int(made["id"]))
    # an empty patch changes nothing and answers the contact
    resp = await patch(client, tenant.headers, made["id"], {"attributes": {}})
    assert (resp.status, await resp.json()) == (200, {"data": {"id": made["id"], "attributes": expected,
                                                               "createdAt": made["createdAt"]}})
    # its own email again is no conflict; a new email is taken
    resp = await patch(client, tenant.headers, made["id"], {"attributes": {"email": "ann@x.io"}})
    assert resp.status == 200
    resp = await patch(client, tenant.headers, made["id"], {"attributes": {"email": "ann@y.io"}})
    assert resp.status == 200 and (await resp.json())["data"]["attributes"]["email"] == "ann@y.io"
    assert (await stored(db, made["id"]) or {}).get("email") == "ann@y.io"


async def test_patch_validation_is_422_naming_the_field_and_writes_nothing(client, tenant, db):
    made = await create_contact(client, tenant.headers, {"email": "ann@x.io", "plan": "pro"})
    snapshot = await table_snapshot(db)
    cases = [
        ({}, [{"field": "attributes", "issue": "field required"}]),
        ({"attributes": {"plan": "x"}, "extra": 1}, [{"field": "extra", "issue": "extra fields not permitted"}]),
        ({"attributes": []}, [{"field": "attributes", "issue": "value is not a valid dict"}]),
        ({"attributes": None}, [{"field": "attributes", "issue": "none is not an allowed value"}]),
        ({"attributes": {"1x": "a", "contactId": 5, "ok": {"a": 1}, "long": "x" * 2001}}, [
            {"field": "attributes.1x", "issue": KEY_RULE},
            {"field": "attributes.contactId", "issue": "contactId is reserved for the contact's id"},
            {"field": "attributes.ok", "issue": "value must be a string, a finite number, a boolean or null"},
            {"field": "attributes.long", "issue": "ensure this value has at most 2000 characters"},
        ]),
        # the email cannot be removed or emptied, as on creation
        ({"attributes": {"email": None}}, [{"field": "attributes.email",
                                             "issue": "email must be a non-empty string"}]),
        ({"attributes": {"email": " "}}, [{"field": "attributes.email", "issue": "email must be a non-empty string"}]),
    ]
    for body, details in cases:
        resp = await patch(client, tenant.headers, made["id"], body)
        assert (resp.status, await resp.json()) == (422, error(422, "Unprocessable Entity", details)), body
    resp = await client.patch(f"{CONTACTS}/{made['id']}", data=b"{", headers={**tenant.headers,
                                                                              "Content-Type": "application/json"})
    assert resp.status == 422
    assert await table_snapshot(db) == snapshot


async def test_patch_to_another_contacts_email_is_422_and_writes_nothing(client, tenant, db):
    ann = await create_contact(client, tenant.headers, {"email": "ann@x.io"})
    bob = await create_contact(client, tenant.headers, {"email": "bob@x.io", "plan": "free"})
    snapshot = await table_snapshot(db)
    resp = await patch(client, tenant.headers, bob["id"], {"attributes": {"email": "ann@x.io", "plan": "pro",
                                                                          "newKey": 1}})
    assert resp.status == 422
    assert await resp.json() == error(422, "Unprocessable Entity", [
        {"field": "attributes.email", "issue": "a contact with this email already exists"}])
    # all or nothing: not the plan, not the new key, not the version bump
    assert await table_snapshot(db) == snapshot
    assert (await stored(db, ann["id"]), await stored(db, bob["id"])) == (
        {"email": "ann@x.io"}, {"email": "bob@x.io", "plan": "free"})


async def test_unknown_or_foreign_contact_is_404(client, tenant, make_tenant, db):
    other = await make_tenant(name="other")
    theirs = await create_contact(client, other.headers, {"email": "them@x.io", "plan": "pro"})
    snapshot = await table_snapshot(db)
    not_found = error(404, "Not Found", [{"field": "contactId", "issue": "not found"}])
    for contact_id in (theirs["id"], "999999999", "abc", "0", "-1", "99999999999999999999"):
        resp = await patch(client, tenant.headers, contact_id, {"attributes": {"plan": "x"}})
        assert (resp.status, await resp.json()) == (404, not_found), contact_id
        resp = await client.delete(f"{CONTACTS}/{contact_id}", headers=tenant.headers)
        assert (resp.status, await resp.json()) == (404, not_found), contact_id
    assert await table_snapshot(db) == snapshot  # no version bump for a contact that is not there
    # the scope and query rules of the management API hold
    reader = await make_tenant(scopes=("links:read",))
    assert (await client.delete(f"{CONTACTS}/{theirs['id']}", headers=reader.headers)).status == 403
    resp = await client.delete(f"{CONTACTS}/{theirs['id']}?force=1", headers=other.headers)
    assert resp.status == 422
    assert await stored(db, theirs["id"]) == {"email": "them@x.io", "plan": "pro"}


async def test_concurrent_patches_of_one_contact_all_apply(client, tenant, db):
    made = await create_contact(client, tenant.headers, {"email": "ann@x.io", "drop": "me"})
    n = 30
    bodies = [{"attributes": {f"k{i}": i}} for i in range(n)] + [{"attributes": {"drop": None}}]
    answers = await asyncio.gather(*(patch(client, tenant.headers, made["id"], b) for b in bodies))
    assert [r.status for r in answers] == [200] * (n + 1)
    assert await stored(db, made["id"]) == {"email": "ann@x.io", **{f"k{i}": i for i in range(n)}}


async def test_concurrent_patches_to_one_email_one_wins(client, tenant, db):
    await bulk(client, tenant.headers, [{"email": f"u{i}@x.io"} for i in range(12)])
    ids = [r["id"] for r in await db.fetch("SELECT id FROM contacts WHERE org_id = $1", tenant.org_id)]
    answers = await asyncio.gather(*(patch(client, tenant.headers, i, {"attributes": {"email": "same@x.io"}})
                                     for i in ids))
    assert sorted(r.status for r in answers) == [200] + [422] * 11
    assert await db.fetchval("SELECT count(*) FROM contacts WHERE org_id = $1 AND attributes->>'email' = 'same@x.io'",
                             tenant.org_id) == 1


async def tables_referencing_contacts(db) -> set[tuple[str, str]]:
    """(table, column) of every foreign key to contacts, and every column named contact_id (not org_id,
    which such a key carries too: it names the organisation, not the contact)."""
    rows = await db.fetch(
        "SELECT c.conrelid::regclass::text AS t, a.attname AS col FROM pg_constraint c"
        " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)"
        " WHERE c.contype = 'f' AND c.confrelid = 'contacts'::regclass AND a.attname <> 'org_id'"
        " UNION SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND column_name = 'contact_id'")
    return {(r["t"], r["col"]) for r in rows} | {("contacts", "id")}


async def test_delete_erases_the_contact_everywhere(client, tenant, db):
    freeze(client)
    marker = "erase-me-7f3a"
    survey = await create_survey(client, tenant.headers)
    second = await create_survey(client, tenant.headers)
    keep = await create_contact(client, tenant.headers, {"email": "keep@x.io", "plan": "pro"})
    gone = await create_contact(client, tenant.headers, {"email": f"{marker}@x.io", "plan": "pro",
                                                         "firstName": marker})
    segment = await create_segment(client, tenant.headers, {"attribute": "plan", "op": "equals", "value": "pro"})
    link = await client.get(contact_link_path(survey["id"], gone["id"]), headers=tenant.headers)
    path = (await link.json())["data"]["surveyUrl"].removeprefix("http://links.test")
    assert (await client.get(path)).status == 200
    # its opens, as the open counter writes them, for two surveys; and the other contact's
    for s, c in ((survey, gone), (second, gone), (survey, keep)):
        await db.execute("INSERT INTO contact_opens (survey_id, contact_id, org_id, count, first_at, last_at)"
                         " VALUES ($1, $2, $3, 3, now(), now())", s["id"], int(c["id"]), tenant.org_id)
    assert (await page(client, tenant.headers, survey["id"], segment["id"]))["meta"]["total"] == 2  # cached
    referencing = await tables_referencing_contacts(db)
    assert ("contact_opens", "contact_id") in referencing
    before = await table_snapshot(db)

    resp = await client.delete(f"{CONTACTS}/{gone['id']}", headers=tenant.headers)
    assert (resp.status, await resp.read()) == (204, b"")

    for table, column in referencing:
        assert await db.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = $1", int(gone["id"])) == 0, table
    # no row of any table mentions what the contact was
    for table in TABLES:
        assert await db.fetchval(f"SELECT count(*) FROM {table} r WHERE r::text LIKE $1", f"%{marker}%") == 0, table
    # everything else is as it was, the other contact's opens included
    after = await table_snapshot(db)
    changed = {t for t in TABLES if after[t] != before[t]}
    assert changed == {"contacts", "contact_opens", "contact_changes"}
    assert after["contacts"][0] == before["contacts"][0] - 1
    assert after["contact_opens"][0] == before["contact_opens"][0] - 2
    assert await stored(db, keep["id"]) == {"email": "keep@x.io", "plan": "pro"}
    # its link, its single link and the contact itself are 404 from now on
    assert (await client.get(path)).status == 404
    assert (await client.get(f"{path}/qr.svg")).status == 404
    assert (await client.get(contact_link_path(survey["id"], gone["id"]), headers=tenant.headers)).status == 404
    assert (await client.delete(f"{CONTACTS}/{gone['id']}", headers=tenant.headers)).status == 404
    assert (await patch(client, tenant.headers, gone["id"], {"attributes": {"a": 1}})).status == 404
    # pages leave it out at once; the count follows within MAX_AGE (the clock moved past it here)
    body = await page(client, tenant.headers, survey["id"], segment["id"])
    assert [i["contactId"] for i in body["data"]] == [keep["id"]]
    settle(client)
    body = await page(client, tenant.headers, survey["id"], segment["id"])
    assert (body["meta"]["total"], [i["contactId"] for i in body["data"]]) == (1, [keep["id"]])
    resp = await client.get(f"/api/v2/management/segments/{segment['id']}", headers=tenant.headers)
    assert (await resp.json())["data"]["contactCount"] == 1


async def test_patch_moves_a_contact_in_and_out_of_a_cached_segment(client, tenant, db):
    freeze(client)
    survey = await create_survey(client, tenant.headers)
    await bulk(client, tenant.headers, [{"email": f"u{i}@x.io", "plan": "pro"} for i in range(120)])
    made = await create_contact(client, tenant.headers, {"email": "ann@x.io", "plan": "free"})
    segment = await create_segment(client, tenant.headers, {"attribute": "plan", "op": "equals", "value": "pro"})
    assert (await page(client, tenant.headers, survey["id"], segment["id"], limit=50, skip=50))["meta"]["total"] == 120
    await patch(client, tenant.headers, made["id"], {"attributes": {"plan": "pro"}})
    settle(client)  # counts and page positions follow a write within MAX_AGE
    first = await page(client, tenant.headers, survey["id"], segment["id"], limit=50, skip=0)
    assert first["meta"]["total"] == 121 and first["data"][0]["contactId"] == made["id"]  # the newest contact
    await patch(client, tenant.headers, made["id"], {"attributes": {"plan": None}})
    settle(client)
    first = await page(client, tenant.headers, survey["id"], segment["id"], limit=50, skip=0)
    assert first["meta"]["total"] == 120 and made["id"] not in [i["contactId"] for i in first["data"]]


async def test_opening_while_erasing_is_200_or_404_never_500(client, tenant, db):
    survey = await create_survey(client, tenant.headers)
    await bulk(client, tenant.headers, [{"email": f"u{i}@x.io"} for i in range(10)])
    ids = [str(r["id"]) for r in await db.fetch("SELECT id FROM contacts WHERE org_id = $1", tenant.org_id)]
    paths = []
    for contact_id in ids:
        resp = await client.get(contact_link_path(survey["id"], contact_id), headers=tenant.headers)
        paths.append((await resp.json())["data"]["surveyUrl"].removeprefix("http://links.test"))

    async def opens(path: str) -> list[int]:
        statuses = []
        for _ in range(8):
            statuses.append((await client.get(path)).status)
        return statuses

    opened, deleted = await asyncio.gather(
        asyncio.gather(*[opens(p) for p in paths for _ in range(3)]),
        asyncio.gather(*[client.delete(f"{CONTACTS}/{i}", headers=tenant.headers) for i in ids]))
    statuses = [s for r in opened for s in r]
    assert set(statuses) <= {200, 404} and len(statuses) == len(paths) * 24
    assert [r.status for r in deleted] == [204] * len(ids)
    assert [(await client.get(p)).status for p in paths] == [404] * len(paths)
    assert await db.fetchval("SELECT count(*) FROM contacts WHERE org_id = $1", tenant.org_id) == 0
