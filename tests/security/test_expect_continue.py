"""`Expect: 100-continue`: the 100 comes only after the key, the rate limit and the scope were
checked, so a refused caller never gets to send its body."""

from __future__ import annotations

import asyncio
import json
import uuid

from service.core.auth import new_secret
from tests.helpers import create_survey, links_path
from tests.security.conftest import M


async def _head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


async def _open(client, method: str, path: str, headers: dict[str, str], body: bytes):
    """Sends the request's head with `Expect: 100-continue` and no body; answers the first head back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    lines = [f"{method} {path} HTTP/1.1", "Host: test", "Expect: 100-continue", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    return reader, writer, await _head(reader)


async def _final(reader: asyncio.StreamReader, head: bytes) -> tuple[int, dict]:
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return int(head.split()[1]), json.loads(await asyncio.wait_for(reader.readexactly(length), 5))


async def _refused(client, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict]:
    reader, writer, head = await _open(client, method, path, headers, b'{"name": "x"}')
    try:
        assert b"100 Continue" not in head
        return await _final(reader, head)
    finally:
        writer.close()


async def _continued(client, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict]:
    reader, writer, head = await _open(client, method, path, headers, body)
    try:
        assert head == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(body)
        return await _final(reader, await _head(reader))
    finally:
        writer.close()


async def test_a_bad_key_gets_401_and_never_100_continue(client, tenant):
    survey = await create_survey(client, tenant.headers)
    for key in (new_secret(), "not-a-key", tenant.key[:-1] + ("A" if tenant.key[-1] != "A" else "B")):
        status, body = await _refused(client, "POST", f"{M}/surveys", {"x-api-key": key})
        assert (status, body["error"]["code"]) == (401, 401)
        status, body = await _refused(client, "POST", links_path(survey["id"]), {"Authorization": f"Bearer {key}"})
        assert (status, body) == (401, {"detail": "Invalid or missing token"})
    status, _ = await _refused(client, "POST", f"{M}/surveys", {})
    assert status == 401


async def test_a_good_key_gets_100_continue_then_its_answer(client, tenant):
    status, body = await _continued(client, "POST", f"{M}/surveys", tenant.headers, b'{"name": "S"}')
    assert status == 201 and body["data"]["name"] == "S"
    survey_id = body["data"]["id"]
    status, body = await _continued(client, "POST", links_path(survey_id), tenant.headers, b'{"name": "L"}')
    assert status == 200 and body["name"] == "L"
    # the same mapping again, through 100-continue: a replay (the gate spent one token, not two)
    status, again = await _continued(client, "POST", links_path(survey_id), tenant.headers, b'{"name": "L"}')
    assert status == 200 and again == body


async def test_rate_limited_and_scopeless_callers_get_no_100_continue(client, make_tenant):
    limited = await make_tenant(rate_limit="2/minute")
    survey = await create_survey(client, limited.headers)  # spends one token
    status, _ = await _continued(client, "POST", links_path(survey["id"]), limited.headers, b'{"name": "L"}')
    assert status == 200  # the second and last token: spent once, before the 100
    status, body = await _refused(client, "POST", links_path(survey["id"]), limited.headers)
    assert (status, body) == (429, {"detail": "Rate limit exceeded"})
    status, body = await _refused(client, "POST", f"{M}/surveys", limited.headers)
    assert (status, body["error"]["code"]) == (429, 429)

    reader_only = await make_tenant(scopes=("links:read",))
    status, body = await _refused(client, "POST", f"{M}/surveys", reader_only.headers)
    assert (status, body["error"]["code"]) == (403, 403)
    status, body = await _refused(client, "POST", links_path(survey["id"]), reader_only.headers)
    assert (status, body) == (403, {"detail": "Permission denied"})


async def test_the_filum_headers_are_checked_before_100_continue(client, tenant):
    survey = await create_survey(client, tenant.headers)
    path = links_path(survey["id"])
    status, body = await _refused(client, "POST", path, {**tenant.headers, "organization-id": str(uuid.uuid4())})
    assert (status, body) == (403, {"detail": "Permission denied"})
    status, body = await _refused(client, "POST", path, {**tenant.headers, "auth-type": "basic"})
    assert (status, body) == (401, {"detail": "Invalid or missing token"})
    # the right ones: the 100, then the link
    headers = {**tenant.headers, "organization-id": tenant.org.upper(), "auth-type": "Token"}
    status, body = await _continued(client, "POST", path, headers, b'{"name": "L"}')
    assert status == 200 and body["name"] == "L"
