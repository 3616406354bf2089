"""An on-time RT stream short of KV for its next token waits for free blocks while it has slack
to spare (`slo_step.growth_may_wait`), instead of preempting best-effort work (a checkpoint and a
restore, or a recompute once the host tier is full); with its slack short it preempts as before.
bros and tempo (the other policies keep the base rule: never wait)."""

from __future__ import annotations

import pytest

from scheduler_svc.core import LinearCostModel, RequestStatus, ServiceClass, StepResult
from scheduler_svc.core.checkpoints import CheckpointBook
from tests.factories import make_request, make_scheduler

RT, BE = ServiceClass.REAL_TIME, ServiceClass.BEST_EFFORT
COST = LinearCostModel(a_s=0.010, b_s_per_prefill_token=0.001, c_s_per_decode_seq=0.001, d_s_per_kv_token=0.0)


def _step(sched) -> None:  # noqa: ANN001
    plan = sched.schedule()
    sched.clock.advance(0.012)
    sched.update(StepResult(plan.step_id, tuple((s.request_id, 7) for s in plan.scheduled if s.sample)))


def _full_pool(policy: str, ttft_ms: float, tpot_ms: float):
    """7 blocks of 4: a BE prompt of 19 tokens takes 5; then an RT prompt of 7 takes the other
    2, and with its next decode in flight the RT stream needs a third block for the token after it
(a wait needs a step in flight: its result plans again, with less slack)."""
    options = {"cost_model": COST, "min_prefill_chunk": 4} if policy in ("bros", "tempo") else {}
    sched = make_scheduler(policy, num_blocks=7, policy_options=options, checkpoints=CheckpointBook())
    sched.add_request(make_request("be", prompt_len=19, max_tokens=8, service_class=BE, arrival_s=sched.clock.now()))
    _step(sched)
    sched.add_request(make_request("rt", prompt_len=7, max_tokens=8, service_class=RT, ttft_ms=ttft_ms,
                                   tpot_ms=tpot_ms, arrival_s=sched.clock.now()))
    _step(sched)  # the RT prompt; BE decodes its 20th token into its last block
    sched.schedule()  # in flight: RT decodes its 8th token into its second block; BE waits for a 6th
    assert sched.get_request("rt").num_computed_tokens == 8 and sched.get_request("be").num_computed_tokens == 20
    return sched


@pytest.mark.parametrize("policy", ["bros", "tempo"])
def test_an_rt_stream_with_slack_waits_for_blocks_instead_of_preempting(policy):
    sched = _full_pool(policy, ttft_ms=5000, tpot_ms=5000)
    plan = sched.schedule()
    assert plan.preempted_request_ids == ()
    assert "rt" not in {s.request_id for s in plan.scheduled}  # it waits this step
    assert sched.get_request("be").status is RequestStatus.RUNNING


@pytest.mark.parametrize("policy", ["bros", "tempo"])
def test_an_rt_stream_short_of_slack_preempts_as_before(policy):
    sched = _full_pool(policy, ttft_ms=30, tpot_ms=10)  # its next token is due in 26 ms: about 2 steps
    plan = sched.schedule()
    assert plan.preempted_request_ids == ("be",)
    assert "rt" in {s.request_id for s in plan.scheduled}


def test_without_a_step_in_flight_nobody_waits() -> None:
    """An idle core whose running requests all waited would never plan again: it preempts."""
    sched = _full_pool("bros", ttft_ms=5000, tpot_ms=5000)
    [(step_id, _)] = list(sched._roster.inflight.items())  # noqa: SLF001 - the step left in flight
    sched.update(StepResult(step_id, (("rt", 7),)))
    assert not sched._roster.inflight  # noqa: SLF001
    plan = sched.schedule()
    assert plan.preempted_request_ids == ("be",) and "rt" in {s.request_id for s in plan.scheduled}
