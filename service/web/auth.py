"""Who is calling, and may they: key resolution, rate limiting, scopes."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..core.auth import Principal
from ..core.errors import Forbidden, Issue, RateLimited, ValidationFailed
from ..core.ratelimit import Decision
from .callers import client_address
from .keys import GATE, KEYS, METRICS, PRINCIPAL, RATE_HEADERS, SETTINGS, UNAUTH

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def presented_key(request: web.Request) -> str:
    """The key from `x-api-key`, else from `Authorization: Bearer`."""
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    return ""


async def identify(request: web.Request) -> Principal:
    """The caller's principal, or 401 (429 past the unauthenticated limit of the client's address)."""
    principal: Principal | None = request.get(PRINCIPAL)  # the 100-continue check may have found it already
    if principal is not None:
        return principal
    app = request.app
    secret = presented_key(request)
    principal, digest = app[KEYS].cached(secret)
    if principal is None:
        # an address over its limit is refused before its key costs a query
        address = client_address(request, app[SETTINGS].trusted_proxies)
        app[UNAUTH].check_blocked(address)
        principal = await app[KEYS].resolve(secret, digest)
        if principal is None:
            await app[UNAUTH].refuse(app[GATE], address)
    assert principal is not None
    request[PRINCIPAL] = principal
    return principal


async def admit(request: web.Request) -> Principal:
    """401 (key), then 429 (rate limit): once per request, whoever asks first."""
    principal = await identify(request)
    if RATE_HEADERS not in request:
        spend(request, principal, await request.app[GATE].check(principal.org, principal.policy))
    return principal


def spend(request: web.Request, principal: Principal, decision: Decision) -> None:
    """Record the rate-limit outcome on the response, and refuse when the buckets are empty."""
    request[RATE_HEADERS] = decision.headers(principal.policy)
    if not principal.policy.off:
        outcome = "degraded" if decision.degraded else "allowed" if decision.allowed else "limited"
        request.app[METRICS].decision(outcome)
    if not decision.allowed:
        raise RateLimited(decision.retry_after)


def require_scope(principal: Principal, scope: str) -> None:
    if scope not in principal.scopes:
        raise Forbidden(f"this key lacks the {scope} scope")


def unknown_query_issues(request: web.Request, accepted: tuple[str, ...]) -> list[Issue]:
    """One issue per query parameter the route does not take.

    Refused rather than ignored on the management and Filum paths: a misspelt parameter would
    otherwise go unnoticed. (The contact-links operations ignore extras, as Formbricks does, so that
    its clients work unchanged; opening links, `/c/` and `/l/`, too: mail clients add some.)
    """
    if not request.query_string:
        return []
    accepted_text = ", ".join(accepted) or "none"
    return [
        Issue(("query", name[:64]), f"unknown query parameter; accepted: {accepted_text}", "value_error.extra")
        for name in dict.fromkeys(request.query)
        if name not in accepted
    ]


def guarded(scope: str, *, reads_query: bool = False) -> Callable[[Handler], Handler]:
    """Authenticate (401), spend a rate-limit token (429), check the scope (403), refuse every query
    parameter (422), then handle. A handler that takes query parameters (`reads_query`) reads them
    itself (the contact-links operations name each invalid one in one 422 and ignore unknown ones)."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded_handler(request: web.Request) -> web.StreamResponse:
            principal = await admit(request)
            require_scope(principal, scope)
            if not reads_query:
                unknown = unknown_query_issues(request, ())
                if unknown:
                    raise ValidationFailed(unknown)
            return await handler(request)

        return guarded_handler

    return wrap


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL]
