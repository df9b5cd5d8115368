"""Every answer of the two contact-links operations, 200s and errors, validated with openapi-core against
Formbricks' published document (`formbricks/openapi.yml`); and what that document and Formbricks' route
code fix besides the schemas: numbers in the query, empty and repeated parameters, unknown ones, the
trailing slash, attributes as strings, `Cache-Control`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest
import requests
from openapi_core import Config, OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

from service.web.jsonio import PERSONAL
from tests.conftest import TEST_KEYS
from tests.contract.conftest import (
    ALL_KEYS,
    AS_TEXT,
    CONTACT_PATH,
    PUBLIC_BASE_URL,
    SEGMENT_PATH,
    UPSTREAM_MESSAGES,
    World,
    as_served,
    document_sha256,
    published,
    recorded_sha256,
)
from tests.faults.conftest import new_tenant

NEWEST_FIRST = ["cy@x.io", "bob@x.io", "ann@x.io"]  # one bulk call: the same created_at, higher id first


@pytest.fixture(scope="module")
def api(world: World) -> OpenAPI:
    """openapi-core on the published document as served here, strict: every property the document lists
    must be in the answer (it marks few `required`), and no property it does not list may be.

    The whole-document check is off: upstream's document has a pattern in another operation
    (`^[\\p{L}\\p{M}\\s'\\d-]+$`, ECMAScript's Unicode classes) that Python's `re` cannot compile, so
    openapi-spec-validator refuses the document; the two operations used here are not affected.
    """
    config = Config(spec_validator_cls=None, response_properties_default_policy="required",
                    additional_properties_default_policy="forbid")
    return OpenAPI.from_dict(as_served(world.base_url), config=config)


def validated(api: OpenAPI, response: requests.Response) -> requests.Response:
    """`response`, after openapi-core found it valid for its operation (found by the request's method and
    path under the document's server).

    Requests are not validated with openapi-core: it cannot read a parameter whose `type` is a list
    (`expirationDays: {type: [number, "null"]}`, OpenAPI 3.1). The generated client and schemathesis
    make the requests the document allows."""
    api.validate_response(RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response))
    return response


def get(world: World, url: str, query: str = "", headers: dict[str, str] | None = None) -> requests.Response:
    """A GET with the query string exactly as given (`limit=50.0&skip=`, repeated names)."""
    return requests.get(f"{url}?{query}" if query else url, headers=world.headers if headers is None else headers,
                        timeout=10)


def claims(url: str) -> dict[str, Any]:
    assert url.startswith(PUBLIC_BASE_URL + "/c/"), url
    return jwt.decode(url.rsplit("/c/", 1)[1], TEST_KEYS[0].secret, algorithms=["HS256"])


def page_ok(api: OpenAPI, world: World, query: str = "", segment: str | None = None) -> dict[str, Any]:
    resp = validated(api, get(world, world.segment_url(segment or world.everyone), query))
    assert resp.status_code == 200, resp.text
    assert resp.headers["Cache-Control"] == PERSONAL["Cache-Control"] == "private, no-store"
    return resp.json()


def error_of(api: OpenAPI, resp: requests.Response, status: int) -> list[dict[str, str]]:
    """The details of an error answer, validated, with the status's fixed message as upstream writes it."""
    validated(api, resp)
    assert resp.status_code == status, resp.text
    body = resp.json()["error"]
    assert (body["code"], body["message"]) == (status, UPSTREAM_MESSAGES[status])
    return body.get("details", [])


def test_the_vendored_document_is_upstreams_unchanged():
    assert document_sha256() == recorded_sha256()
    document = published()
    assert document["servers"][0]["url"] == "https://app.formbricks.com/api/v2"
    assert {op["get"]["operationId"] for path, op in document["paths"].items()
            if path in (SEGMENT_PATH, CONTACT_PATH)} == {"getContactLinksBySegment", "getPersonalizedSurveyLink"}
    # the points this suite rests on, as upstream publishes them
    params = {p["name"]: p["schema"] for p in document["paths"][SEGMENT_PATH]["get"]["parameters"]}
    assert params["limit"]["type"] == "number" and params["limit"]["default"] == 50
    item = document["paths"][SEGMENT_PATH]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert item["properties"]["data"]["items"]["properties"]["attributes"]["additionalProperties"] == {
        "type": "string"}


# -- the segment page -------------------------------------------------------------------------------

@pytest.mark.parametrize("query", ["", "limit=50.0&skip=0.0", "limit=50&skip=0", "limit=5e1&skip=0e0",
                                   "limit=&skip=", "skip=&expirationDays=", "limit=1&limit=50",
                                   "utm_source=mail&expirationDay=7&foo"])
def test_a_default_page_in_every_spelling_a_client_sends(api, world, query):
    body = page_ok(api, world, query)
    assert body["meta"] == {"total": 3, "limit": 50, "offset": 0}
    assert [item["contactId"] for item in body["data"]] == [world.contacts[e] for e in NEWEST_FIRST]
    for item in body["data"]:
        assert item["attributes"] == {} and item["expiresAt"] is None
        assert "exp" not in claims(item["surveyUrl"])


def test_attributes_are_strings_as_the_published_schema_says(api, world):
    body = page_ok(api, world, f"attributeKeys={ALL_KEYS},unknown")
    by_email = {item["attributes"]["email"]: item["attributes"] for item in body["data"]}
    assert by_email == AS_TEXT
    assert all(isinstance(v, str) for attrs in by_email.values() for v in attrs.values())


def test_the_management_api_keeps_attribute_values_typed(world):
    # in the other organisation, so that this contact is in none of the pages above
    resp = requests.post(f"{world.base_url}/api/v2/management/contacts", headers={"x-api-key": world.other_key},
                         json={"attributes": {"email": "typed@x.io", "age": 42, "vip": True, "score": 1.5}}, timeout=10)
    assert resp.status_code == 201, resp.text
    assert resp.json()["data"]["attributes"] == {"email": "typed@x.io", "age": 42, "vip": True, "score": 1.5}


@pytest.mark.parametrize("query", ["expirationDays=7.0", "expirationDays=7", "expirationDays=7&expirationDays=7.0"])
def test_expiration_days_as_a_number(api, world, query):
    body = page_ok(api, world, query)
    [exp] = {claims(item["surveyUrl"])["exp"] for item in body["data"]}  # one instant per request
    assert {item["expiresAt"] for item in body["data"]} == {
        datetime.fromtimestamp(exp, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")}


@pytest.mark.parametrize(("query", "emails", "limit", "offset"), [
    ("limit=1.0&skip=1.0", ["bob@x.io"], 1, 1),
    ("limit=2&skip=2", ["ann@x.io"], 2, 2),
    ("limit=250.00&skip=3", [], 250, 3),
    ("limit=9&limit=1", ["cy@x.io"], 1, 0),  # the last of a repeated parameter
    ("skip=2&skip=", NEWEST_FIRST, 50, 0),  # the last is empty: the default
])
def test_paging_with_numbers(api, world, query, emails, limit, offset):
    body = page_ok(api, world, query)
    assert body["meta"] == {"total": 3, "limit": limit, "offset": offset}
    assert [item["contactId"] for item in body["data"]] == [world.contacts[e] for e in emails]


def test_a_segment_page_of_nobody_and_one_of_some(api, world):
    assert page_ok(api, world, segment=world.nobody) == {"data": [], "meta": {"total": 0, "limit": 50, "offset": 0}}
    body = page_ok(api, world, "attributeKeys=plan", segment=world.pro)
    assert body["meta"]["total"] == 2 and {i["attributes"]["plan"] for i in body["data"]} == {"pro"}


@pytest.mark.parametrize(("query", "field", "issue"), [
    ("limit=1.5", "limit", "value is not a valid integer"),
    ("limit=abc", "limit", "value is not a valid integer"),
    ("limit=0", "limit", "ensure this value is greater than or equal to 1"),
    ("limit=251", "limit", "ensure this value is less than or equal to 250"),
    ("limit=NaN", "limit", "value is not a valid integer"),
    ("skip=-1", "skip", "ensure this value is greater than or equal to 0"),
    ("skip=0.5", "skip", "value is not a valid integer"),
    ("expirationDays=0", "expirationDays", "ensure this value is greater than or equal to 1"),
    ("expirationDays=366.0", "expirationDays", "ensure this value is less than or equal to 365"),
    ("expirationDays=7.5", "expirationDays", "value is not a valid integer"),
    ("limit=5&limit=1.5", "limit", "value is not a valid integer"),
])
def test_invalid_numbers_are_422_naming_the_parameter(api, world, query, field, issue):
    assert error_of(api, get(world, world.segment_url(world.everyone), query), 422) == [
        {"field": field, "issue": issue}]


def test_every_error_of_the_page(api, world):
    url = world.segment_url
    missing = "00000000-0000-4000-8000-000000000000"
    assert error_of(api, get(world, url(world.everyone, survey=missing)), 404) == [
        {"field": "surveyId", "issue": "not found"}]  # upstream: 500 (a deliberate difference, README)
    assert error_of(api, get(world, url(missing)), 404) == [{"field": "segmentId", "issue": "not found"}]
    assert error_of(api, get(world, url(world.other_segment)), 404) == [{"field": "segmentId", "issue": "not found"}]
    assert error_of(api, get(world, url("not-a-uuid")), 404) == [{"field": "segmentId", "issue": "not found"}]
    assert error_of(api, get(world, url(world.everyone, survey=world.paused)), 403) == [
        {"field": "surveyId", "issue": "survey is not in progress (status: paused)"}]
    error_of(api, get(world, url(world.everyone), headers={}), 401)
    error_of(api, get(world, url(world.everyone), headers={"x-api-key": "nope"}), 401)
    error_of(api, get(world, url(world.everyone), headers={"x-api-key": world.no_read_key}), 403)


# -- the single contact ---------------------------------------------------------------------------

@pytest.mark.parametrize(("query", "days"), [("", None), ("expirationDays=7", 7), ("expirationDays=7.0", 7),
                                              ("expirationDays=", None), ("expirationDays=1&expirationDays=30", 30),
                                              ("ref=crm&expirationDays=2", 2)])
def test_a_single_contact_link(api, world, query, days):
    contact = world.contacts["bob@x.io"]
    # `7.0` is outside this operation's published `integer`, but a client may reuse the page's float
    resp = validated(api, get(world, world.contact_url(contact), query))
    assert resp.status_code == 200, resp.text
    assert resp.headers["Cache-Control"] == "private, no-store"
    data = resp.json()["data"]
    token = claims(data["surveyUrl"])
    assert token["c"] == int(contact)
    assert ("exp" in token) == (days is not None) and (data["expiresAt"] is None) == (days is None)


def test_every_error_of_the_single_contact(api, world):
    url, bob = world.contact_url, world.contacts["bob@x.io"]
    missing = "00000000-0000-4000-8000-000000000000"
    assert error_of(api, get(world, url(bob, survey=missing)), 404) == [{"field": "surveyId", "issue": "not found"}]
    for contact in ("999999999", world.other_contact, "abc", "-1"):
        assert error_of(api, get(world, url(contact)), 404) == [{"field": "contactId", "issue": "not found"}]
    assert error_of(api, get(world, url(bob, survey=world.paused)), 403) == [
        {"field": "surveyId", "issue": "survey is not in progress (status: paused)"}]
    for query, issue in (("expirationDays=abc", "value is not a valid integer"),
                         ("expirationDays=0.0", "ensure this value is greater than or equal to 1"),
                         ("expirationDays=1.25", "value is not a valid integer")):
        assert error_of(api, get(world, url(bob), query), 422) == [{"field": "expirationDays", "issue": issue}]
    error_of(api, get(world, url(bob), headers={}), 401)
    error_of(api, get(world, url(bob), headers={"x-api-key": world.no_read_key}), 403)


def test_rate_limited_answers_of_both_operations(api, world):
    limited = asyncio.run(new_tenant(world.database_url, rate_limit="1/hour"))
    headers = {"x-api-key": limited.key}
    # the one token goes to the first call (another organisation's survey: a 404), then both are 429
    error_of(api, get(world, world.segment_url(world.everyone), headers=headers), 404)
    for url in (world.segment_url(world.everyone), world.contact_url(world.contacts["ann@x.io"])):
        resp = get(world, url, headers=headers)
        error_of(api, resp, 429)
        assert int(resp.headers["Retry-After"]) >= 1


# -- the same with or without one trailing slash --------------------------------------------------

def test_both_operations_answer_the_same_with_or_without_the_trailing_slash(api, world):
    contact = world.contact_url(world.contacts["ann@x.io"])
    assert contact.endswith("/")
    with_slash, without = get(world, contact), get(world, contact[:-1])
    assert (with_slash.status_code, with_slash.json()) == (without.status_code, without.json()) == (
        200, with_slash.json())
    page = world.segment_url(world.everyone)
    query = f"attributeKeys={ALL_KEYS}"
    with_slash, without = get(world, page + "/", query), get(world, page, query)
    assert with_slash.status_code == without.status_code == 200 and with_slash.json() == without.json()
    assert with_slash.headers["Cache-Control"] == "private, no-store"
    # errors too, and never two slashes
    for path in (contact.replace(world.survey, "00000000-0000-4000-8000-000000000000"), contact + "/"):
        resp = get(world, path)
        assert resp.status_code == 404, path
