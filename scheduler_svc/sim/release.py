"""When each request of a workload is submitted: independent requests at `arrival_s`; a workflow
call once all its dependencies have finished, plus its `think_s` (as in live agentic traffic,
where the next call is only sent after the tool has run on the previous answer).

Shared by the simulator and the live replay so both release requests the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scheduler_svc.sim.workload import WorkloadRequest


@dataclass(slots=True)
class _Pending:
    request: WorkloadRequest
    missing: int  # dependencies not finished yet
    ready_s: float  # latest dependency finish time so far


class ReleaseTracker:
    """Tracks dependencies; `finished()` returns the calls it unblocks with their release times."""

    def __init__(self, requests: Sequence[WorkloadRequest]) -> None:
        ids = {r.id for r in requests}
        self._dependents: dict[str, list[str]] = {}
        self._pending: dict[str, _Pending] = {}
        self._initial: list[tuple[float, WorkloadRequest]] = []
        for req in requests:
            deps = [d for d in req.depends_on if d in ids]
            if not deps:
                self._initial.append((req.arrival_s, req))
                continue
            self._pending[req.id] = _Pending(req, len(deps), 0.0)
            for dep in deps:
                self._dependents.setdefault(dep, []).append(req.id)

    def initial(self) -> list[tuple[float, WorkloadRequest]]:
        """(release time, request) of every request without dependencies."""
        return list(self._initial)

    def finished(self, request_id: str, at_s: float) -> list[tuple[float, WorkloadRequest]]:
        """Marks a request finished (whatever its outcome) at `at_s`; returns the calls that become
        ready, each with its release time `max(dependency finish) + think_s`."""
        ready = []
        for child in self._dependents.pop(request_id, ()):
            pending = self._pending[child]
            pending.missing -= 1
            pending.ready_s = max(pending.ready_s, at_s)
            if pending.missing == 0:
                del self._pending[child]
                ready.append((pending.ready_s + pending.request.think_s, pending.request))
        return ready

    @property
    def num_blocked(self) -> int:
        """Calls still waiting for a dependency."""
        return len(self._pending)
