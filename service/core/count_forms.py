"""Which form a segment's count takes when either is right (db/members.either_form): measured, not guessed.

A filter the attribute index may answer is counted numbered by default: one scan of its matches and
one sort, fast when few contacts match (1% of 1,000,000: 22 ms). When most match, the hops with
sorts off, a walk of the organisation's page index, cost less (two thirds of 1,000,000: about 400 ms
against 650-770 numbered), and under a steady writer a segment is recounted about once a second, so
the difference is PostgreSQL time taken from pages. PostgreSQL cannot tell the two cases apart (it has
no statistics for a jsonpath's selectivity), so each worker remembers how long each form took for
each segment: a numbered count slower than TRY_HOPS_SECONDS has the hops tried once, and from then on
the faster of the two last timings wins. Both forms count the same members; only the cost differs.
"""

from __future__ import annotations

from collections import OrderedDict

# a numbered count faster than this is left alone: the hops walk every contact of the organisation
TRY_HOPS_SECONDS = 0.15
# segments remembered per worker (the oldest forgotten first)
REMEMBERED = 10_000


class CountForms:
    """The last timing of each form, by segment (its cache key and filters' digest), in this worker."""

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self.remembered = remembered
        # key -> [numbered seconds or None, hops seconds or None]
        self.timings: OrderedDict[tuple[str, str], list[float | None]] = OrderedDict()

    def hops(self, key: tuple[str, str]) -> bool:
        """Whether the next count of the segment should take the hops."""
        numbered, hops = self.timings.get(key, (None, None))
        if numbered is None or numbered < TRY_HOPS_SECONDS:
            return False
        return hops is None or hops < numbered

    def took(self, key: tuple[str, str], hops: bool, seconds: float) -> None:
        """Remember how long the form just run took."""
        timing = self.timings.pop(key, None) or [None, None]
        timing[1 if hops else 0] = seconds
        self.timings[key] = timing
        while len(self.timings) > self.remembered:
            self.timings.popitem(last=False)
