"""The canonical form of a metadata mapping: the idempotency key of a created link.

Two mappings are the same when they hold the same set of (metadata_id, value) pairs: item order
does not matter, numbers compare by value (1 == 1.0), strings compare exactly, list order matters,
and a missing mapping equals []. Numbers are stored in their normal form: an integral float within
the exactly-representable range becomes an int.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import orjson

_EXACT = 2**53
_metadata_id = itemgetter(0)

Scalar = str | int | float | None
Value = Scalar | list[Scalar]


def normalize_number(number: int | float) -> int | float:
    """One representation per numeric value: 1, 1.0 and 1e0 all become 1."""
    as_float = float(number)
    if as_float.is_integer() and abs(as_float) < _EXACT:
        return int(as_float)
    return as_float


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
    return value


def canonical_mapping(pairs: Sequence[tuple[int, Any]]) -> list[tuple[int, Value]]:
    """Sorted, normalised (metadata_id, value) pairs; the caller guarantees unique ids."""
    canonical = [(mid, normalize_value(v)) for mid, v in pairs]
    canonical.sort(key=_metadata_id)
    return canonical


def mapping_hash(canonical: Sequence[tuple[int, Value]]) -> bytes:
    """SHA-256 of the canonical mapping's compact JSON, `[[id, value], ...]` (orjson writes tuples as arrays)."""
    return hashlib.sha256(orjson.dumps(canonical)).digest()
