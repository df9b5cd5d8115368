"""Created links in the management API (scope `manage`): list, one, revoke; and revoking a survey's
contact links. SPEC "The life of a link"."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from aiohttp import web

from ..core import revocation
from ..core.cursors import CursorCodec, InvalidCursor
from ..core.errors import Issue, NotFound, ValidationFailed
from ..core.rules import INT64_MAX, parse_id
from ..db import created_links as created_db
from ..db.created_links import ManagedLink
from .auth import guarded, principal_of, unknown_query_issues
from .contact_links import BASE as CONTACT_LINKS
from .fields import MANAGEMENT, parse_uuid, path_uuid
from .jsonio import PERSONAL, json_response, raw_json_response
from .keys import CURSORS, GATE, POOL, SETTINGS, SIGNER
from .link_query import load_link_query
from .paging import contact_id, page_body
from .render import created_link_url, iso

routes = web.RouteTableDef()
LINKS = f"{MANAGEMENT}/surveys/{{surveyId}}/links"
LIST_QUERY = ("limit", "cursor")
BAD_CURSOR = Issue(("query", "cursor"), "invalid cursor: pass the nextCursor of this list as it was answered",
                   "value_error.cursor")


def link_json(link: ManagedLink, survey_url: str) -> dict[str, Any]:
    """A created link as the management API answers it."""
    mapping = []
    for item in link.metadata_mapping:
        field = link.fields.get(item["metadata_id"], {"id": item["metadata_id"], "name": None, "variable": None})
        mapping.append({"metadata": field, "value": item["value"]})
    return {
        "id": link.id, "publicId": link.public_id, "name": link.name, "metadataMapping": mapping,
        "surveyUrl": survey_url, "createdAt": iso(link.created_at), "revokedAt": iso(link.revoked_at),
        "opens": {"count": link.opens, "firstAt": iso(link.first_opened_at), "lastAt": iso(link.last_opened_at)},
    }


def path_link_id(request: web.Request) -> int:
    """A link id from the path; anything but a positive bigint names no link (404)."""
    link_id = parse_id(request.match_info["linkId"])
    if link_id is None:
        raise NotFound("link", field="linkId")
    return link_id


def cursor_after(codec: CursorCodec, kind: str, org_id: uuid.UUID, text: str) -> int | None:
    """The last link id a cursor of this list names (the position `[id]`); None for one that is not this
    list's (altered, another survey's, another organisation's)."""
    try:
        position = codec.decode(kind, org_id, text)
    except InvalidCursor:
        return None
    # only a holder of the signing keys could sign another shape: refused all the same
    return contact_id(position[0]) if len(position) == 1 else None


@routes.get(LINKS)
@guarded("manage", reads_query=True)
async def list_links(request: web.Request) -> web.Response:
    """The survey's created links, newest first, a page at a time (`nextCursor` names the next one)."""
    issues = unknown_query_issues(request, LIST_QUERY)
    query, limit_issues = load_link_query(request.query, ("limit",))
    issues += limit_issues
    survey = parse_uuid(request.match_info["surveyId"])
    kind = f"links:{survey}"  # a cursor belongs to one survey's list (and one organisation's)
    org_id: uuid.UUID = principal_of(request).org_id
    codec = request.app[CURSORS]
    before = INT64_MAX
    cursor = request.query.getall("cursor", [""])[-1]
    if cursor:
        last_id = cursor_after(codec, kind, org_id, cursor)
        if last_id is None:
            issues.append(BAD_CURSOR)
        else:
            before = last_id
    if issues:
        raise ValidationFailed(issues)
    survey_id = path_uuid(request, "surveyId", "survey")
    limit = query["limit"]
    async with request.app[POOL].acquire() as conn:
        links = await created_db.page_links(conn, org_id, survey_id, before, limit + 1)
    if links is None:
        raise NotFound("survey", field="surveyId")
    page = links[:limit]
    next_cursor = codec.encode(kind, org_id, [page[-1].id]) if len(links) > limit else None
    base_url = request.app[SETTINGS].public_base_url
    tokens = request.app[SIGNER].created_link_tokens([link.public_id for link in page])  # signed at once
    body = page_body([link_json(link, created_link_url(base_url, token))
                      for link, token in zip(page, tokens, strict=True)], next_cursor)
    return raw_json_response(orjson.dumps(body), headers=PERSONAL)


@routes.get(f"{LINKS}/{{linkId}}")
@guarded("manage")
async def get_link(request: web.Request) -> web.Response:
    """One created link, with whether and when it was revoked and opened."""
    survey_id = path_uuid(request, "surveyId", "survey")
    link_id = path_link_id(request)
    async with request.app[POOL].acquire() as conn:
        link = await created_db.get_link(conn, principal_of(request).org_id, survey_id, link_id)
    if link is None:
        raise NotFound("link", field="linkId")
    token = request.app[SIGNER].created_link_token(link.public_id)
    url = created_link_url(request.app[SETTINGS].public_base_url, token)
    return raw_json_response(orjson.dumps({"data": link_json(link, url)}), headers=PERSONAL)


@routes.delete(f"{LINKS}/{{linkId}}")
@guarded("manage")
async def revoke_link(request: web.Request) -> web.Response:
    """Revoke a created link: its survey_url answers 410 from now on, no replay hands it out again, the
    same mapping makes a new link, and its place in the quota is free. Again: 204, nothing changes."""
    survey_id = path_uuid(request, "surveyId", "survey")
    link_id = path_link_id(request)
    org_id: uuid.UUID = principal_of(request).org_id
    await revocation.revoke_created_link(request.app[POOL], request.app[GATE], org_id, survey_id, link_id,
                                         request.app[SETTINGS].link_cache_seconds)
    return web.Response(status=204)


@routes.post(f"{CONTACT_LINKS}/revoke")
@guarded("manage")
async def revoke_contact_links(request: web.Request) -> web.Response:
    """Revoke every contact link issued for the survey so far (links issued afterwards open)."""
    survey_id = path_uuid(request, "surveyId", "survey")
    revoked_at = await revocation.revoke_contact_links(request.app[POOL], principal_of(request).org_id, survey_id)
    return json_response({"data": {"revokedAt": iso(revoked_at)}})
