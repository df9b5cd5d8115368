"""`Expect: 100-continue`: the 100 is sent when the body is about to be read, so after the key, the
rate limit and the scope were checked; a refused client gets its 401/429/403 and no 100."""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11


async def defer_continue(request: web.Request) -> None:
    """Every route's expect handler: sends nothing yet (aiohttp's default sends 100 at once)."""
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version == HttpVersion11 and expect.lower() != "100-continue":
        raise web.HTTPExpectationFailed(text=f"Unknown Expect: {expect[:64]}")


def expects_continue(request: web.Request) -> bool:
    return (request.version == HttpVersion11 and hdrs.EXPECT in request.headers
            and request.headers[hdrs.EXPECT].lower() == "100-continue")


async def send_continue(request: web.Request) -> None:
    """The 100 Continue the client waits for before it sends its body."""
    if expects_continue(request) and not request.content.is_eof():
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer's own size starts after it
