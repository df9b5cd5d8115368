"""Sampling profiles of the service while wrk drives a path (py-spy, a dev tool: `pip install py-spy`)."""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r":\d+\)$")


def available() -> str | None:
    """py-spy on PATH, or beside this Python (a virtualenv that is not activated)."""
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


async def record(pid: int, seconds: float, out: Path) -> asyncio.subprocess.Process:
    """Start py-spy on `pid` for `seconds`, writing collapsed stacks to `out` (wait on the process)."""
    exe = available()
    if exe is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    return await asyncio.create_subprocess_exec(
        exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "200",
        "--nonblocking", "--format", "raw", "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )


def _frame(frame: str) -> str:
    """`func (path/to/file.py:123)` -> `func (file.py)`: one entry per function, not per line."""
    name, _, where = frame.partition(" (")
    where = _LINE.sub(")", where)
    return f"{name} ({where.rsplit('/', 1)[-1]}" if where else name


def summarize(path: Path, top: int = 15) -> str:
    """The functions where most samples were, by their own time and including callees."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        # the thread name heads each stack
        frames = frames[1:] if frames and frames[0].startswith(("process ", "thread ")) else frames
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return "no samples"
    rows = [f"{total} samples; own time:"]
    rows += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    rows.append("including callees:")
    rows += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(rows)
