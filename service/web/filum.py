"""POST /external/survey-campaigns/{survey_campaign_id}/links (the Filum contract).

The replay is the hot path: the key comes from the in-process cache, and the rate limit and the
replay-cache lookup are one Redis round trip; PostgreSQL is only asked on a cache miss.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from ..core.errors import Forbidden, Issue, Unauthorized, ValidationFailed
from ..core.links import LinkRequest, create_or_replay
from ..core.ratelimit import org_key
from .auth import identify, require_scope, spend, unknown_query_issues
from .fastbody import fast_create_link
from .fields import issues_of, parse_uuid
from .jsonio import raw_json_response, read_json
from .keys import GATE, METRICS, POOL, SETTINGS, SIGNER
from .render import link_json
from .schemas import CreateLinkSchema

routes = web.RouteTableDef()
_schema = CreateLinkSchema()
REPLAYED = {"Idempotent-Replayed": "true"}


def _check_filum_headers(request: web.Request, org: str) -> None:
    """`auth-type`, when sent, must be `token`; `organization-id`, when sent, must be the key's."""
    auth_type = request.headers.get("auth-type")
    if auth_type is not None and auth_type.strip().lower() != "token":
        raise Unauthorized()
    claimed = request.headers.get("organization-id")
    if claimed is not None and claimed.strip().lower() != org:
        raise Forbidden()


@routes.post("/external/survey-campaigns/{survey_campaign_id}/links")
async def create_survey_link(request: web.Request) -> web.Response:
    """Create (or replay) the survey link of a campaign and metadata mapping."""
    principal = await identify(request)
    issues: list[Issue] = []
    survey_id = parse_uuid(request.match_info["survey_campaign_id"])
    if survey_id is None:
        issues.append(Issue(("path", "survey_campaign_id"), "value is not a valid uuid", "type_error.uuid"))
    issues += unknown_query_issues(request, ())
    try:
        body = await read_json(request)
        # the plainly valid body skips marshmallow; anything else gets the schema's own answer
        data = fast_create_link(body)
        if data is None:
            data, body_issues = issues_of(_schema, body)
            issues += body_issues
    except ValidationFailed as exc:
        issues += exc.issues
    link_request = None
    cache_key = None
    if not issues and survey_id is not None:
        link_request = LinkRequest.build(survey_id, data["name"], data["metadata_mapping"] or [])
        # the signing kid is part of the key: after a key rotation, answers are re-signed, not replayed stale
        kid = request.app[SIGNER].kid
        cache_key = org_key(principal.org, f"lk:{kid}:{survey_id}:{link_request.hash.hex()}")

    gate = request.app[GATE]
    decision = await gate.check(principal.org, principal.policy, cache_key)
    spend(request, principal, decision)
    require_scope(principal, "links:write")
    _check_filum_headers(request, principal.org)
    if issues or link_request is None:
        raise ValidationFailed(issues)
    if decision.cached is not None:
        request.app[METRICS].replay("cache")
        return raw_json_response(decision.cached, headers=REPLAYED)

    result = await create_or_replay(request.app[POOL], principal.org_id, link_request)
    settings = request.app[SETTINGS]
    body = orjson.dumps(link_json(result, request.app[SIGNER], settings.public_base_url))
    assert cache_key is not None
    await gate.remember(cache_key, body, settings.link_cache_seconds)
    if result.replayed:
        request.app[METRICS].replay("database")
    return raw_json_response(body, headers=REPLAYED if result.replayed else None)
