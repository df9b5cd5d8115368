"""POST /external/survey-campaigns/{survey_campaign_id}/links (the Filum contract).

The replay is the hot path: the validated body comes from the app's memo of recent requests, and
the rate limit and the replay-cache lookup are one Redis round trip (core/create_link.py, the use
case); PostgreSQL is only asked on a cache miss. This module turns HTTP into those calls and their
answers into HTTP.
"""

from __future__ import annotations

from aiohttp import web

from ..core.errors import (
    DomainError,
    Forbidden,
    Issue,
    PayloadTooLarge,
    Unauthorized,
    ValidationFailed,
)
from ..core.links import LinkRequest
from ..core.ratepolicy import parse_policy
from .auth import admit, identify, require_scope, spend
from .expect import expects_continue
from .fastbody import load_link
from .filum_body import MISSING, NOT_A_DICT, NOT_A_UUID, campaign_uuid, decode_issue
from .jsonio import PERSONAL, is_json, parse_json, raw_json_response, read_body
from .keys import LINKS, RECENT_LINKS
from .recent import Recent

routes = web.RouteTableDef()
REPLAYED = {"Idempotent-Replayed": "true", **PERSONAL}
NO_LIMIT = parse_policy("off")  # the gate script's replay-cache lookup alone


def check_filum_headers(request: web.Request, org: str) -> None:
    """`auth-type`, when sent, must be `token`; `organization-id`, when sent, must be the key's."""
    auth_type = request.headers.get("auth-type")
    if auth_type is not None and auth_type.strip().lower() != "token":
        raise Unauthorized()
    claimed = request.headers.get("organization-id")
    if claimed is not None and claimed.strip().lower() != org:
        raise Forbidden()


# Valid requests seen lately (app[RECENT_LINKS]): a replay sends the same bytes again, and validating,
# canonicalising and hashing them is a fifth of the replay path's own work
RECENT_MAX, RECENT_BODY_MAX = 4096, 2048


def recent_links() -> Recent[LinkRequest]:
    """The app's memo of valid single creates (web/recent.py)."""
    return Recent(RECENT_MAX, RECENT_BODY_MAX)


def _validate(recent: Recent[LinkRequest], segment: str, raw: bytes | None, json_typed: bool,
              issues: list[Issue]) -> LinkRequest | None:
    """The LinkRequest of a valid request (remembered in `recent`), or None with every problem in
    `issues` (the path's first, then the body's), as FastAPI 0.99 would list them."""
    survey_id = campaign_uuid(segment)
    if survey_id is None:
        issues.insert(0, NOT_A_UUID)
    if raw is None:  # the body's problem is in `issues` already
        return None
    if not raw or not json_typed:  # FastAPI hands an empty body to its model as none, another type as bytes
        issues.append(MISSING if not raw else NOT_A_DICT)
        return None
    try:
        body = parse_json(raw)
    except ValidationFailed as exc:
        # FastAPI parses the body before it looks at anything else: not JSON is the whole answer
        issues[:] = [decode_issue(raw) or exc.issues[0]]
        return None
    if body is None:  # JSON null: FastAPI reads it as no body
        issues.append(MISSING)
        return None
    # the plainly valid body skips marshmallow; anything else gets the schema's own answer
    data, body_issues = load_link(body)
    issues += body_issues
    if data is None or issues or survey_id is None:
        return None
    link_request = LinkRequest.build(survey_id, data["name"], data["metadata_mapping"] or [])
    recent.remember(segment, raw, link_request)
    return link_request


@routes.post("/external/survey-campaigns/{survey_campaign_id}/links")
async def create_survey_link(request: web.Request) -> web.Response:
    """Create (or replay) the survey link of a campaign and metadata mapping."""
    app = request.app
    principal = await identify(request)
    admitted = expects_continue(request)
    if admitted:
        # the key, the rate limit, the scope and the headers before the 100 Continue (read_body sends it)
        await admit(request)
        require_scope(principal, "links:write")
        check_filum_headers(request, principal.org)
    segment = request.match_info["survey_campaign_id"]
    issues: list[Issue] = []  # the path takes no query parameters: others are ignored, as FastAPI does
    # the body's own errors are answered after the key, rate-limit and scope checks, like bad JSON:
    # every authenticated request spends a token, and a key without the scope is a 403 whatever it sends
    body_error: DomainError | None = None
    try:
        # any content type is read: FastAPI answers another one with a 422 (body not a dict), not a 415
        raw: bytes | None = await read_body(request, any_type=True)
    except ValidationFailed as exc:  # a body that does not decode: one more 422 issue
        issues += exc.issues
        raw = None
    except PayloadTooLarge as exc:
        body_error, raw = exc, None
    json_typed = is_json(request)
    recent = app[RECENT_LINKS]
    link_request = None if issues or raw is None or not json_typed else recent.get((segment, raw))
    if link_request is None:
        link_request = _validate(recent, segment, raw, json_typed, issues)

    links = app[LINKS]
    if admitted:  # checked before the body was read: only the replay-cache lookup is left
        decision = await links.look_up(principal.org, NO_LIMIT, link_request)
    else:
        decision = await links.look_up(principal.org, principal.policy, link_request)
        spend(request, principal, decision)
        require_scope(principal, "links:write")
        check_filum_headers(request, principal.org)
    if body_error is not None:
        raise body_error
    if link_request is None:
        raise ValidationFailed(issues)
    cached = links.replayed(decision)
    if cached is not None:
        return raw_json_response(cached, headers=REPLAYED)
    answer = await links.create(principal.org, principal.org_id, link_request, decision)
    return raw_json_response(answer.body, headers=REPLAYED if answer.replayed else PERSONAL)
