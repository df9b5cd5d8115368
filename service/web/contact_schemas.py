"""Request schemas of the contacts and segments endpoints (Formbricks contract).

Attribute values are strings (at most 2000 characters), finite numbers, booleans, or null; a
null means "no value" (a new contact does not get the attribute; an update removes it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

from marshmallow import RAISE, Schema, ValidationError, fields

from ..core.errors import Issue
from ..core.rules import (
    INT64_MAX,
    NAME,
    NOT_A_DICT,
    NOT_A_LIST,
    Problem,
    Text,
    is_number,
    too_few,
    too_many,
)
from ..core.segments import BAD_KEY, CONTACT_ID, valid_attribute_key, validate_filters
from .fields import REQUIRED, Messages, Str, invalid, message

MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_CHARS = 2000
ATTRIBUTE_TEXT = Text(0, MAX_ATTRIBUTE_CHARS)
MAX_BULK_CONTACTS = 10_000
SLICE = 500  # bulk items checked per turn of the event loop


RESERVED_KEY = Problem("value_error.attribute_key", "contactId is reserved for the contact's id")
TOO_BIG = Problem("value_error.number", "numbers are at most 2^63-1 in magnitude")
NOT_AN_ATTRIBUTE = Problem("type_error", "value must be a string, a finite number, a boolean or null")


def _attribute_value(value: Any) -> Problem | None:
    """The problem with one attribute value, or None."""
    if value is None or isinstance(value, bool):
        return None
    if is_number(value):
        return None if abs(value) <= INT64_MAX else TOO_BIG
    if isinstance(value, str):
        return ATTRIBUTE_TEXT.problem(value)
    return NOT_AN_ATTRIBUTE


def key_problem(key: Any) -> Problem | None:
    """The problem with an attribute key, or None."""
    if key == CONTACT_ID:
        return RESERVED_KEY
    return None if valid_attribute_key(key) else BAD_KEY


def attribute_problems(value: Any, require_email: bool) -> Any:
    """marshmallow-style messages for an attributes object, or None when it is valid."""
    if not isinstance(value, dict):
        return [message(NOT_A_DICT)]
    problems: dict[str, Any] = {}
    if len(value) > MAX_ATTRIBUTES:
        return [f"value_error.dict.max_items::ensure this value has at most {MAX_ATTRIBUTES} attributes"]
    for key, item in value.items():
        if (problem := key_problem(key) or _attribute_value(item)) is not None:
            problems[key] = [message(problem)]
    email = value.get("email")
    if "email" not in problems and ("email" in value or require_email):
        if "email" not in value:
            problems["email"] = [REQUIRED]
        elif not isinstance(email, str) or not email.strip():
            problems["email"] = ["type_error.str::email must be a non-empty string"]
    return problems or None


class Attributes(Messages, fields.Field[dict[str, Any]]):
    """`{"key": value}` with valid keys and values (see the module docstring)."""

    def __init__(self, require_email: bool = False, **kw: Any):
        super().__init__(**kw)
        self.require_email = require_email

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> dict[str, Any]:
        problems = attribute_problems(value, self.require_email)
        if problems:
            raise ValidationError(problems)
        return cast(dict[str, Any], value)  # a dict: attribute_problems says so otherwise


def _plainly_valid(attributes: Any, known: set[str]) -> bool:
    """True for attributes that attribute_problems would pass, checked the quick way (exact types as JSON
    gives them, keys seen valid before in `known`); False means "ask attribute_problems"."""
    if type(attributes) is not dict or len(attributes) > MAX_ATTRIBUTES:
        return False
    email = attributes.get("email")
    if type(email) is not str or not email.strip():
        return False
    for key, value in attributes.items():
        if key not in known:
            if not valid_attribute_key(key):
                return False
            known.add(key)
        kind = type(value)
        if kind is str:
            if ATTRIBUTE_TEXT.problem(value) is not None:
                return False
        elif kind is int or kind is float:
            if not (is_number(value) and abs(value) <= INT64_MAX):
                return False
        elif value is not None and kind is not bool:
            return False
    return True


def _item_problems(item: Any, known: set[str] | None = None) -> Any:
    """marshmallow-style messages for one bulk item, or None when it is valid."""
    if known is not None and type(item) is dict and len(item) == 1 and _plainly_valid(item.get("attributes"), known):
        return None
    if not isinstance(item, dict):
        return [message(NOT_A_DICT)]
    found: dict[str, Any] = {k: ["Unknown field."] for k in item if k != "attributes"}
    if "attributes" not in item:
        found["attributes"] = [REQUIRED]
    elif (bad := attribute_problems(item["attributes"], require_email=True)) is not None:
        found["attributes"] = bad
    return found or None


class CheckedContacts(list[Any]):
    """Bulk items already checked by `check_contacts`, with the problems found (by index)."""

    problems: dict[int, Any]


async def check_contacts(body: Any) -> Any:
    """The body, its `contacts` items checked SLICE at a time with a turn of the event loop between
    slices: 10,000 items are ~100 ms of CPU, which in one go would hold up every other request of the
    worker. ContactList then reports what was found, as if it had checked them itself."""
    items = body.get("contacts") if isinstance(body, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BULK_CONTACTS:
        return body  # ContactList answers these at once
    checked = CheckedContacts(items)
    checked.problems = {}
    known: set[str] = set()  # keys already found valid in this body
    for start in range(0, len(items), SLICE):
        if start:
            await asyncio.sleep(0)
        for i in range(start, min(start + SLICE, len(items))):
            if (found := _item_problems(items[i], known)) is not None:
                checked.problems[i] = found
    return {**body, "contacts": checked}


class ContactList(Messages, fields.Field[list[Any]]):
    """Up to 10,000 `{"attributes": {...}}` items, each with an `email`, checked without a schema per item."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> list[Any]:
        if not isinstance(value, list):
            raise invalid(NOT_A_LIST)
        if not value:
            raise invalid(too_few(1))
        if len(value) > MAX_BULK_CONTACTS:
            raise invalid(too_many(MAX_BULK_CONTACTS))
        if isinstance(value, CheckedContacts):
            problems = value.problems
        else:
            problems = {i: found for i, item in enumerate(value) if (found := _item_problems(item)) is not None}
        if problems:
            raise ValidationError(problems)
        return [item["attributes"] for item in value]


class AttributeKey(Str):
    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> str:
        key = super()._deserialize(value, attr, data, **kw)
        problem = key_problem(key)
        if problem is not None:
            raise invalid(problem)
        return key


class AttributeKeyCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    key = AttributeKey(required=True, trim=False)
    name = Str(NAME)


class ContactCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    attributes = Attributes(required=True)


class ContactPatchSchema(ContactCreateSchema):
    """PATCH /contacts/{id}: the attributes to merge, checked as on creation (a null removes one)."""


class BulkContactsSchema(Schema):
    class Meta:
        unknown = RAISE

    contacts = ContactList(required=True)


class FilterTree(Messages, fields.Field[dict[str, Any]]):
    """A segment's filter tree, checked by `core.segments.validate_filters` and normalised."""

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> dict[str, Any]:
        tree, issues = validate_filters(value, loc=())
        if issues:
            raise ValidationError(_nested(issues))
        return cast(dict[str, Any], tree)  # a dict: validate_filters has an issue for any other root


def _nested(issues: list[Issue]) -> dict[Any, Any]:
    """Issues as marshmallow's nested messages (`issues_from` flattens them back, in order)."""
    root: dict[Any, Any] = {}
    for issue in issues:
        node = root
        for part in issue.loc:
            node = node.setdefault(part, {})
        node.setdefault("_schema", []).append(f"{issue.type}::{issue.msg}")
    return root


def _title(**kw: Any) -> Str:
    """A segment's title, the same rule on creation and on PATCH."""
    return Str(NAME, **kw)


class SegmentCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    title = _title(required=True)
    filters = FilterTree(required=True)


class SegmentPatchSchema(Schema):
    """PATCH /segments/{id}: either field or both, each checked as on creation."""

    class Meta:
        unknown = RAISE

    title = _title()
    filters = FilterTree()
