"""Reference servers: what plain aiohttp does on this machine, measured in the same run.

`python -m service.bench.refs KIND PORT [REDIS_URL]` with KIND one of:

- `fixed`: returns a fixed JSON body;
- `evalsha`: one redis-py `EVALSHA` per request (a script that GETs a cached ~600-byte answer),
  answering the bytes it read;
- `pyjwt`: signs 250 HS256 tokens with PyJWT per request and answers them as JSON.

Each is the plain, idiomatic way to write that server: one process, uvloop, no access log.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
import orjson
from aiohttp import web

FIXED_BODY = b'{"status":"ok"}'
CACHE_KEY = "bench:ref:cached"
# a body of the size of a created link's answer
CACHED_BODY = orjson.dumps({"id": 1, "public_id": "0123456789abcdef", "name": "x" * 40, "metadata_mapping": [
    {"metadata": {"id": i, "name": f"Field {i}", "variable": f"field_{i}"}, "value": f"value-{i}"}
    for i in range(3)], "survey_url": "http://127.0.0.1:8080/l/" + "t" * 60,
    "created": "2026-01-01T00:00:00.000Z", "updated": "2026-01-01T00:00:00.000Z"})
GET_SCRIPT = "return redis.call('GET', KEYS[1])"
JWT_SECRET = b"reference-signing-secret-0123456789abcdef"


async def fixed(request: web.Request) -> web.Response:
    """A fixed body: aiohttp's own cost per request."""
    return web.Response(body=FIXED_BODY, content_type="application/json")


def evalsha_app(redis_url: str) -> web.Application:
    """One EVALSHA per request through redis-py's asyncio client and its connection pool."""
    from redis.asyncio import Redis

    app = web.Application()
    state: dict[str, Any] = {}  # the client and its script's sha, set by redis_ctx

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        client = Redis.from_url(redis_url, max_connections=256)
        await client.set(CACHE_KEY, CACHED_BODY)
        state["client"] = client
        state["sha"] = await client.script_load(GET_SCRIPT)
        yield
        await client.aclose()

    async def handler(request: web.Request) -> web.Response:
        body = await state["client"].evalsha(state["sha"], 1, CACHE_KEY)
        return web.Response(body=body, content_type="application/json")

    app.cleanup_ctx.append(redis_ctx)
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


async def pyjwt_page(request: web.Request) -> web.Response:
    """250 contact tokens signed with PyJWT, as a naive contact-links page would."""
    exp = int(time.time()) + 7 * 86400
    data = [
        {"contactId": str(i), "surveyUrl": "http://127.0.0.1:8080/c/" + jwt.encode(
            {"s": 1, "c": i, "exp": exp}, JWT_SECRET, algorithm="HS256", headers={"kid": "k1"}),
         "expiresAt": exp, "attributes": {}}
        for i in range(250)
    ]
    return web.Response(body=orjson.dumps({"data": data}), content_type="application/json")


def build(kind: str, redis_url: str | None) -> web.Application:
    """The reference application of one kind."""
    if kind == "evalsha":
        assert redis_url, "evalsha needs a Redis URL"
        return evalsha_app(redis_url)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fixed if kind == "fixed" else pyjwt_page)
    return app


def main(argv: list[str]) -> None:
    import uvloop

    kind, port = argv[0], int(argv[1])
    redis_url = argv[2] if len(argv) > 2 else None
    web.run_app(build(kind, redis_url), host="127.0.0.1", port=port, access_log=None, print=None,
                loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main(sys.argv[1:])
