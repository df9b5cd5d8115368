"""The canonical form of a metadata mapping: the idempotency key of a created link.

Two mappings are the same when they hold the same set of (metadata_id, value) pairs: item order
does not matter, numbers compare by value (1 == 1.0), strings compare exactly, list order matters,
and a missing mapping equals []. Numbers are stored in their normal form: an integer stays exact,
and an integral float becomes the same integer when it is within the 64 bits JSON is read and written
with here (orjson), so 1, 1.0 and 1e0 are one value while 9007199254740993 and 9007199254740992 stay
two. A number beyond 64 bits, or one written with a decimal point or an exponent, is an IEEE double
(that is how orjson reads it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from operator import itemgetter
from typing import Any, cast

import orjson

# the integers orjson reads and writes exactly: a float outside them stays a float
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_metadata_id = itemgetter(0)

Scalar = str | int | float | None
Value = Scalar | list[Scalar]


def normalize_number(number: int | float) -> int | float:
    """One representation per numeric value: 1, 1.0 and 1e0 all become 1; integers stay exact."""
    if type(number) is int:
        return number
    # an integral float is exactly one integer: no precision is lost by writing it as that integer
    # a float here: callers pass no bool, the int subclass that `type(...) is int` lets through
    if cast(float, number).is_integer() and _INT_MIN <= number <= _INT_MAX:
        return int(number)
    return number


def normalize_value(value: Any) -> Value:
    """Normalise the numbers inside a validated metadata value."""
    # strings and nulls, the common values, are already in their normal form: skip the isinstance checks
    if type(value) is str or value is None:
        return value
    if isinstance(value, bool):  # validated away at the edge; never a number here
        raise TypeError("booleans are not metadata values")
    if isinstance(value, int | float):
        return normalize_number(value)
    if isinstance(value, list):
        return [normalize_number(v) if isinstance(v, int | float) else v for v in value]
    return cast(Value, value)


def canonical_mapping(pairs: Sequence[tuple[int, Any]]) -> list[tuple[int, Value]]:
    """Sorted, normalised (metadata_id, value) pairs; the caller guarantees unique ids."""
    canonical = [(mid, normalize_value(v)) for mid, v in pairs]
    canonical.sort(key=_metadata_id)
    return canonical


def mapping_hash(canonical: Sequence[tuple[int, Value]]) -> bytes:
    """SHA-256 of the canonical mapping's compact JSON, `[[id, value], ...]` (orjson writes tuples as arrays)."""
    return hashlib.sha256(orjson.dumps(canonical)).digest()


# Before integers stayed exact, every number past 2**53 was stored and hashed as the double it
# rounds to: links stored then are found by that hash, so they replay instead of being made again.
_ROUNDED_FROM = 2**53


def _big(value: Any) -> bool:
    return type(value) is int and abs(value) >= _ROUNDED_FROM


def _rounded(value: Any) -> Any:
    return float(value) if _big(value) else value


def legacy_mapping_hash(canonical: Sequence[tuple[int, Value]]) -> bytes | None:
    """The hash a mapping holding an integer past 2**53 was stored under before; None for the rest."""
    if not any(_big(value) or (type(value) is list and any(map(_big, value))) for _, value in canonical):
        return None
    return mapping_hash([(mid, [_rounded(v) for v in value] if type(value) is list else _rounded(value))
                         for mid, value in canonical])
