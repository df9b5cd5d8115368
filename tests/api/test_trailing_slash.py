"""Every API path (`/api/...`, `/external/...`) answers the same with one trailing slash; the others keep
one spelling. Formbricks publishes an operation with the slash, and FastAPI (Filum) redirects one."""

from __future__ import annotations

import re
import uuid

import pytest

from service.app import API_PREFIXES
from service.web.openapi import routes_of
from tests.contact_helpers import contact_link_path, create_segment, segment_links_path
from tests.helpers import create_metadata_field, create_survey, links_path
from tests.ops.metrics_text import parse_samples
from tests.ops.metrics_text import value as sample

NOWHERE = str(uuid.uuid4())


def _api_routes(app) -> list[tuple[str, str]]:
    routes = [(m, p) for m, p in routes_of(app) if p.startswith(API_PREFIXES)]
    assert len(routes) >= 15  # the whole API, not an empty list that proves nothing
    return routes


async def test_every_api_route_answers_the_same_with_one_trailing_slash(client, tenant):
    """Each route with ids that name nothing and an empty body: the same status and body either way."""
    for method, pattern in _api_routes(client.app):
        path = re.sub(r"\{\w+\}", NOWHERE, pattern)
        answers = []
        for spelling in (path, path + "/"):
            resp = await client.request(method, spelling, headers=tenant.headers,
                                        json={} if method in ("POST", "PUT", "PATCH") else None)
            answers.append((resp.status, await resp.read()))
        assert answers[0] == answers[1], (method, pattern, answers)
        assert answers[0][0] != 404 or b'"field":"path"' not in answers[0][1], (method, pattern)  # a route answered


async def test_real_resources_through_the_slash(client, tenant):
    h = tenant.headers
    survey = await create_survey(client, h)
    resp = await client.get(f"/api/v2/management/surveys/{survey['id']}/", headers=h)
    assert (resp.status, (await resp.json())["data"]) == (200, survey)
    field = await create_metadata_field(client, h, "sku")
    body = {"name": "n", "metadata_mapping": [{"metadata_id": field["id"], "value": "A-1"}]}
    created = await client.post(links_path(survey["id"]) + "/", json=body, headers=h)
    assert created.status == 200 and "Idempotent-Replayed" not in created.headers
    replay = await client.post(links_path(survey["id"]), json=body, headers=h)
    assert replay.headers["Idempotent-Replayed"] == "true" and await replay.json() == await created.json()
    contact = await client.post("/api/v2/management/contacts/", json={"attributes": {"email": "s@x.io"}}, headers=h)
    assert contact.status == 201
    contact_id = (await contact.json())["data"]["id"]
    segment = await create_segment(client, h, {})
    one = await client.get(contact_link_path(survey["id"], contact_id) + "/", headers=h)
    page = await client.get(segment_links_path(survey["id"], segment["id"]) + "/", headers=h)
    assert one.status == page.status == 200
    assert (await page.json())["data"][0]["surveyUrl"] == (await one.json())["data"]["surveyUrl"]
    # one operation, one metric series: the route is named without the slash
    metrics = parse_samples(await (await client.get("/metrics")).text())
    route = "/api/v2/management/surveys/{surveyId}/contact-links/contacts/{contactId}"
    assert sample(metrics, "sls_http_requests_total", method="GET", route=route, status="200") == 1
    assert not [labels for name, labels in metrics if name == "sls_http_requests_total"
                and any(k == "route" and v.endswith("/") and v != "/" for k, v in labels)]


@pytest.mark.parametrize("path", ["/health/", "/ready/", "/openapi.json/", "/docs/", "/c/abc/", "/l/abc/",
                                  "/api/v2/management/surveys//"])
async def test_other_paths_and_two_slashes_keep_one_spelling(client, tenant, path):
    resp = await client.get(path, headers=tenant.headers)
    assert resp.status == 404, path


async def test_the_document_lists_each_operation_once(client):
    document = await (await client.get("/openapi.json")).json()
    assert [p for p in document["paths"] if p.endswith("/")] == []
