"""How cheap can refusing a forged link be in aiohttp? `python -m service.bench.floor [SECONDS]`.

The (f) forged target is 0.8x of the fixed-body reference. This measures, in one process and one
run, the fixed-body reference and three stripped-down servers that refuse the same forged
`/c/<token>` with one HMAC (the service's own check) and a constant 404 body:

- `route`: the dynamic route alone, no middleware;
- `nop`: the same with one middleware that only awaits the handler;
- `lean`: one middleware doing the least the service does for every answer (a request id header,
  a metric tally, an access line encoded with orjson into a buffer).

Each line prints the server's CPU per request and its ratio to the fixed body. What is left between
`lean` and the service's own figure is the service's real edge: error rendering per API family,
the drain counter, the access line written out, the request-id check.
"""

from __future__ import annotations

import os
import resource
import sys
import time

import orjson
import uvloop
from aiohttp import web
from aiohttp.typedefs import Handler

from ..core.errors import NotFound
from ..core.signing import InvalidLink, LinkSigner
from ..embedded.process import free_port
from ..settings import SigningKey
from ..web.errors import render_formbricks
from ..web.middlewares import route_name
from .refs import build
from .seed_contacts import forged
from .wrk import Load, WrkMissing, find_wrk, run_wrk

_SIGNER = LinkSigner([SigningKey("k1", b"floor-signing-secret-0123456789abcdef")])
_TOKEN = _SIGNER.contact_token(1, 1, None)
FORGED = forged("/c/" + _TOKEN)
# the service's own 404 body for a refused link, rendered once
_NOT_FOUND = render_formbricks(NotFound("link", field="token")).body


class _Tallies:
    """The `lean` server's state, on its app as the service's metrics are on the service's."""

    def __init__(self) -> None:
        self.tally: dict[tuple[str, str, int], int] = {}
        self.lines: list[bytes] = []


_TALLIES = web.AppKey("tallies", _Tallies)


async def _refuse(request: web.Request) -> web.Response:
    try:
        _SIGNER.verify_contact_token(request.match_info["token"])
    except InvalidLink:
        return web.Response(body=_NOT_FOUND, status=404, content_type="application/json")
    return web.Response(body=b"{}", content_type="application/json")


@web.middleware
async def _nop(request: web.Request, handler: Handler) -> web.StreamResponse:
    return await handler(request)


@web.middleware
async def _lean(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    request_id = os.urandom(16).hex()
    response = await handler(request)
    response.headers["X-Request-Id"] = request_id
    route = route_name(request)
    key = (request.method, route, response.status)
    tallies = request.app[_TALLIES]
    tallies.tally[key] = tallies.tally.get(key, 0) + 1
    tallies.lines.append(orjson.dumps({"ts": time.time(), "request_id": request_id, "method": request.method,
                                "route": route, "status": response.status,
                                "duration_ms": round((time.perf_counter() - started) * 1000, 3)}))
    if len(tallies.lines) >= 1024:
        tallies.lines.clear()
    return response


def _app(kind: str) -> tuple[web.Application, str]:
    if kind == "fixed":
        return build("fixed", None), "/"  # the bench's own reference, as `bench` measures it
    app = web.Application(middlewares={"route": (), "nop": (_nop,), "lean": (_lean,)}[kind])
    app.router.add_get("/c/{token}", _refuse)
    app[_TALLIES] = _Tallies()
    return app, FORGED


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(wrk: str, kind: str, seconds: float) -> float:
    """CPU microseconds of this process per request while wrk drives `kind` (after a 1 s warm-up)."""
    app, path = _app(kind)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        base = f"http://127.0.0.1:{port}"
        await run_wrk(wrk, base, Load(path), 1)
        before = _cpu()
        result = await run_wrk(wrk, base, Load(path), seconds)
        return (_cpu() - before) * 1e6 / result.requests
    finally:
        await runner.cleanup()


async def main(seconds: float) -> None:
    try:
        wrk = find_wrk(install=False)
    except WrkMissing as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{os.cpu_count()} cores; wrk -t1 -c64, {seconds:g} s each, twice; CPU us/req of the server "
          "(ratio to the fixed body)", flush=True)
    for round_ in (1, 2):
        figures = {kind: await _measure(wrk, kind, seconds) for kind in ("fixed", "route", "nop", "lean")}
        base = figures["fixed"]
        print(f"round {round_}: " + ", ".join(f"{kind} {us:.0f} ({base / us:.2f}x)" for kind, us in figures.items()),
              flush=True)


if __name__ == "__main__":
    uvloop.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 6))
