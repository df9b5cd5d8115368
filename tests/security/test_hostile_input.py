"""Hostile input on every endpoint: each gets a clear 4xx in its API family's JSON body, never a
500, and nothing is written to the database.

Bodies are sent as raw bytes, so invalid UTF-8, raw NULs and encoded surrogates reach the server
exactly as an attacker would send them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import TEST_KEYS
from tests.contact_helpers import contact_link_path, error, segment_links_path
from tests.helpers import links_path, table_snapshot
from tests.security.conftest import World, family_error

JSON = {"Content-Type": "application/json"}
M = "/api/v2/management"

# JSON literals that no string field may accept: NUL (escaped and raw), lone surrogates (escaped and
# as raw UTF-8 bytes), invalid UTF-8, 5,000-deep nesting, and numbers JSON cannot or must not carry
STRING_LITERALS: dict[str, bytes] = {
    "escaped NUL": b'"a\\u0000b"',
    "raw NUL": b'"a\x00b"',
    "escaped lone high surrogate": b'"\\ud800"',
    "escaped lone low surrogate": b'"x\\udfff"',
    "reversed surrogate pair": b'"\\udc00\\ud800"',
    "raw surrogate bytes": b'"\xed\xa0\x80"',
    "invalid UTF-8": b'"\xff\xfe"',
    "truncated UTF-8": b'"\xc3"',
    "overlong UTF-8": b'"\xc0\xaf"',
    "deep array": b"[" * 5000 + b"]" * 5000,
    "deep object": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "NaN": b"NaN",
    "Infinity": b"Infinity",
    "-Infinity": b"-Infinity",
    "1e400": b"1e400",
    "-1e400": b"-1e400",
}
# and for fields that hold integers within a range (ids, quotas, attribute numbers)
NUMBER_LITERALS: dict[str, bytes] = {
    **{k: v for k, v in STRING_LITERALS.items() if k not in ("escaped NUL", "raw NUL")},
    "400 digits": b"1" + b"0" * 400,
    "2^64": b"18446744073709551616",
    "2^63": b"9223372036854775808",
    "-2^63-1": b"-9223372036854775809",
}

# (method, path, template with @X@ where the literal goes, literals)
Position = tuple[str, Callable[[World], str], bytes, dict[str, bytes]]


def _positions() -> dict[str, Position]:
    S, N = STRING_LITERALS, NUMBER_LITERALS
    filum: Callable[[World], str] = lambda w: links_path(w.survey_id)  # noqa: E731
    survey: Callable[[World], str] = lambda w: f"{M}/surveys/{w.survey_id}"  # noqa: E731

    def path(p: str) -> Callable[[World], str]:
        return lambda w: p

    return {
        "filum name": ("POST", filum, b'{"name": @X@}', S),
        "filum value": ("POST", filum, b'{"name": "n", "metadata_mapping": [{"metadata_id": @F@, "value": @X@}]}', S),
        "filum list value": ("POST", filum,
                             b'{"name": "n", "metadata_mapping": [{"metadata_id": @F@, "value": ["a", @X@]}]}', S),
        "filum metadata_id": ("POST", filum, b'{"name": "n", "metadata_mapping": [{"metadata_id": @X@}]}', N),
        "survey name": ("POST", path(f"{M}/surveys"), b'{"name": @X@}', S),
        "survey status": ("POST", path(f"{M}/surveys"), b'{"name": "n", "status": @X@}', S),
        "survey redirectUrl": ("POST", path(f"{M}/surveys"), b'{"name": "n", "redirectUrl": @X@}', S),
        "survey linkQuota": ("POST", path(f"{M}/surveys"), b'{"name": "n", "linkQuota": @X@}', N),
        "patch name": ("PATCH", survey, b'{"name": @X@}', S),
        "patch linkQuota": ("PATCH", survey, b'{"linkQuota": @X@}', N),
        "field name": ("POST", path(f"{M}/metadata-fields"), b'{"name": @X@}', S),
        "field variable": ("POST", path(f"{M}/metadata-fields"), b'{"name": "n", "variable": @X@}', S),
        "attribute key": ("POST", path(f"{M}/contact-attribute-keys"), b'{"key": @X@}', S),
        "attribute key name": ("POST", path(f"{M}/contact-attribute-keys"), b'{"key": "k", "name": @X@}', S),
        "contact email": ("POST", path(f"{M}/contacts"), b'{"attributes": {"email": @X@}}', S),
        "contact value": ("POST", path(f"{M}/contacts"), b'{"attributes": {"email": "e@x.io", "note": @X@}}', S),
        "contact number": ("POST", path(f"{M}/contacts"), b'{"attributes": {"email": "e@x.io", "n": @X@}}', N),
        "contact key": ("POST", path(f"{M}/contacts"), b'{"attributes": {"email": "e@x.io", @X@: "v"}}', S),
        "bulk email": ("PUT", path(f"{M}/contacts/bulk"), b'{"contacts": [{"attributes": {"email": @X@}}]}', S),
        "bulk value": ("PUT", path(f"{M}/contacts/bulk"),
                       b'{"contacts": [{"attributes": {"email": "e@x.io", "note": @X@}}]}', S),
        "segment title": ("POST", path(f"{M}/segments"), b'{"title": @X@, "filters": {}}', S),
        "segment value": ("POST", path(f"{M}/segments"),
                          b'{"title": "t", "filters": {"attribute": "plan", "op": "equals", "value": @X@}}', S),
        "segment in value": ("POST", path(f"{M}/segments"),
                             b'{"title": "t", "filters": {"attribute": "plan", "op": "in", "value": ["a", @X@]}}', S),
        "segment attribute": ("POST", path(f"{M}/segments"),
                              b'{"title": "t", "filters": {"attribute": @X@, "op": "isSet"}}', S),
        "segment contactId": ("POST", path(f"{M}/segments"),
                              b'{"title": "t", "filters": {"attribute": "contactId", "op": "in", "value": [@X@]}}', N),
    }


POSITIONS = _positions()
# every endpoint that reads a JSON body: (method, path)
BODY_ENDPOINTS: dict[str, tuple[str, Callable[[World], str]]] = {
    "filum create link": ("POST", lambda w: links_path(w.survey_id)),
    "create survey": ("POST", lambda w: f"{M}/surveys"),
    "patch survey": ("PATCH", lambda w: f"{M}/surveys/{w.survey_id}"),
    "create metadata field": ("POST", lambda w: f"{M}/metadata-fields"),
    "create attribute key": ("POST", lambda w: f"{M}/contact-attribute-keys"),
    "create contact": ("POST", lambda w: f"{M}/contacts"),
    "bulk contacts": ("PUT", lambda w: f"{M}/contacts/bulk"),
    "create segment": ("POST", lambda w: f"{M}/segments"),
}
WHOLE_BODIES: dict[str, bytes] = {
    "empty": b"",
    "whitespace": b" \n\t ",
    "array": b"[]",
    "array of numbers": b"[1, 2]",
    "string": b'"x"',
    "number": b"1",
    "null": b"null",
    "true": b"true",
    "BOM": b'\xef\xbb\xbf{"name": "x"}',
    "trailing garbage": b'{"name": "x"} {}',
    "truncated": b'{"name": ',
    "unclosed deep array": b"[" * 5000,
    "deep array": b"[" * 5000 + b"]" * 5000,
    "deep object": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "invalid UTF-8": b"\xff\xfe\xfd",
    "invalid UTF-8 key": b'{"\xff": 1}',
    "NUL byte": b"\x00",
    "NaN": b"NaN",
    "UTF-16": '{"name": "x"}'.encode("utf-16"),
    "single quotes": b"{'name': 'x'}",
    "comment": b'{"name": "x" /* c */}',
}


async def _send(client, method: str, path: str, body, headers: dict[str, str]):
    return await asyncio.wait_for(client.request(method, path, data=body, headers=headers), 30)


async def _all_422_and_nothing_written(client, db, world: World, method: str, path: str,
                                       bodies: dict[str, bytes]) -> None:
    """Send each named JSON body with A's key: every answer is a 422 in the path's family body, and
    no table gains or loses a row."""
    before = await table_snapshot(db)
    headers = {**world.tenant.headers, **JSON}
    wrong = []
    for name, body in bodies.items():
        resp = await _send(client, method, path, body, headers)
        status, answer = await family_error(resp)
        if status != 422:
            wrong.append((name, status, answer))
    assert wrong == []
    assert await table_snapshot(db) == before


@pytest.mark.parametrize("position", list(POSITIONS))
async def test_hostile_literals_in_every_field_are_422(client, world, db, position):
    method, path_of, template, literals = POSITIONS[position]
    bodies = {name: template.replace(b"@F@", str(world.field_id).encode()).replace(b"@X@", literal)
              for name, literal in literals.items()}
    await _all_422_and_nothing_written(client, db, world, method, path_of(world), bodies)


@pytest.mark.parametrize("endpoint", list(BODY_ENDPOINTS))
async def test_bodies_that_are_not_a_json_object_are_422(client, world, db, endpoint):
    method, path_of = BODY_ENDPOINTS[endpoint]
    await _all_422_and_nothing_written(client, db, world, method, path_of(world), WHOLE_BODIES)


@pytest.mark.parametrize("endpoint", list(BODY_ENDPOINTS))
async def test_wrong_content_types_are_415(client, world, db, endpoint):
    method, path_of = BODY_ENDPOINTS[endpoint]
    before = await table_snapshot(db)
    body = b'{"name": "x"}'
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                  "application/xml", "application/jsonp", "text/json", "image/png", "application/octet-stream"):
        resp = await _send(client, method, path_of(world), body, {**world.tenant.headers, "Content-Type": ctype})
        status, answer = await family_error(resp)
        assert status == 415, (ctype, answer)
        if endpoint == "filum create link":
            assert answer == {"detail": "Content-Type must be application/json"}
        else:
            assert answer["error"]["message"] == "Content-Type must be application/json"
    assert await table_snapshot(db) == before


@pytest.mark.parametrize("endpoint", list(BODY_ENDPOINTS))
async def test_huge_bodies_are_413(client, world, db, endpoint):
    """3 MiB (17 MiB for the bulk upload, whose own limit is 16 MiB), declared or chunked."""
    method, path_of = BODY_ENDPOINTS[endpoint]
    before = await table_snapshot(db)
    size = (17 if endpoint == "bulk contacts" else 3) * 1024 * 1024
    payload = b'{"name": "' + b"x" * size + b'"}'

    async def chunked():
        for start in range(0, len(payload), 256 * 1024):
            yield payload[start:start + 256 * 1024]

    for body in (io.BytesIO(payload), chunked()):  # with a Content-Length, then without one
        resp = await _send(client, method, path_of(world), body, {**world.tenant.headers, **JSON})
        status, answer = await family_error(resp)
        assert status == 413, answer
        message = answer["detail"] if endpoint == "filum create link" else answer["error"]["message"]
        limit = 16 * 1024 * 1024 if endpoint == "bulk contacts" else 1024 * 1024
        assert message == f"Request body too large (limit {limit} bytes)", answer
    assert await table_snapshot(db) == before


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
                resp = await _send(client, method, path, b'{"name": "x"}', {**headers, **JSON})
                status, answer = await family_error(resp)
                expected = FILUM_401 if path.startswith("/external/") else FORMBRICKS_401
                assert (status, answer) == (401, expected), (method, path)
    assert await table_snapshot(db) == before


async def test_5000_character_link_tokens_are_404(client, world):
    tokens = [
        "a" * 5000,
        "eyJ" + "a" * 2500 + "." + "b" * 2400 + "." + "c" * 97,  # JWT-shaped
        world.contact_token + "a" * (5000 - len(world.contact_token)),
        "t1." + "p" * 4900 + "." + "m" * 95,  # created-link shaped, with a known kid
        world.created_token + "a" * (5000 - len(world.created_token)),
    ]
    for prefix in ("/c/", "/l/"):
        for token in tokens:
            resp = await client.get(prefix + token)
            status, answer = await family_error(resp)
            assert status == 404, (prefix, token[:20], answer)
            assert answer["error"]["details"] == [{"field": "token", "issue": "not found"}]


SQL_IDS = [
    "1' OR '1'='1",
    "1; DROP TABLE surveys; --",
    "' UNION SELECT key_hash FROM api_keys --",
    "00000000-0000-0000-0000-000000000000' OR 1=1 --",
    "1)) OR pg_sleep(5) --",
    "$1",
    "../../etc/passwd",
    "\x00",
    "\udcff",  # percent-encodes to %FF: invalid UTF-8
    "\ud800",  # percent-encodes (surrogatepass) to a lone surrogate's bytes
    "{00000000-0000-0000-0000-000000000000}",  # braces: aiohttp's default route pattern leaves them out
    "{}",
    "}{",
]


def _quote(raw: str) -> str:
    return quote(raw.encode("utf-8", "surrogateescape" if raw == "\udcff" else "surrogatepass"), safe="")


async def test_sql_looking_and_invalid_path_ids_are_clean_not_found(client, world, db):
    before = await table_snapshot(db)
    h = world.tenant.headers
    for raw in SQL_IDS:
        bad = _quote(raw)
        formbricks = [
            ("GET", f"{M}/surveys/{bad}", "surveyId"), ("PATCH", f"{M}/surveys/{bad}", "surveyId"),
            ("GET", f"{M}/segments/{bad}", "segmentId"),
            ("GET", segment_links_path(bad, world.segment_id), "surveyId"),
            ("GET", segment_links_path(world.survey_id, bad), "segmentId"),
            ("GET", segment_links_path(bad, world.segment_id) + "/export", "surveyId"),
            ("GET", segment_links_path(world.survey_id, bad) + "/export", "segmentId"),
            ("GET", contact_link_path(bad, world.contact_id), "surveyId"),
            ("GET", contact_link_path(world.survey_id, bad), "contactId"),
            ("GET", f"/c/{bad}", "token"), ("GET", f"/l/{bad}", "token"),
        ]
        for method, path, field in formbricks:
            resp = await client.request(method, path, json={"name": "x"}, headers=h)
            status, answer = await family_error(resp)
            assert status == 404, (raw, method, path, answer)
            # every id is one path segment (slashes too are percent-encoded), so its route names it
            assert answer["error"]["details"] == [{"field": field, "issue": "not found"}], (raw, path)
        resp = await client.post(links_path(bad), json={"name": "x"}, headers=h)
        status, answer = await family_error(resp)
        assert status == 422, (raw, answer)
        assert answer["detail"] == [{"loc": ["path", "survey_campaign_id"], "msg": "value is not a valid uuid",
                                     "type": "type_error.uuid"}]
    assert await table_snapshot(db) == before
    # and every table is still there, with its rows
    resp = await client.get(f"{M}/surveys/{world.survey_id}", headers=h)
    assert resp.status == 200


async def test_an_id_has_one_spelling(client, world):
    """uuid.UUID reads braces and hyphens anywhere; only the canonical form (any case) names A's survey."""
    h, plain = world.tenant.headers, world.survey_id.replace("-", "")
    assert (await client.get(f"{M}/surveys/{world.survey_id.upper()}", headers=h)).status == 200
    for other in ("{{" + plain + "}}", plain + "----", "-" + plain + "---", plain[:8] + "--" + plain[8:] + "--"):
        assert len(other) == 36
        resp = await client.get(f"{M}/surveys/{quote(other, safe='')}", headers=h)
        assert (resp.status, (await resp.json())["error"]["details"]) == (
            404, [{"field": "surveyId", "issue": "not found"}]), other
        resp = await client.post(links_path(quote(other, safe="")), json={"name": "x"}, headers=h)
        assert (resp.status, await resp.json()) == (422, {"detail": [{
            "loc": ["path", "survey_campaign_id"], "msg": "value is not a valid uuid", "type": "type_error.uuid"}]})


async def test_unknown_query_parameters_are_422_on_the_api_and_ignored_when_opening(client, world, db):
    """The API refuses parameters it does not take (a misspelt `expirationDays` must not silently mean
    "never expires"), naming each; opening links and /health ignore them (mail clients add some)."""
    h = world.tenant.headers
    extras = ["foo=bar", "__proto__=1", "%00=%00", "limit2=x", "select=*", "id=1%27%20OR%201%3D1",
              "%FF%FE=%ED%A0%80", "%ZZ", "=", "a=" + "b" * 5000, "expirationDay=7"]
    api_gets = [
        f"{M}/surveys/{world.survey_id}", f"{M}/metadata-fields", f"{M}/contact-attribute-keys",
        f"{M}/segments/{world.segment_id}", segment_links_path(world.survey_id, world.segment_id),
        segment_links_path(world.survey_id, world.segment_id) + "/export",
        contact_link_path(world.survey_id, world.contact_id),
    ]
    before = await table_snapshot(db)
    for path in api_gets:
        assert (await client.get(path, headers=h)).status == 200, path
        assert (await client.get(f"{path}?&&&", headers=h)).status == 200, path  # no parameter at all
        for extra in extras:
            resp = await client.get(f"{path}?{extra}", headers=h)
            status, answer = await family_error(resp)
            assert status == 422, (path, extra, answer)
            details = answer["error"]["details"]
            assert len(details) == 1 and details[0]["issue"].startswith("unknown query parameter; accepted: "), (
                path, extra, details)
            name = extra.split("=")[0][:64]
            if "%" not in name:  # an escaped name is decoded by aiohttp; the others come back as sent
                assert details[0]["field"] == (name or "query"), (path, extra, details)
    for path in (f"/c/{world.contact_token}", f"/l/{world.created_token}", "/health"):
        plain = await client.get(path, headers=h, allow_redirects=False)
        expected = (plain.status, await plain.read())
        assert plain.status == 200, (path, expected)
        for extra in [*extras, "utm_source=newsletter"]:
            resp = await client.get(f"{path}?{extra}", headers=h, allow_redirects=False)
            assert (resp.status, await resp.read()) == expected, (path, extra)
    body = {"name": "other", "metadata_mapping": [{"metadata_id": world.field_id, "value": "secret-of-A"}]}
    for extra in extras:
        resp = await client.post(f"{links_path(world.survey_id)}?{extra}", json=body, headers=h)
        status, answer = await family_error(resp)
        assert status == 422, extra
        assert [d["loc"][0] for d in answer["detail"]] == ["query"], (extra, answer)
        assert answer["detail"][0]["type"] == "value_error.extra"
    assert await table_snapshot(db) == before


async def test_invalid_known_query_parameters_are_422(client, world):
    h = world.tenant.headers
    path = segment_links_path(world.survey_id, world.segment_id)
    for query, field in [("limit=%FF", "limit"), ("limit=%00", "limit"), ("limit=1e3", "limit"),
                         ("limit=" + "9" * 5000, "limit"), ("skip=-1", "skip"), ("skip=" + "9" * 30, "skip"),
                         ("expirationDays=NaN", "expirationDays"), ("expirationDays=%ED%A0%80", "expirationDays"),
                         ("limit=1&limit=2", "limit")]:
        resp = await client.get(f"{path}?{query}", headers=h)
        status, answer = await family_error(resp)
        assert status == 422, (query, answer)
        assert [d["field"] for d in answer["error"]["details"]] == [field], (query, answer)


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


async def test_wrong_methods_are_405_in_the_family_body(client, world):
    resp = await client.put(links_path(world.survey_id), json={"name": "x"}, headers=world.tenant.headers)
    status, answer = await family_error(resp)
    assert status == 405 and answer == {"detail": "Method Not Allowed"}
    resp = await client.delete(f"{M}/surveys/{world.survey_id}", headers=world.tenant.headers)
    status, answer = await family_error(resp)
    assert status == 405 and answer["error"]["message"] == "Method Not Allowed"


async def test_hostile_request_ids_are_replaced(client, world):
    for given in ("x" * 5000, "a b", "<script>", "id\u00e9"):
        resp = await client.get("/health", headers={"X-Request-Id": given.encode("utf-8").decode("latin-1")})
        assert resp.status == 200
        assert resp.headers["X-Request-Id"] != given and len(resp.headers["X-Request-Id"]) == 32


async def test_valid_but_odd_unicode_is_kept_exactly(client, world, db):
    """Not hostile, only unusual: right-to-left marks, emoji, combining marks, U+2028 and a BOM inside."""
    name = "\u202eevil\u202c \U0001f600 e\u0301 \u2028 \ufeff"
    resp = await client.post(f"{M}/surveys", json={"name": name}, headers=world.tenant.headers)
    assert resp.status == 201
    survey = (await resp.json())["data"]
    assert survey["name"] == name.strip()
    assert await db.fetchval("SELECT name FROM surveys WHERE id = $1::uuid", survey["id"]) == name.strip()


async def _raw(client, request: bytes) -> bytes:
    """Send raw bytes; answer what the server sends back before it closes (bounded)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_malformed_http_is_refused_by_the_parser_and_the_server_stays_up(client, world, db, caplog):
    """Below the application: what the HTTP parser refuses gets a 4xx (its own plain body), never a 500."""
    before = await table_snapshot(db)
    h = b"Host: t\r\nConnection: close\r\n"
    key = f"x-api-key: {world.tenant.key}\r\n".encode()
    requests = {
        "10,000-character URL": b"GET /c/" + b"a" * 10000 + b" HTTP/1.1\r\n" + h + b"\r\n",
        "10,000-character header": b"GET /health HTTP/1.1\r\n" + h + b"X-Long: " + b"a" * 10000 + b"\r\n\r\n",
        "NUL in a header": b"GET /health HTTP/1.1\r\n" + h + b"X-Nul: a\x00b\r\n\r\n",
        "bare LF and CR": b"GET /health HTTP/1.1\r\n" + h + b"X-Bad: a\rb\r\n\r\n",
        "invalid chunk size": b"POST /api/v2/management/surveys HTTP/1.1\r\n" + h + key
        + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n",
        "both Content-Length and chunked": b"POST /api/v2/management/surveys HTTP/1.1\r\n" + h + key
        + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        "negative Content-Length": b"POST /api/v2/management/surveys HTTP/1.1\r\n" + h + key
        + b"Content-Length: -1\r\n\r\n{}",
        "not HTTP": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
    }
    for name, raw in requests.items():
        answer = await _raw(client, raw)
        status = int(answer.split(b" ", 2)[1]) if answer.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")) else None
        assert status is not None and 400 <= status < 500, (name, answer[:200])
    # a body cut short: the client declares 100 bytes, sends 10 and goes away
    _, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(b"POST /api/v2/management/surveys HTTP/1.1\r\n" + h + key
                 + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\": ")
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    await asyncio.sleep(0.2)
    assert not [r for r in caplog.records if r.levelname == "ERROR" and "unexpected" in r.getMessage()]
    assert await table_snapshot(db) == before
    resp = await client.get(f"{M}/surveys/{world.survey_id}", headers=world.tenant.headers)
    assert resp.status == 200


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
            resp = await _send(client, method, path, b'{"name": "%s"}' % name.encode(), {**headers, **JSON})
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
                "linkQuota": None, "redirectUrl": None, "linkCount": 2, "createdAt": "<ts>", "updatedAt": "<ts>"}
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


UNREADABLE = "Invalid body: it does not decode as its Content-Encoding and Transfer-Encoding say"


@pytest.mark.parametrize("endpoint", list(BODY_ENDPOINTS))
async def test_bodies_that_do_not_decode_as_their_content_encoding_are_422(client, world, db, endpoint):
    """A plain JSON body sent as gzip or deflate (aiohttp fails to inflate it while the handler reads)."""
    method, path_of = BODY_ENDPOINTS[endpoint]
    before = await table_snapshot(db)
    for encoding in ("gzip", "deflate"):
        resp = await _send(client, method, path_of(world), b'{"name": "x"}',
                           {**world.tenant.headers, **JSON, "Content-Encoding": encoding})
        status, answer = await family_error(resp)
        if endpoint == "filum create link":
            expected = {"detail": [{"loc": ["body"], "msg": UNREADABLE, "type": "value_error.jsondecode"}]}
        else:
            expected = error(422, "Unprocessable Entity", [{"field": "body", "issue": UNREADABLE}])
        assert (status, answer) == (422, expected), encoding
        assert resp.headers["X-Request-Id"]
        assert resp.headers["Connection"] == "close"  # aiohttp drops a connection whose body stream broke
    assert await table_snapshot(db) == before
    if endpoint == "filum create link":  # the same body really gzipped is read as the JSON it is
        resp = await _send(client, method, path_of(world), gzip.compress(b'{"name": "gzipped"}'),
                           {**world.tenant.headers, **JSON, "Content-Encoding": "gzip"})
        assert resp.status == 200, await resp.text()

