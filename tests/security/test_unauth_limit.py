"""Requests with no key at all, or a `Bearer` token that is garbage, are counted against the client
address's unauthenticated limit on both API families (the Filum create-link path and the Formbricks
contact-links paths share one bucket per address): their exact 401 bodies until the limit, then 429
with `Retry-After`; another client address (named by a trusted proxy in X-Forwarded-For) still gets
its 401s. (Unknown and malformed `x-api-key` values: test_unauthenticated_limit.py.)"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import replace

import pytest
import redis.asyncio as aioredis

from service.app import create_app
from tests.contact_helpers import contact_link_path, error, segment_links_path
from tests.helpers import links_path

LIMIT = 6  # a token every 10 seconds
FILUM_401 = {"detail": "Invalid or missing token"}
FORMBRICKS_401 = error(401, "Unauthorized", [{"field": "x-api-key", "issue": "missing, unknown or revoked API key"}])
FILUM_429 = {"detail": "Rate limit exceeded"}
FORMBRICKS_429 = error(429, "Too Many Requests")
SURVEY, SEGMENT = str(uuid.uuid4()), str(uuid.uuid4())
# one path of each family's kind: Filum's create, Formbricks' segment page and single contact link
PATHS = (("POST", links_path(SURVEY)), ("GET", segment_links_path(SURVEY, SEGMENT)),
         ("GET", contact_link_path(SURVEY, "1")))
FORMS = {
    "no key": {},
    "Bearer garbage": {"Authorization": "Bearer garbage"},
    "empty Bearer": {"Authorization": "Bearer "},
    "another scheme": {"Authorization": "Basic dXNlcjpwYXNz"},
}


@pytest.fixture
async def limited(aiohttp_client, settings):
    """The app with LIMIT unauthenticated requests a minute per address, behind a trusted proxy (127.0.0.1)."""
    app = create_app(replace(settings, unauth_rate_limit=f"{LIMIT}/minute", trusted_proxies=frozenset({"127.0.0.1"})))
    return await aiohttp_client(app)


async def ask(client, method: str, path: str, headers: dict[str, str], address: str):
    """One request from `address` (as the trusted proxy names it); its status, body and Retry-After."""
    resp = await client.request(method, path, json={"name": "x"}, headers={**headers, "X-Forwarded-For": address})
    return resp.status, await resp.json(), resp.headers.get("Retry-After")


def expected_401(path: str) -> dict:
    return FILUM_401 if path.startswith("/external/") else FORMBRICKS_401


@pytest.mark.parametrize("form", list(FORMS))
async def test_requests_without_a_valid_key_are_limited_per_address_on_both_families(limited, redis_url, form):
    headers = FORMS[form]
    client_a, client_b = "203.0.113.10", "203.0.113.11"
    # both families spend from one bucket: LIMIT answers 401 in their own family's body
    started = time.monotonic()
    for i in range(LIMIT):
        method, path = PATHS[i % len(PATHS)]
        assert await ask(limited, method, path, headers, client_a) == (401, expected_401(path), None), (i, path)
    # then every path answers 429 in its family's body, with a wait no longer than a token takes
    for method, path in PATHS:
        status, body, retry_after = await ask(limited, method, path, headers, client_a)
        assert (status, body) == (429, FILUM_429 if path.startswith("/external/") else FORMBRICKS_429), path
        # a token 60 / LIMIT s after the first spend (at or after `started`), rounded up: never early
        wait = 60 / LIMIT - (time.monotonic() - started)
        assert retry_after is not None and math.ceil(wait) <= int(retry_after) <= 60 // LIMIT, retry_after
    # another client address has its own bucket: still 401, on both families
    for method, path in PATHS:
        assert await ask(limited, method, path, headers, client_b) == (401, expected_401(path), None), path
    # the buckets are the gate's, per address, with a TTL
    redis = aioredis.Redis.from_url(redis_url)
    try:
        for address in (client_a, client_b):
            assert 0 < await redis.ttl(f"{{o:ip:{address}}}:rl") <= 61
    finally:
        await redis.aclose()


async def test_mixed_forms_spend_one_bucket(limited):
    """Mixing the forms from one address spends one bucket: none of them gets a fresh allowance."""
    address = "203.0.113.20"
    forms = list(FORMS.values())
    statuses = [(await ask(limited, *PATHS[i % len(PATHS)], forms[i % len(forms)], address))[0]
                for i in range(LIMIT + len(forms))]
    assert statuses == [401] * LIMIT + [429] * len(forms)
