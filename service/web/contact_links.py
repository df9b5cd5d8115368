"""Signed contact links (Formbricks contract), generated on the fly: nothing is stored per link.

A page costs one Redis read for the segment's remembered size and where the page starts, one
PostgreSQL round trip for the survey, the segment, the survey's opens version and whether contacts
changed since that count (see core.segment_cache), and one query for the page itself; its tokens
come from the signer's batch method.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

import asyncpg
import orjson
from aiohttp import web

from ..core.errors import Forbidden, NotFound, ValidationFailed
from ..core.rules import parse_id
from ..core.segment_cache import lookup, read_page
from ..core.short_links import expiry_hour_ceiling
from ..db import contacts as contact_db
from ..db import members as members_db
from ..db import segments as segment_db
from .auth import guarded, principal_of
from .fields import MANAGEMENT, path_uuid
from .jsonio import PERSONAL, raw_json_response
from .keys import POOL, SEGMENT_CACHE, SETTINGS, SHORT_LINKS, SIGNER
from .link_query import load_link_query
from .render import iso

routes = web.RouteTableDef()
BASE = f"{MANAGEMENT}/surveys/{{surveyId}}/contact-links"
PAGE_QUERY = ("limit", "skip", "expirationDays", "attributeKeys", "opened")
CONTACT_QUERY = ("expirationDays",)
DAY_SECONDS = 86_400
_NO_ATTRIBUTES = orjson.Fragment(b"{}")


def expiry(days: int | None) -> tuple[int | None, str | None]:
    """The tokens' `exp` (whole epoch seconds, computed once per request) and the same instant in ISO 8601."""
    if days is None:
        return None, None
    exp = int(time.time()) + days * DAY_SECONDS
    return exp, iso(datetime.fromtimestamp(exp, UTC))


class LinkSigning(NamedTuple):
    prefix: str  # PUBLIC_BASE_URL + "/c/" or "/s/"
    expires_at: str | None  # as answered
    sign: Callable[[Sequence[int]], list[bytes]]  # contact ids -> their tokens (ASCII)


def link_signer(app: web.Application, link_format: str | None, generation: int | None, seq: int,
                days: int | None) -> LinkSigning:
    """How a survey's contact links are written: the URL prefix (`/c/` or `/s/`), the expiry
    answered, and a function signing a batch of contact ids. A short link expires on the hour, so
    its expiry is rounded up to one and the rounded instant is the one answered."""
    exp, expires_at = expiry(days)
    gen = generation or 1  # the survey's link generation, carried by every token it issues
    if link_format == "short":
        exp = expiry_hour_ceiling(exp)
        expires_at = None if exp is None else iso(datetime.fromtimestamp(exp, UTC))
        short = app[SHORT_LINKS]
        return LinkSigning(app[SETTINGS].public_base_url + "/s/", expires_at,
                           lambda ids: short.tokens(seq, ids, exp, gen))
    signer = app[SIGNER]
    return LinkSigning(app[SETTINGS].public_base_url + "/c/", expires_at,
                       lambda ids: signer.contact_token_bytes(seq, ids, exp, gen))


def check_survey(seq: int | None) -> int:
    """The survey's number for the tokens: 404 when there is no such survey."""
    if seq is None:
        raise NotFound("survey", field="surveyId")
    return seq


def require_in_progress(status: str | None) -> None:
    if status != "inProgress":
        raise Forbidden(f"survey is not in progress (status: {status})", field="surveyId")


async def segment_link_context(
    conn: asyncpg.Connection, org_id: uuid.UUID, survey_id: uuid.UUID, segment_id: uuid.UUID,
    since: segment_db.Since | None = None,
) -> tuple[segment_db.LinkContext, int]:
    """The survey and segment a page or an export signs for, and the survey's number: 404 when either
    is missing (or another organisation's), 403 when the survey is not in progress."""
    context = await segment_db.link_context(conn, org_id, survey_id, segment_id, since)
    seq = check_survey(context.survey_seq)
    if context.filters is None:
        raise NotFound("segment", field="segmentId")
    require_in_progress(context.survey_status)
    return context, seq


def path_contact_id(request: web.Request) -> int:
    """A contact id from the path; anything but a positive bigint names no contact (404)."""
    contact_id = parse_id(request.match_info["contactId"])
    if contact_id is None:
        raise NotFound("contact", field="contactId")
    return contact_id


def validated_query(request: web.Request, names: tuple[str, ...]) -> dict[str, Any]:
    """The contact-links query parameters in `names`, or one 422 naming each invalid one.

    Other parameters are ignored, as Formbricks ignores them: its generated clients and their
    callers may send more than the operation takes (see load_link_query for how values are read).
    """
    query, issues = load_link_query(request.query, names)
    if issues:
        raise ValidationFailed(issues)
    return query


@routes.get(f"{BASE}/segments/{{segmentId}}")
@guarded("links:read", reads_query=True)
async def segment_links(request: web.Request) -> web.Response:
    """A page of the segment's contacts, newest first, each with its signed survey link; with
    `opened=true|false`, only those that have (or have not) opened the survey's link."""
    query = validated_query(request, PAGE_QUERY)
    survey_id = path_uuid(request, "surveyId", "survey")
    segment_id = path_uuid(request, "segmentId", "segment")
    org_id: uuid.UUID = principal_of(request).org_id
    limit, skip, keys = query["limit"], query["skip"], query["attributeKeys"]
    cache, pool = request.app[SEGMENT_CACHE], request.app[POOL]
    # the reminder list's entry is keyed by survey and flag; its opens version is compared once known
    wanted = None if query["opened"] is None else members_db.OpenedFilter(survey_id, query["opened"], 0)
    cached = await lookup(cache, org_id, segment_id, skip, wanted)
    async with pool.acquire() as conn:
        context, seq = await segment_link_context(conn, org_id, survey_id, segment_id,
                                                  None if cached is None else cached.since)
        assert context.filters is not None  # the segment exists: segment_link_context answers 404 otherwise
        opened = None if wanted is None else replace(wanted, version=context.opens_version)
        page = await read_page(cache, pool, conn, org_id, segment_id, context.filters, cached, context.changed,
                               limit, skip, keys, opened)
    prefix, expires_at, sign = link_signer(request.app, context.link_format, context.link_generation, seq,
                                           query["expirationDays"])
    tokens = sign([row.contact_id for row in page.rows])
    data = [
        {"contactId": str(row.contact_id), "surveyUrl": prefix + token.decode(), "expiresAt": expires_at,
         "attributes": _NO_ATTRIBUTES if row.attributes_json is None else orjson.Fragment(row.attributes_json)}
        for row, token in zip(page.rows, tokens, strict=True)
    ]
    body = {"data": data, "meta": {"total": page.total, "limit": limit, "offset": skip}}
    return raw_json_response(orjson.dumps(body), headers=PERSONAL)


@routes.get(f"{BASE}/contacts/{{contactId}}")
@guarded("links:read", reads_query=True)
async def contact_link(request: web.Request) -> web.Response:
    """The signed survey link of one contact."""
    query = validated_query(request, CONTACT_QUERY)
    survey_id = path_uuid(request, "surveyId", "survey")
    contact_id = path_contact_id(request)
    async with request.app[POOL].acquire() as conn:
        target = await contact_db.contact_link_target(conn, principal_of(request).org_id, survey_id, contact_id)
    seq = check_survey(target.survey_seq)
    if not target.contact_found:
        raise NotFound("contact", field="contactId")
    require_in_progress(target.survey_status)
    prefix, expires_at, sign = link_signer(request.app, target.link_format, target.link_generation, seq,
                                           query["expirationDays"])
    url = prefix + sign([contact_id])[0].decode()
    return raw_json_response(orjson.dumps({"data": {"surveyUrl": url, "expiresAt": expires_at}}), headers=PERSONAL)
