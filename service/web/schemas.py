"""Request schemas: the edge's validation, and the source of the OpenAPI document."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validates_schema

from ..core.segments import INT64_MAX, is_number
from .fields import Choice, HttpUrl, Int, ItemList, Object, Str, error, too_long, too_many

MAX_METADATA_ITEMS = 200
MAX_VALUE_CHARS = 2000
MAX_LIST_ITEMS = 200
SURVEY_STATUSES = ("draft", "inProgress", "paused", "completed")
LINK_FORMATS = ("jwt", "short")  # contact links as /c/<jwt> or /s/<short token>


class MetadataValue(fields.Field[Any]):
    """A string (<= 2000 chars), a finite number (not a boolean), a list of such or nulls, or null."""

    def __init__(self, **kw: Any):
        super().__init__(allow_none=True, load_default=None, **kw)

    @staticmethod
    def _scalar(value: Any) -> Any:
        if isinstance(value, str):
            if len(value) > MAX_VALUE_CHARS:
                raise too_long(MAX_VALUE_CHARS)
            if "\x00" in value:  # PostgreSQL's jsonb cannot hold U+0000
                raise error("value_error.str.nul", "NUL characters are not allowed")
            return value
        if is_number(value):
            return value
        raise error("type_error", "value must be a string, a finite number, a list of those, or null")

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kw: Any) -> Any:
        if isinstance(value, list):
            if len(value) > MAX_LIST_ITEMS:
                raise too_many(MAX_LIST_ITEMS)
            errors: dict[int, list[str] | dict[str, Any]] = {}
            for i, item in enumerate(value):
                if item is None:
                    continue
                try:
                    self._scalar(item)
                except ValidationError as exc:
                    errors[i] = exc.messages
            if errors:
                raise ValidationError(errors)
            return value
        return self._scalar(value)


class MetadataAssociationSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    # Filum reads its body with pydantic v1: an id written "12" (read from a CSV) is 12, as there
    metadata_id = Int(required=True, minimum=1, maximum=INT64_MAX, coerce=True)
    value = MetadataValue()


class CreateLinkSchema(Schema):
    """Body of POST /external/survey-campaigns/{id}/links (extra fields are ignored, as upstream)."""

    class Meta:
        unknown = EXCLUDE

    name = Str(required=True, min_length=1, max_length=255, numbers=True)  # `"name": 123` is "123", as there
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

    name = Str(required=True, min_length=1, max_length=255)
    status = Choice(SURVEY_STATUSES, load_default="inProgress")
    linkQuota = Int(allow_none=True, load_default=None, minimum=0, maximum=10_000_000,
                    data_key="linkQuota", attribute="link_quota")
    redirectUrl = HttpUrl(allow_none=True, load_default=None, max_length=2048,
                          data_key="redirectUrl", attribute="redirect_url")
    linkFormat = Choice(LINK_FORMATS, load_default="jwt", data_key="linkFormat", attribute="link_format")


class SurveyPatchSchema(Schema):
    class Meta:
        unknown = RAISE

    name = Str(min_length=1, max_length=255)
    status = Choice(SURVEY_STATUSES)
    linkQuota = Int(allow_none=True, minimum=0, maximum=10_000_000, data_key="linkQuota", attribute="link_quota")
    redirectUrl = HttpUrl(allow_none=True, max_length=2048, data_key="redirectUrl", attribute="redirect_url")
    linkFormat = Choice(LINK_FORMATS, data_key="linkFormat", attribute="link_format")


class MetadataFieldCreateSchema(Schema):
    class Meta:
        unknown = RAISE

    name = Str(required=True, min_length=1, max_length=255)
    variable = Str(min_length=1, max_length=255)
