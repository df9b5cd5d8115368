"""Revoking links (SPEC "The life of a link"): a created link, or every contact link of a survey.

A created link is marked revoked in PostgreSQL, which opening reads on every open, so every worker
and instance answers 410 from the commit on. What must not hand it out again is the replay cache of
the Filum path, which answers without PostgreSQL. Its entries are written under their survey's
replay epoch (a random token in Redis; lua/remember_many.lua, lua/gate.lua), and an entry written under
another epoch answers nothing. Revoking moves the epoch on:

- after the commit, so every entry written before it, under any mapping hash (the legacy hash's
  aliases too) or signing kid, stops answering at once, with no key to enumerate and no PostgreSQL
  read on the replay path;
- a replay in flight that read the cache before and the link from PostgreSQL before the commit
  writes under the epoch its lookup saw: the script refuses it, since the epoch moved. No timing
  is assumed (a delayed second delete would assume the replay finishes within the delay);
- before the revoke as well: a Redis that cannot take it refuses the revocation (503) before
  anything is committed. If Redis fails between the commit and the second move, the answer is 503
  too, and the DELETE, repeated, moves the epoch again (it is idempotent).

Contact links carry no state per link: a survey's link generation, in its row, is carried by every
new token (claim `g`, absent for the first generation); revoking moves it on in one UPDATE.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from ..db import created_links as created_db
from ..db.pool import Pool
from .create_link import epoch_key
from .errors import Gone, NotFound
from .ratelimit import Gate

REVOKED = "the link was revoked"


def generation_revoked(token_generation: int, survey_generation: int) -> bool:
    """Whether a token of `token_generation` was issued before its survey's contact links were revoked:
    every kind of contact link (signed tokens, short links) answers by this one rule."""
    return token_generation < survey_generation


def check_generation(token_generation: int, survey_generation: int) -> None:
    """410 `the link was revoked` for a token of a revoked generation."""
    if generation_revoked(token_generation, survey_generation):
        raise Gone(REVOKED)


def check_link_revoked(revoked_at: datetime | None) -> None:
    """410 `the link was revoked` for a revoked created link."""
    if revoked_at is not None:
        raise Gone(REVOKED)


async def revoke_created_link(
    pool: Pool, gate: Gate, org_id: uuid.UUID, survey_id: uuid.UUID, link_id: int, epoch_seconds: int
) -> None:
    """Revoke a created link and free its place in the quota; a second revoke changes nothing but the
    epoch (idempotent). 404 for a link the organisation's survey does not have."""
    async with pool.acquire() as conn:
        if not await created_db.has_link(conn, org_id, survey_id, link_id):
            raise NotFound("link", field="linkId")
        key = epoch_key(str(org_id), survey_id)
        await gate.move_epoch(key, epoch_seconds)  # Redis must take it before anything is committed
        await created_db.revoke_link(conn, org_id, survey_id, link_id)
    await gate.move_epoch(key, epoch_seconds)  # every entry and every write begun before the commit: stale


async def revoke_contact_links(pool: Pool, org_id: uuid.UUID, survey_id: uuid.UUID) -> datetime:
    """Revoke every contact link issued so far for the survey; the instant. 404 for an unknown survey."""
    async with pool.acquire() as conn:
        revoked_at = await created_db.revoke_contact_links(conn, org_id, survey_id)
    if revoked_at is None:
        raise NotFound("survey", field="surveyId")
    return revoked_at
