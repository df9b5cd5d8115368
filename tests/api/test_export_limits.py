"""The export's stall cut judges progress, not speed: a client that reads slowly but steadily gets the
whole file, however long each write waits on it."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import replace

from aiohttp import web

from service.app import create_app
from tests.contact_helpers import create_segment, segment_links_path
from tests.helpers import create_survey, wait_until
from tests.ops.metrics_text import parse_samples, value

STALL = 0.4
CONTACTS = 3000  # about 450 KB of CSV: many times what the socket buffers hold


async def _small_send_buffer(request: web.Request, response: web.StreamResponse) -> None:
    """The server's socket keeps 32 KB at most (not the kernel's autotuned megabytes), so its writes wait
    on the client as they would on a real network."""
    assert request.transport is not None
    request.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)


async def test_a_slow_reader_is_never_cut(aiohttp_client, settings, tenant, db):
    app = create_app(replace(settings, stream_stall_seconds=STALL))
    app.on_response_prepare.append(_small_send_buffer)
    client = await aiohttp_client(app)
    await db.execute("INSERT INTO contacts (org_id, attributes) SELECT $1, jsonb_build_object('n', i)"
                     " FROM generate_series(1, $2) AS i", tenant.org_id, CONTACTS)
    survey = await create_survey(client, tenant.headers)
    segment = await create_segment(client, tenant.headers, {"and": []})
    path = segment_links_path(survey["id"], segment["id"]) + "/export"

    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    received = b""
    started = time.monotonic()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", client.server.port))
        await loop.sock_sendall(sock, (f"GET {path} HTTP/1.1\r\nHost: x\r\nx-api-key: {tenant.key}\r\n"
                                       "Connection: close\r\n\r\n").encode())
        while True:
            # 16 KB, then nothing for half the stall period: about 32 KB/s, far slower than the server writes
            burst = b""
            while len(burst) < 16384:
                chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
                if not chunk:
                    break
                burst += chunk
            received += burst
            if len(burst) < 16384:
                break
            await asyncio.sleep(STALL / 2)
    finally:
        sock.close()
    took = time.monotonic() - started
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert body.endswith(b"\r\n0\r\n\r\n")  # the chunked body's clean end: never cut
    assert body.count(b",http://links.test/c/") == CONTACTS
    assert took > 10 * STALL  # the one write of the batch waited on this client for many stall periods
    scrape = parse_samples(await (await client.get("/metrics")).text())
    assert value(scrape, "sls_limits_reached_total", limit="stream_stall") == 0


async def test_a_stalled_reader_holds_its_export_slot_until_it_is_cut(aiohttp_client, settings, tenant, db):
    app = create_app(replace(settings, stream_stall_seconds=STALL, export_concurrency=1))
    app.on_response_prepare.append(_small_send_buffer)
    client = await aiohttp_client(app)
    await db.execute("INSERT INTO contacts (org_id, attributes) SELECT $1, jsonb_build_object('n', i)"
                     " FROM generate_series(1, $2) AS i", tenant.org_id, CONTACTS)
    survey = await create_survey(client, tenant.headers)
    segment = await create_segment(client, tenant.headers, {"and": []})
    path = segment_links_path(survey["id"], segment["id"]) + "/export"

    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", client.server.port))
        await loop.sock_sendall(sock, f"GET {path} HTTP/1.1\r\nHost: x\r\nx-api-key: {tenant.key}\r\n\r\n".encode())
        assert (await asyncio.wait_for(loop.sock_recv(sock, 16), 5)).startswith(b"HTTP/1.1 200")
        stalled_at = time.monotonic()  # and never read again

        second = await client.get(path, headers=tenant.headers)  # the one slot is taken
        assert (second.status, second.headers["Retry-After"]) == (503, "5")
        assert await second.json() == {"error": {"code": 503, "details": [], "message": (
            "Service temporarily unavailable: too many exports in progress, retry shortly")}}

        async def cut() -> bool:
            scrape = parse_samples(await (await client.get("/metrics")).text())
            return value(scrape, "sls_limits_reached_total", limit="stream_stall") == 1

        await wait_until(cut, timeout=5, interval=0.05)
        assert time.monotonic() - stalled_at < 1.5 * STALL + 1.0
    finally:
        sock.close()
    third = await client.get(path, headers=tenant.headers)  # the slot and the connection are back
    assert third.status == 200
    assert (await third.read()).count(b"\r\n") == CONTACTS + 1
    scrape = parse_samples(await (await client.get("/metrics")).text())
    assert value(scrape, "sls_limits_reached_total", limit="exports") == 1
