"""Management API for surveys and metadata fields: Formbricks-style bodies, isolation, scopes."""

from __future__ import annotations

import uuid

from tests.helpers import create_metadata_field, create_survey

SURVEYS = "/api/v2/management/surveys"
FIELDS = "/api/v2/management/metadata-fields"


def error(code, message, details=()):
    return {"error": {"code": code, "message": message, "details": list(details)}}


async def test_create_survey_defaults_and_get(client, tenant, db):
    resp = await client.post(SURVEYS, json={"name": " NPS "}, headers=tenant.headers)
    assert resp.status == 201
    data = (await resp.json())["data"]
    assert {k: data[k] for k in ("name", "type", "status", "linkQuota", "redirectUrl", "linkCount")} == {
        "name": "NPS", "type": "link", "status": "inProgress", "linkQuota": None, "redirectUrl": None, "linkCount": 0}
    assert data["createdAt"] == data["updatedAt"]
    got = await client.get(f"{SURVEYS}/{data['id']}", headers=tenant.headers)
    assert got.status == 200 and (await got.json())["data"] == data
    assert await db.fetchval("SELECT org_id FROM surveys WHERE id = $1", uuid.UUID(data["id"])) == tenant.org_id


async def test_patch_survey(client, tenant):
    survey = await create_survey(client, tenant.headers)
    resp = await client.patch(f"{SURVEYS}/{survey['id']}", headers=tenant.headers,
                              json={"status": "paused", "linkQuota": 7, "redirectUrl": "https://example.com/s?x=1"})
    assert resp.status == 200
    data = (await resp.json())["data"]
    assert (data["status"], data["linkQuota"], data["redirectUrl"]) == ("paused", 7, "https://example.com/s?x=1")
    assert data["name"] == survey["name"] and data["updatedAt"] >= survey["updatedAt"]
    resp = await client.patch(f"{SURVEYS}/{survey['id']}", headers=tenant.headers, json={"linkQuota": None})
    assert (await resp.json())["data"]["linkQuota"] is None


async def test_survey_validation_names_each_field(client, tenant, db):
    before = await db.fetchval("SELECT count(*) FROM surveys")
    resp = await client.post(SURVEYS, headers=tenant.headers,
                             json={"status": "live", "linkQuota": -1, "redirectUrl": "ftp://x", "colour": "red"})
    assert resp.status == 422
    assert await resp.json() == error(422, "Unprocessable Entity", [
        {"field": "name", "issue": "field required"},
        {"field": "status", "issue": "value is not a valid enumeration member; permitted: 'draft', 'inProgress', "
                                     "'paused', 'completed'"},
        {"field": "linkQuota", "issue": "ensure this value is greater than or equal to 0"},
        {"field": "redirectUrl", "issue": "invalid or missing URL scheme (http or https)"},
        {"field": "colour", "issue": "extra fields not permitted"},
    ])
    resp = await client.patch(f"{SURVEYS}/{uuid.uuid4()}", headers=tenant.headers, json={"name": None})
    assert resp.status == 422
    assert (await resp.json())["error"]["details"] == [{"field": "name", "issue": "none is not an allowed value"}]
    assert await db.fetchval("SELECT count(*) FROM surveys") == before


async def test_surveys_of_other_organisations_do_not_exist(client, tenant, make_tenant):
    survey = await create_survey(client, tenant.headers)
    other = await make_tenant()
    not_found = error(404, "Not Found", [{"field": "surveyId", "issue": "not found"}])
    for path in (f"{SURVEYS}/{survey['id']}", f"{SURVEYS}/{uuid.uuid4()}", f"{SURVEYS}/1%27%20OR%201=1"):
        resp = await client.get(path, headers=other.headers)
        assert resp.status == 404 and await resp.json() == not_found
    resp = await client.patch(f"{SURVEYS}/{survey['id']}", headers=other.headers, json={"name": "mine"})
    assert resp.status == 404 and await resp.json() == not_found
    assert (await (await client.get(f"{SURVEYS}/{survey['id']}", headers=tenant.headers)).json())["data"][
        "name"] == survey["name"]


async def test_auth_and_scope_errors(client, make_tenant):
    writer = await make_tenant(scopes=("links:write",))
    resp = await client.post(SURVEYS, json={"name": "x"}, headers=writer.headers)
    assert resp.status == 403
    assert await resp.json() == error(403, "Forbidden", [
        {"field": "scope", "issue": "this key lacks the manage scope"}])
    resp = await client.get(FIELDS)
    assert resp.status == 401
    assert await resp.json() == error(401, "Unauthorized", [
        {"field": "x-api-key", "issue": "missing, unknown or revoked API key"}])


async def test_metadata_fields(client, tenant, make_tenant):
    sku = await create_metadata_field(client, tenant.headers, "SKU Number")
    assert sku["variable"] == "SKU Number" and isinstance(sku["id"], int)
    date = await create_metadata_field(client, tenant.headers, "Date", "date")
    resp = await client.post(FIELDS, json={"name": "Other", "variable": "date"}, headers=tenant.headers)
    assert resp.status == 422
    assert (await resp.json())["error"]["details"] == [{"field": "variable", "issue": "variable 'date' already exists"}]
    listed = await client.get(FIELDS, headers=tenant.headers)
    assert (await listed.json()) == {"data": [sku, date]}
    other = await make_tenant()
    assert await (await client.get(FIELDS, headers=other.headers)).json() == {"data": []}
    # the same variable in another organisation is fine
    await create_metadata_field(client, other.headers, "Date", "date")


async def test_unknown_routes_and_methods(client, tenant):
    resp = await client.get("/api/v2/management/nothing", headers=tenant.headers)
    assert resp.status == 404 and (await resp.json())["error"]["code"] == 404
    resp = await client.delete(SURVEYS, headers=tenant.headers)
    assert resp.status == 405 and (await resp.json())["error"]["code"] == 405
    resp = await client.get("/external/nothing")
    assert resp.status == 404 and await resp.json() == {"detail": "Not Found"}
