"""Shared test factories: requests, schedulers, and a `Driver` that runs a scheduler against the
fake worker of `tests/fake_worker.py` (the real worker's plan book and leases held ahead, a fake
model with deterministic sampling) with plans in flight, as the service loop does."""

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
    WorkflowRef,
    make_policy,
)
from scheduler_svc.core.checkpoints import CheckpointBook
from scheduler_svc.core.prefix_view import PrefixCacheView
from tests.fake_worker import EOS, FakeWorker, default_token

__all__ = ["EOS", "Driver", "FakeWorker", "default_token", "make_config", "make_driver", "make_request",
           "make_scheduler"]

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
                   policy_options: dict[str, object] | None = None, checkpoints: CheckpointBook | None = None,
                   prefix: PrefixCacheView | None = None, **config_overrides: object) -> Scheduler:
    """A scheduler on a ManualClock (reach it as `scheduler.clock`) with a small pool (64 blocks of 4)."""
    return Scheduler(make_config(**config_overrides), make_policy(policy, **(policy_options or {})),
                     clock or ManualClock(1.0), checkpoints=checkpoints, prefix=prefix)


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
