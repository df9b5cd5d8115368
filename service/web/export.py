"""Every link of a segment as CSV, streamed: `GET .../contact-links/segments/{segmentId}/export`.

Query: `expirationDays` and `attributeKeys` as on the page endpoint. Rows come newest contact
first (the page order), `contactId,surveyUrl,expiresAt` and one column per asked-for attribute.

Memory stays flat whatever the segment's size: the contacts are read in keyset batches (a seek
past the last row on the page index, never an OFFSET), each batch is signed, written and dropped
before the next, and the next batch is already running in PostgreSQL while this one is signed.
PostgreSQL also renders each row's attribute columns as CSV (UTF-8 bytes, written as they come),
which keeps that work off the worker (db/export.py). Errors before the first byte are the usual JSON errors; a
failure mid-stream cuts the connection, so a client never takes a truncated file for a whole one.

An export holds a pool connection for as long as it streams, so a worker runs at most
EXPORT_CONCURRENCY of them (503 with Retry-After past it, leaving the rest of the pool to other
requests), and a client that takes no byte for STREAM_STALL_SECONDS is cut the same way.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime

from aiohttp import web

from ..core.rules import INT64_MAX
from ..db.export import MemberBatches, csv_field
from ..db.members import OpenedFilter
from .auth import guarded, principal_of
from .client import ClientGone, client_io
from .contact_links import BASE, LinkSigning, link_signer, segment_link_context, validated_query
from .fields import path_uuid
from .jsonio import PERSONAL
from .keys import EXPORTS, METRICS, POOL, RATE_HEADERS, REQUEST_ID, SETTINGS
from .limits import ClientStalled, write_or_cut

log = logging.getLogger("service.export")
routes = web.RouteTableDef()
BATCH = 10_000
CSV_TYPE = "text/csv; charset=utf-8"


# the cursor before every contact: contacts are created at now(), never at the end of time
START = (datetime(9999, 12, 31, tzinfo=UTC), INT64_MAX)


EXPORT_QUERY = ("expirationDays", "attributeKeys", "opened")


@routes.get(f"{BASE}/segments/{{segmentId}}/export")
@guarded("links:read", reads_query=True)
async def export_segment_links(request: web.Request) -> web.StreamResponse:
    """Every link of the segment as a CSV file (with `opened=true|false`, of those that have or have not
    opened the survey's link)."""
    query = validated_query(request, EXPORT_QUERY)
    survey_id = path_uuid(request, "surveyId", "survey")
    segment_id = path_uuid(request, "segmentId", "segment")
    org_id: uuid.UUID = principal_of(request).org_id
    keys: list[str] = query["attributeKeys"]
    async with request.app[EXPORTS].hold(), request.app[POOL].acquire() as conn:
        context, seq = await segment_link_context(conn, org_id, survey_id, segment_id)
        assert context.filters is not None  # the segment exists: segment_link_context answers 404 otherwise
        # what the edge middleware would add, sent now because the headers leave with the first byte
        headers = {"Content-Type": CSV_TYPE, **PERSONAL,
                   "Content-Disposition": f'attachment; filename="segment-{segment_id}-links.csv"',
                   "X-Request-Id": request[REQUEST_ID], **(request.get(RATE_HEADERS) or {})}
        response = web.StreamResponse(headers=headers)
        try:
            with client_io(request):
                await response.prepare(request)
                sign = link_signer(request.app, context.link_format, context.link_generation, seq,
                                   query["expirationDays"])
                opened = None if query["opened"] is None else OpenedFilter(
                    survey_id, query["opened"], context.opens_version)
                batches = MemberBatches(conn, org_id, context.filters, keys, opened, BATCH)
                await _stream(request, response, batches, sign, keys)
                await _write(request, response.write_eof())
        except ClientGone:
            raise
        except ClientStalled:
            log.warning("export client stopped reading; cut", extra={"request_id": request[REQUEST_ID]})
            request.app[METRICS].limit_reached("stream_stall")
            _cut(request)
        except Exception:
            log.exception("export cut short", extra={"request_id": request[REQUEST_ID]})
            _cut(request)
    return response


def _cut(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()  # the client sees an incomplete body, never a wrong one


async def _write(request: web.Request, write: Awaitable[None]) -> None:
    """One write of the stream, cut once the client has taken no byte for STREAM_STALL_SECONDS."""
    await write_or_cut(request.transport, write, request.app[SETTINGS].stream_stall_seconds)


async def _stream(request: web.Request, response: web.StreamResponse, batches: MemberBatches,
                  sign: LinkSigning, keys: list[str]) -> None:
    prefix, expires_at, tokens_of = sign
    # records end in CRLF, as RFC 4180 writes them (a line break inside a quoted field stays as sent)
    head = ",".join(["contactId", "surveyUrl", "expiresAt", *map(csv_field, keys)]) + "\r\n"
    await _write(request, response.write(head.encode()))
    middle = ("," + prefix).encode()
    after = ("," + (expires_at or "")).encode()
    # each batch fetched while the previous one is written
    pending = asyncio.ensure_future(batches.read(START))
    try:
        while True:
            batch = await pending
            if not batch.ids:
                return
            if len(batch.ids) == BATCH:
                pending = asyncio.ensure_future(batches.read(batch.cursor))
                await asyncio.sleep(0)  # let the next query leave before this batch is signed
            tokens = tokens_of(batch.ids)
            await _write(request, response.write(b"".join([
                b"%d%s%s%s%s\r\n" % (cid, middle, token, after, tail)
                for cid, token, tail in zip(batch.ids, tokens, batch.tails, strict=True)])))
            if len(batch.ids) < BATCH:
                return
    finally:
        if not pending.done():
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)
