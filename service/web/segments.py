"""Management API (scope `manage`): segments, answered with their contact count; edited and deleted."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
from aiohttp import web

from ..core.errors import NotFound
from ..core.segment_cache import Cached, SegmentCache, lookup, segment_total
from ..db import segments as segment_db
from ..db.pool import Pool
from .auth import guarded, principal_of
from .contact_schemas import SegmentCreateSchema, SegmentPatchSchema
from .fields import MANAGEMENT, load, path_uuid
from .jsonio import json_response, read_json
from .keys import POOL, SEGMENT_CACHE
from .render import iso

routes = web.RouteTableDef()
# schemas are built once: marshmallow copies every declared field when one is instantiated
_segment_create = SegmentCreateSchema()
_segment_patch = SegmentPatchSchema()
BASE = MANAGEMENT


def segment_json(segment: segment_db.Segment, contact_count: int | None) -> dict[str, Any]:
    """A segment as one is answered; None: as the list answers it, without `contactCount` (not counted)."""
    body = {"id": str(segment.id), "title": segment.title, "filters": segment.filters,
            "contactCount": contact_count, "createdAt": iso(segment.created_at)}
    if contact_count is None:
        del body["contactCount"]
    return body


@routes.post(f"{BASE}/segments")
@guarded("manage")
async def create_segment(request: web.Request) -> web.Response:
    """Create a segment from a filter tree (422 names the place of each problem in the tree)."""
    data = load(_segment_create, await read_json(request))
    org_id = principal_of(request).org_id
    cache, pool = request.app[SEGMENT_CACHE], request.app[POOL]
    async with pool.acquire() as conn:
        segment = await segment_db.insert_segment(conn, org_id, data["title"], data["filters"])
        total = await segment_total(cache, pool, conn, org_id, segment.id, segment.filters, None, None)
    return json_response({"data": segment_json(segment, total)}, status=201)


@routes.get(f"{BASE}/segments/{{segmentId}}")
@guarded("manage")
async def get_segment(request: web.Request) -> web.Response:
    """One segment with how many contacts it holds now."""
    segment_id = path_uuid(request, "segmentId", "segment")
    org_id = principal_of(request).org_id
    cache, pool = request.app[SEGMENT_CACHE], request.app[POOL]
    cached = await lookup(cache, org_id, segment_id)
    async with pool.acquire() as conn:
        found = await segment_db.get_segment(conn, org_id, segment_id, None if cached is None else cached.since)
        return await _with_count(cache, pool, conn, org_id, cached, found)


@routes.patch(f"{BASE}/segments/{{segmentId}}")
@guarded("manage")
async def patch_segment(request: web.Request) -> web.Response:
    """Change a segment's title and/or filters; counts and pages follow the new filters at once
    (the segment cache's entries hold the digest of the filters they counted, see core.segment_cache)."""
    segment_id = path_uuid(request, "segmentId", "segment")
    changes = load(_segment_patch, await read_json(request))
    org_id = principal_of(request).org_id
    cache, pool = request.app[SEGMENT_CACHE], request.app[POOL]
    cached = await lookup(cache, org_id, segment_id)
    async with pool.acquire() as conn:
        found = await segment_db.update_segment(conn, org_id, segment_id, changes.get("title"), changes.get("filters"),
                                                None if cached is None else cached.since)
        # an entry counted for other filters is never answered (its digest differs): counted now
        return await _with_count(cache, pool, conn, org_id, cached, found)


async def _with_count(cache: SegmentCache, pool: Pool, conn: asyncpg.Connection, org_id: uuid.UUID,
                      cached: Cached | None, found: tuple[segment_db.Segment, bool | None] | None) -> web.Response:
    """The segment GET and PATCH answer: 404 when it was not found, else it with how many contacts it holds."""
    if found is None:
        raise NotFound("segment", field="segmentId")
    segment, changed = found
    total = await segment_total(cache, pool, conn, org_id, segment.id, segment.filters, cached, changed)
    return json_response({"data": segment_json(segment, total)})


@routes.delete(f"{BASE}/segments/{{segmentId}}")
@guarded("manage")
async def delete_segment(request: web.Request) -> web.Response:
    """Delete a segment: it and its pages answer 404 from then on (contacts are untouched)."""
    segment_id = path_uuid(request, "segmentId", "segment")
    async with request.app[POOL].acquire() as conn:
        deleted = await segment_db.delete_segment(conn, principal_of(request).org_id, segment_id)
    if not deleted:
        raise NotFound("segment", field="segmentId")
    return web.Response(status=204)
