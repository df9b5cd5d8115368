"""The OpenAPI 3 document, built by apispec's MarshmallowPlugin from the router and the operations table.

Request bodies come from the marshmallow schemas that validate them; the constraints those fields
check by hand (lengths, bounds, choices, the shapes of hand-validated fields) are read from the
same field objects, so the document cannot drift from the validation.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from marshmallow import fields

from ..core.rules import INT64
from ..core.segments import ATTRIBUTE_KEY, GROUPS, KEY_CHARS, OPERATORS
from . import doc_schemas
from .contact_schemas import (
    MAX_ATTRIBUTE_CHARS,
    MAX_ATTRIBUTES,
    MAX_BULK_CONTACTS,
    AttributeKey,
    Attributes,
    ContactList,
    FilterTree,
)
from .fields import Choice, HttpUrl, Int, ItemList, Str
from .operations import OPERATIONS
from .schemas import MAX_LIST_ITEMS, MAX_VALUE_CHARS, MetadataValue

TITLE = "Survey-link service"
VERSION = "1.0.0"
SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]
DESCRIPTION = """\
Survey links (the Filum contract, `/external/...`) and signed contact links for segments (the
Formbricks contract, `/api/v2/management/...`).

**Authentication.** Every operation but the public ones takes an API key as `x-api-key: KEY` or
`Authorization: Bearer KEY`. A key belongs to one organisation and has scopes: `links:write`,
`links:read`, `manage`.

**Errors.** The Filum path answers `{"detail": ...}`; every other path answers
`{"error": {"code", "message", "details": [{"field", "issue"}]}}`.

**Rate limits.** Every authenticated request spends one token of its organisation's buckets;
answers carry `RateLimit-Policy` and `RateLimit`, and a 429 carries `Retry-After`.

**Paths.** Every API path (`/api/...`, `/external/...`) answers the same with one trailing slash.

**Tracing.** Every answer carries `X-Request-Id` (the caller's, when it sends a sane one).
"""

HEADERS = {
    "X-Request-Id": {"description": "The caller's `X-Request-Id` (1-128 of `A-Za-z0-9._:-`), or a new one",
                     "schema": {"type": "string"}},
    "RateLimit-Policy": {"description": 'The organisation\'s windows, e.g. `"second";q=5;w=1, "minute";q=50;w=60`',
                         "schema": {"type": "string"}},
    "RateLimit": {"description": 'Tokens left and seconds to a full bucket per window, e.g. `"second";r=4;t=1`',
                  "schema": {"type": "string"}},
    "Retry-After": {"description": "Whole seconds until a retry can succeed", "schema": {"type": "integer"}},
    "Cache-Control": {"description": "`private, no-store` on every answer that carries survey links: they are personal",
                      "schema": {"type": "string", "enum": ["private, no-store"]}},
    "Idempotent-Replayed": {"description": "`true` when the link already existed for this mapping",
                            "schema": {"type": "string", "enum": ["true"]}},
}

_SCALAR = [{"type": "string", "maxLength": MAX_VALUE_CHARS}, {"type": "number"}]
_ATTRIBUTE_VALUE = doc_schemas.attribute_value(MAX_ATTRIBUTE_CHARS)


def _attributes(require_email: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object", "maxProperties": MAX_ATTRIBUTES, "additionalProperties": _ATTRIBUTE_VALUE,
        "description": f"Attribute key -> value (null: no value). Keys: 1-{KEY_CHARS} letters, digits, `_` or `-`, not "
                       "starting with a digit; unknown keys are created.",
        "example": {"email": "ann@example.com", "plan": "pro"},
    }
    if require_email:
        out["required"] = ["email"]
    return out


def _hand_validated(field: fields.Field[Any]) -> dict[str, Any] | None:
    """The shape of a field that validates by hand (marshmallow knows no type for it)."""
    if isinstance(field, MetadataValue):
        return {"nullable": True, "oneOf": [*_SCALAR, {"type": "array", "maxItems": MAX_LIST_ITEMS,
                                                       "items": {"nullable": True, "oneOf": _SCALAR}}],
                "description": "A string, a finite number, a list of those or nulls, or null"}
    if isinstance(field, Attributes):
        return _attributes(field.require_email)
    if isinstance(field, ContactList):
        item = {"type": "object", "required": ["attributes"], "additionalProperties": False,
                "properties": {"attributes": _attributes(require_email=True)}}
        return {"type": "array", "minItems": 1, "maxItems": MAX_BULK_CONTACTS, "items": item}
    if isinstance(field, FilterTree):
        return {"allOf": [{"$ref": "#/components/schemas/SegmentFilter"}]}
    return None


def service_fields(self: Any, field: fields.Field[Any], ret: dict[str, Any]) -> dict[str, Any]:
    """An apispec attribute function: the constraints our fields keep as attributes, not validators."""
    out: dict[str, Any] = {}
    if isinstance(field, Choice):
        out["enum"] = list(field.choices)
    elif isinstance(field, Str):
        if field.rule.min_chars:
            out["minLength"] = field.rule.min_chars
        if field.rule.max_chars is not None:
            out["maxLength"] = field.rule.max_chars
        if isinstance(field, HttpUrl):
            out["format"] = "uri"
        if isinstance(field, AttributeKey):
            out.update(pattern=ATTRIBUTE_KEY.pattern, maxLength=KEY_CHARS)
    elif isinstance(field, Int):
        out["format"] = "int64"
        if field.rule.low != INT64.low:
            out["minimum"] = field.rule.low
        if field.rule.high != INT64.high:
            out["maximum"] = field.rule.high
    elif isinstance(field, ItemList):
        out["maxItems"] = field.max_items
    return {**out, **(_hand_validated(field) or {})}


def _filter_group(name: str) -> dict[str, Any]:
    inner: dict[str, Any] = {"$ref": "#/components/schemas/SegmentFilter"}
    if name != "not":
        inner = {"type": "array", "items": inner}
    return {"type": "object", "required": [name], "additionalProperties": False, "properties": {name: inner}}


SEGMENT_FILTER = {
    "description": "`{}` (every contact), `{\"and\": [...]}`, `{\"or\": [...]}`, `{\"not\": {...}}`, or a "
                   "condition on an attribute (`contactId` with `in` makes a static segment)",
    "oneOf": [
        {"type": "object", "maxProperties": 0},
        *(_filter_group(name) for name in GROUPS),
        {"type": "object", "required": ["attribute", "op"], "additionalProperties": False,
         "properties": {"attribute": {"type": "string"}, "op": {"type": "string", "enum": list(OPERATORS)},
                        "value": {"description": "a string, number or boolean; a list for `in`; none for "
                                                 "`isSet`/`isNotSet`"}}},
    ],
    "example": {"and": [{"attribute": "plan", "op": "equals", "value": "pro"},
                        {"attribute": "age", "op": "greaterEqual", "value": 18}]},
}


def _with_headers(operation: dict[str, Any]) -> dict[str, Any]:
    """Every answer names X-Request-Id; an authenticated one past the key check also the rate-limit headers."""
    authenticated = "security" not in operation
    responses = {}
    for status, response in operation["responses"].items():
        headers = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}, **response.get("headers", {})}
        if authenticated and status != "401":
            headers.update({name: {"$ref": f"#/components/headers/{name}"} for name in ("RateLimit-Policy",
                                                                                         "RateLimit")})
        responses[status] = {**response, "headers": headers}
    return {**operation, "responses": responses}


def routes_of(app: web.Application) -> list[tuple[str, str]]:
    """(method, path pattern) of every route; HEAD is implied by GET, and the trailing-slash twin of an
    API route (app.slash_twins) is the same operation, documented once, without the slash."""
    found = []
    for route in app.router.routes():
        resource = route.resource
        if resource is not None and route.method != "HEAD":
            found.append((route.method, resource.canonical))
    every = set(found)
    return [(method, path) for method, path in found
            if not (path.endswith("/") and (method, path[:-1]) in every)]


def build_document(app: web.Application) -> dict[str, Any]:
    """The document for `app`'s routes that the operations table describes."""
    plugin = MarshmallowPlugin()
    spec = APISpec(title=TITLE, version=VERSION, openapi_version="3.0.3", plugins=[plugin],
                   info={"description": DESCRIPTION}, security=SECURITY)
    assert plugin.converter is not None  # made by the plugin's init_spec, which APISpec() called
    plugin.converter.add_attribute_function(service_fields)
    spec.components.security_scheme("ApiKey", {"type": "apiKey", "in": "header", "name": "x-api-key"})
    spec.components.security_scheme("Bearer", {"type": "http", "scheme": "bearer"})
    for name, header in HEADERS.items():
        spec.components.header(name, header)
    spec.components.schema("SegmentFilter", SEGMENT_FILTER)
    for schema in (doc_schemas.FilumValidationIssue, doc_schemas.FilumError, doc_schemas.FormbricksError):
        spec.components.schema(schema.__name__, schema=schema)
    by_path: dict[str, dict[str, Any]] = {}
    for method, pattern in routes_of(app):
        operation = OPERATIONS.get((method, pattern))
        if operation is not None:
            by_path.setdefault(pattern, {})[method.lower()] = _with_headers(operation)
    for pattern, operations in by_path.items():
        spec.path(path=pattern, operations=operations)
    return spec.to_dict()
