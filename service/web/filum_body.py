"""The Filum path's input as FastAPI 0.99 reads it (Filum runs FastAPI on pydantic v1).

What FastAPI answers before its model sees a body: no body (or JSON `null`) is `["body"]`
`field required`, a body of another content type is `["body"]` `value is not a valid dict`, and a
body that is not JSON is the standard library's JSONDecodeError with pydantic's `ctx`. The model's
own coercions are the fields' (`Str(numbers=True)`, `Int(coerce=True)` in fields.py).
"""

from __future__ import annotations

import json
import string
import uuid

from ..core import rules
from ..core.errors import Issue

MISSING = rules.MISSING.at(("body",))
NOT_A_DICT = rules.NOT_A_DICT.at(("body",))
NOT_A_UUID = Issue(("path", "survey_campaign_id"), "value is not a valid uuid", "type_error.uuid")
_HEX = frozenset(string.hexdigits)
# Python 3.13 names a trailing comma where 3.11 and 3.12 (and the recorded reference) say what they
# expected after it: the answer must not depend on the Python the service runs on
_TRAILING_COMMA = {"Illegal trailing comma before end of object": "Expecting property name enclosed in double quotes",
                   "Illegal trailing comma before end of array": "Expecting value"}


def campaign_uuid(segment: str) -> uuid.UUID | None:
    """The path's UUID in any spelling pydantic reads without loss: any case, hyphens or not, in
    braces, `urn:uuid:`; not what int(hex, 16) would also read (a sign, `_`, spaces), which is not 32 digits."""
    try:
        parsed = uuid.UUID(segment)
    except ValueError:
        return None
    digits = segment.replace("urn:", "").replace("uuid:", "").strip("{}").replace("-", "")
    return parsed if len(digits) == 32 and _HEX.issuperset(digits) else None


def decode_issue(raw: bytes) -> Issue | None:
    """FastAPI's 422 for a body that is not JSON (json.loads' error, its fields as `ctx`); None where
    the standard library reads what orjson refuses (NaN, 1e400, a BOM, UTF-16, lone surrogates) or
    refuses it otherwise (not UTF-8/16/32: FastAPI's 400; nested past Python's stack)."""
    try:
        json.loads(raw)
    except json.JSONDecodeError as error:
        exc = error
        if exc.msg in _TRAILING_COMMA:  # 3.11 stops after the comma and the JSON whitespace after it
            after = len(exc.doc) - len(exc.doc[exc.pos + 1:].lstrip(" \t\n\r"))
            exc = json.JSONDecodeError(_TRAILING_COMMA[exc.msg], exc.doc, after)
        try:
            exc.doc.encode()  # decoded with surrogatepass: a lone surrogate cannot be answered in JSON
        except UnicodeEncodeError:
            return None
        ctx = {"msg": exc.msg, "doc": exc.doc, "pos": exc.pos, "lineno": exc.lineno, "colno": exc.colno}
        return Issue(("body", exc.pos), str(exc), "value_error.jsondecode", ctx)
    except (ValueError, RecursionError):
        return None
    return None
