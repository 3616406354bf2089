"""KV work a run computed twice, counted from the plans and results the simulated worker saw.

A request that loses its device KV (preempted by recompute, or by checkpoint but resumed short of
what it had computed, or whose step failed) is re-admitted as a new request that resumes from
`NewRequestData.num_computed_tokens` (0 without a checkpoint). Every token it had computed beyond
that point is computed again; so is the whole resume point when the worker reports the restore
failed. Counting here, on the worker side of the seam, covers every cause (the core's
`CheckpointBook` sees only the preemptions it made) and splits the count by service class.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from scheduler_svc.core.plan import BatchPlan, StepResult
from scheduler_svc.core.request import ServiceClass


class RecomputeCounter:
    """Feed it every executed plan with its result (`observe`), in step order."""

    __slots__ = ("_computed", "_class", "recomputed_tokens", "readmissions")

    def __init__(self) -> None:
        self._computed: dict[str, int] = {}  # KV tokens the worker holds (or held) per request
        self._class: dict[str, ServiceClass] = {}
        self.recomputed_tokens: Counter[ServiceClass] = Counter()  # by class
        self.readmissions: Counter[ServiceClass] = Counter()  # admissions after the first, by class

    def observe(self, plan: BatchPlan, result: StepResult) -> None:
        for rid in plan.finished_request_ids:
            self._computed.pop(rid, None)
            self._class.pop(rid, None)
        for new in plan.new_requests:
            before = self._computed.get(new.request_id)
            self._class[new.request_id] = new.service_class
            if before is not None:
                self.readmissions[new.service_class] += 1
                self.recomputed_tokens[new.service_class] += max(0, before - new.num_computed_tokens)
            self._computed[new.request_id] = new.num_computed_tokens
        for rid in result.restore_failed_request_ids:
            cls = self._class.get(rid)
            if cls is not None:
                self.recomputed_tokens[cls] += self._computed.get(rid, 0)
        if result.error:
            return  # nothing was computed; the requests come back as new ones
        for s in plan.scheduled:
            self._computed[s.request_id] = s.num_computed_tokens + s.num_tokens

    @classmethod
    def merged(cls, counters: Iterable[RecomputeCounter]) -> RecomputeCounter:
        """The sums of several workers' counters (their requests are disjoint)."""
        out = cls()
        for c in counters:
            out.recomputed_tokens.update(c.recomputed_tokens)
            out.readmissions.update(c.readmissions)
        return out

    def total(self) -> int:
        return sum(self.recomputed_tokens.values())
