"""Stop strings: text that could be the start of a stop string is held back until it either
completes one (the stream ends before it) or stops matching (it is released)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class StopMatch:
    """The outcome of feeding text: what may be sent now, and whether a stop string ended it."""

    text: str
    stopped: bool


@dataclass(slots=True)
class StopStringMatcher:
    """Holds back the longest suffix of the pending text that is a prefix of some stop string, so
    a stop string split across deltas (or tokens) is still caught and never partly sent."""

    stops: tuple[str, ...]
    pending: str = ""
    stopped: bool = False

    def feed(self, text: str) -> StopMatch:
        if self.stopped:
            return StopMatch("", True)
        if not self.stops:
            return StopMatch(text, False)
        self.pending += text
        hit = self._first_stop()
        if hit is not None:
            self.stopped = True
            out, self.pending = self.pending[:hit], ""
            return StopMatch(out, True)
        keep = self._held_suffix_start()
        out, self.pending = self.pending[:keep], self.pending[keep:]
        return StopMatch(out, False)

    def flush(self) -> str:
        """The held text, once the stream ends without a stop string."""
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out

    def _first_stop(self) -> int | None:
        """Start of the stop string that ENDS first in the text (ties: the longer one). Ending
        first, not starting first, is what makes the result independent of how the text was cut
        into deltas: a stream cannot wait for a longer stop string that might still complete."""
        found = [(i + len(s), i) for s, i in ((s, self.pending.find(s)) for s in self.stops) if i >= 0]
        return min(found)[1] if found else None

    def _held_suffix_start(self) -> int:
        """Index of the earliest position whose suffix is a proper prefix of a stop string."""
        longest = max(len(s) for s in self.stops)
        n = len(self.pending)
        for start in range(max(0, n - longest + 1), n):
            tail = self.pending[start:]
            if any(s.startswith(tail) for s in self.stops):
                return start
        return n
