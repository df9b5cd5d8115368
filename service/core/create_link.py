"""The create-link use case, for one link or a batch: the replay cache in front of PostgreSQL, and its metric.

An answer is cached as the bytes the caller was sent, under a key naming the organisation, the
signing key (after a rotation, answers are re-signed, not replayed stale), the survey and the
mapping's hash (replay_key), and only under its survey's replay epoch, which revoking a link moves
on (core/revocation.py, lua/remember_many.lua). PostgreSQL stays the truth (links.py, batch.py).

The single create's lookup shares the rate limit's Redis round trip: `look_up` spends the caller's
token and reads the cache at once. The caller checks what it must in between (the key's scope, the
body's errors), then takes the cached answer (`replayed`) or has the link made (`create`).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple, Protocol

from ..db.pool import Pool
from .batch import create_or_replay_many
from .errors import DomainError
from .links import LinkRequest, LinkResult, create_or_replay
from .ratelimit import Decision, Gate, org_key
from .ratepolicy import RatePolicy


def replay_key(org: str, kid: str, tail: str) -> str:
    """The replay-cache key of an answer: `tail` is `<survey id>:<mapping hash hex>`. The signing kid is
    part of it: after a key rotation, answers are re-signed, not replayed stale."""
    return org_key(org, f"lk:{kid}:{tail}")


def epoch_key(org: str, survey_id: uuid.UUID | str) -> str:
    """The survey's replay epoch: the entries of the survey answer only under it (lua/remember_many.lua)."""
    return org_key(org, f"lke:{survey_id}")


class Render(Protocol):
    """A link as its answer's body: the edge's rendering, which is what the cache holds."""

    def __call__(self, result: LinkResult) -> bytes: ...

    def many(self, results: Sequence[LinkResult]) -> list[bytes]:
        """Each result as __call__ renders it, made at once."""


class Answer(NamedTuple):
    """A link as answered: its body, and whether it existed before this request."""

    body: bytes
    replayed: bool


class LinkCreation:
    """Creates (or replays) links, through the replay cache; counts each replay by where it was found."""

    def __init__(self, pool: Pool, gate: Gate, kid: str, render: Render, cache_seconds: int,
                 on_replay: Callable[[str], None]) -> None:
        self._pool, self._gate, self._kid = pool, gate, kid
        self._render = render
        self._cache_seconds = cache_seconds
        self._on_replay = on_replay  # with "cache" or "database"

    def look_up(self, org: str, policy: RatePolicy, request: LinkRequest | None) -> Awaitable[Decision]:
        """Spend a token of `policy` and read the request's cached answer, in one Redis round trip (no
        request: the token alone). The gate's own call, not a coroutine around it: a replay awaits once."""
        if request is None:
            return self._gate.check(org, policy)
        # an entry answers only under its survey's epoch, which revoking a link moves on
        return self._gate.check(org, policy, (replay_key(org, self._kid, request.cache_tail),
                                              epoch_key(org, request.survey_id)))

    def replayed(self, decision: Decision) -> bytes | None:
        """The cached answer the lookup found (counted as a replay), or None."""
        cached = decision.cached
        if cached is not None:
            self._on_replay("cache")
        return cached

    async def create(self, org: str, org_id: uuid.UUID, request: LinkRequest, decision: Decision) -> Answer:
        """The request's link, found or made in PostgreSQL, and remembered in the cache."""
        result = await create_or_replay(self._pool, org_id, request)
        body = self._render(result)
        # under the epoch the lookup saw: a revocation committed since then refuses the write (lua/remember_many.lua)
        await self._gate.remember(replay_key(org, self._kid, request.cache_tail), body, self._cache_seconds,
                                  epoch_key(org, request.survey_id), decision.epoch)
        if result.replayed:
            self._on_replay("database")
        return Answer(body, result.replayed)

    async def create_many(self, org: str, org_id: uuid.UUID, survey_id: uuid.UUID,
                          requests: Sequence[LinkRequest | None]) -> list[Answer | DomainError | None]:
        """Per position, the single create's answer (None stays None: an item the edge refused). The cache is
        read with MGETs and written in one pipeline, under the single create's keys: a batch replays what
        single creates made, and the other way round. The caller spent the batch's one token."""
        keyed = [(pos, replay_key(org, self._kid, req.cache_tail)) for pos, req in enumerate(requests) if req]
        # entries answer only under the survey's epoch, which revoking a link moves on (as for one link)
        epoch = epoch_key(org, survey_id)
        cached, seen = await self._gate.recall_many([key for _, key in keyed], epoch)
        answers: list[Answer | DomainError | None] = [None] * len(requests)
        misses: list[LinkRequest | None] = [None] * len(requests)
        keys: dict[int, str] = {}
        for (pos, key), hit in zip(keyed, cached, strict=True):
            if hit is not None:
                answers[pos] = Answer(hit, True)
                self._on_replay("cache")
            else:
                misses[pos], keys[pos] = requests[pos], key
        if not keys:
            return answers
        results = await create_or_replay_many(self._pool, org_id, survey_id, misses)
        # the same mapping twice is one link, rendered once
        links = {result.link.id: result for result in results if isinstance(result, LinkResult)}
        bodies = dict(zip(links, self._render.many(list(links.values())), strict=True))
        remember: dict[str, bytes] = {}
        for pos, result in enumerate(results):
            if isinstance(result, LinkResult):
                body = remember[keys[pos]] = bodies[result.link.id]
                answers[pos] = Answer(body, result.replayed)
                if result.replayed:
                    self._on_replay("database")
            elif result is not None:
                answers[pos] = result
        await self._gate.remember_many(list(remember.items()), self._cache_seconds, epoch, seen)
        return answers
