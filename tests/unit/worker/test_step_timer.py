"""The worker's start-up calibration: a grid within its limits, sizes counted as StepTiming counts
them, a time budget, a fit that Describe carries."""

from __future__ import annotations

import itertools

import pytest

from llmserve.model_source import resolve_model
from llmserve.plan import BatchPlan, NewRequest, ScheduledRequest
from llmserve.step_cost import StepCostFit, StepCost
from llmserve.types import SamplingParams, ServiceClass
from tests.unit.worker.helpers import LocalBlockPool, make_runner, run_step
from worker_svc import convert
from worker_svc.calibration import calibrate
from worker_svc.core.step_timer import StepShape, start_up_grid, time_steps
from worker_svc.core.types import StepCalibration, WorkerDescription
from worker_svc.kernels.backend import make_backend
from worker_svc.model.loader import load_model


@pytest.fixture(scope="module")
def model(tiny_checkpoints):
    return load_model(resolve_model(str(tiny_checkpoints["llama"][0])), make_backend("torch"))


@pytest.mark.parametrize("budget,seqs,context_len,kv_tokens", [(512, 64, 8192, 46_000), (64, 8, 256, 96), (16, 1, 40, 64)])
def test_the_grid_stays_within_the_limits_and_spans_them(budget, seqs, context_len, kv_tokens) -> None:
    shapes = start_up_grid(budget, seqs, context_len, kv_tokens)
    assert len(shapes) >= 4
    for s in shapes:
        assert s.prefill + s.decode <= budget and s.decode + (1 if s.prefill else 0) <= seqs
        assert s.kv_tokens_read <= kv_tokens and s.context + 1 < context_len
    assert max(s.prefill for s in shapes) == budget  # a full-budget prefill
    short = min(64, context_len - 2)
    assert max(s.decode for s in shapes) == max(b for b in (1, max(1, seqs // 4), seqs) if b * (short + 1) <= kv_tokens)


def test_kv_tokens_read_is_what_the_plan_book_reports(model) -> None:
    """A shape's sizes are those of a real step of that shape (what the online model is fed)."""
    runner, pool = make_runner(model, num_blocks=32, block_size=4, max_tokens=64), LocalBlockPool(32)
    greedy = SamplingParams(max_tokens=8, temperature=0.0)
    prompt = lambda rid, n: NewRequest(rid, tuple(range(1, n + 1)), n, greedy, ServiceClass.BEST_EFFORT)  # noqa: E731
    run_step(runner, pool, BatchPlan(0, (prompt("a", 5), prompt("b", 5)),
                                     (ScheduledRequest("a", 5, 0, True), ScheduledRequest("b", 5, 0, True))))
    out = run_step(runner, pool, BatchPlan(1, (prompt("c", 3),), (ScheduledRequest("a", 1, 5, True),
                                                                  ScheduledRequest("b", 1, 5, True),
                                                                  ScheduledRequest("c", 3, 0, True))))
    shape = StepShape(prefill=3, decode=2, context=5)
    assert (out.timing.num_prefill_tokens, out.timing.num_decode_seqs, out.timing.num_kv_tokens_read) == (
        shape.prefill, shape.decode, shape.kv_tokens_read)


def test_time_steps_times_each_shape_and_stops_at_its_budget(model) -> None:
    runner = make_runner(model, num_blocks=32, block_size=4, max_tokens=64)
    shapes = start_up_grid(64, 8, model.config.max_model_len, 32 * 4)
    samples = time_steps(model, runner.kv_cache, shapes, repeats=2)
    assert [(s.prefill_tokens, s.decode_seqs, s.kv_tokens_read) for s in samples] == [
        (s.prefill, s.decode, s.kv_tokens_read) for s in shapes]
    assert all(s.seconds > 0 for s in samples)
    ticks = itertools.count(0, 10**9)  # a clock that moves one second per reading
    limited = time_steps(model, runner.kv_cache, shapes, repeats=1, max_seconds=3.5, clock_ns=lambda: next(ticks))
    assert 0 < len(limited) < len(shapes)


def test_calibrate_fits_the_runner_and_describe_carries_it(model) -> None:
    runner = make_runner(model, num_blocks=32, block_size=4, max_tokens=64, max_seqs=8)
    calibration = calibrate(runner, "w0")
    assert calibration is not None and calibration.fit.num_samples >= 4 and calibration.seconds > 0
    cost = calibration.fit.cost
    assert cost.a_s > 0 and min(cost.b_s_per_prefill_token, cost.c_s_per_decode_seq, cost.d_s_per_kv_token) >= 0
    description = WorkerDescription("w0", "tiny", 96, 256, (2,), 4, 32, 1024, "float32", "cpu", 64, 8)
    assert not convert.worker_info(description).HasField("step_cost")
    given = StepCalibration(StepCostFit(StepCost(0.01, 2e-4, 3e-4, 4e-8), 12, 0.97, 0.05), 2.5)
    info = convert.worker_info(WorkerDescription(**{**description.__dict__, "step_cost": given}))
    assert (info.step_cost.a_s, info.step_cost.b_s_per_prefill_token, info.step_cost.c_s_per_decode_seq,
            info.step_cost.d_s_per_kv_token) == (0.01, 2e-4, 3e-4, 4e-8)
    assert (info.step_cost.num_samples, info.step_cost.r2, info.step_cost.median_rel_error,
            info.step_cost.calibration_s) == (12, 0.97, 0.05, 2.5)


def test_the_fit_watch_logs_measured_over_predicted(caplog) -> None:
    from llmserve.types import StepTiming
    from worker_svc.fit_watch import FitWatch

    watch = FitWatch(StepCost(0.01, 1e-3, 0.0, 0.0), "w0", every=2)
    step = StepTiming(forward_ns=15_000_000, sample_ns=5_000_000, num_prefill_tokens=10, num_kv_tokens_read=10)
    with caplog.at_level("INFO", logger="worker_svc.fit_watch"):
        watch.observe(step, total_ns=40_000_000)  # predicted 20 ms: the step 2x, its compute 1x
        watch.observe(StepTiming(), total_ns=1)  # no work: not counted
        assert not caplog.records
        watch.observe(step, total_ns=40_000_000)
    assert "the last 2 steps took 2.00x" in caplog.text and "alone 1.00x" in caplog.text
