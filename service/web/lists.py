"""Management API lists (scope `manage`): surveys, segments and contacts, newest first, with opaque
cursors (see web/paging.py; `?email=` finds one contact).

Each item is answered as the single GET of its resource answers it, except that a segment in the
list has no `contactCount`: counting is one pass over the organisation's contacts per segment
(unless cached), which would make a page of 250 segments cost 250 counts; the list's cost stays one
index seek whatever the number of contacts. GET one segment for its count.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp import web

from ..db import contacts as contact_db
from ..db import segments as segment_db
from ..db import surveys as survey_db
from .auth import guarded, principal_of
from .contacts import contact_json
from .fields import MANAGEMENT, parse_uuid
from .jsonio import json_response
from .keys import CURSORS, POOL
from .paging import (
    ContactListQuerySchema,
    ListQuerySchema,
    contact_id,
    keyset_after,
    keyset_cursor,
    page_body,
    read_list_query,
)
from .render import survey_json
from .segments import segment_json

routes = web.RouteTableDef()
# schemas are built once: marshmallow copies every declared field when one is instantiated
_list_query = ListQuerySchema()
_contact_list_query = ContactListQuerySchema()
BASE = MANAGEMENT
# the cursor kinds: a cursor of one list is refused by every other
SURVEYS, SEGMENTS, CONTACTS = "surveys", "segments", "contacts"

# (conn, org, how many, the (created_at, id) to start past or None) -> rows with .created_at and .id
Fetch = Callable[[asyncpg.Connection, uuid.UUID, int, Any], Awaitable[list[Any]]]


async def _page(request: web.Request, kind: str, query: dict[str, Any], read_id: Callable[[Any], Any],
                fetch: Fetch, render: Callable[[Any], dict[str, Any]]) -> web.Response:
    """One page of a keyset list: `limit` items past the cursor, and the cursor past the last when more follow."""
    org_id = principal_of(request).org_id
    codec = request.app[CURSORS]
    after = None if "cursor" not in query else keyset_after(codec, kind, org_id, query["cursor"], read_id)
    limit = query["limit"]
    async with request.app[POOL].acquire() as conn:
        rows = await fetch(conn, org_id, limit + 1, after)  # one more: is there a next page?
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = keyset_cursor(codec, kind, org_id, rows[-1].created_at, rows[-1].id)
    return json_response(page_body([render(row) for row in rows], next_cursor))


@routes.get(f"{BASE}/surveys")
@guarded("manage", reads_query=True)
async def list_surveys(request: web.Request) -> web.Response:
    """The organisation's surveys, newest first."""
    query = read_list_query(request, _list_query)
    return await _page(request, SURVEYS, query, parse_uuid, survey_db.list_surveys, survey_json)


@routes.get(f"{BASE}/segments")
@guarded("manage", reads_query=True)
async def list_segments(request: web.Request) -> web.Response:
    """The organisation's segments, newest first (without their counts)."""
    query = read_list_query(request, _list_query)
    return await _page(request, SEGMENTS, query, parse_uuid, segment_db.list_segments,
                       lambda segment: segment_json(segment, None))


@routes.get(f"{BASE}/contacts")
@guarded("manage", reads_query=True)
async def list_contacts(request: web.Request) -> web.Response:
    """The organisation's contacts, newest first; `?email=` answers the one with that email, or none."""
    query = read_list_query(request, _contact_list_query)
    email = query.get("email")

    async def fetch(conn: asyncpg.Connection, org_id: uuid.UUID, limit: int,
                    after: tuple[datetime, int] | None) -> list[contact_db.Contact]:
        return await contact_db.list_contacts(conn, org_id, limit, after, email)

    return await _page(request, CONTACTS, query, contact_id, fetch, contact_json)
