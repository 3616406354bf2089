"""Clocks injected into the core: the core never reads the wall clock itself."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    """Anything with `now() -> float` (seconds, same epoch as `Request.arrival_s`)."""

    def now(self) -> float: ...


class WallClock:
    """Unix time, for the service (arrivals are stamped in Unix seconds by the gateway)."""

    def now(self) -> float:
        return time.time()


@dataclass(slots=True)
class ManualClock:
    """A clock that moves only when told to (tests, simulator)."""

    t: float = 0.0

    def now(self) -> float:
        return self.t

    def advance(self, dt: float) -> float:
        if dt < 0:
            raise ValueError(f"a clock cannot go back (dt={dt})")
        self.t += dt
        return self.t
