"""Hostile input outside request bodies and API keys: 5,000-character link tokens, SQL-looking and
invalid path ids, a second spelling of an id, unknown and invalid query parameters, wrong methods and
malformed HTTP each get a clear 4xx in their API family's JSON body (below the application, the HTTP
parser's own 4xx), never a 500, and write nothing to the database; hostile request ids are replaced,
and valid but odd unicode is kept exactly.

Hostile bodies are in test_hostile_bodies.py, the forms an API key arrives in in test_key_forms.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import quote

from service.web.keys import DRAIN
from tests.contact_helpers import contact_link_path, segment_links_path
from tests.helpers import links_path, table_snapshot, wait_until
from tests.security.conftest import M, family_error


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
        if raw.startswith("{0000"):  # a uuid in braces, as pydantic reads it (SPEC): an unknown campaign
            assert (status, answer["detail"]) == (404, {"message": "not_found", "params": {"model": "survey_campaign"}})
            continue
        assert status == 422, (raw, answer)
        assert answer["detail"] == [{"loc": ["path", "survey_campaign_id"], "msg": "value is not a valid uuid",
                                     "type": "type_error.uuid"}]
    assert await table_snapshot(db) == before
    # and every table is still there, with its rows
    resp = await client.get(f"{M}/surveys/{world.survey_id}", headers=h)
    assert resp.status == 200


async def test_an_id_has_one_spelling(client, world):
    """uuid.UUID reads braces and hyphens anywhere; only the canonical form (any case) names A's survey.
    The Filum path reads its id as FastAPI (pydantic v1) does: every spelling of the 32 hex digits is the
    campaign, and what int(hex, 16) also reads (a sign, `_`, spaces) is not a uuid."""
    h, plain = world.tenant.headers, world.survey_id.replace("-", "")
    assert (await client.get(f"{M}/surveys/{world.survey_id.upper()}", headers=h)).status == 200
    canonical = await client.post(links_path(world.survey_id), json={"name": "x"}, headers=h)
    assert canonical.status == 200
    for other in ("{{" + plain + "}}", plain + "----", "-" + plain + "---", plain[:8] + "--" + plain[8:] + "--",
                  plain, "urn:uuid:" + plain.upper()):
        resp = await client.get(f"{M}/surveys/{quote(other, safe='')}", headers=h)
        assert (resp.status, (await resp.json())["error"]["details"]) == (
            404, [{"field": "surveyId", "issue": "not found"}]), other
        resp = await client.post(links_path(quote(other, safe="")), json={"name": "x"}, headers=h)
        assert (resp.status, await resp.json()) == (200, await canonical.json()), other
    for other in ("+" + plain[1:], plain[:16] + "_" + plain[17:], " " + plain[1:], plain[:31]):
        resp = await client.post(links_path(quote(other, safe="")), json={"name": "x"}, headers=h)
        assert (resp.status, await resp.json()) == (422, {"detail": [{
            "loc": ["path", "survey_campaign_id"], "msg": "value is not a valid uuid", "type": "type_error.uuid"}]})


async def test_unknown_query_parameters_are_422_on_the_api_and_ignored_when_opening(client, world, db):
    """The management paths refuse parameters they do not take, naming each; the contact-links
    operations ignore them, as Formbricks does, and so does the Filum path, as FastAPI does; opening
    links and /health ignore them (mail clients add some)."""
    h = world.tenant.headers
    extras = ["foo=bar", "__proto__=1", "%00=%00", "limit2=x", "select=*", "id=1%27%20OR%201%3D1",
              "%FF%FE=%ED%A0%80", "%ZZ", "=", "a=" + "b" * 5000, "expirationDay=7"]
    api_gets = [
        f"{M}/surveys/{world.survey_id}", f"{M}/metadata-fields", f"{M}/contact-attribute-keys",
        f"{M}/segments/{world.segment_id}",
    ]
    link_gets = [  # no expiry asked for: the same links, byte for byte, whatever else is sent
        segment_links_path(world.survey_id, world.segment_id),
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
    for path in (*link_gets, f"/c/{world.contact_token}", f"/l/{world.created_token}", "/health"):
        plain = await client.get(path, headers=h, allow_redirects=False)
        expected = (plain.status, await plain.read())
        assert plain.status == 200, (path, expected)
        for extra in [*extras, "utm_source=newsletter"]:
            resp = await client.get(f"{path}?{extra}", headers=h, allow_redirects=False)
            assert (resp.status, await resp.read()) == expected, (path, extra)
    # the Filum path takes no parameter, and ignores others as FastAPI does: here, a replay of A's link
    body = {"name": "other", "metadata_mapping": [{"metadata_id": world.field_id, "value": "secret-of-A"}]}
    for extra in extras:
        resp = await client.post(f"{links_path(world.survey_id)}?{extra}", json=body, headers=h)
        assert (resp.status, resp.headers.get("Idempotent-Replayed")) == (200, "true"), extra
        assert await resp.json() == world.link, extra
    assert await table_snapshot(db) == before


async def test_invalid_known_query_parameters_are_422(client, world):
    h = world.tenant.headers
    path = segment_links_path(world.survey_id, world.segment_id)
    for query, field in [("limit=%FF", "limit"), ("limit=%00", "limit"), ("limit=1e3", "limit"),
                         ("limit=" + "9" * 5000, "limit"), ("skip=-1", "skip"), ("skip=" + "9" * 30, "skip"),
                         ("expirationDays=NaN", "expirationDays"), ("expirationDays=%ED%A0%80", "expirationDays"),
                         ("limit=1&limit=2.5", "limit"), ("limit=&limit=1.5", "limit")]:
        resp = await client.get(f"{path}?{query}", headers=h)
        status, answer = await family_error(resp)
        assert status == 422, (query, answer)
        assert [d["field"] for d in answer["error"]["details"]] == [field], (query, answer)


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
    drain = client.app[DRAIN]  # the requests in flight
    writer.write(b"POST /api/v2/management/surveys HTTP/1.1\r\n" + h + key
                 + b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\": ")
    await writer.drain()

    async def in_flight() -> bool:
        return drain.active == 1

    async def done() -> bool:
        return drain.active == 0

    await wait_until(in_flight, timeout=10, interval=0.01)  # its handler waits for the rest of the body
    writer.close()
    await writer.wait_closed()
    await wait_until(done, timeout=10, interval=0.01)  # and is over, however it ended
    assert not [r for r in caplog.records if r.levelname == "ERROR" and "unexpected" in r.getMessage()]
    assert await table_snapshot(db) == before
    resp = await client.get(f"{M}/surveys/{world.survey_id}", headers=world.tenant.headers)
    assert resp.status == 200
