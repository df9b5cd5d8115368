"""The Formbricks contract: signed contact links, a page, one contact, or a whole segment as CSV."""

from __future__ import annotations

from ..contact_links import BASE as CONTACT_LINKS
from ..doc_schemas import ContactLinkData, ContactLinksPage
from ..link_query import MAX_LINK_ATTRIBUTE_KEYS
from .common import (
    CONTACT_ID,
    FORMBRICKS,
    GUARDED,
    LINKS_FORBIDDEN,
    PERSONAL,
    SEGMENT_ID,
    SURVEY_ID,
    Operation,
    errors,
    ok,
    op,
    query_int,
)

EXPIRATION = query_int("expirationDays", "Days until the link expires; absent: it never does")
LINKS_QUERY = "Query parameters the operation does not take are ignored, as Formbricks ignores them."
ATTRIBUTE_KEYS = {
    "name": "attributeKeys", "in": "query", "required": False, "style": "form", "explode": False,
    "description": f"Comma-separated attribute keys (at most {MAX_LINK_ATTRIBUTE_KEYS}, trimmed) whose values are "
                   "answered in `attributes`; unknown keys are ignored",
    "schema": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_LINK_ATTRIBUTE_KEYS},
}
OPENED = {
    "name": "opened", "in": "query", "required": False, "schema": {"type": "boolean"},
    "description": "`true`: only the segment's contacts that have opened this survey's link; `false`: only those "
                   "that have not (the reminder list); `meta.total` counts that set. Absent or empty: every contact",
}

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", f"{CONTACT_LINKS}/segments/{{segmentId}}"): op(
        "segment_links", "Signed survey links for a page of a segment's contacts", "links",
        {**ok(ContactLinksPage, "A page, newest contact first (ties by id), so pages never overlap",
              headers=PERSONAL),
         **errors(FORMBRICKS, *GUARDED, 404, 422, e403=LINKS_FORBIDDEN, e404="Survey or segment not found",
                  e422="Each invalid query parameter named in `details`")},
        description="Every link is an HS256 JWT signed on the fly (its header names the key, `kid`); "
                    "nothing is stored per link. " + LINKS_QUERY,
        parameters=[SURVEY_ID, SEGMENT_ID, query_int("limit", "Contacts per page"),
                    query_int("skip", "Contacts to skip"), EXPIRATION, ATTRIBUTE_KEYS, OPENED]),
    ("GET", f"{CONTACT_LINKS}/contacts/{{contactId}}"): op(
        "contact_link", "The signed survey link of one contact", "links",
        {**ok(ContactLinkData, "The link", headers=PERSONAL),
         **errors(FORMBRICKS, *GUARDED, 404, 422, e403=LINKS_FORBIDDEN, e404="Survey or contact not found")},
        description=LINKS_QUERY,
        parameters=[SURVEY_ID, CONTACT_ID, EXPIRATION]),
    ("GET", f"{CONTACT_LINKS}/segments/{{segmentId}}/export"): op(
        "export_segment_links", "Every link of a segment as one CSV file, streamed", "links",
        {**ok({"type": "string"}, "`contactId,surveyUrl,expiresAt` and one column per attribute key, newest "
                                  "contact first; a failure mid-stream, or a client that takes no byte for "
                                  "STREAM_STALL_SECONDS, cuts the connection", media="text/csv",
            headers=PERSONAL),
         **errors(FORMBRICKS, *GUARDED, 404, 422, e403=LINKS_FORBIDDEN, e404="Survey or segment not found",
                  e503="EXPORT_CONCURRENCY exports already streaming on this worker (`Retry-After: 5`), or "
                       "PostgreSQL or Redis not answering; retry later")},
        description="Read in keyset batches and signed on the fly: memory stays flat whatever the segment's "
                    "size. " + LINKS_QUERY,
        parameters=[SURVEY_ID, SEGMENT_ID, EXPIRATION, ATTRIBUTE_KEYS, OPENED]),
}
