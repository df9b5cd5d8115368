"""Lists of the management API: their query (`limit`, `cursor`, and a filter or two), their keyset
cursors, and their body `{"data": [...], "meta": {"nextCursor": "..." | null}}`.

A list is read newest first, by (created_at DESC, id DESC), and a cursor is the position of the last
item answered, signed for the list and the organisation (core.cursors): the next page is a seek
just past it. Rows added meanwhile are newer than every position already handed out, so they never
shift a later page, and a row that existed at the first page is answered exactly once.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from marshmallow import EXCLUDE, Schema

from ..core.cursors import MAX_CURSOR_CHARS, CursorCodec, InvalidCursor
from ..core.errors import Issue, ValidationFailed
from ..core.rules import PAGE_LIMIT, Text, parse_id
from .auth import unknown_query_issues
from .contact_schemas import MAX_ATTRIBUTE_CHARS
from .fields import Str, issues_of
from .query import REPEATED, QueryInt

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
BAD_CURSOR = "the cursor was altered, or belongs to another list or another organisation"


class ListQuerySchema(Schema):
    """`?limit=&cursor=`: each at most once; an empty value is invalid, not the default."""

    class Meta:
        unknown = EXCLUDE  # refused before the schema, with the accepted names (auth.unknown_query_issues)

    limit = QueryInt(PAGE_LIMIT, load_default=PAGE_LIMIT.default,
                     metadata={"description": "Items per page (an integral number: `50.0` is 50)"})
    cursor = Str(Text(0, MAX_CURSOR_CHARS), trim=False, metadata={
        "description": "`meta.nextCursor` of the previous page, as it was answered; absent: the first page"})


class ContactListQuerySchema(ListQuerySchema):
    email = Str(Text(1, MAX_ATTRIBUTE_CHARS), trim=False, metadata={
        "description": "Only the contact whose `email` attribute is exactly this (case and spaces count)"})


def read_list_query(request: web.Request, schema: Schema) -> dict[str, Any]:
    """The list's query parameters, or one 422 naming each problem: an unknown parameter, a repeated
    one, an invalid value."""
    issues = unknown_query_issues(request, tuple(schema.fields))
    given: dict[str, str] = {}
    for name in schema.fields:
        values = request.query.getall(name, [])
        if len(values) > 1:
            issues.append(REPEATED.at(("query", name)))
        elif values:
            given[name] = values[0]
    query, invalid = issues_of(schema, given, ("query",))
    if issues or invalid:
        raise ValidationFailed([*issues, *invalid])
    return query


def micros(moment: datetime) -> int:
    """A timestamp as whole microseconds since the epoch: exact both ways, as PostgreSQL keeps it."""
    return (moment - _EPOCH) // _MICROSECOND


def keyset_cursor(codec: CursorCodec, kind: str, org: uuid.UUID, created_at: datetime, item_id: int | uuid.UUID) -> str:
    """The cursor just past an item of a (created_at DESC, id DESC) list."""
    return codec.encode(kind, org, [micros(created_at), item_id if isinstance(item_id, int) else str(item_id)])


def keyset_after(codec: CursorCodec, kind: str, org: uuid.UUID, text: str,
                 read_id: Callable[[Any], Any]) -> tuple[datetime, Any]:
    """The (created_at, id) a cursor names; 422 naming `cursor` when it is not one of this list's."""
    try:
        position = codec.decode(kind, org, text)
        # only a holder of the signing keys could sign another shape: refused all the same
        if len(position) != 2 or type(position[0]) is not int:
            raise InvalidCursor("malformed position")
        created_at = _EPOCH + position[0] * _MICROSECOND
        item_id = read_id(position[1])
        if item_id is None:
            raise InvalidCursor("malformed id")
    except (InvalidCursor, OverflowError):
        raise ValidationFailed([Issue(("query", "cursor"), BAD_CURSOR, "value_error.cursor")]) from None
    return created_at, item_id


def contact_id(value: Any) -> int | None:
    """An id of a contact position (written as a JSON integer)."""
    return parse_id(value) if type(value) is int else None


def page_body(items: list[dict[str, Any]], next_cursor: str | None) -> dict[str, Any]:
    return {"data": items, "meta": {"nextCursor": next_cursor}}

