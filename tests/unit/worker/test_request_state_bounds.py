"""Nothing of a request outlives it in the worker's step runner (issue 11: per-request state kept
after the request ends is memory that grows with every request served). Requests end in every
way a plan can end them: finished, preempted by recompute or by checkpoint (and then resumed
elsewhere, so this worker never hears of them again), dropped with a failed step, and all at once
when the Execute stream closes. Afterwards no object reachable from the runner holds any of their
ids: a bound by construction, checked on the object graph, not a timing."""

from __future__ import annotations

import gc
import types

import pytest
import torch

from llmserve.model_source import resolve_model
from llmserve.plan import BatchPlan, NewRequest, ScheduledRequest
from llmserve.types import SamplingParams, ServiceClass
from tests.unit.worker.helpers import LocalBlockPool, run_step
from worker_svc.core.runner import RunnerLimits, StepRunner
from worker_svc.kernels.backend import make_backend
from worker_svc.model.kv_cache import KvCache, KvCacheSpec
from worker_svc.model.loader import load_model

BE = ServiceClass.BEST_EFFORT
_OPAQUE = (torch.Tensor, torch.nn.Module, type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)


def reachable_strings(root: object) -> set[str]:
    """Every str reachable from `root` through containers and instance attributes (not through
    tensors, modules, classes or functions, which hold no request state)."""
    seen, found, stack = set(), set(), [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, str):
            found.add(obj)
        elif not isinstance(obj, _OPAQUE):
            stack.extend(gc.get_referents(obj))
    return found


@pytest.fixture(scope="module")
def runner(tiny_checkpoints) -> StepRunner:
    model = load_model(resolve_model(str(tiny_checkpoints["llama"][0])), make_backend("torch"))
    spec = KvCacheSpec.for_model(model.config, 4, model.embed_tokens.weight.dtype)
    # Lazy checkpoints of every full block: the tracker has state for every running request.
    return StepRunner(model, KvCache(spec, 128, "cpu"), RunnerLimits(256, 16), lazy_checkpoint_blocks=1)


def _new(rid: str, n: int = 9) -> NewRequest:
    return NewRequest(rid, tuple((5 * i + 3) % 96 for i in range(n)), n, SamplingParams(max_tokens=64), BE)


def _serve(runner: StepRunner, pool: LocalBlockPool, step: int, ids: list[str], **ends: tuple[str, ...]) -> int:
    """Admits `ids` (a 9-token prefill each), decodes them 6 steps, then sends `ends` (plan fields)."""
    run_step(runner, pool, BatchPlan(step, tuple(_new(r) for r in ids), tuple(ScheduledRequest(r, 9, 0, True) for r in ids)))
    for i in range(6):
        step += 1
        run_step(runner, pool, BatchPlan(step, (), tuple(ScheduledRequest(r, 1, 9 + i, True) for r in ids)))
    step += 1
    run_step(runner, pool, BatchPlan(step, **ends))
    return step + 1


def test_no_state_of_an_ended_request_stays_in_the_runner(runner: StepRunner) -> None:
    pool = LocalBlockPool(128)
    ended: list[str] = []

    def ids(tag: str) -> list[str]:
        batch = [f"req-{tag}-{i}" for i in range(3)]
        ended.extend(batch)
        return batch

    step = _serve(runner, pool, 0, batch := ids("finished"), finished_request_ids=tuple(batch))
    step = _serve(runner, pool, step, batch := ids("recomputed"), preempted_request_ids=tuple(batch))
    # Preempted by checkpoint, then resumed and finished on another worker: the scheduler sends
    # this one nothing more about them (their drop goes to the worker that ends them).
    step = _serve(runner, pool, step, batch := ids("moved"), preempted_request_ids=tuple(batch),
                  checkpoint_request_ids=tuple(batch))
    step = _serve(runner, pool, step, batch := ids("dropped"), drop_checkpoint_request_ids=(),
                  finished_request_ids=tuple(batch))
    run_step(runner, pool, BatchPlan(step, tuple(_new(r) for r in ids("failed")),
                                     tuple(ScheduledRequest(r, 9, 0, True) for r in ended[-3:])))
    runner.begin_step(BatchPlan(step + 1, (), tuple(ScheduledRequest(r, 1, 9, True) for r in ended[-3:])))
    runner.abort_step(kv_applied=True)
    _serve(runner, pool, step + 2, ids("closed"))
    runner.reset()
    runner.begin_step(BatchPlan(step + 10))  # the releases of the closed stream go out with it
    runner.finish_step([])
    runner.take_checkpoint_ops()
    assert runner.request_ids == ()
    kept = sorted(set(ended) & reachable_strings(runner))
    assert kept == [], f"state of ended requests kept: {kept}"
