"""Where a new request goes when several workers serve (issue 13): the worker whose cache holds
the longest prefix of its prompt, balanced against the work queued there, as Dynamo's KV router
weighs it (the cost of the miss against the queue on the hit worker):

    cost(w) = (prompt - cached(w))  +  backlog(w)  +  decode_weight · running(w)      [tokens]
              prefill this request    prefill queued   streams decoding there
              needs on w              on w

and the worker of least cost takes it. A workflow's next call stays on the worker that served
its previous call unless that worker costs more than `affinity_slack` above the best one (its
cache holds the session, and the previous call's tail, which the trace's ids may not show).
`LOAD` weighs only the queue (`backlog + decode_weight · running`), `ROUND_ROBIN` nothing. Ties go
round-robin, so idle workers share the work. Pure: the caller says what each worker holds.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


class Placement(str, enum.Enum):
    KV_AWARE = "kv"
    LOAD = "load"
    ROUND_ROBIN = "round_robin"


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """One worker as the router sees it for one request."""

    cached_tokens: int  # leading prompt tokens of this request its prefix cache holds
    backlog_tokens: int  # prefill tokens queued or under way on it (their uncached part)
    num_running: int  # requests it holds, each decoding a token a step


@dataclass(frozen=True, slots=True)
class PlacementConfig:
    placement: Placement = Placement.KV_AWARE
    # A running stream's load in prefill-token equivalents: a decode costs a step's slot while it
    # lasts (not tuned; the KV-aware and load-only placements share it).
    decode_weight_tokens: float = 32.0
    affinity_slack: float = 0.25

    def __post_init__(self) -> None:
        if self.decode_weight_tokens < 0 or self.affinity_slack < 0:
            raise ValueError("decode_weight_tokens and affinity_slack must be >= 0")


class Router:
    """Chooses a worker per request (module docstring); remembers each workflow's last worker."""

    __slots__ = ("config", "_next", "_last_of_workflow")

    def __init__(self, config: PlacementConfig) -> None:
        self.config = config
        self._next = 0  # round-robin cursor (ties, and ROUND_ROBIN)
        self._last_of_workflow: dict[str, int] = {}

    def choose(self, prompt_tokens: int, loads: Sequence[WorkerLoad], workflow_id: str | None = None) -> int:
        """The index in `loads` of the worker the request goes to."""
        n = len(loads)
        if n == 0:
            raise ValueError("no worker to place the request on")
        start, self._next = self._next % n, self._next + 1
        if self.config.placement is Placement.ROUND_ROBIN:
            return start
        costs = [self._cost(prompt_tokens, load) for load in loads]
        best = min(range(n), key=lambda k: (costs[k], (k - start) % n))
        prev = self._last_of_workflow.get(workflow_id) if workflow_id else None
        if prev is not None and prev < n and costs[prev] <= costs[best] * (1.0 + self.config.affinity_slack):
            best = prev
        if workflow_id:
            self._last_of_workflow[workflow_id] = best
        return best

    def _cost(self, prompt_tokens: int, load: WorkerLoad) -> float:
        queue = load.backlog_tokens + self.config.decode_weight_tokens * load.num_running
        if self.config.placement is Placement.LOAD:
            return queue
        return (prompt_tokens - load.cached_tokens) + queue

    def forget_workflow(self, workflow_id: str) -> None:
        self._last_of_workflow.pop(workflow_id, None)
