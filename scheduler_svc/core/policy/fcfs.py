"""First come, first served (vLLM's default).

Arrival order; chunked prefill under the token budget; on KV shortage a running request preempts
the latest-arrived running request (recompute). Waiting requests never preempt. No aging is
needed: the oldest request always ranks first, so nobody starves.
"""

from __future__ import annotations

from scheduler_svc.core.policy.base import Policy
from scheduler_svc.core.request import Request


class FcfsPolicy(Policy):
    name = "fcfs"

    def __init__(self, *, aging_s: float | None = None) -> None:
        super().__init__(aging_s=aging_s)

    def key(self, req: Request, now: float) -> tuple:
        return (req.arrival_s,)
