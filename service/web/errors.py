"""One error renderer per API family: Filum's `{"detail": ...}` and Formbricks' `{"error": ...}`."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ..core.errors import (
    Busy,
    DomainError,
    Forbidden,
    Gone,
    Issue,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from .jsonio import json_response

FILUM = "filum"
FORMBRICKS = "formbricks"
# Each status's message as both references write it (RFC 9110's names before Python 3.13 renamed
# 413 and 422 in HTTPStatus): fixed here so that no Python version changes an error body.
PHRASES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 408: "Request Timeout", 409: "Conflict",
    410: "Gone", 411: "Length Required", 413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 417: "Expectation Failed", 422: "Unprocessable Entity",
    429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}


def phrase(status: int) -> str:
    """The fixed message of a status (`Error` for one the service never answers)."""
    return PHRASES.get(status, "Error")


def family_of(path: str) -> str:
    return FILUM if path.startswith("/external/") else FORMBRICKS


def _headers(error: DomainError) -> dict[str, str] | None:
    if isinstance(error, RateLimited | Busy):
        return {"Retry-After": str(error.retry_after)}
    if isinstance(error, Unavailable):
        return {"Retry-After": "1"}
    return None


def _plain_message(error: DomainError) -> str:
    if isinstance(error, PayloadTooLarge):
        return f"Request body too large (limit {error.limit} bytes)"
    if isinstance(error, UnsupportedMediaType):
        return "Content-Type must be application/json"
    if isinstance(error, Busy):
        return f"Service temporarily unavailable: too many {error.what} in progress, retry shortly"
    if isinstance(error, Unavailable):
        return f"Service temporarily unavailable: {error.what} is not answering, retry shortly"
    if isinstance(error, Gone):
        return error.reason
    return phrase(error.status)


def render_filum(error: DomainError) -> web.Response:
    """The reference's bodies: a string detail, a {message, params} detail, or a list of issues."""
    return json_response({"detail": filum_detail(error)}, error.status, _headers(error))


def filum_detail(error: DomainError) -> Any:
    """The `detail` of a Filum error body (also a batch item's)."""
    detail: Any
    if isinstance(error, Unauthorized):
        detail = "Invalid or missing token"
    elif isinstance(error, Forbidden):
        detail = "Permission denied"
    elif isinstance(error, RateLimited):
        detail = "Rate limit exceeded"
    elif isinstance(error, NotFound):
        detail = {"message": "not_found", "params": {"model": error.model}}
    elif isinstance(error, QuotaExceeded):
        detail = {"message": "threshold_exceeded", "params": {"model": "survey_link", "threshold": error.threshold}}
    elif isinstance(error, ValidationFailed):
        detail = [_filum_issue(i) for i in error.issues]
    else:
        detail = _plain_message(error)
    return detail


def _filum_issue(issue: Issue) -> dict[str, Any]:
    """pydantic v1's error dict: `ctx` only when the error has one (`{"limit_value": 255}`)."""
    item: dict[str, Any] = {"loc": list(issue.loc), "msg": issue.msg, "type": issue.type}
    if issue.ctx is not None:
        item["ctx"] = issue.ctx
    return item


def _field(issue: Issue) -> str:
    parts = [str(p) for p in issue.loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    # an empty name (`?=`) is named by where it was, not mistaken for the body
    return ".".join(parts) or (str(issue.loc[0]) if issue.loc else "body")


def render_formbricks(error: DomainError) -> web.Response:
    """`{"error": {"code", "message", "details": [{"field", "issue"}]}}`."""
    details: list[dict[str, str]] = []
    if isinstance(error, NotFound):
        details = [{"field": error.field, "issue": "not found"}]
    elif isinstance(error, ValidationFailed):
        details = [{"field": _field(i), "issue": i.msg} for i in error.issues]
    elif isinstance(error, QuotaExceeded):
        details = [{"field": "linkQuota", "issue": f"threshold_exceeded: at most {error.threshold} links"}]
    elif isinstance(error, Forbidden):
        details = [{"field": error.field, "issue": error.reason}] if error.reason != "Permission denied" else []
    elif isinstance(error, Unauthorized):
        details = [{"field": "x-api-key", "issue": "missing, unknown or revoked API key"}]
    elif isinstance(error, Gone):
        details = [{"field": "link", "issue": error.reason}]
    message = phrase(error.status)
    if isinstance(error, PayloadTooLarge | UnsupportedMediaType | Unavailable):
        message = _plain_message(error)
    body = {"error": {"code": error.status, "message": message, "details": details}}
    return json_response(body, error.status, _headers(error))


def render(family: str, error: DomainError) -> web.Response:
    return render_filum(error) if family == FILUM else render_formbricks(error)


class _HttpError(DomainError):
    def __init__(self, status: int) -> None:
        super().__init__(phrase(status))
        self.status = status


def render_http(family: str, exc: web.HTTPException, body_limit: int) -> web.Response:
    """aiohttp's own errors (no route, wrong method, body too large) in the family's shape."""
    if exc.status == 413:
        # aiohttp's exception does not keep the size it enforced: the app's limit is `body_limit`
        return render(family, PayloadTooLarge(body_limit))
    if exc.status == 404:
        return render(family, NotFound("route", field="path")) if family == FORMBRICKS else json_response(
            {"detail": "Not Found"}, 404)
    response = render(family, _HttpError(exc.status))
    if exc.status == 405 and "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


def render_unexpected(family: str) -> web.Response:
    """The generic 500: nothing about the cause leaves the process."""
    if family == FILUM:
        return json_response({"detail": "Internal server error"}, 500)
    return json_response({"error": {"code": 500, "message": "Internal Server Error", "details": []}}, 500)
