"""Pacing of real-time streams (policy/pacing.py) and its use in BROS."""

from __future__ import annotations

import pytest

from scheduler_svc.core import ServiceClass
from scheduler_svc.core.policy.pacing import StepTimes, decode_may_yield
from tests.factories import make_driver, make_request, make_scheduler

RT, BE = ServiceClass.REAL_TIME, ServiceClass.BEST_EFFORT


def test_step_times_track_mean_and_recent_max():
    st = StepTimes(0.5)  # a seed guess, replaced by the first measurement
    st.observe(0.01)
    assert st.max_s == 0.01
    st.observe(0.08)
    for _ in range(63):
        st.observe(0.01)
    assert st.max_s == 0.08  # still in the 64-step window
    st.observe(0.01)
    assert st.max_s == 0.01  # the 0.08 step left the window
    assert st.mean_s == pytest.approx(0.01, rel=0.05)
    with pytest.raises(ValueError):
        StepTimes(0.0)


def test_decode_may_yield_only_with_two_steps_of_slack():
    req = make_request("rt", prompt_len=4, service_class=RT, ttft_ms=1000, tpot_ms=100, arrival_s=0.0)
    req.output_token_ids = [1, 1, 1]  # next token (index 3) due at 1.3 s
    assert decode_may_yield(req, start_s=1.0, step_max_s=0.1, margin_s=0.05)  # 1.3 > 1.25
    assert not decode_may_yield(req, start_s=1.1, step_max_s=0.1, margin_s=0.05)
    req.num_output_placeholders = 1  # a token in flight: the step would sample index 4 (1.4 s)
    assert decode_may_yield(req, start_s=1.1, step_max_s=0.1, margin_s=0.05)


def _bros(pace: bool):
    return make_scheduler("bros", max_num_batched_tokens=16, num_blocks=256, max_model_len=512,
                          policy_options={"pace_rt_decodes": pace, "pace_margin_s": 0.0})


def test_bros_pacing_yields_a_stream_ahead_of_pace_only_when_other_work_runs():
    sched = _bros(pace=True)
    now = sched.clock.now()
    sched.add_request(make_request("rt", prompt_len=4, max_tokens=100, service_class=RT, ttft_ms=1000,
                                   tpot_ms=1000, arrival_s=now, ignore_eos=True))
    driver = make_driver(sched)
    driver.max_inflight = 1
    for _ in range(3):  # alone: never yields (an empty plan would stall the core)
        driver.send()
        assert [s.request_id for s in driver.plans[-1].scheduled] == ["rt"]
        driver.receive()
    sched.add_request(make_request("be", prompt_len=200, max_tokens=4, service_class=BE,
                                   arrival_s=sched.clock.now()))
    driver.send()
    assert [s.request_id for s in driver.plans[-1].scheduled] == ["rt", "be"]  # no BE in the previous plan
    driver.receive()
    driver.send()  # the BE prefill runs on, and rt is ~1 s ahead of its pace: it yields
    assert [s.request_id for s in driver.plans[-1].scheduled] == ["be"]
    driver.receive()
    driver.run()
    assert len(driver.tokens_of("rt")) == 100


def test_bros_without_pacing_decodes_every_stream_every_step():
    sched = _bros(pace=False)
    now = sched.clock.now()
    sched.add_request(make_request("rt", prompt_len=4, max_tokens=100, service_class=RT, ttft_ms=1000,
                                   tpot_ms=1000, arrival_s=now, ignore_eos=True))
    sched.add_request(make_request("be", prompt_len=200, max_tokens=4, service_class=BE, arrival_s=now))
    driver = make_driver(sched)
    driver.max_inflight = 1
    for _ in range(5):
        driver.send()
        assert "rt" in [s.request_id for s in driver.plans[-1].scheduled]
        driver.receive()
