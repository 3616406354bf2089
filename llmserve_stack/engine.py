"""The whole engine in one process, without gRPC: the scheduler core, the worker's step runner and
the KV store core, wired by direct calls. The same objects the services run, so it serves as the
in-process reference of the end-to-end tests, the baseline that isolates what the gRPC hops cost
in `benchmarks/bench_stack.py`, and a source of per-step timings for the simulator's calibration.

The scheduler's BatchPlan goes to the runner as it is (the services' convert.py round trip maps
every field of it); the runner's lease specs go to the store core and its grants come back as the
same shared types; the StepResult is the runner's, with the store time filled in as the worker
service fills it in.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch

from kvstore_svc.core.store import KvStore
from llmserve.model_source import load_tokenizer, resolve_model
from llmserve.types import SamplingParams, ServiceClass, StepTiming
from scheduler_svc.core.clock import WallClock
from scheduler_svc.core.config import SchedulerConfig
from scheduler_svc.core.plan import RequestOutput
from scheduler_svc.core.policy import make_policy
from scheduler_svc.core.request import Request, Slo
from scheduler_svc.core.scheduler import Scheduler
from worker_svc.core.runner import RunnerLimits, StepRunner
from worker_svc.kernels.backend import default_backend_name, make_backend
from worker_svc.model.kv_cache import KvCache, KvCacheSpec
from worker_svc.model.loader import load_model
from worker_svc.model.precision import resolve_dtype

_WORKER_ID = "in-process"


@dataclass
class GenerationResult:
    """Tokens per request (submission order) and the latencies measured on the wall clock."""

    token_ids: list[list[int]]
    ttfts_ms: list[float]
    tpots_ms: list[float]
    wall_s: float
    step_timings: list[StepTiming] = field(default_factory=list)

    @property
    def output_tokens(self) -> int:
        return sum(len(t) for t in self.token_ids)


class InProcessEngine:
    """Scheduler core + step runner + KV store core in one process, one step at a time."""

    def __init__(self, scheduler: Scheduler, runner: StepRunner, store: KvStore, tokenizer: object | None) -> None:
        self.scheduler = scheduler
        self.runner = runner
        self.store = store
        self.tokenizer = tokenizer
        self._next_id = 0
        self._timings: list[StepTiming] = []  # of the current generate_all

    @classmethod
    def build(
        cls,
        model: str = "default",
        load_format: str = "auto",
        num_kv_blocks: int = 1024,
        block_size: int = 16,
        max_num_batched_tokens: int = 512,
        max_num_seqs: int = 64,
        policy: str = "fcfs",
        dtype: str = "auto",
        device: str = "cpu",
        attention_backend: str = "",
        with_tokenizer: bool = True,
    ) -> InProcessEngine:
        source = resolve_model(model, load_format)  # type: ignore[arg-type]
        torch_dtype = resolve_dtype(dtype, torch.device(device))  # the worker's own choice for "auto"
        net = load_model(source, make_backend(attention_backend or default_backend_name(device)), torch_dtype, device)
        spec = KvCacheSpec.for_model(net.config, block_size, torch_dtype)
        kv_cache = KvCache(spec, num_kv_blocks, device)
        runner = StepRunner(net, kv_cache, RunnerLimits(max_num_batched_tokens, max_num_seqs))
        store = KvStore(lease_ttl_s=1e9, host_tier_bytes=1, clock=time.monotonic)
        store.register_pool(_WORKER_ID, num_kv_blocks, block_size, spec.bytes_per_block)
        core = Scheduler(
            SchedulerConfig(num_blocks=num_kv_blocks, block_size=block_size,
                            max_num_batched_tokens=max_num_batched_tokens, max_num_seqs=max_num_seqs,
                            max_model_len=net.config.max_model_len, eos_token_ids=net.config.eos_token_ids,
                            vocab_size=net.config.vocab_size),
            make_policy(policy),
            WallClock(),
        )
        return cls(core, runner, store, load_tokenizer(source) if with_tokenizer else None)

    def tokenize(self, text: str) -> list[int]:
        assert self.tokenizer is not None, "built without a tokenizer"
        return list(self.tokenizer(text).input_ids)  # type: ignore[operator]

    def step(self) -> list[RequestOutput]:
        """Plans, leases, runs and applies one step; returns its token events."""
        plan = self.scheduler.schedule()
        if plan.is_empty():
            return self.scheduler.take_outputs()
        started = time.perf_counter_ns()
        delta = self.runner.begin_step(plan)
        kv_started = time.perf_counter_ns()
        applied = self.store.apply(_WORKER_ID, delta.release_request_ids, delta.leases)
        kv_ns = time.perf_counter_ns() - kv_started
        result = self.runner.finish_step(applied.grants)
        # The store core has no host tier to send checkpoints to, and the scheduler here plans
        # none (it has no CheckpointBook): drop whatever the runner queued for a store.
        self.runner.take_checkpoint_ops()
        assert result.timing is not None
        timing = dataclasses.replace(result.timing, kv_ns=kv_ns, total_ns=time.perf_counter_ns() - started)
        self._timings.append(timing)
        return self.scheduler.update(dataclasses.replace(result, timing=timing))

    def generate_all(
        self,
        prompts: list[list[int]],
        max_tokens: int,
        temperature: float = 0.0,
        ignore_eos: bool = True,
        slo: Slo | None = None,
        seed: int = 0,
    ) -> GenerationResult:
        """Submits every prompt at once and steps until all finish (greedy by default)."""
        self._timings = []
        start_wall = time.time()
        ids = []
        for prompt in prompts:
            request_id = f"r{self._next_id}"
            self._next_id += 1
            ids.append(request_id)
            self.scheduler.add_request(Request(
                request_id=request_id, prompt_token_ids=tuple(prompt),
                sampling=SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed, ignore_eos=ignore_eos),
                slo=slo or Slo(service_class=ServiceClass.BEST_EFFORT), arrival_s=start_wall))
        tokens: dict[str, list[int]] = {rid: [] for rid in ids}
        times: dict[str, list[float]] = {rid: [] for rid in ids}
        remaining = set(ids)
        while remaining:
            for out in self.step():
                if out.request_id in tokens:
                    now = time.time()
                    tokens[out.request_id].extend(out.new_token_ids)
                    times[out.request_id].extend([now] * len(out.new_token_ids))
                    if out.finish_reason is not None:
                        remaining.discard(out.request_id)
        # Drain: one more plan releases the finished requests' blocks.
        self.step()
        wall = time.time() - start_wall
        ttfts = [(times[rid][0] - start_wall) * 1000 for rid in ids if times[rid]]
        tpots = [(times[rid][-1] - times[rid][0]) * 1000 / (len(times[rid]) - 1) for rid in ids if len(times[rid]) > 1]
        return GenerationResult([tokens[rid] for rid in ids], ttfts, tpots, wall, self._timings)
