"""The scheduler core's private record of one request: the `Request` plus the bookkeeping that only
the core reads and writes (its place in the orderings, the aging clock, drain and discard marks,
the steps in flight).

A ticket lives from `add_request` until the core drops the request; it never leaves its core. A
request that moves to another worker's core (`evict_all`, then `add_request` there) gets a fresh
ticket, so nothing of this core's ordering or marks travels with it. Policies see a ticket only
through the read-only `TicketView` of `policy/base.py`.
"""

from __future__ import annotations

from scheduler_svc.core.request import Request


class Ticket:
    """One request's scheduler-private state (slots: read on the per-step hot path)."""

    __slots__ = ("req", "seq", "sched_key", "key_step", "queue_gen", "last_progress_s", "promoted_at",
                 "preempt_when_drained", "discard_inflight", "num_inflight_steps", "num_rejections")

    def __init__(self, req: Request, seq: int, now: float) -> None:
        self.req = req
        self.seq = seq  # admission order into this core; the final tie-breaker of every ordering
        self.sched_key: tuple = ()  # effective ordering key: (band, *policy key, seq), smaller runs first
        self.key_step = -1  # step at which sched_key was computed
        self.queue_gen = 0  # bumped on every waiting-queue change; stale heap entries carry an older value
        self.last_progress_s = now  # last time it was scheduled (or queued): the aging clock
        self.promoted_at: float | None = None  # set once it starved past the aging bound (sticky)
        self.preempt_when_drained = False  # chosen as a victim (or its step failed) while in flight
        self.discard_inflight = False  # its in-flight steps failed: their tokens must not be used
        self.num_inflight_steps = 0  # planned steps whose results have not arrived
        self.num_rejections = 0  # invalid plans the worker named it in (results.py: MAX_PLAN_REJECTIONS)

    def reset_for_queue(self) -> None:
        """Forget everything the worker held: the request restarts from its known tokens."""
        self.req.reset_for_queue()
        self.num_inflight_steps = 0
        self.preempt_when_drained = False
        self.discard_inflight = False

    def __repr__(self) -> str:
        return (f"Ticket({self.req.request_id!r}, seq={self.seq}, key={self.sched_key}, "
                f"inflight={self.num_inflight_steps}, promoted_at={self.promoted_at})")
