"""Hostile request bodies on every endpoint that reads JSON: hostile literals (NULs, lone surrogates,
invalid UTF-8, 5,000-deep nesting, numbers JSON cannot or must not carry) in every field, whole bodies
that are not a JSON object, wrong content types (415; the Filum path's 422, as FastAPI's), huge bodies
(413) and bodies that do not decode as their Content-Encoding says; each gets a clear 4xx in its API
family's JSON body, never a 500, and nothing is written to the database. Bodies are sent as raw bytes,
so invalid UTF-8, raw NULs and encoded surrogates reach the server exactly as an attacker would send them.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable

import pytest

from tests.contact_helpers import error
from tests.helpers import JSON, links_path, table_snapshot
from tests.security.conftest import M, World, family_error, send

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


async def _all_422_and_nothing_written(client, db, world: World, method: str, path: str,
                                       bodies: dict[str, bytes]) -> None:
    """Send each named JSON body with A's key: every answer is a 422 in the path's family body, and
    no table gains or loses a row."""
    before = await table_snapshot(db)
    headers = {**world.tenant.headers, **JSON}
    wrong = []
    for name, body in bodies.items():
        resp = await send(client, method, path, body, headers)
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
    """The Filum path answers them as FastAPI does (SPEC): 422, the body is not a dict."""
    method, path_of = BODY_ENDPOINTS[endpoint]
    before = await table_snapshot(db)
    body = b'{"name": "x"}'
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                  "application/xml", "application/jsonp", "text/json", "image/png", "application/octet-stream"):
        resp = await send(client, method, path_of(world), body, {**world.tenant.headers, "Content-Type": ctype})
        status, answer = await family_error(resp)
        if endpoint == "filum create link":
            assert (status, answer) == (422, {"detail": [
                {"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"}]}), ctype
        else:
            assert status == 415, (ctype, answer)
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
        resp = await send(client, method, path_of(world), body, {**world.tenant.headers, **JSON})
        status, answer = await family_error(resp)
        assert status == 413, answer
        message = answer["detail"] if endpoint == "filum create link" else answer["error"]["message"]
        limit = 16 * 1024 * 1024 if endpoint == "bulk contacts" else 1024 * 1024
        assert message == f"Request body too large (limit {limit} bytes)", answer
    assert await table_snapshot(db) == before


UNREADABLE = "Invalid body: it does not decode as its Content-Encoding and Transfer-Encoding say"


@pytest.mark.parametrize("endpoint", list(BODY_ENDPOINTS))
async def test_bodies_that_do_not_decode_as_their_content_encoding_are_422(client, world, db, endpoint):
    """A plain JSON body sent as gzip or deflate (aiohttp fails to inflate it while the handler reads)."""
    method, path_of = BODY_ENDPOINTS[endpoint]
    before = await table_snapshot(db)
    for encoding in ("gzip", "deflate"):
        resp = await send(client, method, path_of(world), b'{"name": "x"}',
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
    if endpoint != "filum create link":
        return
    # answers that never read the broken body say the connection closes too, and the next request
    # is answered (a keep-alive client reusing the dropped connection got a closed socket)
    for method_, path_, status in (("POST", "/no/such/path", 404), ("GET", "/health", 200)):
        resp = await send(client, method_, path_, b'{"name": "x"}', {**JSON, "Content-Encoding": "gzip"})
        assert (resp.status, resp.headers.get("Connection")) == (status, "close"), path_
        assert (await send(client, "GET", "/health", None, {})).status == 200
    # the same body really gzipped is read as the JSON it is
    resp = await send(client, method, path_of(world), gzip.compress(b'{"name": "gzipped"}'),
                      {**world.tenant.headers, **JSON, "Content-Encoding": "gzip"})
    assert resp.status == 200, await resp.text()
