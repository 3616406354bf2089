"""One simulated run of the suite: a workload at a load under a policy (or its dedicated run),
with `llmserve bench`'s metrics (`scheduler_svc.sim.metrics.summarize`) plus the suite's own.

`dedicated` is the workload's RT requests alone under fcfs on the same deployment: what an
operator would buy instead of co-locating.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from scheduler_svc.sim import transform
from scheduler_svc.sim.cost_model import load_cost_model
from scheduler_svc.sim.metrics import summarize
from scheduler_svc.sim.service_gain import service_gain
from scheduler_svc.sim.simulator import SimConfig, Simulation
from scheduler_svc.sim.workload import BEST_EFFORT, REAL_TIME, WorkloadRequest

from benchmarks.sched_suite.workloads import WorkloadSpec

DEDICATED = "dedicated"
# "<policy>+admission": the policy with the scheduler's opt-in --rt-admission-control (target 5).
ADMISSION = "+admission"


def split_policy(name: str) -> tuple[str, dict[str, object]]:
    """(the simulator's policy name, SimConfig overrides) of a suite run name."""
    if name.endswith(ADMISSION):
        return name.removesuffix(ADMISSION), {"rt_admission_control": True}
    return name, {}


@dataclass(frozen=True)
class Job:
    spec: WorkloadSpec
    load: float
    policy: str  # a simulator policy name (tempo-oracle included), "<name>+admission", or DEDICATED
    duration_s: float
    cost_model: str
    overrides: tuple[tuple[str, object], ...] = ()

    @property
    def key(self) -> str:
        return f"{self.spec.name}|x{self.load:g}|{self.policy}"


@functools.lru_cache(maxsize=8)
def _workload(spec: WorkloadSpec, duration_s: float) -> tuple[WorkloadRequest, ...]:
    return tuple(spec.build(duration_s))


class _StarvationWatch:
    """Longest time a BE request went unscheduled (queued or running) in a run: what the aging
    bound of `policy/base.py` limits (to `aging_s` + 3 steps, unless earlier-promoted requests
    fill the step)."""

    def __init__(self, requests: list[WorkloadRequest]) -> None:
        self._last = {r.id: r.arrival_s for r in requests if r.cls == BEST_EFFORT}
        self.max_gap_s = 0.0

    def on_step(self, plan, result, step_s: float, now: float) -> None:  # noqa: ANN001 - the sim's StepObserver
        last = self._last
        for s in plan.scheduled:
            at = last.get(s.request_id)
            if at is not None:
                self.max_gap_s = max(self.max_gap_s, now - at)
                last[s.request_id] = now
        for rid in plan.finished_request_ids:
            last.pop(rid, None)

    def close(self, end_s: float) -> None:
        for at in self._last.values():
            self.max_gap_s = max(self.max_gap_s, end_s - at)


def run_job(job: Job) -> tuple[str, dict]:
    """Runs one job; returns (job key, metrics). A top-level function for process pools."""
    wall0 = time.perf_counter()
    requests = list(_workload(job.spec, job.duration_s))
    policy, variant = split_policy(job.policy)
    if policy == DEDICATED:
        requests, policy = [r for r in requests if r.cls == REAL_TIME], "fcfs"
    requests = transform.scale_rate(requests, job.load)
    cost = load_cost_model(job.cost_model)
    overrides = dict(job.overrides)
    if "policy_options" in overrides:  # kept as pairs in the (hashable, picklable) job
        overrides["policy_options"] = dict(overrides["policy_options"])
    config = SimConfig.from_cost_model(cost, **{**overrides, **variant})
    watch = _StarvationWatch(requests)
    sim = Simulation(requests, policy, cost, config, on_step=watch.on_step)
    result = sim.run()
    watch.close(result.stats.end_s)
    metrics = summarize(result.records, result.stats, service_gain)
    metrics["be_max_unscheduled_s"] = watch.max_gap_s if any(r.cls == BEST_EFFORT for r in requests) else None
    metrics["num_unfinished"] = result.num_unfinished
    metrics["num_failed_steps"] = result.num_failed_steps
    metrics["sim_wall_s"] = round(time.perf_counter() - wall0, 3)
    return job.key, metrics
