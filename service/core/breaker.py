"""The breaker in front of Redis: after a failed call, requests leave Redis alone for a while
rather than each waiting for a timeout; and what counts as Redis being down or refusing a write."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable

from redis.exceptions import (
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    SlotNotCoveredError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# the gate's logger: the breaker, the gate and the replay cache warn as one component
log = logging.getLogger("service.ratelimit")

# what an unreachable or restarting Redis looks like (BusyLoadingError is a ConnectionError);
# any other error is a bug and must surface, not be mistaken for an outage. A Redis Cluster with a
# master down answers CLUSTERDOWN (or leaves a slot uncovered): an outage too
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError, ClusterDownError, SlotNotCoveredError)
# a server that answers but refuses writes: out of memory under noeviction (OOM), a read-only replica
# (READONLY), a failed snapshot with stop-writes-on-bgsave-error (MISCONF), too few replicas
# (NOREPLICAS). Inside a script Redis 6 wraps the code ("ERR Error running script ...: -OOM ..."),
# Redis 7 and Valkey pass it on, redis-py strips it off for the classes it knows
_REFUSED_WRITE = re.compile(r"(?:^|-)(?:OOM|READONLY|MISCONF|NOREPLICAS) ")
# after a failed call, skip Redis for this long so that requests don't each wait for a timeout
BREAKER_SECONDS = 1.0


def refusal(exc: RedisError) -> str | None:
    """Redis's refusal of a write that `exc` carries ("OOM command not allowed ..."), or None for any
    other error (a bug in what was sent, which must surface). Where in a script it happened (Redis 7
    and Valkey add " script: on @user_script:65.") is left out: the refusal reads the same everywhere."""
    if isinstance(exc, OutOfMemoryError):
        text = f"OOM {exc}"
    elif isinstance(exc, ReadOnlyError):
        text = f"READONLY {exc}"
    else:
        text = str(exc)
        found = _REFUSED_WRITE.search(text)
        if found is None:
            return None
        text = text[found.start():].lstrip("-")
    return text.partition(" script: ")[0]


class Breaker:
    """After a failed Redis call, leave Redis alone for BREAKER_SECONDS (on `clock`, injectable for tests)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._down_until = 0.0
        # cache writes only: after one was refused, the next ones are skipped until then
        self._writes_refused_until = 0.0

    def resting(self) -> bool:
        """Whether a recent failure still keeps Redis out of the way."""
        return self._clock() < self._down_until

    def trip(self) -> None:
        """Note a failure: skip Redis from now until the breaker's time has passed."""
        self._down_until = self._clock() + BREAKER_SECONDS

    async def cache_write(self, what: str, write: Callable[[], Awaitable[object]]) -> None:
        """A best-effort write to a cache that PostgreSQL backs: never fails the request."""
        now = self._clock()
        if now < self._down_until or now < self._writes_refused_until:
            return
        try:
            await write()
        except REDIS_DOWN:
            self.trip()
            log.warning("%s unavailable; nothing remembered", what)
        except RedisError as exc:
            # a server that answers but refuses writes (out of memory, a replica turned read-only):
            # the answer is already computed and reads still work, so neither the request nor the
            # reads stop; the writes of the next second are skipped, not each sent and warned about
            self._writes_refused_until = self._clock() + BREAKER_SECONDS
            log.warning("%s refused a write: %s", what, (refusal(exc) or str(exc))[:120])
