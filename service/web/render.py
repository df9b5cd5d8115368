"""Wire representations shared by handlers."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from ..core.links import LinkResult
from ..core.signing import LinkSigner
from ..db.surveys import MetadataField, Survey


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with milliseconds and a Z."""
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@functools.lru_cache(maxsize=64)
def _link_time(moment: datetime) -> str | None:
    """iso() of a link's time, remembered: the links of one batch share their transaction's time."""
    return iso(moment)


def metadata_field_json(field: MetadataField) -> dict[str, Any]:
    return {"id": field.id, "name": field.name, "variable": field.variable}


def link_json(result: LinkResult, signer: LinkSigner, base_url: str) -> dict[str, Any]:
    """The Filum answer for a created (or replayed) link."""
    link = result.link
    mapping = []
    for item in link.metadata_mapping:
        field = result.fields[item["metadata_id"]]
        mapping.append({"metadata": metadata_field_json(field),
                        "value": item["value"]})
    return {
        "id": link.id,
        "public_id": link.public_id,
        "name": link.name,
        "metadata_mapping": mapping,
        "survey_url": f"{base_url}/l/{signer.created_link_token(link.public_id)}",
        "created": _link_time(link.created_at),
        "updated": _link_time(link.updated_at),
    }


def link_renderer(signer: LinkSigner, base_url: str) -> Callable[[LinkResult], bytes]:
    """link_json as the bytes a created link is answered (and cached) with."""

    def render(result: LinkResult) -> bytes:
        return orjson.dumps(link_json(result, signer, base_url))

    return render


def survey_json(survey: Survey) -> dict[str, Any]:
    return {
        "id": str(survey.id),
        "name": survey.name,
        "type": "link",
        "status": survey.status,
        "linkQuota": survey.link_quota,
        "redirectUrl": survey.redirect_url,
        "linkCount": survey.link_count,
        "linkFormat": survey.link_format,
        "createdAt": iso(survey.created_at),
        "updatedAt": iso(survey.updated_at),
    }
