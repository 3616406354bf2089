"""Several simulated workers behind a router (issue 13's placement comparison).

What the service would run: one scheduler core per worker (as `scheduler_svc/server.py` keeps a
`WorkerLink` per worker, each with its own core) and a router in front that places each new
request on one of them (`scheduler_svc/core/placement.py`: KV-aware, load-only or round-robin).
Each worker is a `SimNode` with its own KV pool, prefix cache and host tier; requests never move
between workers. The router sees each worker's cache exactly (its prefix index) and its load
as the scheduler knows it (the uncached prefill routed to it and not computed yet, the requests
its worker holds).

    loop:  submit what is due (the router places it)  ->  every idle worker plans (up to
           `pipeline_depth` in flight) and starts its oldest plan  ->  the clock jumps to the
           next step end or arrival  ->  the steps that ended hand their results to their cores
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from scheduler_svc.core.placement import PlacementConfig, Router, WorkerLoad
from scheduler_svc.core.plan import BatchPlan, StepResult
from scheduler_svc.core.request import Request
from scheduler_svc.sim.cost_model import CostModel
from scheduler_svc.sim.node import SimNode
from scheduler_svc.sim.simulator import SimConfig, SimResult, Simulation
from scheduler_svc.sim.workload import WorkloadRequest


class ClusterSimulation(Simulation):
    """One policy on `num_workers` workers, requests placed by `placement`."""

    def __init__(self, requests: Sequence[WorkloadRequest], policy: str, cost: CostModel, config: SimConfig,
                 num_workers: int, placement: PlacementConfig) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be >= 1, got {num_workers}")
        super().__init__(requests, policy, cost, config, num_workers=num_workers)
        self.router = Router(placement)
        self.placed: dict[str, int] = {}  # request -> worker index
        self._backlog = [0] * num_workers  # uncached prefill tokens routed and not computed yet

    def _route(self, request: Request) -> SimNode:
        loads = [WorkerLoad(node.prefix.cached_tokens(request) if node.prefix is not None else 0,
                            self._backlog[k], len(node.worker.book))
                 for k, node in enumerate(self.nodes)]
        workflow = request.workflow.workflow_id if request.workflow is not None else None
        k = self.router.choose(request.num_prompt_tokens, loads, workflow)
        self.placed[request.request_id] = k
        self._backlog[k] += request.num_prompt_tokens - loads[k].cached_tokens
        return self.nodes[k]

    def run(self) -> SimResult:
        wall0 = time.perf_counter()
        for at, req in self._tracker.initial():
            self._push(at, req)
        last_arrival = max((r.arrival_s for r in self._requests), default=0.0)
        running: dict[int, tuple[float, BatchPlan, StepResult]] = {}  # worker -> (step end, plan, result)
        depth = self._config.pipeline_depth
        while True:
            now = self.clock.now()
            last_arrival = max(last_arrival, self._submit_due(now))
            for k, node in enumerate(self.nodes):
                if k in running:
                    continue
                node.plan_ahead(depth)
                if node.inflight:
                    plan = node.inflight.popleft()
                    result, dt = node.execute(plan, now)
                    self._backlog[k] = max(0, self._backlog[k] - result.timing.num_prefill_tokens) \
                        if result.timing is not None else self._backlog[k]
                    running[k] = (now + dt, plan, result)
            if not running:
                if not self._heap:
                    break
                self.clock.t = max(now, self._heap[0][0])
                continue
            if now > last_arrival + self._config.drain_limit_s and not self._heap:
                break
            next_end = min(end for end, _, _ in running.values())
            self.clock.t = min(next_end, self._heap[0][0]) if self._heap else next_end
            for k in sorted(running):
                end, plan, result = running[k]
                if end <= self.clock.t:
                    del running[k]
                    self._complete(self.nodes[k], plan, result)
        return self._result(wall0)


def simulate_cluster(requests: Sequence[WorkloadRequest], policy: str, cost: CostModel, config: SimConfig,
                     num_workers: int, placement: PlacementConfig) -> SimResult:
    return ClusterSimulation(requests, policy, cost, config, num_workers, placement).run()
