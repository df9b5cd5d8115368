"""The cursor of a survey's created links: opaque, signed, and bound to its list.

A cursor is `<last id>.<mac>` in base64url: the id of the last link of the page before (the next
page is the links below it, newest first), and a truncated HMAC-SHA256 of that id and of the list it
belongs to (the survey), with the first signing key (any listed key verifies). A cursor that was
altered, or that belongs to another list, does not verify: the caller answers 422. (A minimal codec
of its own; the other lists' cursors may share one later.)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence

from ..settings import SigningKey
from .rules import INT64_MAX

_DOMAIN = b"cursor:created-links:"
_MAC_BYTES = 12


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    """Signs cursors with the first key, verifies with any."""

    def __init__(self, keys: Sequence[SigningKey]) -> None:
        self._secrets = [k.secret for k in keys]

    @staticmethod
    def _mac(secret: bytes, scope: str, last_id: int) -> bytes:
        message = _DOMAIN + scope.encode() + b":" + str(last_id).encode()
        return hmac.digest(secret, message, hashlib.sha256)[:_MAC_BYTES]

    def encode(self, scope: str, last_id: int) -> str:
        """The cursor of the page after the link `last_id` in the list `scope`."""
        return f"{_b64(str(last_id).encode())}.{_b64(self._mac(self._secrets[0], scope, last_id))}"

    def decode(self, scope: str, cursor: str) -> int | None:
        """The last id a cursor of the list `scope` carries; None for one that does not verify."""
        head, dot, mac_text = cursor.partition(".")
        if not dot or len(cursor) > 64 or not cursor.isascii():
            return None
        try:
            digits, mac = _unb64(head), _unb64(mac_text)
        except (binascii.Error, ValueError):
            return None
        if not (digits.isdigit() and len(digits) <= 19):
            return None
        last_id = int(digits)
        if not 1 <= last_id <= INT64_MAX or digits != str(last_id).encode():  # one spelling per cursor
            return None
        if not any(hmac.compare_digest(self._mac(secret, scope, last_id), mac) for secret in self._secrets):
            return None
        return last_id
