"""gate.lua's lookup under a survey's replay epoch and the conditional writes of remember_many.lua (one
answer, as the single create writes it, or a batch's), against fakeredis and a real Redis."""

from __future__ import annotations

import fakeredis
import pytest
import redis.asyncio as aioredis

from service.core.ratelimit import GATE_SCRIPT, org_key
from service.core.replay_cache import REMEMBER_MANY_SCRIPT

ENTRY, EPOCH = org_key("o1", "lk:t1:s:h"), org_key("o1", "lke:s")
E1, E2 = b"0123456789abcdef", b"fedcba9876543210"


@pytest.fixture(params=["fakeredis", "redis"])
async def r(request, redis_url):
    client = fakeredis.FakeAsyncRedis() if request.param == "fakeredis" else aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def lookup(r, windows=((5, 1),)) -> list:
    args = [len(windows)] + [n for window in windows for n in window]
    return await r.register_script(GATE_SCRIPT)(keys=[org_key("o1", "rl"), ENTRY, EPOCH], args=args)


async def remember(r, answer: bytes, seen: bytes, fresh: bytes = E2) -> int:
    """The single create's write: one key."""
    return await r.register_script(REMEMBER_MANY_SCRIPT)(keys=[EPOCH, ENTRY], args=[60, seen, fresh, answer])


async def test_an_entry_answers_only_under_the_current_epoch(r):
    assert await lookup(r) == [1, 0, None, 4, 1, None]  # nothing yet: no answer, no epoch (answered last)
    await r.set(ENTRY, E1 + b'{"id":1}')
    assert (await lookup(r))[2] is None  # an entry without an epoch in place is no answer
    await r.set(EPOCH, E1)
    assert (await lookup(r))[2::3] == [b'{"id":1}', E1]
    await r.set(EPOCH, E2)  # a revocation moved it on
    assert (await lookup(r))[2::3] == [None, E2]
    await r.set(ENTRY, b'{"id":1}')  # written before epochs existed
    assert (await lookup(r))[2] is None
    assert (await lookup(r, ()))[2:] == [None, E2]  # rate limit off: the lookup alone


async def test_a_write_goes_in_only_under_the_epoch_its_lookup_saw(r):
    assert await remember(r, b'{"id":1}', b"", fresh=E1) == 1  # none seen, none there: a fresh one
    assert await r.get(EPOCH) == E1 and await r.get(ENTRY) == E1 + b'{"id":1}'
    assert 0 < await r.ttl(EPOCH) <= 60 and 0 < await r.ttl(ENTRY) <= 60
    assert await remember(r, b'{"id":2}', b"") == 0  # saw none, but one is there now
    assert await remember(r, b'{"id":2}', E2) == 0  # saw another
    assert await remember(r, b'{"id":2}', E1) == 1
    assert await r.get(ENTRY) == E1 + b'{"id":2}'
    await r.delete(EPOCH)  # lost (evicted): a write that saw one cannot bring its entries back
    assert await remember(r, b'{"id":3}', E1) == 0
    assert await r.get(EPOCH) is None


async def remember_many(r, answers: list[bytes], seen: bytes, fresh: bytes = E2) -> int:
    keys = [EPOCH, *(org_key("o1", f"lk:t1:s:{i}") for i in range(len(answers)))]
    return await r.register_script(REMEMBER_MANY_SCRIPT)(keys=keys, args=[60, seen, fresh, *answers])


async def test_a_batch_is_remembered_under_the_epoch_it_saw_or_not_at_all(r):
    assert await remember_many(r, [b"a"], E1) == 0  # it saw an epoch that is gone: refused
    assert await r.exists(EPOCH, org_key("o1", "lk:t1:s:0")) == 0
    assert await remember_many(r, [b"a", b"b"], b"") == 2  # none seen, none now: the fresh one
    assert await r.mget(EPOCH, org_key("o1", "lk:t1:s:0"), org_key("o1", "lk:t1:s:1")) == [E2, E2 + b"a", E2 + b"b"]
    assert await remember_many(r, [b"c"], b"", fresh=E1) == 0  # none seen, but one in place now
    assert await remember_many(r, [b"c"], E1) == 0  # another epoch than in place
    assert await remember_many(r, [b"c"], E2) == 1
    assert await r.get(org_key("o1", "lk:t1:s:0")) == E2 + b"c"
    assert 0 < await r.ttl(org_key("o1", "lk:t1:s:0")) <= 60 and 0 < await r.ttl(EPOCH) <= 60
