"""How long each phase of a worker's start took, logged once it is SERVING: a restarted worker is
SERVING only after all of them, and under load they stretch (issue 11: restarted workers took
18-20 s in the 200-stream soak where they had taken 9 s; docs/reliability.md has the breakdown).

The first phase is the process's life before `start_worker` is called (interpreter start, the
imports of torch and grpc, the settings), read from /proc where there is one."""

from __future__ import annotations

import os
import time
from collections.abc import Callable


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc); None where that cannot be read."""
    try:
        with open("/proc/self/stat") as stat:
            start_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
    except (OSError, ValueError, IndexError):
        return None
    return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")


class StartPhases:
    """Consecutive phases of a start: `mark(name)` ends the phase called `name` (begun at the
    previous mark, or at construction)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, before_s: float | None = None) -> None:
        self._clock = clock
        self._start = self._last = clock()
        self._before_s = before_s  # the process's age when the start began (None: unknown)
        self.phases: list[tuple[str, float]] = []

    def mark(self, name: str) -> None:
        now = self._clock()
        self.phases.append((name, now - self._last))
        self._last = now

    def total_s(self) -> float:
        return self._last - self._start + (self._before_s or 0.0)

    def describe(self) -> str:
        """'9.7s: process start and imports 5.1s, model load 0.7s, ...' (seconds, one decimal)."""
        parts = [] if self._before_s is None else [("process start and imports", self._before_s)]
        parts += self.phases
        return f"{self.total_s():.1f}s: " + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in parts)
