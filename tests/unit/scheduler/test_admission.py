"""The opt-in RT admission control (core/admission.py): a new real-time request whose predicted
TTFT exceeds its SLO is refused at add_request with the prediction in the message; everything
else is queued as before."""

from __future__ import annotations

import re

import pytest

from llmserve.errors import CapacityError
from scheduler_svc.core.cost_model import LinearCostModel
from scheduler_svc.core.errors import TtftInfeasibleError
from scheduler_svc.core.request import ServiceClass
from tests.factories import make_request, make_scheduler

RT, BE = ServiceClass.REAL_TIME, ServiceClass.BEST_EFFORT
# 10 ms a step plus 1 ms a prefill token, 256 tokens a step: a 100-token prompt alone takes 0.11 s.
COST = LinearCostModel(0.01, 1e-3, 0.0, 0.0)


def _scheduler(policy: str = "tempo", on: bool = True):
    return make_scheduler(policy, rt_admission_control=on, max_num_batched_tokens=256, num_blocks=4096,
                          max_model_len=4096, policy_options={"cost_model": COST, "online_cost_model": False})


@pytest.mark.parametrize("policy", ["bros", "tempo"])
def test_a_request_that_cannot_make_its_ttft_is_refused_with_the_prediction(policy: str):
    sched = _scheduler(policy)
    now = sched.clock.now()
    # Alone: 100 tokens in one step, 0.11 s, well inside 1 s.
    sched.add_request(make_request("first", prompt_len=100, service_class=RT, arrival_s=now), new_arrival=True)
    assert sched.last_ttft_forecast_s == pytest.approx(0.11)
    # Its 1,000 tokens (bros ranks it first: less slack) or 1,100 (tempo: first's deadline is
    # earlier), the last step filled by what ranks behind: 1.06 or 1.15 s, inside 1.25 s.
    sched.add_request(make_request("big", prompt_len=1000, service_class=RT, ttft_ms=1250, arrival_s=now),
                      new_arrival=True)
    assert sched.last_ttft_forecast_s == pytest.approx(4 * 0.266 + (0.086 if policy == "tempo" else 0.0))
    # Ranked behind both (a later deadline, more slack): 1,400 tokens, 1.46 s > 1.3 s.
    with pytest.raises(TtftInfeasibleError) as refused:
        sched.add_request(make_request("late", prompt_len=300, service_class=RT, ttft_ms=1300, arrival_s=now),
                          new_arrival=True)
    assert isinstance(refused.value, CapacityError)  # RESOURCE_EXHAUSTED through the one table
    message = re.fullmatch(r"predicted TTFT (\d+) ms exceeds the request's 1300 ms SLO: retry later or elsewhere",
                           str(refused.value))
    assert message and int(message.group(1)) == 1460
    assert refused.value.retry_after_s == pytest.approx(refused.value.predicted_ttft_s - 1.3)
    assert sched.get_request("late") is None  # not queued


def test_only_new_real_time_arrivals_are_checked():
    sched = _scheduler()
    now = sched.clock.now()
    sched.add_request(make_request("big", prompt_len=3000, service_class=RT, ttft_ms=60_000, arrival_s=now),
                      new_arrival=True)
    sched.add_request(make_request("be", prompt_len=100, service_class=BE, arrival_s=now), new_arrival=True)
    # Moved from another core (no new_arrival): it was admitted there.
    sched.add_request(make_request("moved", prompt_len=100, service_class=RT, arrival_s=now))
    assert sched.get_request("be") is not None and sched.get_request("moved") is not None


def test_off_by_default_and_only_for_cost_model_policies():
    sched = _scheduler(on=False)
    now = sched.clock.now()
    sched.add_request(make_request("big", prompt_len=3000, service_class=RT, ttft_ms=60_000, arrival_s=now),
                      new_arrival=True)
    sched.add_request(make_request("late", prompt_len=100, service_class=RT, arrival_s=now), new_arrival=True)
    assert sched.get_request("late") is not None and sched.last_ttft_forecast_s is None
    with pytest.raises(ValueError, match="bros or tempo"):
        make_scheduler("fcfs", rt_admission_control=True)


def test_the_service_setting_needs_a_cost_model_policy():
    from scheduler_svc.config import SchedulerServiceConfig

    assert SchedulerServiceConfig(worker_addrs=("h:1",)).rt_admission_control is False
    assert SchedulerServiceConfig(worker_addrs=("h:1",), policy="bros", rt_admission_control=True).rt_admission_control
    with pytest.raises(ValueError, match="--rt-admission-control needs --policy"):
        SchedulerServiceConfig(worker_addrs=("h:1",), policy="edf", rt_admission_control=True)
