"""A body that does not arrive within BODY_TIMEOUT_SECONDS is answered 408 in the family's shape and
its connection closed (it cannot carry another request)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace

import pytest

from service.app import create_app
from tests.helpers import create_survey, links_path
from tests.security.conftest import M

BODY_TIMEOUT = 0.5


@pytest.fixture
async def slow_client(aiohttp_client, settings):
    return await aiohttp_client(create_app(replace(settings, body_timeout_seconds=BODY_TIMEOUT)))


async def _stalled(client, path: str, headers: dict[str, str]) -> tuple[int, dict, float]:
    """Sends 10 of a body's 100 bytes, then nothing; answers the status, body and time until the server closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    try:
        head = [f"POST {path} HTTP/1.1", "Host: test", "Content-Type: application/json", "Content-Length: 100",
                *(f"{k}: {v}" for k, v in headers.items())]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + b'{"name": "')
        started = time.monotonic()
        answer = await asyncio.wait_for(reader.read(-1), 10)  # up to EOF: the server closes
        took = time.monotonic() - started
    finally:
        writer.close()
    head_bytes, _, body = answer.partition(b"\r\n\r\n")
    assert b"connection: close" in head_bytes.lower()
    return int(head_bytes.split()[1]), json.loads(body), took


async def test_a_stalled_body_is_408_and_the_connection_closed(slow_client, tenant, db):
    status, body, took = await _stalled(slow_client, f"{M}/surveys", tenant.headers)
    assert (status, body) == (408, {"error": {"code": 408, "message": "Request Timeout", "details": []}})
    assert BODY_TIMEOUT <= took < BODY_TIMEOUT + 2
    survey = await create_survey(slow_client, tenant.headers)
    status, body, took = await _stalled(slow_client, links_path(survey["id"]), tenant.headers)
    assert (status, body) == (408, {"detail": "Request Timeout"})
    assert BODY_TIMEOUT <= took < BODY_TIMEOUT + 2
    # nothing was written by either
    assert await db.fetchval("SELECT count(*) FROM surveys WHERE org_id = $1", tenant.org_id) == 1
    assert await db.fetchval("SELECT count(*) FROM survey_links WHERE survey_id = $1::uuid", survey["id"]) == 0
