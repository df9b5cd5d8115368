"""Response schemas of the created-link operations, for the OpenAPI document only."""

from __future__ import annotations

from marshmallow import Schema, fields

from .doc_schemas import MappingItemOut


def _iso(description: str) -> fields.String:
    return fields.String(allow_none=True, metadata={"format": "date-time", "description": description,
                                                     "example": "2024-01-15T10:30:00.000Z"})


class LinkOpensOut(Schema):
    count = fields.Integer(metadata={"description": "Opens answered 302 or 200 (0 when never opened)"})
    firstAt = _iso("The first open, or null")
    lastAt = _iso("The last open, or null")


class CreatedLinkOut(Schema):
    id = fields.Integer(metadata={"description": "The link's id (the Filum answer's `id`)"})
    publicId = fields.String()
    name = fields.String()
    metadataMapping = fields.List(fields.Nested(MappingItemOut))
    surveyUrl = fields.String(metadata={"description": "`PUBLIC_BASE_URL/l/<kid>.<public_id>.<mac>`"})
    createdAt = _iso("When it was created")
    revokedAt = _iso("When it was revoked, or null (live)")
    opens = fields.Nested(LinkOpensOut)


class CreatedLinkData(Schema):
    data = fields.Nested(CreatedLinkOut)


class CreatedLinksMeta(Schema):
    nextCursor = fields.String(allow_none=True, metadata={
        "description": "Pass as `cursor` for the next page; null on the last page"})


class CreatedLinksPage(Schema):
    data = fields.List(fields.Nested(CreatedLinkOut))
    meta = fields.Nested(CreatedLinksMeta)


class ContactLinksRevokedOut(Schema):
    revokedAt = _iso("The instant: every contact link issued for the survey before it answers 410")


class ContactLinksRevoked(Schema):
    data = fields.Nested(ContactLinksRevokedOut)
