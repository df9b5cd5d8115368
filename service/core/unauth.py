"""The rate limit on requests without a valid key, per client address.

Its buckets are the gate's (the same Lua script, the same failure mode), named `{o:ip:<address>}:rl`
beside the organisations' `{o:<uuid>}:rl`. An address past its limit is remembered in-process until
its bucket has a token again, so that while it floods, even its well-formed keys cost no query.
"""

from __future__ import annotations

import time

from .errors import RateLimited, Unauthorized
from .ratelimit import Gate
from .ratepolicy import RatePolicy

_BLOCKED_MAX = 10_000


class UnauthLimiter:
    """Answers a refused key: 401 while the address has tokens, 429 past its limit."""

    def __init__(self, policy: RatePolicy) -> None:
        self.policy = policy
        self._blocked: dict[str, float] = {}  # address -> monotonic time its bucket has a token again

    def check_blocked(self, address: str) -> None:
        """429 without asking anyone when `address` was refused and its wait is not over."""
        until = self._blocked.get(address)
        if until is None:
            return
        left = until - time.monotonic()
        if left > 0:
            raise RateLimited(max(1, -(-int(left * 1000) // 1000)))
        del self._blocked[address]

    async def refuse(self, gate: Gate, address: str) -> None:
        """Spend one of the address's tokens and raise 401, or 429 when it has none left."""
        if self.policy.off:
            raise Unauthorized()
        decision = await gate.check(f"ip:{address}", self.policy)
        if decision.allowed:
            raise Unauthorized()
        if len(self._blocked) >= _BLOCKED_MAX:
            self._blocked.pop(next(iter(self._blocked)))
        self._blocked[address] = time.monotonic() + decision.retry_after
        raise RateLimited(decision.retry_after)
