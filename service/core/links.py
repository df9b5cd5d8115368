"""Create a survey link, idempotently, within the survey's quota.

PostgreSQL is the truth: the unique index on (survey, mapping hash) over the live (not revoked)
links makes a duplicate impossible, and the quota counter of live links is moved in the same
statement as the insert, under the survey row's lock, so the quota is exact however many creators
race. Redis only caches answers (core/create_link.py, the use case in front of this), each under its
survey's replay epoch, which revoking a link moves on (core/revocation.py, lua/remember_many.lua).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..db import links as link_db
from ..db import surveys as survey_db
from ..db.links import SurveyLink
from ..db.pool import Pool
from ..db.surveys import MetadataField
from .errors import Issue, NotFound, QuotaExceeded, ValidationFailed
from .mapping import Value, canonical_mapping, legacy_mapping_hash, mapping_hash

# A created link's public id: random, and the only key opening it knows (the link names no organisation,
# and the unique indexes do, migration 0008), so long enough never to repeat: 96 bits, 24 hex characters
# (64 before; those links keep theirs).
PUBLIC_ID_BYTES = 12


def new_public_id() -> str:
    """A new created link's public id."""
    return secrets.token_hex(PUBLIC_ID_BYTES)


@dataclass(frozen=True)
class LinkRequest:
    survey_id: uuid.UUID
    name: str
    canonical: list[tuple[int, Value]]
    hash: bytes
    # position of each metadata_id in the caller's list, to name it in errors
    positions: dict[int, int]
    # `<survey id>:<mapping hash hex>`: the tail of the replay-cache key of its answer (replay_key)
    cache_tail: str

    @classmethod
    def build(cls, survey_id: uuid.UUID, name: str, items: Sequence[dict[str, Any]],
              survey_text: str | None = None) -> LinkRequest:
        """The request of `items` (`survey_text`: str(survey_id), made once for a batch's requests)."""
        canonical = canonical_mapping([(i["metadata_id"], i.get("value")) for i in items])
        positions = {item["metadata_id"]: pos for pos, item in enumerate(items)}
        digest = mapping_hash(canonical)
        return cls(survey_id, name, canonical, digest, positions,
                   f"{survey_text or survey_id}:{digest.hex()}")


@dataclass(frozen=True)
class LinkResult:
    link: SurveyLink
    fields: dict[int, MetadataField]
    replayed: bool


def unknown_fields(req: LinkRequest, known: dict[int, MetadataField]) -> ValidationFailed | None:
    """The 422 naming each metadata id of the request the organisation does not have, or None."""
    unknown = [mid for mid, _ in req.canonical if mid not in known]
    if not unknown:
        return None
    return ValidationFailed([
        Issue(("body", "metadata_mapping", req.positions[mid], "metadata_id"),
              f"metadata field {mid} does not exist", "value_error.not_found")
        for mid in sorted(unknown, key=req.positions.__getitem__)
    ])


async def create_or_replay(pool: Pool, org_id: uuid.UUID, req: LinkRequest) -> LinkResult:
    """The link of (survey, mapping): the existing one, or a new one if the quota allows."""
    async with pool.acquire() as conn:
        ids = [mid for mid, _ in req.canonical]
        known = await survey_db.survey_metadata_fields(conn, org_id, req.survey_id, ids)
        if known is None:
            raise NotFound("survey_campaign", field="survey_campaign_id")
        # a mapping with an unknown field was never stored: 422 (an existing one is found by the claim below)
        unknown = unknown_fields(req, known)
        if unknown is not None:
            raise unknown
        mapping = [{"metadata_id": mid, "value": value} for mid, value in req.canonical]
        # computed here, past the replay cache, not in LinkRequest.build: a replay or a 429 never needs it
        legacy_hash = legacy_mapping_hash(req.canonical)
        claimed = await link_db.claim_or_find(
            conn, org_id, req.survey_id, new_public_id(), req.hash,
            [req.hash] if legacy_hash is None else [req.hash, legacy_hash], req.name, mapping,
        )
        if claimed is not None:
            link, replayed = claimed
            return LinkResult(link, known, replayed=replayed)
        # stored by a concurrent creator after the statement began (ON CONFLICT): a replay; else no room
        existing = await link_db.find_link(conn, org_id, req.survey_id, req.hash)
        if existing is not None:
            return LinkResult(existing, known, replayed=True)
        raise QuotaExceeded(await link_db.effective_quota(conn, org_id, req.survey_id))
