"""Rate-limit policies: `N/second;M/minute` (windows of second, minute, hour, or `Ks`) or `off`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

DEFAULT_POLICY = "5/second;50/minute"
_UNITS = {"second": 1, "minute": 60, "hour": 3600}
_WINDOW = re.compile(r"^\s*(\d{1,9})\s*/\s*(second|minute|hour|(\d{1,6})s)\s*$")


class PolicyError(ValueError):
    """A rate-limit policy that does not parse."""


@dataclass(frozen=True)
class Window:
    """A token bucket of `limit` tokens refilled continuously over `seconds`."""

    limit: int
    seconds: int

    @property
    def name(self) -> str:
        for unit, secs in _UNITS.items():
            if secs == self.seconds:
                return unit
        return f"{self.seconds}s"


@dataclass(frozen=True)
class RatePolicy:
    windows: tuple[Window, ...]
    text: str

    @property
    def off(self) -> bool:
        return not self.windows

    def policy_header(self) -> str:
        """`RateLimit-Policy` in the IETF httpapi draft's structured-field syntax."""
        return self._policy_header

    # computed once per policy (policies live in the key cache), not on every request
    @cached_property
    def _policy_header(self) -> str:
        return ", ".join(f'"{w.name}";q={w.limit};w={w.seconds}' for w in self.windows)

    @cached_property
    def window_names(self) -> tuple[str, ...]:
        return tuple(w.name for w in self.windows)

    @cached_property
    def gate_args(self) -> tuple[int, ...]:
        """The gate script's arguments: the number of windows, then each window's limit and seconds."""
        return (len(self.windows), *(n for w in self.windows for n in (w.limit, w.seconds)))


def parse_policy(text: str) -> RatePolicy:
    """Parse a policy, normalising its text; `off` disables limiting."""
    text = text.strip()
    if text.lower() == "off":
        return RatePolicy((), "off")
    windows: dict[int, Window] = {}
    for part in text.split(";"):
        match = _WINDOW.match(part)
        if not match:
            raise PolicyError(f"bad rate-limit window {part.strip()!r}: use N/second, N/minute, N/hour or N/Ks")
        limit = int(match.group(1))
        seconds = int(match.group(3)) if match.group(3) else _UNITS[match.group(2)]
        if limit < 1 or seconds < 1:
            raise PolicyError("rate-limit windows need a limit and a length of at least 1")
        if seconds in windows:
            raise PolicyError(f"two rate-limit windows of {seconds}s")
        windows[seconds] = Window(limit, seconds)
    ordered = tuple(sorted(windows.values(), key=lambda w: w.seconds))
    return RatePolicy(ordered, ";".join(f"{w.limit}/{w.name}" for w in ordered))
