"""Domain errors. Core code raises these; the web edge renders them per API family."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Issue:
    """One validation problem: where (`loc`), what (`msg`), its machine-readable `type`, and the
    limit or detail it names (`ctx`, pydantic's `{"limit_value": 255}`), when it has one."""

    loc: tuple[str | int, ...]
    msg: str
    type: str
    ctx: Mapping[str, Any] | None = None


class DomainError(Exception):
    status: int = 500


class Unauthorized(DomainError):
    status = 401


class Forbidden(DomainError):
    status = 403

    def __init__(self, reason: str = "Permission denied", field: str = "scope") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


class NotFound(DomainError):
    status = 404

    def __init__(self, model: str, field: str | None = None) -> None:
        super().__init__(model)
        self.model = model
        self.field = field or model


class Gone(DomainError):
    status = 410

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ValidationFailed(DomainError):
    status = 422

    def __init__(self, issues: Sequence[Issue]) -> None:
        super().__init__(f"{len(issues)} validation issue(s)")
        self.issues = list(issues)


class QuotaExceeded(DomainError):
    status = 422

    def __init__(self, threshold: int) -> None:
        super().__init__(f"threshold {threshold}")
        self.threshold = threshold


class RateLimited(DomainError):
    status = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after}s")
        self.retry_after = retry_after


class PayloadTooLarge(DomainError):
    status = 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"limit {limit} bytes")
        self.limit = limit


class UnsupportedMediaType(DomainError):
    status = 415


class Unavailable(DomainError):
    """A backing server (PostgreSQL, Redis in closed mode) does not answer."""

    status = 503

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class BodyTimeout(DomainError):
    """The request body did not arrive whole within BODY_TIMEOUT_SECONDS."""

    status = 408


class Busy(Unavailable):
    """Too many requests of one kind (`what`, plural) at once on this worker: retry after a while."""

    def __init__(self, what: str, retry_after: int) -> None:
        super().__init__(what)
        self.retry_after = retry_after
