"""Request schemas: the edge's validation, and the source of the OpenAPI document."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validates_schema

from ..core.rules import ID, LINK_QUOTA, NAME, URL, Problem, Text, is_number, too_many
from .fields import Choice, HttpUrl, Int, ItemList, Object, Str, invalid, message

MAX_METADATA_ITEMS = 200
MAX_VALUE_CHARS = 2000
MAX_LIST_ITEMS = 200
METADATA_TEXT = Text(0, MAX_VALUE_CHARS)
NOT_A_VALUE = Problem("type_error", "value must be a string, a finite number, a list of those, or null")
SURVEY_STATUSES = ("draft", "inProgress", "paused", "completed")
LINK_FORMATS = ("jwt", "short")  # contact links as /c/<jwt> or /s/<short token>


def _scalar_problem(value: Any) -> Problem | None:
    if isinstance(value, str):
        return METADATA_TEXT.problem(value)
    return None if is_number(value) else NOT_A_VALUE


def value_problems(value: Any) -> Problem | dict[int, Problem] | None:
    """What is wrong with a metadata value (the problem of each list item, by position), or None: a
    string (<= 2000 chars), a finite number (not a boolean), a list of such or nulls, or null."""
    if value is None:
        return None
    if not isinstance(value, list):
        return _scalar_problem(value)
    if len(value) > MAX_LIST_ITEMS:
        return too_many(MAX_LIST_ITEMS)
    problems = {i: problem for i, item in enumerate(value)
                if item is not None and (problem := _scalar_problem(item)) is not None}
    return problems or None


class MetadataValue(fields.Field[Any]):
    """A metadata value (see value_problems)."""

    def __init__(self, **kw: Any):
        super().__init__(allow_none=True, load_default=None, **kw)

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> Any:
        problems = value_problems(value)
        if isinstance(problems, Problem):
            raise invalid(problems)
        if problems:
            raise ValidationError({i: [message(problem)] for i, problem in problems.items()})
        return value


class MetadataAssociationSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    # Filum reads its body with pydantic v1: an id written "12" (read from a CSV) is 12, as there
    metadata_id = Int(ID, required=True, coerce=True)
    value = MetadataValue()


class CreateLinkSchema(Schema):
    """Body of POST /external/survey-campaigns/{id}/links (extra fields are ignored, as upstream)."""

    class Meta:
        unknown = EXCLUDE

    name = Str(NAME, required=True, numbers=True)  # `"name": 123` is "123", as there
    metadata_mapping = ItemList(Object(MetadataAssociationSchema), max_items=MAX_METADATA_ITEMS,
                                load_default=list, allow_none=True)

    @validates_schema(skip_on_field_errors=True)
    def _unique_ids(self, data: dict[str, Any], **kw: Any) -> None:
        seen: set[int] = set()
        problems: dict[int, dict[str, list[str]]] = {}
        for i, item in enumerate(data.get("metadata_mapping") or []):
            if item["metadata_id"] in seen:
                problems[i] = {"metadata_id": ["value_error.duplicate::metadata_id appears more than once"]}
            seen.add(item["metadata_id"])
        if problems:
            raise ValidationError({"metadata_mapping": problems})


MAX_BATCH_ITEMS = 1000


class BatchCreateLinksSchema(Schema):
    """Body of POST .../links/batch, for the OpenAPI document: web/batch.py reads the envelope and
    each item with CreateLinkSchema, answering each item on its own."""

    links = ItemList(Object(CreateLinkSchema), max_items=MAX_BATCH_ITEMS, required=True,
                     metadata={"minItems": 1})


class SurveyCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    name = Str(NAME, required=True)
    status = Choice(SURVEY_STATUSES, load_default="inProgress")
    linkQuota = Int(LINK_QUOTA, allow_none=True, load_default=None, data_key="linkQuota", attribute="link_quota")
    redirectUrl = HttpUrl(URL, allow_none=True, load_default=None, data_key="redirectUrl", attribute="redirect_url")
    linkFormat = Choice(LINK_FORMATS, load_default="jwt", data_key="linkFormat", attribute="link_format")


class SurveyPatchSchema(Schema):
    class Meta:
        unknown = RAISE

    name = Str(NAME)
    status = Choice(SURVEY_STATUSES)
    linkQuota = Int(LINK_QUOTA, allow_none=True, data_key="linkQuota", attribute="link_quota")
    redirectUrl = HttpUrl(URL, allow_none=True, data_key="redirectUrl", attribute="redirect_url")
    linkFormat = Choice(LINK_FORMATS, data_key="linkFormat", attribute="link_format")


class MetadataFieldCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    name = Str(NAME, required=True)
    variable = Str(NAME)
