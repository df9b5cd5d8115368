"""Integer query parameters: how each spelling is read, then the value's rule (core/rules.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from ..core.errors import Issue
from ..core.rules import NOT_AN_INTEGER, Problem, Whole
from .fields import Int, error

REPEATED = Problem("value_error.duplicate", "give this parameter at most once")
# a decimal number as JSON or a client's float writes it: `50`, `+50`, `50.0`, `5e1`, `1e+16` (a generated
# client sends `limit=50.0`); no spaces, no hex, no NaN or Infinity, and an exponent of at most 4 digits
# (Decimal refuses to hold some longer ones, and no count needs them)
NUMBER = re.compile(r"^[+-]?(?:[0-9]+(?:[.][0-9]*)?|[.][0-9]+)(?:[eE][+-]?[0-9]{1,4})?$")
# digits alone (the QR code options), at most 20: a longer one is refused as not an integer
DIGITS = re.compile(r"^[+-]?[0-9]{1,20}$")


def read_query_int(raw: str, name: str, rule: Whole,
                   spelling: re.Pattern[str] = NUMBER) -> tuple[int | None, Issue | None]:
    """An integral number in `spelling` that keeps `rule`, read exactly (Decimal, never a float:
    2^63-1 stays itself); or the Issue with it, named `("query", name)`."""
    loc = ("query", name)
    if not spelling.match(raw):
        return None, NOT_AN_INTEGER.at(loc)
    number = Decimal(raw)
    # compared before it is made an int: `1e9999` must not become a 10,000-digit integer
    if number != number.to_integral_value():
        return None, NOT_AN_INTEGER.at(loc)
    problem = rule.problem(number)
    if problem is not None:
        return None, problem.at(loc)
    return int(number), None


class QueryInt(Int):
    """An integer query parameter of a marshmallow schema, read as read_query_int reads it."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> int:
        number, issue = read_query_int(value, attr or "", self.rule)
        if issue is not None:
            raise error(issue.type, issue.msg)
        assert number is not None
        return number
