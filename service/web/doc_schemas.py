"""Response schemas for the OpenAPI document only (requests are documented by the schemas that validate them)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields


def _iso(**kw: Any) -> fields.String:
    return fields.String(metadata={"format": "date-time", "example": "2024-01-15T10:30:00.000Z"}, **kw)


class FilumValidationIssue(Schema):
    loc = fields.List(fields.Raw(), metadata={"example": ["body", "name"]})
    msg = fields.String(metadata={"example": "field required"})
    type = fields.String(metadata={"example": "value_error.missing"})
    ctx = fields.Dict(metadata={"description": "pydantic's context of the error, when it has one",
                                "example": {"limit_value": 255}})


class FilumError(Schema):
    """The Filum path's error body: a string, a `{message, params}` object, or a list of issues (422)."""

    detail = fields.Raw(required=True, metadata={
        "oneOf": [{"type": "string"},
                  {"type": "object", "properties": {"message": {"type": "string"}, "params": {"type": "object"}}},
                  {"type": "array", "items": {"$ref": "#/components/schemas/FilumValidationIssue"}}],
        "example": "Invalid or missing token",
    })


class ErrorDetail(Schema):
    field = fields.String(metadata={"example": "limit"})
    issue = fields.String(metadata={"example": "ensure this value is less than or equal to 250"})


class ErrorInfo(Schema):
    code = fields.Integer(metadata={"example": 422})
    message = fields.String(metadata={"example": "Unprocessable Entity"})
    details = fields.List(fields.Nested(ErrorDetail))


class FormbricksError(Schema):
    """Every other path's error body."""

    error = fields.Nested(ErrorInfo, required=True)


class MetadataOut(Schema):
    id = fields.Integer()
    name = fields.String()
    variable = fields.String()


class MappingItemOut(Schema):
    metadata = fields.Nested(MetadataOut)
    value = fields.Raw(allow_none=True)


class SurveyLinkOut(Schema):
    id = fields.Integer()
    public_id = fields.String()
    name = fields.String()
    metadata_mapping = fields.List(fields.Nested(MappingItemOut))
    survey_url = fields.String()
    created = fields.String()
    updated = fields.String()


class BatchLinkResult(Schema):
    """One item of a batch, answered as the single create answers it."""

    status = fields.Integer(metadata={"enum": [200, 422], "example": 200})
    replayed = fields.Boolean(metadata={"description": "200 only: the link existed (as `Idempotent-Replayed`)"})
    link = fields.Nested(SurveyLinkOut, metadata={"description": "200 only"})
    detail = fields.Raw(metadata={"description": "422 only: the single create's `detail`, each `loc` under the "
                                                 "item (`[\"body\", \"links\", 3, \"name\"]`), or "
                                                 "`threshold_exceeded`"})


class BatchLinksOut(Schema):
    results = fields.List(fields.Nested(BatchLinkResult), metadata={"description": "In request order"})


class SurveyOut(Schema):
    id = fields.UUID()
    name = fields.String()
    type = fields.String()
    status = fields.String()
    linkQuota = fields.Integer(allow_none=True)
    redirectUrl = fields.String(allow_none=True)
    linkCount = fields.Integer()
    linkFormat = fields.String(metadata={"enum": ["jwt", "short"],
                                         "description": "Contact links as `/c/<jwt>` or `/s/<32 characters>`"})
    createdAt = fields.String()
    updatedAt = fields.String()


class Health(Schema):
    status = fields.String(metadata={"enum": ["ok"]})


class ReadyChecks(Schema):
    postgresql = fields.String(metadata={"enum": ["ok", "unavailable"]})
    # "refusing writes": Redis answers but refuses writes (out of memory, read-only), so no token can be spent
    redis = fields.String(metadata={"enum": ["ok", "unavailable", "refusing writes"]})


class Ready(Schema):
    status = fields.String(metadata={"enum": ["ok", "unavailable"]})
    checks = fields.Nested(ReadyChecks)


class SurveyData(Schema):
    data = fields.Nested(SurveyOut)


class MetadataFieldData(Schema):
    data = fields.Nested(MetadataOut)


class MetadataFieldList(Schema):
    data = fields.List(fields.Nested(MetadataOut))


class AttributeKeyOut(Schema):
    id = fields.UUID()
    key = fields.String()
    name = fields.String()
    createdAt = _iso()


class AttributeKeyData(Schema):
    data = fields.Nested(AttributeKeyOut)


class AttributeKeyList(Schema):
    data = fields.List(fields.Nested(AttributeKeyOut))


def attribute_value(max_chars: int | None = None) -> dict[str, Any]:
    """An attribute value: a string (of at most `max_chars`, when given), a number, a boolean, or null."""
    string: dict[str, Any] = {"type": "string"}
    if max_chars is not None:
        string["maxLength"] = max_chars
    return {"nullable": True, "oneOf": [string, {"type": "number"}, {"type": "boolean"}]}


# answered values were bounded when they were written, so responses leave the length out
_ATTRIBUTES = {"type": "object", "additionalProperties": attribute_value(), "example": {"email": "ann@example.com"}}


class ContactOut(Schema):
    id = fields.String(metadata={"description": "a 64-bit integer, as a string", "example": "1042"})
    attributes = fields.Dict(metadata=_ATTRIBUTES)
    createdAt = _iso()


class ContactData(Schema):
    data = fields.Nested(ContactOut)


class BulkCounts(Schema):
    created = fields.Integer()
    updated = fields.Integer()


class BulkData(Schema):
    data = fields.Nested(BulkCounts)


class SegmentOut(Schema):
    id = fields.UUID()
    title = fields.String()
    filters = fields.Dict(metadata={"$ref": "#/components/schemas/SegmentFilter"})
    contactCount = fields.Integer()
    createdAt = _iso()


class SegmentData(Schema):
    data = fields.Nested(SegmentOut)


class ContactLinkItem(Schema):
    contactId = fields.String(metadata={"example": "1042"})
    surveyUrl = fields.String(metadata={"format": "uri", "description": "`PUBLIC_BASE_URL/c/<HS256 JWT>`"})
    expiresAt = fields.String(allow_none=True, metadata={"format": "date-time",
                                                         "description": "the token's `exp`; null: no expiry"})
    attributes = fields.Dict(metadata={
        "type": "object", "additionalProperties": {"type": "string"},
        "example": {"email": "ann@example.com", "age": "42"},
        "description": "the values of the `attributeKeys` asked for, as text (as Formbricks' schema has them): "
                       'a number in its JSON form (`"42"`, `"1.5"`), a boolean as `"true"` or `"false"`'})


class PageMeta(Schema):
    total = fields.Integer(metadata={"description": "contacts in the segment"})
    limit = fields.Integer()
    offset = fields.Integer(metadata={"description": "the `skip` of the request"})


class ContactLinksPage(Schema):
    data = fields.List(fields.Nested(ContactLinkItem))
    meta = fields.Nested(PageMeta)


class ContactLinkOut(Schema):
    surveyUrl = fields.String(metadata={"format": "uri"})
    expiresAt = fields.String(allow_none=True, metadata={"format": "date-time"})


class ContactLinkData(Schema):
    data = fields.Nested(ContactLinkOut)


class OpenedLink(Schema):
    data = fields.Dict(metadata={
        "description": "the link's facts: `surveyId`, and `contactId` (contact links) or `publicId` and "
                       "`metadata` (created links)",
        "example": {"surveyId": "0b9c...", "contactId": "1042"},
    })


class ListMeta(Schema):
    nextCursor = fields.String(allow_none=True, metadata={
        "description": "the `cursor` of the next page; null: this page is the last"})


class SurveyList(Schema):
    data = fields.List(fields.Nested(SurveyOut))
    meta = fields.Nested(ListMeta)


class SegmentListItem(Schema):
    """A segment as the list answers it: without `contactCount` (GET one segment for it)."""

    id = fields.UUID()
    title = fields.String()
    filters = fields.Dict(metadata={"$ref": "#/components/schemas/SegmentFilter"})
    createdAt = _iso()


class SegmentList(Schema):
    data = fields.List(fields.Nested(SegmentListItem))
    meta = fields.Nested(ListMeta)


class ContactList(Schema):
    data = fields.List(fields.Nested(ContactOut))
    meta = fields.Nested(ListMeta)
