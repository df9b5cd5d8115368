"""POST /external/survey-campaigns/{survey_campaign_id}/links/batch: many single creates in one call.

Each item is answered as the single create would answer it (filum.py: the same validation; the
use case's cache keys and link JSON, core/create_link.py), in request order; the call spends one
rate-limit token. The replay cache is read with MGETs and written in one pipeline; the rest is one
round of queries (core/batch.py).
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from aiohttp import web

from ..core import rules
from ..core.create_link import Answer
from ..core.errors import DomainError, Issue, ValidationFailed
from ..core.links import LinkRequest
from .auth import admit, require_scope
from .errors import filum_detail
from .fastbody import load_link
from .filum import check_filum_headers
from .filum_body import MISSING, NOT_A_DICT, NOT_A_UUID, campaign_uuid, decode_issue
from .jsonio import PERSONAL, is_json, parse_json, raw_json_response, read_body
from .keys import LINKS, RECENT_BATCHES, SETTINGS
from .recent import Recent
from .schemas import MAX_BATCH_ITEMS

routes = web.RouteTableDef()
_LINKS = ("body", "links")
_NO_LINKS = rules.MISSING.at(_LINKS)
_NULL_LINKS = rules.NULL.at(_LINKS)
_NOT_A_LIST = rules.NOT_A_LIST.at(_LINKS)
_TOO_FEW = rules.too_few(1).at(_LINKS)
_TOO_MANY = rules.too_many(MAX_BATCH_ITEMS).at(_LINKS)
_CREATED, _REPLAYED = b'{"status":200,"replayed":false,"link":', b'{"status":200,"replayed":true,"link":'


def envelope(raw: bytes, json_typed: bool) -> list[Any]:
    """The items of a batch body, or 422 for the whole call: not JSON, not an object, `links` missing,
    not a list of 1 to 1,000 objects (FastAPI's answers for `links: conlist(dict, 1, 1000)`)."""
    if not raw or not json_typed:
        raise ValidationFailed([MISSING if not raw else NOT_A_DICT])
    try:
        body = parse_json(raw)
    except ValidationFailed as exc:
        raise ValidationFailed([decode_issue(raw) or exc.issues[0]]) from None
    if body is None:
        raise ValidationFailed([MISSING])
    if type(body) is not dict:
        raise ValidationFailed([NOT_A_DICT])
    if "links" not in body:
        raise ValidationFailed([_NO_LINKS])
    links = body["links"]
    if links is None:
        raise ValidationFailed([_NULL_LINKS])
    if type(links) is not list:
        raise ValidationFailed([_NOT_A_LIST])
    if not links:
        raise ValidationFailed([_TOO_FEW])
    if len(links) > MAX_BATCH_ITEMS:
        raise ValidationFailed([_TOO_MANY])
    not_objects = [Issue((*_LINKS, i), NOT_A_DICT.msg, NOT_A_DICT.type)
                   for i, item in enumerate(links) if type(item) is not dict]
    if not_objects:
        raise ValidationFailed(not_objects)
    return links


def at_item(error: DomainError, pos: int) -> DomainError:
    """A single create's error as item `pos` of a batch answers it: each `loc` under the item."""
    if not isinstance(error, ValidationFailed):
        return error
    return ValidationFailed([Issue((*_LINKS, pos, *i.loc[1:]), i.msg, i.type, i.ctx) for i in error.issues])


def _refused(error: DomainError) -> bytes:
    return orjson.dumps({"status": error.status, "detail": filum_detail(error)})


Read = tuple[uuid.UUID, list[bytes | None], list[LinkRequest | None]]
# Batches read lately (app[RECENT_BATCHES]): a batch sent again (a retry, a replay) is the same bytes,
# and reading them (parsing, validating, canonicalising and hashing 1,000 items) is half a replayed
# batch's CPU
RECENT_MAX, RECENT_BODY_MAX = 4, 1024 * 1024


def recent_batches() -> Recent[Read]:
    """The app's memo of read batches (web/recent.py)."""
    return Recent(RECENT_MAX, RECENT_BODY_MAX)


def _read(recent: Recent[Read], segment: str, raw: bytes, json_typed: bool) -> Read:
    """Each item's 422 answer or its LinkRequest; 422 for the whole call when the path or the envelope is bad."""
    survey_id = campaign_uuid(segment)
    try:
        items = envelope(raw, json_typed)
    except ValidationFailed as exc:
        raise ValidationFailed(exc.issues if survey_id else [NOT_A_UUID, *exc.issues]) from None
    if survey_id is None:
        raise ValidationFailed([NOT_A_UUID])
    refusals: list[bytes | None] = [None] * len(items)
    requests: list[LinkRequest | None] = [None] * len(items)
    survey_text = str(survey_id)
    for pos, item in enumerate(items):
        data, issues = load_link(item, (*_LINKS, pos))
        if data is None:
            refusals[pos] = _refused(ValidationFailed(issues))
        else:
            requests[pos] = LinkRequest.build(survey_id, data["name"], data["metadata_mapping"] or [], survey_text)
    read = survey_id, refusals, requests
    recent.remember(segment, raw, read)
    return read


@routes.post("/external/survey-campaigns/{survey_campaign_id}/links/batch")
async def create_survey_links(request: web.Request) -> web.Response:
    """Create (or replay) up to 1,000 survey links of a campaign, each as the single create would."""
    app = request.app
    principal = await admit(request)  # 401, then 429: one token for the whole batch
    require_scope(principal, "links:write")
    check_filum_headers(request, principal.org)
    segment = request.match_info["survey_campaign_id"]
    raw = await read_body(request, app[SETTINGS].bulk_max_body_bytes, any_type=True)
    json_typed = is_json(request)
    recent = app[RECENT_BATCHES]
    read = recent.get((segment, raw)) if json_typed else None
    if read is None:
        read = _read(recent, segment, raw, json_typed)
    survey_id, refusals, requests = read
    answers = list(refusals)
    created = await app[LINKS].create_many(principal.org, principal.org_id, survey_id, requests)
    for pos, answer in enumerate(created):
        if isinstance(answer, Answer):
            answers[pos] = (_REPLAYED if answer.replayed else _CREATED) + answer.body + b"}"
        elif answer is not None:
            answers[pos] = _refused(at_item(answer, pos))
    return raw_json_response(b'{"results":[' + b",".join(answers) + b"]}", headers=PERSONAL)  # type: ignore[arg-type]
