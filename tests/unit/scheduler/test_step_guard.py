"""The step guard, the on-time / lost / aged split and the per-step rules bros and tempo share
(policy/step_guard.py, policy/slo_watch.py, policy/slo_step.py)."""

from __future__ import annotations

import math

import pytest

from scheduler_svc.core import LinearCostModel, ServiceClass, StepDraft, StepTiming
from scheduler_svc.core.policy.slo_step import SloStep
from scheduler_svc.core.policy.slo_watch import SloWatch, is_aged, is_lost, note_progress
from scheduler_svc.core.policy.step_guard import StepGuard
from tests.factories import make_config, make_request

RT, DL, BE = ServiceClass.REAL_TIME, ServiceClass.DEADLINE, ServiceClass.BEST_EFFORT
COST = LinearCostModel(a_s=0.010, b_s_per_prefill_token=0.001, c_s_per_decode_seq=0.001, d_s_per_kv_token=0.0)


def _draft(now: float, step_id: int, ahead: int, budget: int = 1000) -> StepDraft:
    return StepDraft(now, step_id, ahead, budget)


def _timing(seconds: float, prefill: int = 0, decode: int = 1) -> StepTiming:
    return StepTiming(total_ns=int(seconds * 1e9), num_prefill_tokens=prefill, num_decode_seqs=decode)


def test_a_step_starts_after_the_predicted_plans_in_flight():
    guard = StepGuard(COST, None)
    first = _draft(1.0, 0, 0)
    guard.begin_step(first)
    assert guard.start_s == 1.0
    first.add(0, 50, False)  # a 50-token prefill: 60 ms predicted
    guard.begin_step(_draft(1.0, 1, 1))  # planned while the first is in flight
    assert guard.start_s == pytest.approx(1.0 + 0.060)


def test_the_margin_follows_the_models_recent_under_estimates():
    guard = StepGuard(COST, None)
    for step in range(20):
        draft = _draft(float(step), step, 0)
        guard.begin_step(draft)
        draft.add(0, 40, False)  # predicted 50 ms; the worker takes 55 ms
        guard.observe(_timing(0.055, prefill=40, decode=0))
    assert guard.margin == pytest.approx(0.1)
    draft = _draft(100.0, 20, 0)
    guard.begin_step(draft)
    req = make_request("be", prompt_len=200, service_class=BE)
    # Within 110 ms: (10 + m) · 1.1 ≤ 110  ->  m = 90, not the plain model's 100.
    assert guard.fit(req, 200, False, draft, 100.110) == 90


def test_a_token_already_late_is_not_noted_and_a_streams_step_lasts_its_tpot():
    guard = StepGuard(COST, None)
    draft = _draft(0.0, 0, 0)
    guard.begin_step(draft)
    draft.add(0, 1, True)  # 11 ms so far
    assert not guard.note(0.005, draft)  # due before the step can end: trimming others cannot save it
    assert math.isinf(draft.tightest_deadline_s)
    # Due in 1 s, TPOT 40 ms, keep 40 ms of slack: the step may last max(1 - 0.04, min(1, 0.04)) s.
    assert guard.note(1.0, draft, pace_s=0.04, reserve_s=0.04)
    assert draft.tightest_deadline_s == pytest.approx(0.96)
    # Down to its reserve: the step lasts at most the TPOT.
    assert guard.note(0.05, draft, pace_s=0.04, reserve_s=0.04)
    assert draft.tightest_deadline_s == pytest.approx(0.04)


def test_lost_is_certain_and_sticky_aged_is_sticky():
    rt = make_request("rt", prompt_len=8, service_class=RT, ttft_ms=500, tpot_ms=50, arrival_s=10.0)
    watch = SloWatch()
    assert not is_lost(rt, watch, now=10.4, prefill_eta_s=0.05)
    assert is_lost(rt, watch, now=10.46, prefill_eta_s=0.05)  # even its prefill's compute ends late
    assert is_lost(rt, watch, now=0.0, prefill_eta_s=0.0)  # sticky
    streaming = make_request("s", prompt_len=8, service_class=RT, ttft_ms=500, tpot_ms=50, arrival_s=10.0)
    streaming.output_token_ids, streaming.token_times_s = [1, 1], [10.4, 10.6]  # token 1 due at 10.55
    assert is_lost(streaming, SloWatch(), now=10.6, prefill_eta_s=0.0)
    dl = make_request("dl", prompt_len=8, service_class=DL, deadline_ms=1000, arrival_s=10.0)
    assert not is_lost(dl, SloWatch(), now=10.9, prefill_eta_s=0.05)
    assert is_lost(dl, SloWatch(), now=10.96, prefill_eta_s=0.05)
    be = make_request("be", prompt_len=8, service_class=BE, arrival_s=10.0)
    watch = SloWatch(last_progress_s=10.0)
    assert not is_aged(be, watch, 39.0, 30.0) and is_aged(be, watch, 40.0, 30.0)
    note_progress(watch, 40.0)
    assert is_aged(be, watch, 40.0, 30.0)
    fresh = SloWatch()  # never scheduled: the clock runs from its arrival
    assert not is_aged(be, fresh, 39.0, 30.0) and is_aged(be, fresh, 40.0, 30.0)


def _step() -> tuple[SloStep, StepDraft]:
    guard = StepGuard(COST, None)
    step = SloStep(guard, min_prefill_chunk=4, stream_reserve_tpots=1.0)
    step.bind(make_config(block_size=4))
    draft = _draft(0.0, 0, 0)
    step.begin_step(draft)
    return step, draft


def test_one_prompt_at_a_time_below_on_time_work_and_only_a_prompt_the_pool_holds():
    step, draft = _step()
    first = make_request("be1", prompt_len=40, service_class=BE)
    first.status = first.status.RUNNING
    step.on_scheduled(first, SloWatch(), is_decode=False, sample=False, draft=draft)  # mid-prompt
    waiting = make_request("be2", prompt_len=40, service_class=BE)
    assert step.limit(waiting, SloWatch(), 20, False, draft, may_force=False) == 0
    rt = make_request("rt", prompt_len=40, service_class=RT, ttft_ms=60_000)
    assert step.limit(rt, SloWatch(), 20, False, draft, may_force=False) == 20  # on-time work is exempt
    first.num_computed_tokens = 40  # its prompt is in: the next one may start
    assert step.limit(waiting, SloWatch(), 20, False, draft, may_force=False) == 20
    # The 20 tokens it gets need 5 blocks; the other 5 of its 40-token prompt must stay free.
    assert step.kv_reserve(waiting, SloWatch()) == 5
    assert step.kv_reserve(rt, SloWatch()) == 0


def test_only_the_first_chunk_that_does_not_fit_is_forced():
    step, draft = _step()
    draft.add(0, 1, True)
    draft.note_deadline(0.011)  # no time left in this step
    a = make_request("a", prompt_len=40, service_class=RT, ttft_ms=60_000)
    b = make_request("b", prompt_len=40, service_class=RT, ttft_ms=60_000)
    assert step.limit(a, SloWatch(), 40, False, draft, may_force=False) == 4
    assert step.limit(b, SloWatch(), 40, False, draft, may_force=False) == 0


def _stream_in_step(bank_tpots: float, slack_s: float) -> tuple[SloStep, StepDraft]:
    """A step holding one RT stream's decode (TPOT 100 ms) whose token is due `slack_s` after one
    TPOT from the step's start, with the slack bank at `bank_tpots` TPOTs."""
    guard = StepGuard(COST, None)
    step = SloStep(guard, min_prefill_chunk=4, stream_reserve_tpots=1.0, slack_bank_tpots=bank_tpots,
                   bank_fill_pace=0.5)
    draft = _draft(0.0, 0, 0)
    step.begin_step(draft)
    # The token this decode samples (its first) is due at ttft - tpot = 100 ms + slack_s.
    stream = make_request("s", prompt_len=8, service_class=RT, ttft_ms=slack_s * 1000 + 200, tpot_ms=100)
    stream.status = stream.status.RUNNING
    stream.num_computed_tokens = 8
    draft.add(8, 1, True)  # its decode: 11 ms
    step.on_scheduled(stream, SloWatch(), is_decode=True, sample=True, draft=draft)
    return step, draft


def test_below_its_slack_bank_a_stream_lets_only_on_time_rt_work_fill_the_step_to_its_pace():
    be = make_request("be", prompt_len=500, service_class=BE)
    rt = make_request("rt", prompt_len=500, service_class=RT, ttft_ms=60_000)
    # 0.3 s of slack (3 TPOTs) below a bank of 10 TPOTs: best-effort work fills the step to half
    # the TPOT (50 ms: 10 ms fixed + 1 ms decode + 39 ms of prefill); on-time RT work keeps the
    # guard's limit, the stream's slack down to its one-TPOT reserve (300 ms: 10 + 1 + 289).
    step, draft = _stream_in_step(10.0, 0.3)
    assert step.limit(be, SloWatch(), 500, False, draft, may_force=False) == 39
    assert step.limit(rt, SloWatch(), 500, False, draft, may_force=False) == 289
    # Without a bank, or with the stream's slack above it, best-effort work fills to the pace too.
    for bank, slack in ((0.0, 0.3), (10.0, 1.2)):
        step, draft = _stream_in_step(bank, slack)
        assert step.limit(be, SloWatch(), 500, False, draft, may_force=False) == step.limit(
            rt, SloWatch(), 500, False, draft, may_force=False)
