"""When `llmserve up` restarts a service that exited on its own, and when it gives up.

Pure (times are passed in): each service has its own `RestartBudget`. After an exit the service is
restarted after an exponential backoff (`first_backoff_s`, doubling with each exit still inside
the window, at most `max_backoff_s`); an exit that leaves more than `max_restarts` exits of that
service within the last `window_s` seconds is a repeated fast failure: the supervisor gives up and
stops the stack. A service that stays up longer than the window starts again from the first
backoff. A restart that dies before it is healthy counts as one more exit.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class RestartPolicy:
    max_restarts: int = 5  # exits of one service within window_s tolerated; 0: stop at the first exit
    window_s: float = 60.0
    first_backoff_s: float = 0.5
    max_backoff_s: float = 10.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {self.max_restarts}")
        if not self.window_s > 0:
            raise ValueError(f"window_s must be > 0, got {self.window_s}")
        if not 0 <= self.first_backoff_s <= self.max_backoff_s:
            raise ValueError("backoffs must satisfy 0 <= first_backoff_s <= max_backoff_s")


class RestartBudget:
    """The recent exits of one service."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._exits: deque[float] = deque()

    @property
    def recent_exits(self) -> int:
        """Exits inside the window, as of the last `on_exit`."""
        return len(self._exits)

    def on_exit(self, now: float) -> float | None:
        """Records an exit at `now`: the delay before restarting it, or None to give up."""
        policy = self.policy
        while self._exits and self._exits[0] <= now - policy.window_s:
            self._exits.popleft()
        self._exits.append(now)
        if len(self._exits) > policy.max_restarts:
            return None
        return min(policy.max_backoff_s, policy.first_backoff_s * 2 ** (len(self._exits) - 1))
