"""Pacing real-time streams: serve a streaming RT request *just enough* to keep its per-token
deadlines (Tempo's "just enough service", papers.md §2.3), so the rest of each step goes to
other work. Used by the bros policy (`pace_rt_decodes`).

A streaming RT request whose next token is due well after the step being planned can skip it:
the next chance to sample that token is the following plan, which ends at most two step times
after this step starts (this one, then that one). So the decode may yield when

    deadline(next token) > start + 2 · step_max + margin

where `start` is when this step starts (after the plans in flight) and `step_max` is the longest
recently measured step time. One that is due sooner (or already late) runs this step.

Yielding is worth something only when other work takes the step, and must never leave a plan
empty (an empty plan with nothing in flight would stall the core until the next arrival).
`OtherWork` therefore allows yields only when a non-RT request scheduled in the previous plan is
still running: it will be scheduled again (a running request short of KV preempts lower-ranked
ones), so the plan is not empty. Yielding
never loses a token's deadline as long as no step takes longer than `step_max`; `margin` covers
step-time noise and the result's trip back to the client.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from scheduler_svc.core.policy.base import TicketView
from scheduler_svc.core.request import Request, RequestStatus, ServiceClass

_WINDOW = 64  # steps remembered for the recent maximum


@dataclass(slots=True)
class StepTimes:
    """Measured step times: an EMA (`mean_s`, the per-step unit of work) and the maximum over
    the last 64 steps (`max_s`, what pacing must assume the next steps can take)."""

    mean_s: float
    alpha: float = 0.2
    max_s: float = 0.0
    _recent: deque[float] = field(default_factory=lambda: deque(maxlen=_WINDOW))

    def __post_init__(self) -> None:
        if not self.mean_s > 0 or not 0 < self.alpha <= 1:
            raise ValueError(f"StepTimes: mean_s > 0 and 0 < alpha <= 1 (got {self.mean_s}, {self.alpha})")
        self.max_s = max(self.max_s, self.mean_s)

    def observe(self, step_s: float) -> None:
        if step_s <= 0:
            return
        self.mean_s += self.alpha * (step_s - self.mean_s)
        recent = self._recent
        if not recent:
            self.max_s = step_s  # the seed was a guess: measurements replace it
        if len(recent) == recent.maxlen and recent[0] >= self.max_s:
            recent.append(step_s)
            self.max_s = max(recent)  # the maximum left the window: O(64), rare
        else:
            recent.append(step_s)
            if step_s > self.max_s:
                self.max_s = step_s


def decode_may_yield(req: Request, start_s: float, step_max_s: float, margin_s: float) -> bool:
    """True if the streaming RT request `req` can skip the step starting at `start_s` and still
    get its next token (the one this step would sample) by its deadline. See the module doc."""
    return req.token_deadline_s(req.num_scheduled_outputs) > start_s + 2.0 * step_max_s + margin_s


@dataclass(slots=True)
class OtherWork:
    """Non-RT requests of the plan being built, and whether the previous plan's still run (with
    the core's view of each: a drained victim will not be scheduled again)."""

    _current: list[tuple[Request, TicketView]] = field(default_factory=list)
    may_yield: bool = False  # for the plan being built

    def begin_step(self) -> None:
        running = RequestStatus.RUNNING
        self.may_yield = any(r.status is running and not t.preempt_when_drained for r, t in self._current)
        self._current = []

    def on_scheduled(self, req: Request, ticket: TicketView) -> None:
        if req.service_class is not ServiceClass.REAL_TIME:
            self._current.append((req, ticket))
