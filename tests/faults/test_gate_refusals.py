"""The gate and the replay cache against one real Redis that refuses writes, on an injected clock.

The breaker keeps Redis out of the way for BREAKER_SECONDS after a failure: asserted by counting
the commands Redis saw (INFO commandstats), with the clock moved by hand, not by sleeping.
"""

from __future__ import annotations

import logging

import pytest
import redis.asyncio as aioredis
from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

from service.core.breaker import BREAKER_SECONDS, Breaker, refusal
from service.core.errors import Unavailable
from service.core.ratelimit import Gate, org_key
from service.core.ratepolicy import parse_policy
from service.core.redis_pipe import PipelinedRedis
from service.core.replay_cache import ReplayCache
from service.embedded.process import free_port
from service.redis_client import SINGLE_SERVER_RETRY
from tests.helpers import as_bytes

OOM = "OOM command not allowed when used memory > 'maxmemory'."
# a replay-cache entry, and its survey's epoch key
ENTRY = ("{o:org}:lk:x", "{o:org}:lke:s")
EPOCH = ENTRY[1]


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _calls(direct: aioredis.Redis, *commands: str) -> int:
    """Calls of `commands` Redis has seen since the last CONFIG RESETSTAT: run (failed or not: `calls` counts
    those that failed while running as well) or refused before running."""
    stats = await direct.info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get(kind, 0) for name in commands
               for kind in ("calls", "rejected_calls"))


async def _gate_calls(direct: aioredis.Redis) -> int:
    return await _calls(direct, "evalsha", "eval")


@pytest.mark.parametrize("pipelined", [True, False])
async def test_the_breaker_keeps_the_gate_off_redis_for_one_second(own_redis, pipelined):
    """After a failed call the gate asks Redis nothing for BREAKER_SECONDS, on its own clock, then asks again."""
    direct = aioredis.Redis.from_url(own_redis.url)
    client = aioredis.Redis.from_url(own_redis.url, socket_timeout=1.0, retry=SINGLE_SERVER_RETRY)
    pipe = PipelinedRedis.for_client(client) if pipelined else None
    clock, failures = Clock(), []
    gate = Gate(client, "open", on_redis_failure=lambda: failures.append(clock.now), pipe=pipe, clock=clock)
    policy = parse_policy("5/second")
    try:
        await direct.config_set("maxmemory", 1)  # every write refused
        decision = await gate.check("org", policy, ENTRY)
        assert decision.degraded and decision.allowed and failures == [1000.0]
        # Redis can take writes again, but the breaker rests: nothing is sent, not even a cache write
        await direct.config_set("maxmemory", 0)
        await direct.config_resetstat()
        for step in (0.0, 0.5, BREAKER_SECONDS - 0.001):
            clock.now = 1000.0 + step
            assert (await gate.check("org", policy, ENTRY)).degraded
            await gate.remember(ENTRY[0], b"answer", 60, EPOCH, None)
        assert await _gate_calls(direct) == 0
        assert await direct.exists(*ENTRY, org_key("org", "rl")) == 0
        assert failures == [1000.0, 1000.0, 1000.5, 1000.0 + BREAKER_SECONDS - 0.001]
        # rested: the next call asks Redis and gets a real decision
        clock.now = 1000.0 + BREAKER_SECONDS
        decision = await gate.check("org", policy, ENTRY)
        assert decision.allowed and not decision.degraded and decision.windows == ((4, 1),)
        assert await _gate_calls(direct) == 1 and len(failures) == 4
    finally:
        await gate.aclose()
        await client.aclose()
        await direct.aclose()


@pytest.mark.parametrize("pipelined", [True, False])
async def test_refused_cache_writes_are_skipped_for_a_second_and_reads_go_on(own_redis, caplog, pipelined):
    """A full cache Redis: one refused write and one warning per second, not one per request; lookups still answer."""
    direct = aioredis.Redis.from_url(own_redis.url)
    client = aioredis.Redis.from_url(own_redis.url, socket_timeout=1.0, retry=SINGLE_SERVER_RETRY)
    clock = Clock()
    cache = ReplayCache(client, PipelinedRedis.for_client(client) if pipelined else None, Breaker(clock))
    caplog.set_level(logging.WARNING, "service.ratelimit")
    try:
        await cache.set("{o:org}:lk:old", b"kept", 60, EPOCH, None)  # the first write: a fresh epoch
        epoch = as_bytes(await direct.get(EPOCH))
        await direct.config_set("maxmemory", 1)  # every write refused
        await direct.config_resetstat()
        for step in (0.0, 0.5, BREAKER_SECONDS - 0.001):
            clock.now = 1000.0 + step
            await cache.set(f"{{o:org}}:lk:{step}", b"answer", 60, EPOCH, epoch)
            assert await cache.lookup("{o:org}:lk:old", EPOCH) == (b"kept", epoch)
        assert (await _calls(direct, "evalsha", "eval"), await _calls(direct, "mget")) == (1, 3)
        warnings = [r.getMessage() for r in caplog.records if r.name == "service.ratelimit"]
        assert warnings == [f"replay cache refused a write: {OOM}"]
        # room again and the second over: written, under the epoch
        await direct.config_set("maxmemory", 0)
        clock.now = 1000.0 + BREAKER_SECONDS
        await cache.set("{o:org}:lk:new", b"answer", 60, EPOCH, epoch)
        assert await direct.get("{o:org}:lk:new") == epoch + b"answer" and 0 < await direct.ttl("{o:org}:lk:new") <= 60
        assert await cache.lookup("{o:org}:lk:new", EPOCH) == (b"answer", epoch)
        assert await direct.exists("{o:org}:lk:0.0", "{o:org}:lk:0.5") == 0
    finally:
        await cache.aclose()
        await client.aclose()
        await direct.aclose()


@pytest.mark.parametrize("mode", ["open", "closed"])
@pytest.mark.parametrize("pipelined", [True, False])
async def test_a_read_only_replica_is_an_outage_for_the_gate(own_redis, mode, pipelined):
    """READONLY (a failover left us on a replica): fail open or 503, like a full Redis, never a 500."""
    direct = aioredis.Redis.from_url(own_redis.url)
    client = aioredis.Redis.from_url(own_redis.url, socket_timeout=1.0, retry=SINGLE_SERVER_RETRY)
    gate = Gate(client, mode, pipe=PipelinedRedis.for_client(client) if pipelined else None)
    try:
        await direct.replicaof("127.0.0.1", free_port())  # a master that is not there: the replica stays read-only
        if mode == "open":
            decision = await gate.check("org", parse_policy("5/second"), ENTRY)
            assert decision.allowed and decision.degraded and decision.windows == ()
        else:
            with pytest.raises(Unavailable):
                await gate.check("org", parse_policy("5/second"), ENTRY)
        assert gate.resting()
    finally:
        await direct.replicaof("NO", "ONE")
        await gate.aclose()
        await client.aclose()
        await direct.aclose()


READONLY = "READONLY You can't write against a read only replica."
MISCONF = "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk."
NOREPLICAS = "NOREPLICAS Not enough good replicas to write."


@pytest.mark.parametrize(("error", "refused"), [
    (OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), OOM),
    (ReadOnlyError("You can't write against a read only replica."), READONLY),
    (ResponseError(OOM), OOM),  # the pipelined connection keeps the code
    (ResponseError(f"{OOM[:-1]}. script: 1f2e, on @user_script:65."), OOM),  # where in the script: left out
    (ResponseError(f"Error running script (call to f_1f2e): @user_script:65: @user_script: 65: -{OOM}"), OOM),
    (ResponseError(f"ERR Error running script (call to f_1f2e): @user_script:65: @user_script: 65: -{READONLY}"),
     READONLY),
    (ResponseError(MISCONF), MISCONF),
    (ResponseError(NOREPLICAS), NOREPLICAS),
    (ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"), None),
    (ResponseError("ERR wrong number of arguments for 'evalsha' command"), None),
    (ResponseError("Error running script (call to f_1f2e): @user_script:3: user_script:3: attempt to compare nil"),
     None),
])
def test_which_errors_are_refused_writes(error, refused):
    """A refused write is an outage (named in the warning); any other error reply is a bug and must surface."""
    assert refusal(error) == refused
