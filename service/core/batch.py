"""Create many survey links of one survey at once, answering each as the single create would.

A set operation, not a loop of single creates: the answers of a sequence of single creates in
request order are planned in memory from one lookup of the links already stored, then the new ones
are inserted with one statement and the quota counter moved once, under the survey row's lock (the
lock every creator takes), in one transaction: a batch is written whole or not at all.
Sequential semantics: the same mapping twice in a batch is one link, the second item a replay
(`replayed`), as a second single create would be; once the quota is reached the new mappings after
it are refused, replays never are.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from ..db import batch_links as batch_db
from ..db import links as link_db
from ..db import surveys as survey_db
from ..db.links import SurveyLink
from ..db.pool import Pool
from .errors import DomainError, NotFound, QuotaExceeded
from .links import PUBLIC_ID_BYTES, LinkRequest, LinkResult, unknown_fields
from .mapping import legacy_mapping_hash


@dataclass
class _Planned:
    """A new link to insert: the request that names it and the batch positions it answers."""

    request: LinkRequest
    public_id: str
    positions: list[int]


async def create_or_replay_many(pool: Pool, org_id: uuid.UUID, survey_id: uuid.UUID,
                                requests: Sequence[LinkRequest | None]) -> list[LinkResult | DomainError | None]:
    """Per position, the single create's answer for `requests` sent one after another (None stays None:
    an item the edge refused); 404 for the whole batch when the survey is not the organisation's."""
    answers: list[LinkResult | DomainError | None] = [None] * len(requests)
    async with pool.acquire() as conn:
        ids = sorted({mid for req in requests if req is not None for mid, _ in req.canonical})
        known = await survey_db.survey_metadata_fields(conn, org_id, survey_id, ids)
        if known is None:
            raise NotFound("survey_campaign", field="survey_campaign_id")
        valid: list[tuple[int, LinkRequest, bytes | None]] = []
        for pos, req in enumerate(requests):
            if req is None:
                continue
            unknown = unknown_fields(req, known)
            if unknown is not None:
                answers[pos] = unknown
            else:
                valid.append((pos, req, legacy_mapping_hash(req.canonical)))
        if not valid:
            return answers
        lookup = list({h for _, req, legacy in valid for h in (req.hash, legacy) if h is not None})
        stored = await batch_db.live_links(conn, org_id, survey_id, lookup)
        if all(req.hash in stored or legacy in stored for _, req, legacy in valid):
            # a batch of replays: answered without the survey's lock, as single replays are
            for pos, req, legacy in valid:
                found = _found(stored, req.hash, legacy)
                assert found is not None  # every one was found just above
                answers[pos] = LinkResult(found, known, replayed=True)
            return answers
        async with conn.transaction():
            quota, room = await batch_db.lock_room(conn, org_id, survey_id)
            # under the lock: every link a concurrent creator committed is visible now
            stored = await batch_db.live_links(conn, org_id, survey_id, lookup)
            planned: dict[bytes, _Planned] = {}
            refused: list[int] = []
            # the new links' public ids (as new_public_id draws them), drawn from the system at once
            public_ids = secrets.token_hex(PUBLIC_ID_BYTES * min(len(valid), room))
            for pos, req, legacy in valid:
                link = _found(stored, req.hash, legacy)
                if link is not None:
                    answers[pos] = LinkResult(link, known, replayed=True)
                    continue
                new = planned.get(req.hash) or (planned.get(legacy) if legacy is not None else None)
                if new is not None:
                    new.positions.append(pos)
                elif len(planned) < room:
                    at = 2 * PUBLIC_ID_BYTES * len(planned)
                    planned[req.hash] = _Planned(req, public_ids[at:at + 2 * PUBLIC_ID_BYTES], [pos])
                else:
                    refused.append(pos)
            created = await batch_db.insert_links(
                conn, org_id, survey_id, [p.public_id for p in planned.values()], list(planned),
                [p.request.name for p in planned.values()],
                [orjson.dumps([{"metadata_id": m, "value": v} for m, v in p.request.canonical]).decode()
                 for p in planned.values()],
            )
            for mapping_hash, plan in planned.items():
                link, replayed = created.get(mapping_hash), False
                if link is None:  # a row the constraint holds although no live link has it (a revoked one)
                    link, replayed = await link_db.find_link(conn, org_id, survey_id, mapping_hash), True
                    assert link is not None
                first, *again = plan.positions
                answers[first] = LinkResult(link, known, replayed=replayed)
                for pos in again:
                    answers[pos] = LinkResult(link, known, replayed=True)
            for pos in refused:
                answers[pos] = QuotaExceeded(quota)
    return answers


def _found(stored: dict[bytes, SurveyLink], mapping_hash: bytes, legacy: bytes | None) -> SurveyLink | None:
    link = stored.get(mapping_hash)
    if link is None and legacy is not None:
        link = stored.get(legacy)
    return link
