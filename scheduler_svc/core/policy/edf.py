"""Earliest (next) deadline first.

The key is the deadline of the next token a request will sample: real-time token i is due at
`arrival + ttft + i·tpot` (i = 0 before the first token), a deadline request's every token at
`arrival + deadline_ms`, best-effort at +inf (then by arrival). Keys of running requests change
as they produce tokens, so they are recomputed every step; waiting keys do not depend on time.
Preempts only on KV shortage (for a running request; victims are the latest deadlines). EDF
serves best-effort only when no deadline work can use the budget, so aging (default 30 s, see
`policy/base.py`) bounds its wait.
"""

from __future__ import annotations

from scheduler_svc.core.policy.base import Policy
from scheduler_svc.core.request import Request


class EdfPolicy(Policy):
    name = "edf"
    running_key_ttl = 1

    def __init__(self, *, aging_s: float | None = 30.0) -> None:
        super().__init__(aging_s=aging_s)

    def key(self, req: Request, now: float) -> tuple:
        return (req.next_token_deadline_s(), req.arrival_s)
