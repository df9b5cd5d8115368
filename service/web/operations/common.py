"""The building blocks of the operations table: responses, parameters, error answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...core.rules import Whole
from ..link_query import QUERY_INTEGERS

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


def query_int(name: str, description: str, table: Mapping[str, Whole] = QUERY_INTEGERS) -> dict[str, Any]:
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
PUBLIC: list[dict[str, list[str]]] = []  # no API key
BODY_ERRORS = (413, 415, 422)
GUARDED = (401, 403, 422, 429, 503)  # 422: a query parameter the operation does not take


def op(operation_id: str, summary: str, tag: str, responses: dict[str, Any], **more: Any) -> Operation:
    return {"operationId": operation_id, "summary": summary, "tags": [tag], "responses": responses, **more}
