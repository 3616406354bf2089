"""Static priority (vLLM's `priority` policy): lower `slo.priority` first, ties by arrival.

Preempts only on KV shortage, for a running request, taking the lowest-ranked (highest priority
value, latest arrival) running request. Waiting requests never preempt. Low-priority requests
could starve under a steady stream of better ones: aging promotes a request not scheduled for
`aging_s` seconds (default 60 s; see `policy/base.py` for the bound).
"""

from __future__ import annotations

from scheduler_svc.core.policy.base import Policy
from scheduler_svc.core.request import Request


class PriorityPolicy(Policy):
    name = "priority"

    def __init__(self, *, aging_s: float | None = 60.0) -> None:
        super().__init__(aging_s=aging_s)

    def key(self, req: Request, now: float) -> tuple:
        return (req.slo.priority, req.arrival_s)
