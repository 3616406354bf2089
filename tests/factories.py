"""Shared test factories: requests, schedulers, and a fake worker that applies plans exactly as
docs/design.md says a worker does (in order, releasing before leasing, checking counts), with
deterministic sampling so that a recomputed or moved request must produce the same tokens."""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from scheduler_svc.core import (
    BatchPlan,
    ManualClock,
    Request,
    RequestOutput,
    SamplingParams,
    Scheduler,
    SchedulerConfig,
    ServiceClass,
    Slo,
    StepResult,
    StepTiming,
    WorkflowRef,
    make_policy,
)

EOS = 2
_ids = itertools.count()


def make_request(
    request_id: str | None = None,
    *,
    prompt_len: int = 8,
    max_tokens: int = 16,
    service_class: ServiceClass = ServiceClass.BEST_EFFORT,
    ttft_ms: float | None = None,
    tpot_ms: float | None = None,
    deadline_ms: float | None = None,
    priority: int = 0,
    arrival_s: float = 0.0,
    ignore_eos: bool = False,
    stop_token_ids: tuple[int, ...] = (),
    tenant: str = "",
    workflow: WorkflowRef | None = None,
    seed: int | None = 0,
) -> Request:
    """A request with prompt tokens 10, 11, ... Real-time defaults to ttft 1 s / tpot 100 ms, deadline to 10 s."""
    if service_class is ServiceClass.REAL_TIME:
        ttft_ms = 1000.0 if ttft_ms is None else ttft_ms
        tpot_ms = 100.0 if tpot_ms is None else tpot_ms
    if service_class is ServiceClass.DEADLINE and deadline_ms is None:
        deadline_ms = 10_000.0
    return Request(
        request_id=request_id if request_id is not None else f"r{next(_ids)}",
        prompt_token_ids=tuple(10 + i for i in range(prompt_len)),
        sampling=SamplingParams(max_tokens=max_tokens, ignore_eos=ignore_eos, stop_token_ids=stop_token_ids,
                                seed=seed, temperature=0.0),
        slo=Slo(service_class, ttft_ms=ttft_ms, tpot_ms=tpot_ms, deadline_ms=deadline_ms, priority=priority),
        tenant=tenant,
        workflow=workflow,
        arrival_s=arrival_s,
    )


def make_config(**overrides: object) -> SchedulerConfig:
    base: dict[str, object] = dict(num_blocks=64, block_size=4, max_num_batched_tokens=64, max_num_seqs=16,
                                   max_model_len=256, eos_token_ids=(EOS,), max_num_waiting=1000)
    base.update(overrides)
    return SchedulerConfig(**base)  # type: ignore[arg-type]


def make_scheduler(policy: str = "fcfs", *, clock: ManualClock | None = None,
                   policy_options: dict[str, object] | None = None, **config_overrides: object) -> Scheduler:
    """A scheduler on a ManualClock (reach it as `scheduler.clock`) with a small pool (64 blocks of 4)."""
    return Scheduler(make_config(**config_overrides), make_policy(policy, **(policy_options or {})),
                     clock or ManualClock(1.0))


def default_token(request_id: str, index: int) -> int:
    """Deterministic 'sampling': output token `index` of a request; never EOS."""
    return 100 + (hash((request_id, index)) % 1000)


@dataclass
class _WorkerRequest:
    tokens: list[int]
    num_prompt: int
    num_computed: int = 0
    num_blocks: int = 0


@dataclass
class FakeWorker:
    """Applies plans like the real worker, against its own block count of the same geometry.

    `eos_at[request_id] = i` makes output token i an EOS. `fail_steps` fails those step ids (the
    store refused the leases: nothing computed, nothing leased). Any contract violation by the
    scheduler (count mismatch, unknown request, more blocks than exist) fails the step too and is
    recorded in `violations` so that tests can assert there were none.
    """

    config: SchedulerConfig
    eos_at: dict[str, int] = field(default_factory=dict)
    token_fn: Callable[[str, int], int] = default_token
    fail_steps: set[int] = field(default_factory=set)
    requests: dict[str, _WorkerRequest] = field(default_factory=dict)
    num_used_blocks: int = 0
    violations: list[str] = field(default_factory=list)
    last_step_id: int = -1
    # Requests of a failed step: their later in-flight steps legitimately fail the count check.
    tainted: set[str] = field(default_factory=set)

    def token(self, request_id: str, index: int) -> int:
        if self.eos_at.get(request_id) == index:
            return EOS
        return self.token_fn(request_id, index)

    def execute(self, plan: BatchPlan) -> StepResult:
        if plan.step_id != self.last_step_id + 1:
            self.violations.append(f"step {plan.step_id} after {self.last_step_id}")
        self.last_step_id = plan.step_id
        for rid in (*plan.finished_request_ids, *plan.preempted_request_ids):
            state = self.requests.pop(rid, None)
            self.tainted.discard(rid)
            if state is not None:
                self.num_used_blocks -= state.num_blocks
        for new in plan.new_requests:
            if new.request_id in self.requests:
                self.violations.append(f"{new.request_id} created twice")
            self.requests[new.request_id] = _WorkerRequest(list(new.token_ids), new.num_prompt_tokens)
        if plan.step_id in self.fail_steps:
            self.tainted.update(s.request_id for s in plan.scheduled)
            return StepResult(plan.step_id, error="injected: kv store refused the leases")
        bs = self.config.block_size
        need_total = 0
        seen: set[str] = set()
        for s in plan.scheduled:
            state = self.requests.get(s.request_id)
            problem = None
            if state is None:
                problem = f"{s.request_id} scheduled but unknown"
            elif s.request_id in seen:
                problem = f"{s.request_id} scheduled twice in step {plan.step_id}"
            elif state.num_computed != s.num_computed_tokens:
                problem = f"{s.request_id}: plan says {s.num_computed_tokens} computed, worker has {state.num_computed}"
            elif s.num_computed_tokens + s.num_tokens > len(state.tokens):
                problem = f"{s.request_id}: computes unknown tokens"
            elif s.sample != (s.num_computed_tokens + s.num_tokens == len(state.tokens)):
                problem = f"{s.request_id}: sample flag {s.sample} inconsistent"
            if problem:
                if s.request_id in self.tainted:  # expected after a failed step: fail this one too
                    self.tainted.update(x.request_id for x in plan.scheduled)
                else:
                    self.violations.append(problem)
                return StepResult(plan.step_id, error=problem)
            seen.add(s.request_id)
            need_total += max(0, -(-(s.num_computed_tokens + s.num_tokens) // bs) - state.num_blocks)
        if self.num_used_blocks + need_total > self.config.num_blocks:
            self.violations.append(f"step {plan.step_id} needs {need_total} blocks, pool exhausted")
            return StepResult(plan.step_id, error="RESOURCE_EXHAUSTED")
        sampled = []
        for s in plan.scheduled:
            state = self.requests[s.request_id]
            need = -(-(s.num_computed_tokens + s.num_tokens) // bs) - state.num_blocks
            if need > 0:
                state.num_blocks += need
                self.num_used_blocks += need
            state.num_computed += s.num_tokens
            if s.sample:
                token = self.token(s.request_id, len(state.tokens) - state.num_prompt)
                state.tokens.append(token)
                sampled.append((s.request_id, token))
        prefill = sum(s.num_tokens for s in plan.scheduled if s.num_tokens > 1)
        timing = StepTiming(total_ns=10_000_000, num_prefill_tokens=prefill,
                            num_decode_seqs=sum(1 for s in plan.scheduled if s.num_tokens == 1))
        return StepResult(plan.step_id, tuple(sampled), timing)


@dataclass
class Driver:
    """Runs a scheduler against a FakeWorker with up to `max_inflight` plans in flight, the way
    the service loop does, and collects every output per request."""

    scheduler: Scheduler
    worker: FakeWorker
    max_inflight: int = 2
    step_s: float = 0.01
    outputs: dict[str, list[RequestOutput]] = field(default_factory=lambda: collections.defaultdict(list))
    inflight: collections.deque = field(default_factory=collections.deque)
    plans: list[BatchPlan] = field(default_factory=list)
    on_plan: Callable[[BatchPlan], None] | None = None

    def send(self) -> bool:
        """Plans and sends while fewer than max_inflight are out; True if anything was sent."""
        sent = False
        while len(self.inflight) < self.max_inflight:
            plan = self.scheduler.schedule()
            if plan.is_empty():
                break
            self.plans.append(plan)
            self.inflight.append(self.worker.execute(plan))
            if self.on_plan is not None:
                self.on_plan(plan)
            sent = True
        return sent

    def receive(self) -> list[RequestOutput]:
        result = self.inflight.popleft()
        self.scheduler.clock.advance(self.step_s)  # type: ignore[attr-defined]
        outs = self.scheduler.update(result)
        self.collect(outs)
        return outs

    def collect(self, outs: list[RequestOutput]) -> None:
        for out in outs:
            self.outputs[out.request_id].append(out)

    def step(self) -> bool:
        """One round: send what may be sent, then apply the oldest result. False when idle."""
        self.send()
        if not self.inflight:
            self.collect(self.scheduler.take_outputs())
            return False
        self.receive()
        return True

    def run(self, max_rounds: int = 10_000) -> None:
        for _ in range(max_rounds):
            if not self.step() and not self.scheduler.has_unfinished_requests():
                return
        raise AssertionError(f"not done after {max_rounds} rounds: {self.scheduler.stats()}")

    def tokens_of(self, request_id: str) -> list[int]:
        return [t for out in self.outputs[request_id] for t in out.new_token_ids]

    def finish_of(self, request_id: str):
        finals = [out for out in self.outputs[request_id] if out.finish_reason is not None]
        assert len(finals) <= 1, f"{request_id} finished {len(finals)} times"
        return finals[0] if finals else None


def make_driver(scheduler: Scheduler, **worker_options: object) -> Driver:
    return Driver(scheduler, FakeWorker(scheduler.config, **worker_options))  # type: ignore[arg-type]
