"""Opening a link (the respondent's side, no API key): `/c/<contact token>`, `/s/<short contact
token>` (core/short_links.py) and `/l/<created link>`.

The signature is checked first, in-process: a forged, altered or unknown-key link is 404 before
any database query. An expired contact link is 410 (also before any query), and so is a revoked
link (a created link revoked, a contact link of a revoked generation: core/revocation.py) and a link
to a survey that is not in progress. A valid link redirects (302) to the survey's `redirectUrl` with
the link's facts as query parameters, or, without a `redirectUrl`, answers them as JSON (200).
Errors use the Formbricks body, like every path outside `/external/`.

Every open answered 302 or 200 is counted by its handler (tallied in memory and written in batches,
service/core/opens.py), never by the check functions: a QR code is checked by them and is not an open.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote_plus, urlencode, urlsplit, urlunsplit

import orjson
from aiohttp import web

from ..core import revocation
from ..core.errors import Gone, NotFound
from ..core.signing import ContactClaims, ExpiredLink, InvalidLink
from ..db import contacts as contact_db
from ..db import links as link_db
from .jsonio import json_response
from .keys import OPENS, POOL, SHORT_LINKS, SIGNER

routes = web.RouteTableDef()
# the token is in the URL: keep it out of shared caches and out of the target's Referer header
_PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()  # numbers in their JSON form: 1, 2.5, 1e+20


def query_pairs(facts: dict[str, Any]) -> list[tuple[str, str]]:
    """Query parameters for the facts: a list repeats its parameter, a null is an empty value."""
    pairs: list[tuple[str, str]] = []
    for name, value in facts.items():
        for item in value if isinstance(value, list) else [value]:
            pairs.append((name, _text(item)))
    return pairs


def redirect_target(redirect_url: str, facts: dict[str, Any]) -> str:
    """`redirect_url` with the facts added to its query; its own parameters are kept as they are
    written, except those the facts name (the link's values win)."""
    parts = urlsplit(redirect_url)
    ours = set(facts)
    kept = [p for p in parts.query.split("&") if p and unquote_plus(p.split("=", 1)[0]) not in ours]
    added = urlencode(query_pairs(facts), quote_via=quote)
    return urlunsplit(parts._replace(query="&".join([*kept, added] if added else kept)))


def answer(redirect_url: str | None, facts: dict[str, Any]) -> web.Response:
    if redirect_url:
        return web.Response(status=302, headers={"Location": redirect_target(redirect_url, facts), **_PRIVATE})
    return json_response({"data": facts}, headers=dict(_PRIVATE))


async def check_contact_link(app: web.Application, token: str) -> tuple[ContactClaims, contact_db.OpenedContactLink]:
    """Every check of opening a contact link, and nothing else: its QR code is checked by this too
    (service/web/qr.py), so what opening adds for an open (counting it) belongs in the handler."""
    return await _check_contact(app, app[SIGNER].verify_contact_token, token)


async def check_short_link(app: web.Application, token: str) -> tuple[ContactClaims, contact_db.OpenedContactLink]:
    """check_contact_link for a short token (`/s/`): only the decoding differs."""
    return await _check_contact(app, app[SHORT_LINKS].verify, token)


async def _check_contact(app: web.Application, verify: Callable[[str], ContactClaims],
                         token: str) -> tuple[ContactClaims, contact_db.OpenedContactLink]:
    """A contact token decoded by `verify` (404 forged, 410 expired: no query), then its claims checked."""
    try:
        claims = verify(token)
    except InvalidLink:
        raise NotFound("link", field="token") from None
    except ExpiredLink:
        raise Gone("this link has expired") from None
    return claims, await check_contact_claims(app, claims)


async def check_contact_claims(app: web.Application, claims: ContactClaims) -> contact_db.OpenedContactLink:
    """The checks of a contact link once its token is decoded, whatever its format: the survey and
    the contact exist, the link's generation is the survey's (older ones were revoked), and the
    survey is in progress."""
    async with app[POOL].acquire() as conn:
        target = await contact_db.contact_link_for_opening(conn, claims.survey_seq, claims.contact_id)
    if target is None:
        raise NotFound("link", field="token")
    # issued before the survey's contact links were revoked: no state per link, the survey row says it
    revocation.check_generation(claims.generation, target.link_generation)
    if target.status != "inProgress":
        raise Gone("the survey is not in progress")
    return target


async def check_created_link(app: web.Application, token: str) -> link_db.OpenedLink:
    """Every check of opening a created link, and nothing else (see check_contact_link)."""
    try:
        public_id = app[SIGNER].verify_created_link(token)
    except InvalidLink:
        raise NotFound("link", field="token") from None
    async with app[POOL].acquire() as conn:
        link = await link_db.link_for_opening(conn, public_id)
    if link is None:
        raise NotFound("link", field="token")
    # read from PostgreSQL on every open: revoked on every worker and instance from the commit on
    revocation.check_link_revoked(link.revoked_at)
    if link.status != "inProgress":
        raise Gone("the survey is not in progress")
    return link


@routes.get("/c/{token}")
async def open_contact_link(request: web.Request) -> web.Response:
    """A personal (contact) link: the survey id and the contact id."""
    claims, target = await check_contact_link(request.app, request.match_info["token"])
    return answer_contact_open(request, claims, target)


@routes.get("/s/{token}")
async def open_short_contact_link(request: web.Request) -> web.Response:
    """A short contact link (a survey whose linkFormat is short): answered as `/c/` answers."""
    claims, target = await check_short_link(request.app, request.match_info["token"])
    return answer_contact_open(request, claims, target)


def answer_contact_open(request: web.Request, claims: ContactClaims,
                        target: contact_db.OpenedContactLink) -> web.Response:
    """The answer to an open of a contact link of either format: the one place for what an open does
    (counting it, for one), so `/c/` and `/s/` opens are the same."""
    counter = request.app.get(OPENS)
    if counter is not None:  # tallied in memory, written in batches (core/opens.py): no query here
        counter.contact_opened(target.org_id, target.survey_id, claims.contact_id)
    return answer(target.redirect_url, {"surveyId": str(target.survey_id), "contactId": str(claims.contact_id)})


@routes.get("/l/{token}")
async def open_created_link(request: web.Request) -> web.Response:
    """A created (Filum) link: the survey id, the public id, and each metadata field's variable."""
    link = await check_created_link(request.app, request.match_info["token"])
    counter = request.app.get(OPENS)
    if counter is not None:
        counter.link_opened(link.org_id, link.id)
    facts: dict[str, Any] = {}
    for item in link.metadata_mapping:
        variable = link.variables.get(item["metadata_id"])
        if variable is not None and variable not in ("surveyId", "publicId"):
            facts[variable] = item["value"]
    if link.redirect_url:
        return answer(link.redirect_url, {"surveyId": str(link.survey_id), "publicId": link.public_id, **facts})
    return answer(None, {"surveyId": str(link.survey_id), "publicId": link.public_id, "metadata": facts})
