"""What the OpenAPI document says about each route: one entry per (method, path pattern).

A route that is added without an entry here is missing from /openapi.json, and
tests/ops/test_openapi.py fails; request bodies name the marshmallow schemas that validate them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .contact_links import BASE as CONTACT_LINKS
from .contact_schemas import (
    MAX_LINK_ATTRIBUTE_KEYS,
    QUERY_INTEGERS,
    AttributeKeyCreateSchema,
    BulkContactsSchema,
    ContactCreateSchema,
    ContactPatchSchema,
    SegmentCreateSchema,
    SegmentPatchSchema,
)
from .created_link_docs import ContactLinksRevoked, CreatedLinkData, CreatedLinksPage
from .created_links import LINKS as CREATED_LINKS
from .doc_schemas import (
    AttributeKeyData,
    AttributeKeyList,
    BatchLinksOut,
    BulkData,
    ContactData,
    ContactLinkData,
    ContactLinksPage,
    ContactList,
    Health,
    MetadataFieldData,
    MetadataFieldList,
    OpenedLink,
    Ready,
    SegmentData,
    SegmentList,
    SurveyData,
    SurveyLinkOut,
    SurveyList,
)
from .fields import MANAGEMENT
from .paging import ContactListQuerySchema, ListQuerySchema
from .qr import DEFAULT_ECC, ECC_LEVELS, FORMATS, KINDS, QR_INTEGERS, qr_path
from .schemas import (
    BatchCreateLinksSchema,
    CreateLinkSchema,
    MetadataFieldCreateSchema,
    SurveyCreateSchema,
    SurveyPatchSchema,
)

Operation = dict[str, Any]
FILUM, FORMBRICKS = "FilumError", "FormbricksError"

ERROR_TEXT = {
    401: "Missing, unknown or revoked API key",
    403: "The key lacks the scope this operation needs",
    404: "Not found (also when it belongs to another organisation)",
    410: "Expired or revoked link, or survey not in progress",
    413: "Request body larger than the limit",
    415: "Content-Type is not JSON",
    422: "Invalid input: one item per problem",
    429: "Rate limit exceeded: `Retry-After` says when a token is there",
    503: "PostgreSQL or Redis not answering (Redis only with RATE_LIMIT_FAILURE_MODE=closed), or no PostgreSQL "
         "connection free within PG_POOL_TIMEOUT; retry shortly",
}
RETRY_AFTER = (429, 503)
PERSONAL = ("Cache-Control",)  # answers that carry survey links
LINKS_FORBIDDEN = "The key lacks `links:read`, or the survey is not in progress"
NOTHING_TO_OPEN = "Signature does not verify, unknown key, or nothing to open"


def errors(family: str, *codes: int, **texts: str) -> dict[str, Any]:
    """Error responses of one API family's body shape; `texts` overrides a description (`e404=...`)."""
    out: dict[str, Any] = {}
    for code in codes:
        response: dict[str, Any] = {"description": texts.get(f"e{code}", ERROR_TEXT[code]),
                                    "content": {"application/json": {"schema": family}}}
        if code in RETRY_AFTER:
            response["headers"] = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
        out[str(code)] = response
    return out


def ok(schema: Any, description: str, status: int = 200, media: str = "application/json",
       headers: tuple[str, ...] = ()) -> dict[str, Any]:
    """A success response; `headers` names components/headers it carries besides the ones every answer has."""
    response: dict[str, Any] = {"description": description, "content": {media: {"schema": schema}}}
    if headers:
        response["headers"] = {name: {"$ref": f"#/components/headers/{name}"} for name in headers}
    return {str(status): response}


def body(schema: Any, description: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"required": True, "content": {"application/json": {"schema": schema}}}
    if description:
        out["description"] = description
    return out


def path(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string"}}


def query_int(name: str, description: str,
              table: Mapping[str, tuple[int, int, int | None]] = QUERY_INTEGERS) -> dict[str, Any]:
    """An integer query parameter, bounds and default from the table that validates it."""
    low, high, default = table[name]
    schema: dict[str, Any] = {"type": "integer", "minimum": low, "maximum": high}
    if default is not None:
        schema["default"] = default
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": f"{description}. An integral number (`7.0` is 7, as generated clients send it); "
                           "empty: the default; repeated: the last one"}


SURVEY_ID = path("surveyId", "The survey's id (a survey campaign on the Filum path)", type="string", format="uuid")
SEGMENT_ID = path("segmentId", "The segment's id", type="string", format="uuid")
CONTACT_ID = path("contactId", "The contact's id (a positive 64-bit integer)", type="string", pattern="^[0-9]{1,19}$")
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
PUBLIC: list[dict[str, list[str]]] = []  # no API key


def op(operation_id: str, summary: str, tag: str, responses: dict[str, Any], **more: Any) -> Operation:
    return {"operationId": operation_id, "summary": summary, "tags": [tag], "responses": responses, **more}


def _ops() -> dict[tuple[str, str], Operation]:
    body_errors = (413, 415, 422)
    guarded = (401, 403, 422, 429, 503)  # 422: a query parameter the operation does not take
    return {
        # operations
        ("GET", "/health"): op("health", "Liveness: the process is up", "operations",
                               ok(Health, "Up"), security=PUBLIC),
        ("GET", "/ready"): op("ready", "Readiness: PostgreSQL answers, Redis takes writes", "operations",
                              {**ok(Ready, "Both answer"), **ok(Ready, "One does not (named in `checks`)", 503)},
                              security=PUBLIC),
        ("GET", "/metrics"): op("metrics", "Prometheus metrics (text exposition format 0.0.4)", "operations",
                                ok({"type": "string"}, "Metrics of every worker", media="text/plain"),
                                security=PUBLIC),
        ("GET", "/openapi.json"): op("openapi", "This document (OpenAPI 3)", "operations",
                                     ok({"type": "object"}, "The document"), security=PUBLIC),
        ("GET", "/docs"): op("docs", "Readable API documentation (works offline)", "operations",
                             ok({"type": "string"}, "An HTML page", media="text/html"), security=PUBLIC),
        ("GET", "/docs/{asset}"): op(
            "docs_asset", "A script or stylesheet of the documentation page", "operations",
            {**ok({"type": "string"}, "The file", media="*/*"), **errors(FORMBRICKS, 404, e404="No such asset")},
            parameters=[path("asset", "The file's name", type="string")], security=PUBLIC),
        # Filum contract
        ("POST", "/external/survey-campaigns/{survey_campaign_id}/links"): op(
            "create_survey_link", "Create a survey link (idempotent on the metadata mapping)", "links",
            {**ok(SurveyLinkOut, "The link: new, or the existing one for this mapping "
                                 "(`Idempotent-Replayed: true`)", headers=("Idempotent-Replayed", "Cache-Control")),
             **errors(FILUM, 401, 403, 404, 413, 422, 429, 503,
                      e404="Unknown campaign: `{\"detail\": {\"message\": \"not_found\", ...}}`",
                      e422="Invalid input in pydantic v1's shapes (one item per problem; a body of another "
                           "content type is `type_error.dict`, as FastAPI answers it), or the campaign's link "
                           "quota is reached (`threshold_exceeded`)",
                      e403="`organization-id` is not the key's organisation, or the key lacks `links:write`")},
            description="The same campaign and metadata mapping (compared as a set of (metadata_id, value) "
                        "pairs) always answer the same link, whatever `name` says, also when identical requests "
                        "arrive at once. A new link counts against the campaign's `linkQuota`; a replay never "
                        "does.",
            parameters=[
                path("survey_campaign_id", "The campaign (survey) id", type="string", format="uuid"),
                {"name": "organization-id", "in": "header", "required": False, "schema": {"type": "string"},
                 "description": "When sent, must be the key's organisation (else 403)"},
                {"name": "auth-type", "in": "header", "required": False,
                 "schema": {"type": "string", "enum": ["token"]}, "description": "When sent, must be `token`"},
            ],
            requestBody=body(CreateLinkSchema)),
        ("POST", "/external/survey-campaigns/{survey_campaign_id}/links/batch"): op(
            "create_survey_links", "Create (or replay) up to 1,000 survey links in one call", "links",
            {**ok(BatchLinksOut, "One result per item, in request order", headers=("Cache-Control",)),
             **errors(FILUM, 401, 403, 404, 413, 422, 429, 503,
                      e404="Unknown campaign: `{\"detail\": {\"message\": \"not_found\", ...}}`",
                      e413="Request body larger than 16 MiB",
                      e422="The envelope is not an object whose `links` is a list of 1 to 1,000 objects "
                           "(the call writes nothing); an invalid item is its own 422 result, not this",
                      e403="`organization-id` is not the key's organisation, or the key lacks `links:write`")},
            description="Each item is answered exactly as `create_survey_link` would answer it, as if the items "
                        "were sent one after another: the same validation (`loc` under the item), idempotency "
                        "and link JSON. The same mapping twice in a batch is one link (the later item is "
                        "`replayed`); once the quota is reached the new mappings after it are refused, replays "
                        "never are. The call spends one rate-limit token and is written whole or not at all.",
            parameters=[
                path("survey_campaign_id", "The campaign (survey) id", type="string", format="uuid"),
                {"name": "organization-id", "in": "header", "required": False, "schema": {"type": "string"},
                 "description": "When sent, must be the key's organisation (else 403)"},
                {"name": "auth-type", "in": "header", "required": False,
                 "schema": {"type": "string", "enum": ["token"]}, "description": "When sent, must be `token`"},
            ],
            requestBody=body(BatchCreateLinksSchema, "Bodies up to 16 MiB")),
        # management: surveys and metadata fields
        ("POST", f"{MANAGEMENT}/surveys"): op(
            "create_survey", "Create a survey", "management",
            {**ok(SurveyData, "The survey", 201), **errors(FORMBRICKS, *guarded, *body_errors)},
            requestBody=body(SurveyCreateSchema)),
        ("GET", f"{MANAGEMENT}/surveys/{{surveyId}}"): op(
            "get_survey", "One survey, with its link count", "management",
            {**ok(SurveyData, "The survey"), **errors(FORMBRICKS, *guarded, 404)}, parameters=[SURVEY_ID]),
        ("PATCH", f"{MANAGEMENT}/surveys/{{surveyId}}"): op(
            "patch_survey", "Change a survey's name, status, link quota or redirect URL", "management",
            {**ok(SurveyData, "The survey"), **errors(FORMBRICKS, *guarded, 404, *body_errors)},
            parameters=[SURVEY_ID], requestBody=body(SurveyPatchSchema)),
        ("POST", f"{MANAGEMENT}/metadata-fields"): op(
            "create_metadata_field", "Create a metadata field (`variable` defaults to `name`)", "management",
            {**ok(MetadataFieldData, "The field", 201), **errors(FORMBRICKS, *guarded, *body_errors)},
            requestBody=body(MetadataFieldCreateSchema)),
        ("GET", f"{MANAGEMENT}/metadata-fields"): op(
            "list_metadata_fields", "Every metadata field of the organisation", "management",
            {**ok(MetadataFieldList, "The fields, oldest first"), **errors(FORMBRICKS, *guarded)}),
        # management: contacts and segments
        ("POST", f"{MANAGEMENT}/contact-attribute-keys"): op(
            "create_attribute_key", "Create a contact attribute key", "contacts",
            {**ok(AttributeKeyData, "The key", 201), **errors(FORMBRICKS, *guarded, *body_errors)},
            requestBody=body(AttributeKeyCreateSchema)),
        ("GET", f"{MANAGEMENT}/contact-attribute-keys"): op(
            "list_attribute_keys", "Every contact attribute key of the organisation", "contacts",
            {**ok(AttributeKeyList, "The keys, oldest first"), **errors(FORMBRICKS, *guarded)}),
        ("POST", f"{MANAGEMENT}/contacts"): op(
            "create_contact", "Create a contact (new attribute keys are created; `email` is unique)", "contacts",
            {**ok(ContactData, "The contact", 201), **errors(FORMBRICKS, *guarded, *body_errors)},
            requestBody=body(ContactCreateSchema)),
        ("PUT", f"{MANAGEMENT}/contacts/bulk"): op(
            "upsert_contacts", "Create or update up to 10,000 contacts by `email`, all or nothing", "contacts",
            {**ok(BulkData, "How many were created and updated"),
             **errors(FORMBRICKS, *guarded, *body_errors)},
            requestBody=body(BulkContactsSchema, "Bodies up to BULK_MAX_BODY_BYTES (16 MiB)")),
        ("POST", f"{MANAGEMENT}/segments"): op(
            "create_segment", "Create a segment from a filter tree", "contacts",
            {**ok(SegmentData, "The segment, with how many contacts it holds", 201),
             **errors(FORMBRICKS, *guarded, *body_errors, e422="Invalid input; a malformed tree names the place")},
            requestBody=body(SegmentCreateSchema)),
        ("GET", f"{MANAGEMENT}/segments/{{segmentId}}"): op(
            "get_segment", "One segment, with how many contacts it holds now", "contacts",
            {**ok(SegmentData, "The segment"), **errors(FORMBRICKS, *guarded, 404)}, parameters=[SEGMENT_ID]),
        ("PATCH", f"{MANAGEMENT}/segments/{{segmentId}}"): op(
            "patch_segment", "Change a segment's title and/or filters", "contacts",
            {**ok(SegmentData, "The segment, with how many contacts the new filters hold"),
             **errors(FORMBRICKS, *guarded, 404, *body_errors, e422="Invalid input; a malformed tree names the place")},
            description="Counts and contact-link pages follow the new filters at once, on every worker.",
            parameters=[SEGMENT_ID], requestBody=body(SegmentPatchSchema)),
        ("DELETE", f"{MANAGEMENT}/segments/{{segmentId}}"): op(
            "delete_segment", "Delete a segment (its contacts stay)", "contacts",
            {"204": {"description": "Deleted: the segment and its contact-link pages answer 404 from now on"},
             **errors(FORMBRICKS, *guarded, 404)}, parameters=[SEGMENT_ID]),
        ("PATCH", f"{MANAGEMENT}/contacts/{{contactId}}"): op(
            "patch_contact", "Merge attributes into a contact (a null removes one)", "contacts",
            {**ok(ContactData, "The contact as it is now"),
             **errors(FORMBRICKS, *guarded, 404, *body_errors,
                      e422="Invalid input, or the `email` is another contact's (`attributes.email`)")},
            description="Keys not given are kept; new keys are created as on creation. Concurrent patches of "
                        "one contact each apply.",
            parameters=[CONTACT_ID], requestBody=body(ContactPatchSchema)),
        ("DELETE", f"{MANAGEMENT}/contacts/{{contactId}}"): op(
            "delete_contact", "Erase a contact, its attributes and its opens", "contacts",
            {"204": {"description": "Erased: its contact links answer 404 from now on"},
             **errors(FORMBRICKS, *guarded, 404)}, parameters=[CONTACT_ID]),
        # Formbricks contract
        ("GET", f"{CONTACT_LINKS}/segments/{{segmentId}}"): op(
            "segment_links", "Signed survey links for a page of a segment's contacts", "links",
            {**ok(ContactLinksPage, "A page, newest contact first (ties by id), so pages never overlap",
                  headers=PERSONAL),
             **errors(FORMBRICKS, *guarded, 404, 422, e403=LINKS_FORBIDDEN, e404="Survey or segment not found",
                      e422="Each invalid query parameter named in `details`")},
            description="Every link is an HS256 JWT signed on the fly (its header names the key, `kid`); "
                        "nothing is stored per link. " + LINKS_QUERY,
            parameters=[SURVEY_ID, SEGMENT_ID, query_int("limit", "Contacts per page"),
                        query_int("skip", "Contacts to skip"), EXPIRATION, ATTRIBUTE_KEYS, OPENED]),
        ("GET", f"{CONTACT_LINKS}/contacts/{{contactId}}"): op(
            "contact_link", "The signed survey link of one contact", "links",
            {**ok(ContactLinkData, "The link", headers=PERSONAL),
             **errors(FORMBRICKS, *guarded, 404, 422, e403=LINKS_FORBIDDEN, e404="Survey or contact not found")},
            description=LINKS_QUERY,
            parameters=[SURVEY_ID, CONTACT_ID, EXPIRATION]),
        ("GET", f"{CONTACT_LINKS}/segments/{{segmentId}}/export"): op(
            "export_segment_links", "Every link of a segment as one CSV file, streamed", "links",
            {**ok({"type": "string"}, "`contactId,surveyUrl,expiresAt` and one column per attribute key, newest "
                                      "contact first; a failure mid-stream, or a client that takes no byte for "
                                      "STREAM_STALL_SECONDS, cuts the connection", media="text/csv",
                headers=PERSONAL),
             **errors(FORMBRICKS, *guarded, 404, 422, e403=LINKS_FORBIDDEN, e404="Survey or segment not found",
                      e503="EXPORT_CONCURRENCY exports already streaming on this worker (`Retry-After: 5`), or "
                           "PostgreSQL or Redis not answering; retry later")},
            description="Read in keyset batches and signed on the fly: memory stays flat whatever the segment's "
                        "size. " + LINKS_QUERY,
            parameters=[SURVEY_ID, SEGMENT_ID, EXPIRATION, ATTRIBUTE_KEYS, OPENED]),
        # the respondent's side
        ("GET", "/c/{token}"): op(
            "open_contact_link", "Open a contact link", "respondents",
            {"302": {"description": "To the survey's `redirectUrl`, with `surveyId` and `contactId` added"},
             **ok(OpenedLink, "The link's facts (the survey has no `redirectUrl`)"),
             **errors(FORMBRICKS, 404, 410, e404=NOTHING_TO_OPEN)},
            parameters=[path("token", "The link's signed token (JWT)")], security=PUBLIC),
        ("GET", "/s/{token}"): op(
            "open_short_contact_link", "Open a short contact link (a survey with `linkFormat` short)",
            "respondents",
            {"302": {"description": "To the survey's `redirectUrl`, with `surveyId` and `contactId` added"},
             **ok(OpenedLink, "The link's facts (the survey has no `redirectUrl`)"),
             **errors(FORMBRICKS, 404, 410, e404=NOTHING_TO_OPEN)},
            description="Answered exactly as `/c/{token}`: a forged token is 404 before any database query; an "
                        "expired or revoked link, or a survey not in progress, is 410.",
            parameters=[path("token", "32 characters of base64url: key tag, survey number, contact id, expiry "
                                      "hour, link generation and a 96-bit HMAC-SHA256 (50 when an id passes 2^32)")],
            security=PUBLIC),
        ("GET", "/l/{token}"): op(
            "open_created_link", "Open a created (Filum) survey link", "respondents",
            {"302": {"description": "To the survey's `redirectUrl`, with `surveyId`, `publicId` and each "
                                    "metadata field's `variable` added"},
             **ok(OpenedLink, "The link's facts (the survey has no `redirectUrl`)"),
             **errors(FORMBRICKS, 404, 410, e404=NOTHING_TO_OPEN)},
            parameters=[path("token", "`<kid>.<public_id>.<mac>`")], security=PUBLIC),
    }


def _list_ops() -> dict[tuple[str, str], Operation]:
    """The lists (service/web/lists.py): newest first, a page at a time, with opaque cursors."""
    lists = (401, 403, 422, 429, 503)
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
             **errors(FORMBRICKS, *lists, e422=bad_query)},
            description=paging + more, parameters=[{"in": "query", "schema": schema}])
    return out


def _qr_ops() -> dict[tuple[str, str], Operation]:
    """The QR code routes: an SVG and a PNG one per kind of link (service/web/qr.py's KINDS)."""
    options = [
        {"name": "ecc", "in": "query", "required": False,
         "description": "Error-correction level (at least this one: a higher one is used when the code's size "
                        "allows it); lower case is accepted too",
         "schema": {"type": "string", "enum": list(ECC_LEVELS), "default": DEFAULT_ECC}},
        query_int("scale", "Pixels per module", QR_INTEGERS),
        query_int("border", "Quiet zone around the code, in modules (4 is the standard's)", QR_INTEGERS),
    ]
    out: dict[tuple[str, str], Operation] = {}
    for prefix, link in KINDS.items():
        for kind, media in FORMATS.items():
            out[("GET", qr_path(prefix, kind))] = op(
                f"qr_{link.name}_{kind}", f"The QR code of {link.what} ({kind.upper()})", "respondents",
                {**ok({"type": "string", "format": "binary"} if kind == "png" else {"type": "string"},
                      f"The link's URL (`PUBLIC_BASE_URL/{prefix}/<token>`) as a QR code; "
                      "`Cache-Control: private, no-store`", media=media),
                 **errors(FORMBRICKS, 404, 410, 422, e404=NOTHING_TO_OPEN,
                          e422="An option out of its bounds, named in `details`")},
                description="Checked as opening the link checks it (a forged token is 404 before any lookup, an "
                            "expired link or a survey not in progress 410); showing the code is not an open. "
                            "Unknown query parameters are ignored.",
                parameters=[path("token", link.token), *options], security=PUBLIC)
    return out


def _created_link_ops() -> dict[tuple[str, str], Operation]:
    """Created links in the management API, and revoking links (SPEC "The life of a link")."""
    guarded = (401, 403, 422, 429, 503)  # 422: a query parameter the operation does not take
    link_id = path("linkId", "The link's id (the Filum answer's `id`)", type="string", pattern="^[0-9]{1,19}$")
    not_found = "Survey or link not found"
    return {
        ("GET", CREATED_LINKS): op(
            "list_created_links", "The survey's created links, newest first, a page at a time", "management",
            {**ok(CreatedLinksPage, "A page; `meta.nextCursor` names the next one (null: the last page)",
                  headers=PERSONAL),
             **errors(FORMBRICKS, *guarded, 404, e404="Survey not found",
                      e422="An invalid `limit`, a `cursor` that was altered or belongs to another list, or a "
                           "query parameter the operation does not take")},
            description="Revoked links are listed too (`revokedAt`). The cursor is opaque and stable while links "
                        "are added: every link that existed when the first page was read is answered exactly once.",
            parameters=[SURVEY_ID, query_int("limit", "Links per page"),
                        {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
                         "description": "The `meta.nextCursor` of the page before; absent or empty: the first page"}]),
        ("GET", f"{CREATED_LINKS}/{{linkId}}"): op(
            "get_created_link", "One created link, with its revocation and its opens", "management",
            {**ok(CreatedLinkData, "The link", headers=PERSONAL), **errors(FORMBRICKS, *guarded, 404, e404=not_found)},
            parameters=[SURVEY_ID, link_id]),
        ("DELETE", f"{CREATED_LINKS}/{{linkId}}"): op(
            "revoke_created_link", "Revoke a created link", "management",
            {"204": {"description": "Revoked (also when it was already: nothing changes)"},
             **errors(FORMBRICKS, *guarded, 404, e404=not_found)},
            description="From the answer on, the link's `survey_url` answers 410 on every instance, no replay of "
                        "the Filum path hands it out again, the same mapping makes a new link, and the link no "
                        "longer counts against the `linkQuota`. 503 when Redis does not take the revocation: "
                        "repeat the request.",
            parameters=[SURVEY_ID, link_id]),
        ("POST", f"{CONTACT_LINKS}/revoke"): op(
            "revoke_contact_links", "Revoke every contact link issued for the survey so far", "links",
            {**ok(ContactLinksRevoked, "The instant of the revocation"),
             **errors(FORMBRICKS, *guarded, 404, e404="Survey not found", e403="The key lacks `manage`")},
            description="Every contact link (`/c/<token>`, in pages, single links and exports) issued for the survey "
                        "before this instant answers 410 from now on; links issued afterwards open. Nothing is "
                        "stored per link: the survey's link generation moves on and new links carry it.",
            parameters=[SURVEY_ID]),
    }


OPERATIONS: dict[tuple[str, str], Operation] = {**_ops(), **_list_ops(), **_qr_ops(), **_created_link_ops()}
