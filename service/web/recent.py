"""Requests read lately, by (path segment, raw body): what reading them answered, held by the app.

A replay sends the same bytes again, and reading them (parsing, validating, canonicalising and
hashing) is a pure function of those bytes and the path: remembered, bounded in count and in body
size, the oldest forgotten first. A dict itself, so that the hot path's lookup is dict.get.
"""

from __future__ import annotations

from typing import TypeVar

V = TypeVar("V")


class Recent(dict[tuple[str, bytes], V]):
    """At most `max_items` entries, each of a body of at most `max_body` bytes."""

    def __init__(self, max_items: int, max_body: int) -> None:
        super().__init__()
        self.max_items, self.max_body = max_items, max_body

    def remember(self, segment: str, raw: bytes, value: V) -> None:
        """Keep what `raw` sent to `segment` read as (a body past `max_body` is not kept)."""
        if len(raw) <= self.max_body:
            if len(self) >= self.max_items:
                del self[next(iter(self))]
            self[(segment, raw)] = value
