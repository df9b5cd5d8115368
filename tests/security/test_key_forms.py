"""The forms an API key arrives in, on every endpoint that takes one: 5,000-character keys (as
`x-api-key` and as a Bearer token) are a 401 in the path's family body with nothing written, raw header
bytes no HTTP client library would send (invalid UTF-8, encoded surrogates) in the key are a 401 in
JSON too, and a valid key given as `Authorization: Bearer <key>` (any case of the scheme, spaces around
the key) is the same caller as `x-api-key: <key>`: each endpoint gives every form its one exact answer,
on the organisation's own data.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

from tests.conftest import TEST_KEYS
from tests.contact_helpers import contact_link_path, error, segment_links_path
from tests.helpers import JSON, links_path, table_snapshot
from tests.security.conftest import M, World, family_error, send


def _authenticated(world: World) -> list[tuple[str, str]]:
    """Every endpoint that takes an API key."""
    return [
        ("POST", links_path(world.survey_id)),
        ("POST", f"{M}/surveys"), ("GET", f"{M}/surveys/{world.survey_id}"),
        ("PATCH", f"{M}/surveys/{world.survey_id}"),
        ("POST", f"{M}/metadata-fields"), ("GET", f"{M}/metadata-fields"),
        ("POST", f"{M}/contact-attribute-keys"), ("GET", f"{M}/contact-attribute-keys"),
        ("POST", f"{M}/contacts"), ("PUT", f"{M}/contacts/bulk"),
        ("POST", f"{M}/segments"), ("GET", f"{M}/segments/{world.segment_id}"),
        ("GET", segment_links_path(world.survey_id, world.segment_id)),
        ("GET", segment_links_path(world.survey_id, world.segment_id) + "/export"),
        ("GET", contact_link_path(world.survey_id, world.contact_id)),
    ]


FILUM_401 = {"detail": "Invalid or missing token"}
FORMBRICKS_401 = error(401, "Unauthorized", [{"field": "x-api-key", "issue": "missing, unknown or revoked API key"}])


async def test_5000_character_api_keys_are_401(client, world, db):
    before = await table_snapshot(db)
    long_keys = ["a" * 5000, "slk_" + "A" * 4996, world.tenant.key + "x" * (5000 - len(world.tenant.key))]
    for method, path in _authenticated(world):
        for key in long_keys:
            for headers in ({"x-api-key": key}, {"Authorization": f"Bearer {key}"}):
                resp = await send(client, method, path, b'{"name": "x"}', {**headers, **JSON})
                status, answer = await family_error(resp)
                expected = FILUM_401 if path.startswith("/external/") else FORMBRICKS_401
                assert (status, answer) == (401, expected), (method, path)
    assert await table_snapshot(db) == before


async def test_raw_header_bytes_in_the_api_key_are_401(client, world):
    """Bytes no HTTP client library would send: invalid UTF-8 and encoded surrogates in the key."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(b"GET /api/v2/management/metadata-fields HTTP/1.1\r\nHost: t\r\n"
                     b"x-api-key: \xff\xfe\xed\xa0\x80slk_\xc0\xaf\r\nConnection: close\r\n\r\n")
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 "), raw[:200]
    assert b"application/json" in head
    assert body.startswith(b'{"error":{"code":401,')


ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _unstamped(value: Any) -> Any:
    """`value` with every timestamp (each checked to be ISO 8601 UTC with milliseconds) as "<ts>"."""
    if isinstance(value, list):
        return [_unstamped(v) for v in value]
    if isinstance(value, dict):
        for stamp in ("created", "updated", "createdAt", "updatedAt"):
            if stamp in value:
                assert isinstance(value[stamp], str) and ISO_MS.match(value[stamp]), value
        return {k: "<ts>" if k in ("created", "updated", "createdAt", "updatedAt") else _unstamped(v)
                for k, v in value.items()}
    return value


async def test_a_valid_key_as_bearer_is_accepted_on_every_endpoint(client, world, db):
    """The 401 tests cover every endpoint; this is the other half: `Authorization: Bearer <key>` (any
    case of the scheme, spaces around the key) is the same caller as `x-api-key: <key>` wherever a
    key is asked for: each endpoint gives the three forms its one exact answer, on A's data.

    Nothing in the answers depends on timing or luck: A's organisation has no rate limit (make_tenant's
    default: no 429, and the management routes do not even ask Redis), PostgreSQL and Redis are up (no
    503), every id is A's (no 404). Every request sends `{"name": "Bearer check <n>"}`; where that is
    not what the endpoint takes, its answer is its exact 422, which a handler gives only after `guarded`
    resolved the key (401) and checked its scope (403).
    """
    key = world.tenant.key
    forms = ({"x-api-key": key}, {"Authorization": f"Bearer {key}"}, {"Authorization": f"bearer   {key}  "})
    names = [f"Bearer check {n}" for n in range(len(forms))]
    before = await table_snapshot(db)
    answers: dict[tuple[str, str], list[tuple[int, str | None, str, Any]]] = {}
    for method, path in _authenticated(world):
        answers[(method, path)] = []
        for name, headers in zip(names, forms, strict=True):
            resp = await send(client, method, path, b'{"name": "%s"}' % name.encode(), {**headers, **JSON})
            body = await resp.read()
            ctype = resp.headers["Content-Type"].partition(";")[0]
            answers[(method, path)].append((resp.status, resp.headers.get("Idempotent-Replayed"), ctype,
                                            body.decode() if ctype == "text/csv" else json.loads(body)))

    # what the writes made, read back from PostgreSQL: in A's organisation, and nothing else was written
    org, survey = world.tenant.org_id, uuid.UUID(world.survey_id)
    survey_ids = {r["name"]: str(r["id"]) for r in await db.fetch(  # not A's survey, which the PATCHes renamed
        "SELECT id, name FROM surveys WHERE org_id = $1 AND name LIKE 'Bearer check %' AND id <> $2", org, survey)}
    field_ids = {r["name"]: r["id"] for r in await db.fetch(
        "SELECT id, name FROM metadata_fields WHERE org_id = $1 AND name LIKE 'Bearer check %'", org)}
    link = await db.fetchrow("SELECT id, public_id FROM survey_links WHERE survey_id = $1 AND name = $2",
                             survey, names[0])
    assert set(survey_ids) == set(field_ids) == set(names) and link is not None
    email_key_id = await db.fetchval(
        "SELECT id::text FROM contact_attribute_keys WHERE org_id = $1 AND key = 'email'", org)
    after = await table_snapshot(db)
    added = {"survey_links": 1, "surveys": 3, "metadata_fields": 3}
    assert {t: after[t][0] - before[t][0] for t in after} == {t: added.get(t, 0) for t in after}
    assert {t for t in after if after[t] != before[t]} == set(added)  # no other table changed, row for row

    def same_three(status: int, body: Any, ctype: str = "application/json") -> list[tuple]:
        return [(status, None, ctype, body)] * 3

    a_survey = {"id": world.survey_id, "name": "A's survey", "type": "link", "status": "inProgress",
                "linkQuota": None, "redirectUrl": None, "linkCount": 2, "linkFormat": "jwt", "createdAt": "<ts>",
                "updatedAt": "<ts>"}
    fields = [{"id": world.field_id, "name": "A's field", "variable": "A's field"},
              *({"id": field_ids[n], "name": n, "variable": n} for n in names)]
    contact_links = {"data": [{"contactId": world.contact_id, "surveyUrl": world.contact_url, "expiresAt": None,
                               "attributes": {}}], "meta": {"total": 1, "limit": 50, "offset": 0}}
    segment_links = segment_links_path(world.survey_id, world.segment_id)
    survey_path = f"{M}/surveys/{world.survey_id}"

    def refused(*details: tuple[str, str]) -> list[tuple]:
        return same_three(422, {"error": {"code": 422, "message": "Unprocessable Entity",
                                          "details": [{"field": f, "issue": i} for f, i in details]}})

    expected: dict[tuple[str, str], list[tuple]] = {
        # the first form creates the campaign's link for the empty mapping; the other two replay it,
        # whatever their name says (the idempotency key is the campaign and the mapping)
        ("POST", links_path(world.survey_id)): [
            (200, replayed, "application/json", {
                "id": link["id"], "public_id": link["public_id"], "name": names[0], "metadata_mapping": [],
                "survey_url": "<url>", "created": "<ts>", "updated": "<ts>"})
            for replayed in (None, "true", "true")],
        ("POST", f"{M}/surveys"): [
            (201, None, "application/json", {"data": {
                **a_survey, "id": survey_ids[n], "name": n, "linkCount": 0}}) for n in names],
        ("GET", survey_path): same_three(200, {"data": a_survey}),
        ("PATCH", survey_path): [
            (200, None, "application/json", {"data": {**a_survey, "name": n}}) for n in names],
        ("POST", f"{M}/metadata-fields"): [
            (201, None, "application/json", {"data": fields[i + 1]}) for i in range(3)],
        ("GET", f"{M}/metadata-fields"): same_three(200, {"data": fields}),
        ("POST", f"{M}/contact-attribute-keys"): refused(("key", "field required")),
        ("GET", f"{M}/contact-attribute-keys"): same_three(200, {"data": [
            {"id": world.attribute_key_id, "key": "plan", "name": "plan", "createdAt": "<ts>"},
            {"id": email_key_id, "key": "email", "name": "email", "createdAt": "<ts>"}]}),
        ("POST", f"{M}/contacts"): refused(("attributes", "field required"), ("name", "extra fields not permitted")),
        ("PUT", f"{M}/contacts/bulk"): refused(("contacts", "field required"),
                                               ("name", "extra fields not permitted")),
        ("POST", f"{M}/segments"): refused(("title", "field required"), ("filters", "field required"),
                                           ("name", "extra fields not permitted")),
        ("GET", f"{M}/segments/{world.segment_id}"): same_three(200, {"data": {
            "id": world.segment_id, "title": "A's", "filters": {}, "contactCount": 1, "createdAt": "<ts>"}}),
        ("GET", segment_links): same_three(200, contact_links),
        ("GET", segment_links + "/export"): same_three(
            200, f"contactId,surveyUrl,expiresAt\r\n{world.contact_id},{world.contact_url},\r\n", "text/csv"),
        ("GET", contact_link_path(world.survey_id, world.contact_id)): same_three(
            200, {"data": {"surveyUrl": world.contact_url, "expiresAt": None}}),
    }
    assert list(expected) == list(answers)  # every endpoint that takes a key has its expected answers
    filum = answers[("POST", links_path(world.survey_id))]
    # the replays are the first answer, timestamps and survey_url included; that is the link's, signed
    assert filum[0][3] == filum[1][3] == filum[2][3]
    assert filum[0][3]["survey_url"].startswith(f"http://links.test/l/{TEST_KEYS[0].kid}.{link['public_id']}.")
    for endpoint, got in answers.items():
        if endpoint == ("POST", links_path(world.survey_id)):
            got = [(*answer[:3], {**answer[3], "survey_url": "<url>"}) for answer in got]
        assert [(*answer[:3], _unstamped(answer[3])) for answer in got] == expected[endpoint], endpoint
