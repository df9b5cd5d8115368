"""Validation rules, each written once: the marshmallow fields (web/fields.py), the create-link fast
path (web/fastbody.py), the segment filters (core/segments.py), the attribute values and the query
readers (web/query.py) all ask these.

A rule answers None for a valid value, or the Problem with it: pydantic v1's `type`, `msg` and
`ctx`, which the edge renders per API family (`ctx` only on the Filum path).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, NamedTuple

from .errors import Issue

INT64_MAX = 2**63 - 1


class Problem(NamedTuple):
    """What is wrong with a value, wherever it is."""

    type: str
    msg: str
    ctx: dict[str, Any] | None = None

    def at(self, loc: tuple[str | int, ...]) -> Issue:
        return Issue(loc, self.msg, self.type, self.ctx)


# pydantic v1's answers for a value of the wrong type, or none
MISSING = Problem("value_error.missing", "field required")
NULL = Problem("type_error.none.not_allowed", "none is not an allowed value")
EXTRA = Problem("value_error.extra", "extra fields not permitted")
NOT_A_DICT = Problem("type_error.dict", "value is not a valid dict")
NOT_A_LIST = Problem("type_error.list", "value is not a valid list")
NOT_A_STR = Problem("type_error.str", "str type expected")
NOT_AN_INTEGER = Problem("type_error.integer", "value is not a valid integer")
NUL = Problem("value_error.str.nul", "NUL characters are not allowed")


def not_one_of(choices: Iterable[str]) -> Problem:
    return Problem("type_error.enum", "value is not a valid enumeration member; permitted: "
                   + ", ".join(repr(choice) for choice in choices))


def too_short(limit: int) -> Problem:
    return Problem("value_error.any_str.min_length", f"ensure this value has at least {limit} characters",
                   {"limit_value": limit})


def too_long(limit: int) -> Problem:
    return Problem("value_error.any_str.max_length", f"ensure this value has at most {limit} characters",
                   {"limit_value": limit})


def too_few(limit: int) -> Problem:
    return Problem("value_error.list.min_items", f"ensure this value has at least {limit} items",
                   {"limit_value": limit})


def too_many(limit: int) -> Problem:
    return Problem("value_error.list.max_items", f"ensure this value has at most {limit} items",
                   {"limit_value": limit})


class Text(NamedTuple):
    """A string of `min_chars` to `max_chars` characters (no upper bound when None), without NUL:
    PostgreSQL's text and jsonb cannot hold U+0000."""

    min_chars: int = 0
    max_chars: int | None = None

    def problem(self, text: str) -> Problem | None:
        chars = len(text)
        if chars < self.min_chars:
            return too_short(self.min_chars)
        if self.max_chars is not None and chars > self.max_chars:
            return too_long(self.max_chars)
        return NUL if "\x00" in text else None


class Whole(NamedTuple):
    """An integer within [low, high]; `default` is the value an absent (query) parameter takes."""

    low: int
    high: int
    default: int | None = None

    def problem(self, value: int | Decimal) -> Problem | None:
        if self.low <= value <= self.high:
            return None
        if value < self.low:
            return Problem("value_error.number.not_ge", f"ensure this value is greater than or equal to {self.low}",
                           {"limit_value": self.low})
        return Problem("value_error.number.not_le", f"ensure this value is less than or equal to {self.high}",
                       {"limit_value": self.high})


ANY_TEXT = Text()  # any length, still no NUL
NAME = Text(1, 255)  # the name or title of anything: organisation, survey, link, field, key, segment
URL = Text(0, 2048)  # a survey's redirect URL
INT64 = Whole(-INT64_MAX, INT64_MAX)  # what PostgreSQL's bigint holds (less its one extra negative)
ID = Whole(1, INT64_MAX)  # a row's bigint id: a metadata field, a contact, a created link
LINK_QUOTA = Whole(0, 10_000_000)
PAGE_LIMIT = Whole(1, 250, 50)  # items per page, in every paged list


def is_number(value: Any) -> bool:
    """A finite JSON number: not a boolean (`true` is not 1), not NaN or an infinity."""
    kind = type(value)  # the exact types first: this runs for every number of every body (the fast path's too)
    if kind is int:
        return True
    if kind is float:
        return math.isfinite(value)
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_id(value: Any) -> int | None:
    """A bigint id (see ID), given as an int or as its decimal string (at most 19 ASCII digits), else None."""
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if type(value) is int and ID.low <= value <= ID.high:
        return value
    return None
