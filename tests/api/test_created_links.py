"""Created links in the management API: one, a page at a time with an opaque cursor, opens, errors."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from service.core.cursors import CursorCodec
from tests.conftest import TEST_KEYS
from tests.contact_helpers import error
from tests.helpers import create_metadata_field, create_survey, links_path

SURVEYS = "/api/v2/management/surveys"


def created_links(survey_id: str) -> str:
    return f"{SURVEYS}/{survey_id}/links"


async def create_link(client, tenant, survey_id: str, mapping: list[dict], name: str = "n") -> dict:
    resp = await client.post(links_path(survey_id), json={"name": name, "metadata_mapping": mapping},
                             headers=tenant.headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


@pytest.fixture
async def survey(client, tenant):
    return await create_survey(client, tenant.headers)


@pytest.fixture
async def field(client, tenant):
    return await create_metadata_field(client, tenant.headers, f"order-{uuid.uuid4().hex[:6]}", "order")


def expected(filum: dict, field: dict, revoked_at=None, opens=(0, None, None)) -> dict:
    """The management answer for a link, from its Filum answer."""
    return {
        "id": filum["id"], "publicId": filum["public_id"], "name": filum["name"],
        "metadataMapping": [{"metadata": {"id": field["id"], "name": field["name"], "variable": field["variable"]},
                             "value": item["value"]} for item in filum["metadata_mapping"]],
        "surveyUrl": filum["survey_url"], "createdAt": filum["created"], "revokedAt": revoked_at,
        "opens": {"count": opens[0], "firstAt": opens[1], "lastAt": opens[2]},
    }


async def test_one_link_with_its_opens(client, tenant, survey, field, db):
    filum = await create_link(client, tenant, survey["id"], [{"metadata_id": field["id"], "value": ["a", 1.5]}])
    resp = await client.get(f"{created_links(survey['id'])}/{filum['id']}", headers=tenant.headers)
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "private, no-store"
    assert await resp.json() == {"data": expected(filum, field)}
    # opens as the open counter writes them (table link_opens)
    first, last = datetime(2026, 1, 2, 3, 4, 5, 678000, UTC), datetime(2026, 2, 3, 4, 5, 6, 789000, UTC)
    await db.execute("INSERT INTO link_opens (link_id, org_id, count, first_at, last_at) VALUES ($1, $2, 7, $3, $4)",
                     filum["id"], tenant.org_id, first, last)
    resp = await client.get(f"{created_links(survey['id'])}/{filum['id']}/", headers=tenant.headers)
    assert await resp.json() == {"data": expected(filum, field, opens=(
        7, "2026-01-02T03:04:05.678Z", "2026-02-03T04:05:06.789Z"))}


async def test_a_link_without_mapping(client, tenant, survey):
    filum = await create_link(client, tenant, survey["id"], [])
    resp = await client.get(f"{created_links(survey['id'])}/{filum['id']}", headers=tenant.headers)
    assert (await resp.json())["data"]["metadataMapping"] == []


async def test_pages_every_link_exactly_once_while_links_are_added(client, tenant, survey, field):
    made = [await create_link(client, tenant, survey["id"], [{"metadata_id": field["id"], "value": i}])
            for i in range(7)]
    seen: list[int] = []
    cursor, pages = None, 0
    while True:
        params = {"limit": 3} if cursor is None else {"limit": "3.0", "cursor": cursor}
        resp = await client.get(created_links(survey["id"]), params=params, headers=tenant.headers)
        assert resp.status == 200, await resp.text()
        assert resp.headers["Cache-Control"] == "private, no-store"
        body = await resp.json()
        assert set(body) == {"data", "meta"} and set(body["meta"]) == {"nextCursor"}
        seen += [item["id"] for item in body["data"]]
        pages += 1
        # links made between pages are newer than the cursor: later pages never show them
        await create_link(client, tenant, survey["id"], [{"metadata_id": field["id"], "value": f"new {pages}"}])
        cursor = body["meta"]["nextCursor"]
        if cursor is None:
            break
    assert seen == sorted((link["id"] for link in made), reverse=True)  # newest first, each once
    assert pages == 3  # 3 + 3 + 1
    # the first page now starts with the newest link
    resp = await client.get(created_links(survey["id"]), headers=tenant.headers)
    body = await resp.json()
    assert len(body["data"]) == 10 and body["meta"] == {"nextCursor": None}  # default limit 50
    assert body["data"][0]["name"] == "n" and body["data"][0]["metadataMapping"][0]["value"] == "new 3"


async def test_a_full_last_page_ends_with_a_null_cursor_after_it(client, tenant, survey, field):
    for i in range(2):
        await create_link(client, tenant, survey["id"], [{"metadata_id": field["id"], "value": i}])
    resp = await client.get(created_links(survey["id"]), params={"limit": 2}, headers=tenant.headers)
    assert (await resp.json())["meta"] == {"nextCursor": None}
    resp = await client.get(created_links(survey["id"]), params={"limit": 1}, headers=tenant.headers)
    cursor = (await resp.json())["meta"]["nextCursor"]
    resp = await client.get(created_links(survey["id"]), params={"limit": 1, "cursor": cursor}, headers=tenant.headers)
    body = await resp.json()
    assert len(body["data"]) == 1 and body["meta"] == {"nextCursor": None}


async def test_an_empty_survey_is_an_empty_page(client, tenant, survey):
    resp = await client.get(created_links(survey["id"]), headers=tenant.headers)
    assert (resp.status, await resp.json()) == (200, {"data": [], "meta": {"nextCursor": None}})


async def test_a_page_holds_only_its_surveys_links(client, tenant, survey, field):
    other = await create_survey(client, tenant.headers)
    mine = await create_link(client, tenant, survey["id"], [{"metadata_id": field["id"], "value": 1}])
    await create_link(client, tenant, other["id"], [{"metadata_id": field["id"], "value": 1}])
    resp = await client.get(created_links(survey["id"]), headers=tenant.headers)
    assert [item["id"] for item in (await resp.json())["data"]] == [mine["id"]]


BAD_CURSOR = {"field": "cursor", "issue": "invalid cursor: pass the nextCursor of this list as it was answered"}


async def test_a_tampered_or_foreign_cursor_is_422(client, tenant, survey, field):
    other = await create_survey(client, tenant.headers)
    for target in (survey, other):
        for i in range(2):
            await create_link(client, tenant, target["id"], [{"metadata_id": field["id"], "value": i}])
    resp = await client.get(created_links(other["id"]), params={"limit": 1}, headers=tenant.headers)
    foreign = (await resp.json())["meta"]["nextCursor"]
    resp = await client.get(created_links(survey["id"]), params={"limit": 1}, headers=tenant.headers)
    cursor = (await resp.json())["meta"]["nextCursor"]
    head, _, mac = cursor.partition(".")
    other_position = CursorCodec(TEST_KEYS).encode(f"links:{survey['id']}", tenant.org_id, [10**6])
    forged = other_position.partition(".")[0] + "." + mac
    for bad in (foreign, forged, head, cursor + "x", "x" * 65, "é.é", "MA.AAAAAAAAAAAAAAAA"):
        resp = await client.get(created_links(survey["id"]), params={"cursor": bad}, headers=tenant.headers)
        assert (resp.status, await resp.json()) == (422, error(422, "Unprocessable Entity", [BAD_CURSOR])), bad


async def test_a_signed_cursor_of_another_organisation_or_shape_is_422(client, tenant, survey, field):
    """The list's cursors are the lists' codec's (core/cursors.py): bound to the organisation too, and a
    signed position that is not one link id is refused all the same."""
    for i in range(2):
        await create_link(client, tenant, survey["id"], [{"metadata_id": field["id"], "value": i}])
    codec, kind = CursorCodec(TEST_KEYS), f"links:{survey['id']}"
    resp = await client.get(created_links(survey["id"]), headers=tenant.headers)
    first, second = [link["id"] for link in (await resp.json())["data"]]
    ours = codec.encode(kind, tenant.org_id, [first])
    resp = await client.get(created_links(survey["id"]), params={"cursor": ours}, headers=tenant.headers)
    assert resp.status == 200 and [link["id"] for link in (await resp.json())["data"]] == [second]
    for bad in (codec.encode(kind, uuid.uuid4(), [first]), codec.encode(kind, tenant.org_id, [first, 1]),
                codec.encode(kind, tenant.org_id, [str(first)]), codec.encode(kind, tenant.org_id, [0]),
                codec.encode(kind, tenant.org_id, [])):
        resp = await client.get(created_links(survey["id"]), params={"cursor": bad}, headers=tenant.headers)
        assert (resp.status, await resp.json()) == (422, error(422, "Unprocessable Entity", [BAD_CURSOR])), bad


async def test_query_errors_name_each_parameter(client, tenant, survey):
    resp = await client.get(created_links(survey["id"]), params={"limit": "251", "cursor": "nope", "skip": "1"},
                            headers=tenant.headers)
    assert resp.status == 422
    assert await resp.json() == error(422, "Unprocessable Entity", [
        {"field": "skip", "issue": "unknown query parameter; accepted: limit, cursor"},
        {"field": "limit", "issue": "ensure this value is less than or equal to 250"},
        BAD_CURSOR,
    ])
    for limit in ("0", "1.5", "abc"):
        resp = await client.get(created_links(survey["id"]), params={"limit": limit}, headers=tenant.headers)
        assert resp.status == 422 and (await resp.json())["error"]["details"][0]["field"] == "limit"


async def test_other_organisations_links_and_unknown_ids_are_404(client, tenant, make_tenant, survey, field):
    link = await create_link(client, tenant, survey["id"], [{"metadata_id": field["id"], "value": 1}])
    other_survey = await create_survey(client, tenant.headers)
    stranger = await make_tenant()
    survey_404 = error(404, "Not Found", [{"field": "surveyId", "issue": "not found"}])
    link_404 = error(404, "Not Found", [{"field": "linkId", "issue": "not found"}])
    cases = [
        (stranger, created_links(survey["id"]), survey_404),
        (tenant, created_links(str(uuid.uuid4())), survey_404),
        (tenant, created_links("not-a-uuid"), survey_404),
        (stranger, f"{created_links(survey['id'])}/{link['id']}", link_404),
        (tenant, f"{created_links(other_survey['id'])}/{link['id']}", link_404),  # another survey's link
        (tenant, f"{created_links(survey['id'])}/{link['id'] + 1000}", link_404),
        (tenant, f"{created_links(survey['id'])}/abc", link_404),
        (tenant, f"{created_links(survey['id'])}/0", link_404),
        (tenant, f"{created_links(survey['id'])}/99999999999999999999", link_404),
    ]
    for who, path, body in cases:
        for method in ("GET", "DELETE"):
            if method == "DELETE" and path.endswith("/links"):
                continue
            resp = await client.request(method, path, headers=who.headers)
            assert (resp.status, await resp.json()) == (404, body), (method, path)


async def test_the_scope_is_manage(client, make_tenant, tenant, survey, field):
    link = await create_link(client, tenant, survey["id"], [{"metadata_id": field["id"], "value": 1}])
    reader = await make_tenant(scopes=("links:read", "links:write"))  # the scope is checked before any lookup
    forbidden = error(403, "Forbidden", [{"field": "scope", "issue": "this key lacks the manage scope"}])
    for method, path in (("GET", created_links(survey["id"])), ("GET", f"{created_links(survey['id'])}/{link['id']}"),
                         ("DELETE", f"{created_links(survey['id'])}/{link['id']}"),
                         ("POST", f"{SURVEYS}/{survey['id']}/contact-links/revoke")):
        resp = await client.request(method, path, headers=reader.headers)
        assert (resp.status, await resp.json()) == (403, forbidden), (method, path)


async def test_listing_while_links_are_created_concurrently(client, tenant, survey, field):
    """Links created while a cursor walks the list: the walk answers the links that existed before it
    started, each once; none twice."""
    before = [await create_link(client, tenant, survey["id"], [{"metadata_id": field["id"], "value": f"b{i}"}])
              for i in range(30)]

    async def walk() -> list[int]:
        ids, cursor = [], None
        while True:
            params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
            body = await (await client.get(created_links(survey["id"]), params=params, headers=tenant.headers)).json()
            ids += [item["id"] for item in body["data"]]
            cursor = body["meta"]["nextCursor"]
            if cursor is None:
                return ids

    creates = [create_link(client, tenant, survey["id"], [{"metadata_id": field["id"], "value": f"d{i}"}])
               for i in range(20)]
    ids, *_ = await asyncio.gather(walk(), *creates)
    assert len(ids) == len(set(ids))
    assert {link["id"] for link in before} <= set(ids)
