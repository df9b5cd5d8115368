"""JSON in and out (orjson), with the body checks every JSON endpoint shares."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from ..core.errors import BodyTimeout, Issue, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from .client import ClientGone, client_left
from .expect import send_continue
from .keys import SETTINGS

JSON = "application/json"
# answers that carry survey links are personal: no shared cache may keep them, no cache may store them
# (Formbricks answers every API call so)
PERSONAL = {"Cache-Control": "private, no-store"}
_UNREADABLE = "Invalid body: it does not decode as its Content-Encoding and Transfer-Encoding say"


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return raw_json_response(orjson.dumps(data), status, headers)


def raw_json_response(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, content_type=JSON, headers=headers)


def is_json(request: web.Request) -> bool:
    """No Content-Type, `application/json` or `application/*+json`."""
    if "Content-Type" not in request.headers:
        return True
    ctype = request.content_type
    return ctype == JSON or (ctype.startswith("application/") and ctype.endswith("+json"))


async def read_body(request: web.Request, max_bytes: int | None = None, any_type: bool = False) -> bytes:
    """The raw body of a JSON request; 415 for another content type (unless `any_type`: the caller
    answers it), 413 past its limit, 422 undecodable."""
    if not any_type and not is_json(request):
        raise UnsupportedMediaType("Content-Type must be application/json")
    # a flat try, not client_io's context manager: this is every JSON request's path
    try:
        return await _read_body(request, max_bytes)
    except web.RequestPayloadError:
        # the bytes arrived but are not a body: a Content-Encoding they are not in (or, under aiohttp's
        # pure-Python parser, a broken chunk; its C parser does not report that to the body's reader)
        raise ValidationFailed([Issue(("body",), _UNREADABLE, "value_error.jsondecode")]) from None
    except OSError as exc:
        if client_left(request, exc):
            raise ClientGone() from None
        raise


async def _read_body(request: web.Request, max_bytes: int | None) -> bytes:
    content = request.content
    if max_bytes is None and content.is_eof():
        # the whole (small) body has arrived with the headers: take it as it is, without
        # request.read()'s chunk loop; the same size limit (0: none), the same 413 (the app's
        # client_max_size is MAX_BODY_BYTES)
        raw = content.read_nowait()
        limit = request.client_max_size
        if limit and len(raw) > limit:
            raise PayloadTooLarge(limit)
        return raw
    await send_continue(request)
    try:
        async with asyncio.timeout(request.app[SETTINGS].body_timeout_seconds):
            return await _read_slow_body(request, max_bytes)
    except TimeoutError:
        # the rest of the body may still come: the connection cannot carry another request (the
        # edge closes it after the 408, as after any broken body stream)
        content.set_exception(BodyTimeout())
        raise BodyTimeout() from None


async def _read_slow_body(request: web.Request, max_bytes: int | None) -> bytes:
    if max_bytes is None:
        try:
            return await request.read()  # aiohttp enforces client_max_size
        except web.HTTPRequestEntityTooLarge:
            raise PayloadTooLarge(request.client_max_size) from None  # a domain error, like the one above
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(max_bytes)
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    """The parsed body; 422 naming where it stops being JSON."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        msg = "Expecting value" if not raw.strip() else f"Invalid JSON: {exc.msg}"
        raise ValidationFailed([Issue(("body", exc.pos), msg, "value_error.jsondecode")]) from None


async def read_json(request: web.Request, max_bytes: int | None = None) -> Any:
    """The parsed body; 415 for another content type, 413 past the size limit, 422 if not JSON."""
    return parse_json(await read_body(request, max_bytes))
