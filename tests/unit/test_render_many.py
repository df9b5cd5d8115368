"""LinkRenderer.many: each link's bytes exactly as the single rendering writes them."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from service.core.links import LinkResult
from service.core.signing import LinkSigner
from service.db.links import SurveyLink
from service.db.surveys import MetadataField
from service.settings import SigningKey
from service.web.render import LinkRenderer

TRICKY = ['},{"id":', '"},{"id":1', "\\", "é\u2028", "", "x" * 300, '{"id":2}']


def results(rng: random.Random, count: int) -> list[LinkResult]:
    fields = {1: MetadataField(1, 'SKU "},{"id":', "sku"), 2: MetadataField(2, "Date", "date")}
    start = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    made = []
    for i in range(count):
        values = [rng.choice(TRICKY), rng.randint(-5, 2**63), 1.5, None, [1, rng.choice(TRICKY), None]]
        mapping = [{"metadata_id": mid, "value": rng.choice(values)} for mid in rng.sample([1, 2], rng.randint(0, 2))]
        link = SurveyLink(i + 1, uuid.UUID(int=rng.getrandbits(128)).hex[:16], uuid.UUID(int=7), rng.choice(TRICKY),
                          mapping, start + timedelta(milliseconds=i), start)
        # a result of other fields than the first's (a single create's dict) is rendered with its own
        made.append(LinkResult(link, fields if i % 5 else dict(fields), bool(i % 2)))
    return made


def test_many_is_each_rendered_alone() -> None:
    render = LinkRenderer(LinkSigner([SigningKey("k1", b"s" * 32)]), "http://links.test")
    rng = random.Random(16)
    for count in (0, 1, 2, 3, 50):
        batch = results(rng, count)
        assert render.many(batch) == [render(result) for result in batch]


def test_created_link_tokens_are_each_token() -> None:
    rng = random.Random(8)
    for keys in ([SigningKey("k1", b"s" * 32)], [SigningKey("kid-\u00e9", b"x" * 100), SigningKey("k1", b"s")]):
        signer = LinkSigner(keys)
        ids = [uuid.UUID(int=rng.getrandbits(128)).hex[:16] for _ in range(50)] + ["", "é"]
        assert signer.created_link_tokens(ids) == [signer.created_link_token(public_id) for public_id in ids]
        assert all(signer.verify_created_link(token) == public_id
                   for token, public_id in zip(signer.created_link_tokens(ids[:50]), ids, strict=False))
