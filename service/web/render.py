"""Wire representations shared by handlers."""

from __future__ import annotations

import functools
from collections.abc import Sequence
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


def created_link_url(base_url: str, token: str) -> str:
    """A created link's URL (Filum's survey_url, the management API's surveyUrl) from its token."""
    return f"{base_url}/l/{token}"


def metadata_field_json(field: MetadataField) -> dict[str, Any]:
    return {"id": field.id, "name": field.name, "variable": field.variable}


def link_json(result: LinkResult, signer: LinkSigner, base_url: str,
              field_json: dict[int, dict[str, Any]] | None = None, token: str | None = None) -> dict[str, Any]:
    """The Filum answer for a created (or replayed) link (`field_json`: metadata_field_json by id, and
    `token`: the link's created_link_token, made at once for many links)."""
    link = result.link
    mapping = []
    for item in link.metadata_mapping:
        metadata_id = item["metadata_id"]
        field = field_json.get(metadata_id) if field_json is not None else None
        if field is None:
            field = metadata_field_json(result.fields[metadata_id])
        mapping.append({"metadata": field, "value": item["value"]})
    return {
        "id": link.id,
        "public_id": link.public_id,
        "name": link.name,
        "metadata_mapping": mapping,
        "survey_url": created_link_url(base_url, token or signer.created_link_token(link.public_id)),
        "created": _link_time(link.created_at),
        "updated": _link_time(link.updated_at),
    }


# Between two links of a list as orjson writes it. Only there: a link's first key is "id", no other
# object of a link is written after a `},{` (the mapping's items start with "metadata"), and a `"` in a
# string is written `\"`
_BETWEEN = b'},{"id":'


class LinkRenderer:
    """link_json as the bytes a created link is answered (and cached) with: one link, or many at once."""

    def __init__(self, signer: LinkSigner, base_url: str) -> None:
        self._signer, self._base_url = signer, base_url

    def __call__(self, result: LinkResult) -> bytes:
        return orjson.dumps(link_json(result, self._signer, self._base_url))

    def many(self, results: Sequence[LinkResult]) -> list[bytes]:
        """Each result as __call__ renders it. One orjson.dumps of the list, cut between the links, costs
        an eighth of a dumps per link (orjson's cost per call is most of a small document's)."""
        # the links of a batch share their survey's fields (one dict): each field's JSON is made once
        shared = results[0].fields if results else {}
        field_json = {metadata_id: metadata_field_json(field) for metadata_id, field in shared.items()}
        tokens = self._signer.created_link_tokens([result.link.public_id for result in results])
        docs = [link_json(result, self._signer, self._base_url, field_json if result.fields is shared else None,
                          token) for result, token in zip(results, tokens, strict=True)]
        parts = orjson.dumps(docs)[1:-1].split(_BETWEEN) if docs else []
        if len(parts) != len(docs):  # not cut where expected: one dumps each
            return [orjson.dumps(doc) for doc in docs]
        last = len(parts) - 1
        return [(b'{"id":' if i else b"") + part + (b"}" if i < last else b"") for i, part in enumerate(parts)]


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
