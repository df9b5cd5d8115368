"""The client's side of a request: once the client has left, its I/O errors are ClientGone, not ours.

A body read fails with the connection's error (ConnectionResetError when the peer closed), and a
streamed write with aiohttp's ClientConnectionResetError. Both are OSErrors, like PostgreSQL being
unreachable, so they are told apart where the client's I/O happens, and the edge middleware answers
ClientGone with nginx's 499 ("client closed request"): logged and counted, nothing broken.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import aiohttp
from aiohttp import web


class ClientGone(Exception):
    """The client went away during its request: there is nobody left to answer."""


def client_left(request: web.Request, exc: OSError) -> bool:
    """Whether an I/O error on the request's connection is its client having left."""
    return isinstance(exc, aiohttp.ClientConnectionResetError) or request.transport is None


@contextlib.contextmanager
def client_io(request: web.Request) -> Iterator[None]:
    """Reading the request's body or writing its stream: failures because the client left are ClientGone."""
    try:
        yield
    except OSError as exc:
        if client_left(request, exc):
            raise ClientGone() from None
        raise
