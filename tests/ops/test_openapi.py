"""/openapi.json documents every route from the validating schemas, and /docs works offline."""

from __future__ import annotations

import re

import pytest
from aiohttp import web
from marshmallow import Schema
from openapi_spec_validator import validate

from service.app import create_app
from service.settings import Settings
from service.web.link_query import QUERY_INTEGERS
from service.web.openapi import build_document, routes_of
from service.web.operations import OPERATIONS
from tests.conftest import TEST_KEYS

LINKS = "/api/v2/management/surveys/{surveyId}/contact-links/segments/{segmentId}"


def _app() -> web.Application:
    """The whole app, never started: routes only."""
    return create_app(Settings(database_url="postgresql://unused", redis_url="redis://unused",
                               signing_keys=TEST_KEYS))


def undocumented(app: web.Application, document: dict) -> list[tuple[str, str]]:
    """Routes of `app` (method, pattern) that the document lacks."""
    return [(m, p) for m, p in routes_of(app) if m.lower() not in document["paths"].get(p, {})]


def test_every_route_is_documented_and_every_operation_is_a_route():
    app = _app()
    document = build_document(app)
    assert undocumented(app, document) == []
    assert sorted(OPERATIONS) == sorted(routes_of(app))  # no stale entry either


def test_a_route_added_without_documentation_is_caught():
    app = _app()

    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/undocumented/{id}", handler)
    app.router.add_post("/health", handler)
    assert undocumented(app, build_document(app)) == [("GET", "/undocumented/{id}"), ("POST", "/health")]


def test_document_is_valid_openapi_3():
    document = build_document(_app())
    assert document["openapi"] == "3.0.3"
    validate(document)
    ids = [op["operationId"] for ops in document["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)) == len(OPERATIONS)
    for ops in document["paths"].values():
        for op in ops.values():
            assert op["summary"] and op["responses"]
            for response in op["responses"].values():
                assert response["headers"]["X-Request-Id"] == {"$ref": "#/components/headers/X-Request-Id"}


def _component(document: dict, ref: str) -> dict:
    return document["components"]["schemas"][ref.rsplit("/", 1)[1]]


def _request_schemas() -> list[tuple[tuple[str, str], type[Schema]]]:
    return [(key, op["requestBody"]["content"]["application/json"]["schema"])
            for key, op in OPERATIONS.items() if "requestBody" in op]


@pytest.mark.parametrize(("route", "schema"), _request_schemas(), ids=lambda v: getattr(v, "__name__", None))
def test_request_bodies_are_the_validating_schemas(route, schema):
    document = build_document(_app())
    ref = document["paths"][route[1]][route[0].lower()]["requestBody"]["content"]["application/json"]["schema"]
    component = _component(document, ref["$ref"])
    loaded = schema()
    assert set(component["properties"]) == {f.data_key or name for name, f in loaded.load_fields.items()}
    assert set(component.get("required", [])) == {f.data_key or n for n, f in loaded.load_fields.items()
                                                  if f.required}


def test_constraints_come_from_the_fields():
    document = build_document(_app())
    schemas = document["components"]["schemas"]
    assert schemas["CreateLink"]["properties"]["name"] == {"type": "string", "minLength": 1, "maxLength": 255}
    assert schemas["CreateLink"]["properties"]["metadata_mapping"]["maxItems"] == 200
    assert schemas["MetadataAssociation"]["properties"]["metadata_id"]["minimum"] == 1
    value = schemas["MetadataAssociation"]["properties"]["value"]
    assert value["nullable"] is True and [s.get("type") for s in value["oneOf"]] == ["string", "number", "array"]
    assert schemas["SurveyCreate"]["properties"]["status"]["enum"] == ["draft", "inProgress", "paused", "completed"]
    assert schemas["SurveyCreate"]["additionalProperties"] is False
    assert schemas["BulkContacts"]["properties"]["contacts"]["maxItems"] == 10_000
    assert schemas["SegmentCreate"]["properties"]["filters"] == {"allOf": [{"$ref": "#/components/schemas/"
                                                                                    "SegmentFilter"}]}


def test_contact_links_query_parameters_follow_the_validation_table():
    document = build_document(_app())
    params = {p["name"]: p for p in document["paths"][LINKS]["get"]["parameters"]}
    assert set(params) == {"surveyId", "segmentId", "limit", "skip", "expirationDays", "attributeKeys", "opened"}
    assert (params["opened"]["in"], params["opened"]["schema"]) == ("query", {"type": "boolean"})
    for name, (low, high, default) in QUERY_INTEGERS.items():
        schema = params[name]["schema"]
        assert (params[name]["in"], schema["minimum"], schema["maximum"], schema.get("default")) == (
            "query", low, high, default)
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 250, "default": 50}
    assert params["attributeKeys"]["schema"]["maxItems"] == 20
    assert params["surveyId"]["in"] == "path" and params["surveyId"]["schema"]["format"] == "uuid"


def test_link_answers_are_documented_as_formbricks_has_them():
    """Attribute values as text, and `Cache-Control` on every answer that carries links."""
    document = build_document(_app())
    attributes = document["components"]["schemas"]["ContactLinkItem"]["properties"]["attributes"]
    assert attributes["additionalProperties"] == {"type": "string"}
    assert document["components"]["headers"]["Cache-Control"]["schema"]["enum"] == ["private, no-store"]
    carrying = [(LINKS, "get"), (LINKS.replace("segments/{segmentId}", "contacts/{contactId}"), "get"),
                (LINKS + "/export", "get"), ("/external/survey-campaigns/{survey_campaign_id}/links", "post")]
    for path, method in carrying:
        assert document["paths"][path][method]["responses"]["200"]["headers"]["Cache-Control"] == {
            "$ref": "#/components/headers/Cache-Control"}, path


async def test_openapi_json_is_served(client):
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert "X-Request-Id" in resp.headers
    assert await resp.json() == build_document(client.app)


async def test_docs_page_and_its_assets_are_served_by_the_service(client):
    resp = await client.get("/docs")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'; script-src 'self'" in resp.headers["Content-Security-Policy"]
    page = await resp.text()
    assert not re.search(r"(?:https?:)?//", page)  # nothing from another origin, no CDN
    assets = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert assets == ["docs/swagger-ui.css", "docs/docs.css", "openapi.json", "docs/swagger-ui-bundle.js",
                      "docs/docs.js"]
    for asset in assets:
        served = await client.get("/" + asset)
        assert served.status == 200, asset
        assert len(await served.read()) > 20
    bundle = await (await client.get("/docs/swagger-ui-bundle.js")).text()
    assert "SwaggerUIBundle" in bundle
    init = await (await client.get("/docs/docs.js")).text()
    assert 'url: "openapi.json"' in init and "validatorUrl: null" in init  # no call to a public validator


@pytest.mark.parametrize("asset", ["nothing.js", "..%2Fdocs.html", "swagger-ui.js.map", "index.html"])
async def test_docs_serves_only_its_assets(client, asset):
    resp = await client.get(f"/docs/{asset}")
    assert resp.status == 404
    assert await resp.json() == {"error": {"code": 404, "message": "Not Found",
                                           "details": [{"field": "asset", "issue": "not found"}]}}
