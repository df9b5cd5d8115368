"""POST /external/survey-campaigns/{survey_campaign_id}/links (the Filum contract).

The replay is the hot path: the key comes from the in-process cache, and the rate limit and the
replay-cache lookup are one Redis round trip; PostgreSQL is only asked on a cache miss.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from ..core.errors import (
    DomainError,
    Forbidden,
    Issue,
    PayloadTooLarge,
    Unauthorized,
    ValidationFailed,
)
from ..core.links import LinkRequest, create_or_replay, epoch_key, replay_key
from ..core.ratepolicy import parse_policy
from .auth import admit, identify, require_scope, spend
from .expect import expects_continue
from .fastbody import load_link
from .filum_body import MISSING, NOT_A_DICT, NOT_A_UUID, campaign_uuid, decode_issue
from .jsonio import PERSONAL, is_json, parse_json, raw_json_response, read_body
from .keys import GATE, METRICS, POOL, RATE_HEADERS, SETTINGS, SIGNER
from .render import link_json

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


# Valid requests seen lately: (path segment, raw body) -> the validated LinkRequest. A replay sends
# the same bytes again, and validating, canonicalising and hashing them is a pure function of those
# bytes (a fifth of the replay path's own work): remembered, bounded in count and in body size.
_RECENT_MAX, _RECENT_BODY_MAX = 4096, 2048
_recent: dict[tuple[str, bytes], tuple[LinkRequest, str]] = {}  # and its replay-cache key's tail


def _validate(segment: str, raw: bytes | None, json_typed: bool,
              issues: list[Issue]) -> tuple[LinkRequest, str] | None:
    """The LinkRequest of a valid request and its replay-cache key's tail, or None with every
    problem in `issues` (the path's first, then the body's), as FastAPI 0.99 would list them."""
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
    validated = (link_request, f"{survey_id}:{link_request.hash.hex()}")
    if len(raw) <= _RECENT_BODY_MAX:
        if len(_recent) >= _RECENT_MAX:
            del _recent[next(iter(_recent))]
        _recent[(segment, raw)] = validated
    return validated


@routes.post("/external/survey-campaigns/{survey_campaign_id}/links")
async def create_survey_link(request: web.Request) -> web.Response:
    """Create (or replay) the survey link of a campaign and metadata mapping."""
    app = request.app
    principal = await identify(request)
    if expects_continue(request):
        # the key, the rate limit and the scope before the 100 Continue (read_body sends it)
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
    validated = None if issues or raw is None or not json_typed else _recent.get((segment, raw))
    if validated is None:
        validated = _validate(segment, raw, json_typed, issues)
    link_request = cache_key = epoch = None
    if validated is not None:
        link_request, key_tail = validated
        cache_key = replay_key(principal.org, app[SIGNER].kid, key_tail)
        # an entry answers only under its survey's epoch, which revoking a link moves on
        epoch = epoch_key(principal.org, link_request.survey_id)

    gate = app[GATE]
    if RATE_HEADERS in request:  # admitted before the body was read: only the replay-cache lookup is left
        decision = await gate.check(principal.org, NO_LIMIT, cache_key, epoch)
    else:
        decision = await gate.check(principal.org, principal.policy, cache_key, epoch)
        spend(request, principal, decision)
    require_scope(principal, "links:write")
    check_filum_headers(request, principal.org)
    if body_error is not None:
        raise body_error
    if link_request is None:
        raise ValidationFailed(issues)
    if decision.cached is not None:
        app[METRICS].replay("cache")
        return raw_json_response(decision.cached, headers=REPLAYED)

    result = await create_or_replay(app[POOL], principal.org_id, link_request)
    settings = app[SETTINGS]
    body = orjson.dumps(link_json(result, app[SIGNER], settings.public_base_url))
    assert cache_key is not None
    # under the epoch the lookup saw: a revocation committed since then refuses the write (lua/remember.lua)
    await gate.remember(cache_key, body, settings.link_cache_seconds, epoch, decision.epoch)
    if result.replayed:
        app[METRICS].replay("database")
    return raw_json_response(body, headers=REPLAYED if result.replayed else PERSONAL)
