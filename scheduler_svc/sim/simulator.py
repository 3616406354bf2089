"""The discrete-event simulator: the service's own scheduler core and the kvstore core's lease
table, driven by a virtual clock and a simulated worker (worker.py).

    loop:  submit every request released by now  ->  plan (up to `pipeline_depth` in flight, as
           the service's worker link does)  ->  the worker executes the oldest plan, the clock
           advances by its cost-model step time  ->  core.update(result)  ->  token times recorded,
           finished workflow calls release their dependents (after their think time)
    idle:  the clock jumps to the next release

No scheduling logic lives here: every decision is the core's (`scheduler_svc.core`).

`SimConfig()`'s defaults are what `llmserve up` runs: prefix caching (sim/prefix.py) on workloads
with hash ids, two plans in flight, a `CheckpointBook`
(policies that preempt by CHECKPOINT save BE KV to a host tier of the KV store's default size and
restore it, priced by `host_tier.py`), and bros and tempo starting from the service's
built-in cost model prior, which they refit online from the simulated step times.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from llmserve.errors import LlmServeError
from llmserve.types import service_class_named
from scheduler_svc.core.clock import ManualClock
from scheduler_svc.core.errors import TtftInfeasibleError
from scheduler_svc.core.plan import BatchPlan, StepResult
from scheduler_svc.core.request import FinishReason, Request, SamplingParams, Slo, WorkflowRef
from scheduler_svc.sim.cost_model import CostModel
from scheduler_svc.sim.host_tier import SimHostTier
from scheduler_svc.sim.metrics import RequestRecord, RunStats
from scheduler_svc.sim.node import EOS_TOKEN_ID, SimNode, merged_counters
from scheduler_svc.sim.prefix import prefix_counters, workload_chain
from scheduler_svc.sim.recompute import RecomputeCounter
from scheduler_svc.sim.release import ReleaseTracker
from scheduler_svc.sim.workload import WorkloadRequest

WORKER_ID = "sim-worker-0"
__all__ = ["EOS_TOKEN_ID", "WORKER_ID", "SimConfig", "SimResult", "Simulation", "simulate"]
_REASON = {FinishReason.STOP: "stop", FinishReason.LENGTH: "length", FinishReason.CANCELLED: "cancelled",
           FinishReason.ERROR: "error"}
# The KV store's default host tier (kvstore_svc.config.KvStoreConfig.host_tier_bytes, --host-tier-gb 2).
DEFAULT_HOST_TIER_BYTES = 2 * 1024**3
# KV bytes per token when the cost model JSON does not say (Llama-3-8B in bf16: 2 x 32 layers x 8
# KV heads x 128 x 2 B); prices checkpoint copies and sizes the host tier in tokens.
DEFAULT_KV_BYTES_PER_TOKEN = 131072
# The worker's default (worker_svc.config.WorkerConfig.prefix_host_tier_gb).
DEFAULT_PREFIX_HOST_TIER_BYTES = 4 * 1024**3
StepObserver = Callable[[BatchPlan, StepResult, float, float], None]


@dataclass(frozen=True)
class SimConfig:
    """The simulated deployment: one worker's KV geometry and budgets, and run limits."""

    num_blocks: int = 24_000
    block_size: int = 16
    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 256
    max_model_len: int = 8192
    pipeline_depth: int = 2  # plans in flight (the service's --max-inflight-plans default)
    # Bidirectional KV as the service runs it by default (--checkpoint-preemption): victims the
    # policy preempts by CHECKPOINT go to a host tier and resume from it. False: recompute only.
    checkpoint_preemption: bool = True
    host_tier_bytes: int = DEFAULT_HOST_TIER_BYTES
    kv_bytes_per_token: int = DEFAULT_KV_BYTES_PER_TOKEN
    link_bytes_per_s: float = 25e9  # device <-> host copies (PCIe 4.0 x16)
    checkpoint_lazy: bool = True  # full blocks copied while a BE request runs (the worker's default)
    # True (the default): cost-aware policies (bros, tempo) start from the simulated worker's own
    # coefficients, as plain `llmserve up` does now that each worker calibrates itself at start
    # (`WorkerConfig.calibrate`, reported in `WorkerInfo.step_cost`). False: from the service's
    # built-in prior, as a worker started with `--no-calibrate`. Either way they refit online.
    cost_model_as_prior: bool = True
    # Stop this long after the last arrival even if requests are unfinished (they count as missed).
    drain_limit_s: float = 600.0
    # The scheduler's opt-in --rt-admission-control (off by default, as in the service): a new RT
    # request whose predicted TTFT exceeds its SLO is rejected at arrival (record "rejected").
    rt_admission_control: bool = False
    check_invariants_every: int = 0  # steps; 0: only at the end
    # Prefix caching (issue 13) where the workload carries hash ids (sim/prefix.py). On by default,
    # as the service's `--prefix-cache` (`llmserve bench --engine sim --prefix-cache off`: without).
    prefix_cache: bool = True
    # The prefix cache's host tier per worker (the worker's --prefix-host-tier-gb; 0: none):
    # evicted cached blocks kept in host memory, copied back on a hit at `link_bytes_per_s`.
    prefix_host_tier_bytes: int = DEFAULT_PREFIX_HOST_TIER_BYTES
    policy_options: dict[str, object] = field(default_factory=dict)

    @staticmethod
    def from_cost_model(cost: CostModel, **overrides: object) -> SimConfig:
        """Geometry from the cost-model JSON's deployment fields where present."""
        keys = ("num_blocks", "block_size", "max_num_batched_tokens", "max_num_seqs", "max_model_len",
                "kv_bytes_per_token")
        base = {k: int(cost.extra[k]) for k in keys if k in cost.extra}
        return SimConfig(**{**base, **overrides})  # type: ignore[arg-type]


@dataclass
class SimResult:
    """Records (one per workload request, workload order), run stats and the wall time it took."""

    policy: str
    records: list[RequestRecord]
    stats: RunStats
    wall_s: float
    num_unfinished: int
    num_failed_steps: int
    recompute: RecomputeCounter = field(default_factory=RecomputeCounter)


class Simulation:
    """One run of one policy over one workload. Build, `run()`, read the result.

    The requests, their records and the dependency releases live here; the worker and its core
    are a `SimNode` (node.py). cluster.py runs several nodes behind a router on the same records."""

    def __init__(self, requests: Sequence[WorkloadRequest], policy: str, cost: CostModel, config: SimConfig,
                 progress: Callable[[float], None] | None = None, on_step: StepObserver | None = None,
                 host_tier: SimHostTier | None = None, num_workers: int = 1) -> None:
        """`on_step(plan, result, step_s, now)` sees every executed step (diagnostics). `host_tier`:
        where the worker checkpoints preempted requests and restores resumed ones; by default, with
        `config.checkpoint_preemption`, one of `config.host_tier_bytes` (the KV store's default), as
        the service runs."""
        self._requests = list(requests)
        self._policy_name = policy
        self._config = config
        self._progress = progress
        self.clock = ManualClock(0.0)
        true_lengths = {r.id: r.output_tokens for r in self._requests}
        self._chains = {r.id: workload_chain(r, config.block_size) for r in self._requests if r.hash_ids} \
            if config.prefix_cache else {}
        self.nodes = [SimNode(WORKER_ID if k == 0 else f"sim-worker-{k}", policy, cost, config, self.clock,
                              true_lengths, self._chains if self._chains else None, host_tier if k == 0 else None)
                      for k in range(num_workers)]
        node = self.nodes[0]
        self.core, self.worker, self.leases, self.host_tier = node.core, node.worker, node.leases, node.host_tier
        self.prefix, self.cache, self.recompute = node.prefix, node.cache, node.recompute
        self._on_step = on_step
        self.records: dict[str, RequestRecord] = {}
        self._tracker = ReleaseTracker(self._requests)
        self._heap: list[tuple[float, int, WorkloadRequest]] = []
        self._seq = 0
        self._wf_start: dict[str, float] = {}
        self._prompts: dict[int, tuple[int, ...]] = {}

    @property
    def num_steps(self) -> int:
        return sum(node.num_steps for node in self.nodes)

    # ---- requests ----------------------------------------------------------------------------
    def _push(self, at: float, req: WorkloadRequest) -> None:
        heapq.heappush(self._heap, (at, self._seq, req))
        self._seq += 1

    def _prompt(self, n: int) -> tuple[int, ...]:
        # Token ids do not matter to the simulated model; share one tuple per length.
        if n not in self._prompts:
            self._prompts[n] = (11,) * n
        return self._prompts[n]

    def _route(self, request: Request) -> SimNode:
        """The node a new request goes to (cluster.py places it)."""
        return self.nodes[0]

    def _submit(self, at: float, req: WorkloadRequest) -> None:
        rec = RequestRecord(req, at)
        self.records[req.id] = rec
        workflow = None
        if req.workflow_id:
            start = self._wf_start.setdefault(req.workflow_id, at)
            workflow = WorkflowRef(req.workflow_id, req.application, req.stage, tuple(req.depends_on),
                                   req.workflow_deadline_ms, start)
        # max_tokens is only the context's room, as a client that sets none: the EOS the simulated
        # model emits at the true length ends the request.
        room = max(1, self._config.max_model_len - req.prompt_tokens)
        sampling = SamplingParams(max_tokens=room, temperature=0.0, seed=self._seq)
        slo = Slo(service_class_named(req.cls), req.ttft_ms, req.tpot_ms, req.deadline_ms, req.priority)
        request = Request(req.id, self._prompt(req.prompt_tokens), sampling, slo, req.tenant, workflow, arrival_s=at,
                          block_hashes=self._chains.get(req.id, ()))
        core = self._route(request).core
        try:
            core.add_request(request, new_arrival=True)
        except TtftInfeasibleError as err:  # RT admission control: sent elsewhere, a miss here
            rec.finish_s, rec.finish_reason, rec.predicted_ttft_s = at, "rejected", err.predicted_ttft_s
            self._finished(req.id, at)
        except LlmServeError as err:  # too long for the context, queue full: the request fails
            rec.finish_s, rec.finish_reason = at, "error"
            self._finished(req.id, at)
            del err
        else:
            rec.predicted_ttft_s = core.last_ttft_forecast_s

    def _finished(self, request_id: str, at: float) -> None:
        for release, child in self._tracker.finished(request_id, at):
            self._push(release, child)

    def _submit_due(self, now: float) -> float:
        """Submits every request released by `now`; returns the latest submission time."""
        last = -1.0
        while self._heap and self._heap[0][0] <= now:
            at, _, req = heapq.heappop(self._heap)
            self._submit(at, req)
            last = max(last, at)
        return last

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> SimResult:
        wall0 = time.perf_counter()
        for at, req in self._tracker.initial():
            self._push(at, req)
        last_arrival = max((r.arrival_s for r in self._requests), default=0.0)
        node = self.nodes[0]
        inflight = node.inflight
        while True:
            now = self.clock.now()
            last_arrival = max(last_arrival, self._submit_due(now))
            node.plan_ahead(self._config.pipeline_depth)
            if not inflight:
                if not self._heap:
                    break  # nothing planned, nothing to come: done (or stuck)
                self.clock.t = max(now, self._heap[0][0])
                continue
            if now > last_arrival + self._config.drain_limit_s and not self._heap:
                break
            self._step(node, inflight.popleft())
            if self._progress and self.num_steps % 2000 == 0:
                self._progress(self.clock.now())
        return self._result(wall0)

    def _result(self, wall0: float) -> SimResult:
        for node in self.nodes:
            node.check_invariants()
        end = self.clock.now()
        arrivals = [r.arrival_s for r in self.records.values()] or [0.0]
        for rec in self.records.values():
            if rec.finish_s is None:
                for node in self.nodes:  # still queued or running when the run stopped
                    if (req := node.core.get_request(rec.request.id)) is not None:
                        rec.num_preemptions = req.num_preemptions
        busy_s = sum(node.busy_s for node in self.nodes)
        kv_block_s = sum(node.kv_block_s for node in self.nodes)
        recompute = self.recompute if len(self.nodes) == 1 else RecomputeCounter.merged(n.recompute for n in self.nodes)
        stats = RunStats(start_s=min(arrivals), arrivals_end_s=max(arrivals), end_s=end, num_steps=self.num_steps,
                         preemptions=sum(node.core.num_preemptions for node in self.nodes),
                         kv_util_mean=kv_block_s / (busy_s * self._config.num_blocks) if busy_s else 0.0,
                         recomputed_tokens={c.name.lower(): n for c, n in recompute.recomputed_tokens.items()},
                         checkpoint=merged_counters(node.checkpoint_counters() for node in self.nodes),
                         prefix=prefix_counters((node.prefix_stats, node.cache) if node.cache is not None else None
                                                for node in self.nodes))
        records = [self.records.get(r.id) or RequestRecord(r, r.arrival_s) for r in self._requests]
        unfinished = sum(1 for r in records if r.finish_s is None)
        return SimResult(self._policy_name, records, stats, time.perf_counter() - wall0, unfinished,
                         sum(node.worker.num_failed_steps for node in self.nodes), recompute)

    def _step(self, node: SimNode, plan: BatchPlan) -> None:
        result, dt = node.execute(plan, self.clock.now())
        if self._on_step is not None:
            self._on_step(plan, result, dt, self.clock.now())
        self.clock.advance(dt)
        self._complete(node, plan, result)

    def _complete(self, node: SimNode, plan: BatchPlan, result: StepResult) -> None:
        now = self.clock.now()
        for out in node.complete(plan, result):
            rec = self.records.get(out.request_id)
            if rec is None:
                continue
            rec.token_times.extend([now] * len(out.new_token_ids))
            if out.finish_reason is not None:
                rec.finish_s = now
                rec.finish_reason = _REASON[out.finish_reason]
                rec.num_preemptions = out.num_preemptions
                self._finished(out.request_id, now)
        every = self._config.check_invariants_every
        if every and node.num_steps % every == 0:
            node.check_invariants()


def simulate(requests: Sequence[WorkloadRequest], policy: str, cost: CostModel, config: SimConfig | None = None,
             progress: Callable[[float], None] | None = None, on_step: StepObserver | None = None) -> SimResult:
    """Runs one policy over a workload; see `Simulation`."""
    return Simulation(requests, policy, cost, config or SimConfig.from_cost_model(cost), progress, on_step).run()
