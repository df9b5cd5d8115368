"""The operational routes: health, readiness, metrics and the documentation."""

from __future__ import annotations

from ..doc_schemas import Health, Ready
from .common import FORMBRICKS, PUBLIC, Operation, errors, ok, op, path

OPERATIONS: dict[tuple[str, str], Operation] = {
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
}
