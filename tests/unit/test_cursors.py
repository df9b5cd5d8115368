"""The cursor codec alone: round trips, bound to the list and the organisation, key rotation, refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid

import pytest

from service.core.cursors import MAX_CURSOR_CHARS, CursorCodec, InvalidCursor
from service.settings import SigningKey

OLD = SigningKey("old", b"old-signing-secret-0123456789abcdefghij")
NEW = SigningKey("new", b"new-signing-secret-0123456789abcdefghij")
ORG, OTHER_ORG = uuid.UUID(int=1), uuid.UUID(int=2)


def test_round_trip_of_positions():
    codec = CursorCodec((NEW,))
    positions: list[list[int | str]] = [[1733472000123456, 42], [1, "0b9c0d3e-0000-4000-8000-000000000001"], [7], []]
    for position in positions:
        text = codec.encode("surveys", ORG, position)
        assert text.isascii() and len(text) < MAX_CURSOR_CHARS and "=" not in text
        assert codec.decode("surveys", ORG, text) == position


def test_a_cursor_belongs_to_its_list_and_organisation():
    codec = CursorCodec((NEW,))
    text = codec.encode("links:abc", ORG, [5, 6])
    for kind, org in (("links:abd", ORG), ("links:ab", ORG), ("surveys", ORG), ("links:abc", OTHER_ORG)):
        with pytest.raises(InvalidCursor):
            codec.decode(kind, org, text)


def test_signed_with_the_first_key_verified_with_any():
    old_only, rotated = CursorCodec((OLD,)), CursorCodec((NEW, OLD))
    before = old_only.encode("contacts", ORG, [1, 2])
    assert rotated.decode("contacts", ORG, before) == [1, 2]  # a cursor in flight survives the rotation
    after = rotated.encode("contacts", ORG, [1, 2])
    assert after != before and CursorCodec((NEW,)).decode("contacts", ORG, after) == [1, 2]
    with pytest.raises(InvalidCursor):
        old_only.decode("contacts", ORG, after)


def test_the_cursor_key_is_not_the_signing_key():
    """A MAC made with the signing key itself (as a link's is) over the same message is not a cursor's."""
    codec = CursorCodec((NEW,))
    payload = codec.encode("surveys", ORG, [1]).split(".")[0]
    raw = hmac.digest(NEW.secret, b"surveys\0" + ORG.bytes + payload.encode(), hashlib.sha256)[:16]
    with pytest.raises(InvalidCursor):
        codec.decode("surveys", ORG, f"{payload}.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}")


@pytest.mark.parametrize("text", ["", ".", "abc", "a.b", "é.é", "x" * (MAX_CURSOR_CHARS + 1)])
def test_anything_else_is_refused(text):
    with pytest.raises(InvalidCursor):
        CursorCodec((NEW,)).decode("surveys", ORG, text)


def test_a_kind_with_nul_is_a_programming_error():
    with pytest.raises(ValueError):
        CursorCodec((NEW,)).encode("a\0b", ORG, [1])
    with pytest.raises(ValueError):
        CursorCodec(())
