"""Opaque list cursors: a position in one list of one organisation, signed so that it cannot be altered.

`encode(kind, org, position)` answers `<payload>.<mac>`: the position (a short list of integers and
strings, e.g. `[created_at in microseconds, id]`) as base64url JSON, and a truncated HMAC-SHA256 of
the list's kind, the organisation and that payload text. `decode(kind, org, text)` answers the
position, or raises InvalidCursor when the text was altered, or was made for another list or
another organisation: the MAC covers all three. Signed with the first signing key, verified with
any (a rotation keeps cursors in flight working); each key is first derived for cursors alone, so a
cursor's MAC never doubles as a link's. The position is readable, not secret: nothing in it is more
than the list's own items show.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from collections.abc import Sequence

import orjson

from ..settings import SigningKey

MAX_CURSOR_CHARS = 512
_MAC_BYTES = 16
_DOMAIN = b"list-cursor"
Position = list[int | str]


class InvalidCursor(Exception):
    """Not a cursor this service made for this list and organisation."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class CursorCodec:
    """Makes and reads the cursors of every list (`kind` names the list: `surveys`, `links:<surveyId>`...)."""

    def __init__(self, keys: Sequence[SigningKey]) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self._keys = [hmac.digest(key.secret, _DOMAIN, hashlib.sha256) for key in keys]

    @staticmethod
    def _mac(key: bytes, kind: str, org: uuid.UUID, payload: str) -> str:
        # the kind holds no NUL and the org is 16 bytes: the message cannot be read two ways
        message = kind.encode() + b"\0" + org.bytes + payload.encode("ascii")
        return _b64(hmac.digest(key, message, hashlib.sha256)[:_MAC_BYTES])

    def encode(self, kind: str, org: uuid.UUID, position: Sequence[int | str]) -> str:
        """The cursor of `position` in the list `kind` of the organisation `org`."""
        if "\0" in kind:
            raise ValueError("a list's kind holds no NUL")
        payload = _b64(orjson.dumps(list(position)))
        return f"{payload}.{self._mac(self._keys[0], kind, org, payload)}"

    def decode(self, kind: str, org: uuid.UUID, text: str) -> Position:
        """The position a cursor names, or InvalidCursor (altered, another list's, another organisation's)."""
        if len(text) > MAX_CURSOR_CHARS or not text.isascii():
            raise InvalidCursor("not a cursor")
        payload, dot, mac = text.partition(".")
        if not dot:
            raise InvalidCursor("not a cursor")
        # the MAC covers the payload's text, so no other spelling of the same bytes is accepted either
        if not any(hmac.compare_digest(self._mac(key, kind, org, payload), mac) for key in self._keys):
            raise InvalidCursor("signature refused")
        try:
            position = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (binascii.Error, ValueError):  # only a key holder could sign such a payload: still refused
            raise InvalidCursor("malformed position") from None
        if not isinstance(position, list) or not all(type(p) in (int, str) for p in position):
            raise InvalidCursor("malformed position")
        return position
