"""The lists of the management API (service/web/lists.py)."""

from __future__ import annotations

from ..doc_schemas import ContactList, SegmentList, SurveyList
from ..fields import MANAGEMENT
from ..paging import ContactListQuerySchema, ListQuerySchema
from .common import FORMBRICKS, GUARDED, Operation, errors, ok, op


def _list_ops() -> dict[tuple[str, str], Operation]:
    """The lists (service/web/lists.py): newest first, a page at a time, with opaque cursors."""
    bad_query = ("An unknown or repeated query parameter, an invalid value, or a `cursor` that was altered or "
                 "belongs to another list or organisation: each named in `details`")
    paging = ("Newest first (ties by id). Pass `meta.nextCursor` as `cursor` for the next page: pages never "
              "repeat or skip an item that existed when the first was read, and items added meanwhile never "
              "shift them (they are newer: read them from the first page again). A cursor works only for the "
              "list and organisation it was made for.")
    out: dict[tuple[str, str], Operation] = {}
    for resource, schema, answer, summary, more in (
        ("surveys", ListQuerySchema, SurveyList, "The organisation's surveys", ""),
        ("segments", ListQuerySchema, SegmentList, "The organisation's segments",
         " Items have no `contactCount` (a page would cost a count per segment): GET one segment for it."),
        ("contacts", ContactListQuerySchema, ContactList, "The organisation's contacts; `email` finds one",
         " With `email`, the page holds the one contact with exactly that email, or none."),
    ):
        out[("GET", f"{MANAGEMENT}/{resource}")] = op(
            f"list_{resource}", f"{summary}, a page at a time", "lists",
            {**ok(answer, "A page: each item as the single GET answers it" + (" (but see above)" if more else "")),
             **errors(FORMBRICKS, *GUARDED, e422=bad_query)},
            description=paging + more, parameters=[{"in": "query", "schema": schema}])
    return out


OPERATIONS = _list_ops()
