"""marshmallow fields whose errors read like the reference's (pydantic-style `msg`, `type`, `ctx`).

A field's error message is written `type::msg` (and `::ctx::` + the ctx as JSON when it has one);
`issues_from()` splits it into an Issue.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping
from typing import Any, cast

import orjson
from aiohttp import web
from marshmallow import Schema, ValidationError, fields, validate
from marshmallow.types import ErrorMessages

from ..core.errors import Issue, NotFound, ValidationFailed
from ..core.rules import (
    ANY_TEXT,
    EXTRA,
    INT64,
    MISSING,
    NOT_A_DICT,
    NOT_A_LIST,
    NOT_A_STR,
    NOT_AN_INTEGER,
    NULL,
    Problem,
    Text,
    Whole,
    not_one_of,
    too_many,
)

MANAGEMENT = "/api/v2/management"


def any_segment(path: str) -> str:
    """The route pattern of `path` with each `{name}` matching any one segment."""
    # aiohttp's default pattern leaves out braces: an id holding one must still reach its route,
    # whose 404 or 422 names it
    return re.sub(r"\{(\w+)\}", r"{\1:[^/]+}", path)


CTX = "::ctx::"


def message(problem: Problem) -> str:
    """A rule's Problem as a marshmallow error message (`type::msg`, and `::ctx::` + JSON)."""
    text = f"{problem.type}::{problem.msg}"
    return text if problem.ctx is None else text + CTX + orjson.dumps(problem.ctx).decode()


def invalid(problem: Problem) -> ValidationError:
    return ValidationError(message(problem))


def error(type_: str, msg: str, ctx: dict[str, Any] | None = None) -> ValidationError:
    return invalid(Problem(type_, msg, ctx))


REQUIRED = message(MISSING)


class Messages:
    default_error_messages: ErrorMessages = {"required": REQUIRED, "null": message(NULL)}


# past 2**63 a JSON number may be an integer our parser (orjson) read as a double: its digits are lost
_EXACT_FLOAT_TEXT = 2.0**63


def number_text(value: Any) -> str | None:
    """A JSON number as pydantic v1 writes it into a string field (`str(v)`), where that loses nothing:
    not a boolean (pydantic's `True`), not NaN or an infinity, not a double that may stand for longer digits."""
    if type(value) is int:
        return str(value)
    if type(value) is float and math.isfinite(value) and abs(value) < _EXACT_FLOAT_TEXT:
        return str(value)
    return None


def integer_of(value: Any) -> int | None:
    """A value as pydantic v1 reads it into an int (`int(v)`), where that loses nothing: an integer,
    an integral double that is exact (|v| <= 2**53), or a string int() reads; never a boolean
    (`true` is not the id 1), a fraction (int(1.5) is 1), NaN or an infinity."""
    kind = type(value)
    if kind is int:
        return cast(int, value)
    if kind is float:
        return int(value) if value.is_integer() and abs(value) <= 2**53 else None
    if kind is str and len(value) <= 4300:  # pydantic's (and CPython's) limit on digits read from a string
        try:
            return int(value)  # as pydantic: surrounding whitespace, a sign, `_` between digits
        except ValueError:
            return None
    return None


class Str(Messages, fields.String):
    """A string, trimmed, that keeps its `rule` after trimming; with `numbers=True`, a JSON number is
    read as its text, as pydantic v1 does (see number_text)."""

    default_error_messages: ErrorMessages = {"invalid": message(NOT_A_STR),
                              "invalid_utf8": "value_error.str::not valid unicode"}

    def __init__(self, rule: Text = ANY_TEXT, *, trim: bool = True, numbers: bool = False, **kw: Any):
        super().__init__(**kw)
        self.rule, self.trim, self.numbers = rule, trim, numbers

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> str:
        if not isinstance(value, str):
            value = number_text(value) if self.numbers else None
            if value is None:
                raise self.make_error("invalid")
        text: str = value.strip() if self.trim else value
        problem = self.rule.problem(text)
        if problem is not None:
            raise invalid(problem)
        return text


class Int(Messages, fields.Integer):
    """A JSON integer (never a bool, a float or a numeric string) within `rule`; with `coerce=True`,
    also what pydantic v1 reads as an int without loss (see integer_of)."""

    default_error_messages: ErrorMessages = {"invalid": message(NOT_AN_INTEGER)}

    def __init__(self, rule: Whole = INT64, *, coerce: bool = False, **kw: Any):
        super().__init__(strict=True, **kw)
        self.rule, self.coerce = rule, coerce

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            value = integer_of(value) if self.coerce else None
            if value is None:
                raise self.make_error("invalid")
        problem = self.rule.problem(value)
        if problem is not None:
            raise invalid(problem)
        return cast(int, value)  # an int: checked or read above


def parse_uuid(value: Any) -> uuid.UUID | None:
    """A UUID in its canonical 36-character form, else None."""
    if not isinstance(value, str) or len(value) != 36:
        return None
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return None
    # uuid.UUID also reads "{{<32 hex>}}" and hyphens anywhere: one id must have one spelling
    return parsed if str(parsed) == value.lower() else None


def path_uuid(request: web.Request, name: str, model: str) -> uuid.UUID:
    """A path id; one that is not a UUID cannot name anything, so it is a 404 like any unknown id."""
    value = parse_uuid(request.match_info[name])
    if value is None:
        raise NotFound(model, field=name)
    return value


class ItemList(Messages, fields.List[Any]):
    default_error_messages: ErrorMessages = {"invalid": message(NOT_A_LIST)}

    def __init__(self, inner: fields.Field[Any], *, max_items: int, **kw: Any):
        super().__init__(inner, **kw)
        self.max_items = max_items

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> list[Any]:
        if isinstance(value, list) and len(value) > self.max_items:
            raise invalid(too_many(self.max_items))
        return super()._deserialize(value, attr, data, **kw)


class Object(Messages, fields.Nested):
    default_error_messages: ErrorMessages = {"type": message(NOT_A_DICT)}


class Choice(Str):
    def __init__(self, choices: tuple[str, ...], **kw: Any):
        super().__init__(trim=False, **kw)
        self.choices = choices

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> str:
        text = super()._deserialize(value, attr, data, **kw)
        if text not in self.choices:
            raise invalid(not_one_of(self.choices))
        return text


class HttpUrl(Str):
    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> str:
        text = super()._deserialize(value, attr, data, **kw)
        try:
            validate.URL(schemes={"http", "https"}, require_tld=False)(text)
        except ValidationError:
            raise error("value_error.url", "invalid or missing URL scheme (http or https)") from None
        return text


def issues_from(messages: Any, prefix: tuple[str | int, ...]) -> list[Issue]:
    """Flatten marshmallow's nested error dict into Issues, in document order."""
    issues: list[Issue] = []
    if isinstance(messages, dict):
        for key, sub in messages.items():
            loc = prefix if key == "_schema" else (*prefix, key)
            issues += issues_from(sub, loc)
    elif isinstance(messages, list):
        for msg in messages:
            issues += issues_from(msg, prefix)
    else:
        text = str(messages)
        if text == "Unknown field.":
            issues.append(EXTRA.at(prefix))
        elif text == "Invalid input type.":
            issues.append(NOT_A_DICT.at(prefix))
        elif "::" in text:
            text, _, ctx = text.partition(CTX)
            type_, _, msg = text.partition("::")
            issues.append(Issue(prefix, msg, type_, orjson.loads(ctx) if ctx else None))
        else:
            issues.append(Issue(prefix, text, "value_error"))
    return issues


def load(schema: Schema, data: Any, prefix: tuple[str | int, ...] = ("body",)) -> dict[str, Any]:
    """Validate `data` against `schema`, raising ValidationFailed with one Issue per problem."""
    try:
        loaded: dict[str, Any] = schema.load(data)
    except ValidationError as exc:
        raise ValidationFailed(issues_from(exc.messages, prefix)) from None
    return loaded


def issues_of(
    schema: Schema, data: Any, prefix: tuple[str | int, ...] = ("body",)
) -> tuple[dict[str, Any], list[Issue]]:
    """Like load(), but answer the issues instead of raising them."""
    try:
        return schema.load(data), []
    except ValidationError as exc:
        return {}, issues_from(exc.messages, prefix)
