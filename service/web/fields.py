"""marshmallow fields whose errors read like the reference's (pydantic-style `msg` and `type`).

A field's error message is written `type::msg`; `issues_from()` splits it into an Issue.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web
from marshmallow import Schema, ValidationError, fields, validate

from ..core.errors import Issue, NotFound, ValidationFailed
from ..core.segments import INT64_MAX

MANAGEMENT = "/api/v2/management"


def any_segment(path: str) -> str:
    """The route pattern of `path` with each `{name}` matching any one segment."""
    # aiohttp's default pattern leaves out braces: an id holding one must still reach its route,
    # whose 404 or 422 names it
    return re.sub(r"\{(\w+)\}", r"{\1:[^/]+}", path)


REQUIRED = "value_error.missing::field required"
NOT_NULL = "type_error.none.not_allowed::none is not an allowed value"


def error(type_: str, msg: str) -> ValidationError:
    return ValidationError(f"{type_}::{msg}")


class Messages:
    default_error_messages = {"required": REQUIRED, "null": NOT_NULL}


class Str(Messages, fields.String):
    """A string, trimmed, within [min_length, max_length] characters after trimming."""

    default_error_messages = {"invalid": "type_error.str::str type expected",
                              "invalid_utf8": "value_error.str::not valid unicode"}

    def __init__(self, *, min_length: int = 0, max_length: int | None = None, trim: bool = True, **kw: Any):
        super().__init__(**kw)
        self.min_length, self.max_length, self.trim = min_length, max_length, trim

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> str:
        if not isinstance(value, str):
            raise self.make_error("invalid")
        text = value.strip() if self.trim else value
        if len(text) < self.min_length:
            raise error("value_error.any_str.min_length",
                        f"ensure this value has at least {self.min_length} characters")
        if self.max_length is not None and len(text) > self.max_length:
            raise error("value_error.any_str.max_length",
                        f"ensure this value has at most {self.max_length} characters")
        if "\x00" in text:
            raise error("value_error.str.nul", "NUL characters are not allowed")
        return text


class Int(Messages, fields.Integer):
    """A JSON integer (never a bool, a float or a numeric string) within [minimum, maximum]."""

    default_error_messages = {"invalid": "type_error.integer::value is not a valid integer"}

    def __init__(self, *, minimum: int = -INT64_MAX, maximum: int = INT64_MAX, **kw: Any):
        super().__init__(strict=True, **kw)
        self.minimum, self.maximum = minimum, maximum

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.make_error("invalid")
        if value < self.minimum:
            raise error("value_error.number.not_ge", f"ensure this value is greater than or equal to {self.minimum}")
        if value > self.maximum:
            raise error("value_error.number.not_le", f"ensure this value is less than or equal to {self.maximum}")
        return value


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


class ItemList(Messages, fields.List):
    default_error_messages = {"invalid": "type_error.list::value is not a valid list"}

    def __init__(self, inner: fields.Field, *, max_items: int, **kw: Any):
        super().__init__(inner, **kw)
        self.max_items = max_items

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> list:
        if isinstance(value, list) and len(value) > self.max_items:
            raise error("value_error.list.max_items", f"ensure this value has at most {self.max_items} items")
        return super()._deserialize(value, attr, data, **kw)


class Object(Messages, fields.Nested):
    default_error_messages = {"type": "type_error.dict::value is not a valid dict"}


class Choice(Str):
    def __init__(self, choices: tuple[str, ...], **kw: Any):
        super().__init__(trim=False, **kw)
        self.choices = choices

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> str:
        text = super()._deserialize(value, attr, data, **kw)
        if text not in self.choices:
            raise error("type_error.enum", "value is not a valid enumeration member; permitted: "
                        + ", ".join(repr(c) for c in self.choices))
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
            issues.append(Issue(prefix, "extra fields not permitted", "value_error.extra"))
        elif text == "Invalid input type.":
            issues.append(Issue(prefix, "value is not a valid dict", "type_error.dict"))
        elif "::" in text:
            type_, _, msg = text.partition("::")
            issues.append(Issue(prefix, msg, type_))
        else:
            issues.append(Issue(prefix, text, "value_error"))
    return issues


def load(schema: Schema, data: Any, prefix: tuple[str | int, ...] = ("body",)) -> dict[str, Any]:
    """Validate `data` against `schema`, raising ValidationFailed with one Issue per problem."""
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise ValidationFailed(issues_from(exc.messages, prefix)) from None


def issues_of(schema: Schema, data: Any, prefix: tuple[str | int, ...] = ("body",)) -> tuple[dict, list[Issue]]:
    """Like load(), but answer the issues instead of raising them."""
    try:
        return schema.load(data), []
    except ValidationError as exc:
        return {}, issues_from(exc.messages, prefix)
