"""FCFS and priority decisions in hand-made situations, and the aging bound."""

from __future__ import annotations

import pytest

from scheduler_svc.core import FinishReason, RequestStatus, StepResult
from tests.factories import default_token, make_driver, make_request, make_scheduler


def _three_full(policy: str, **req_kwargs):
    """a, b, c of 8 prompt tokens fill a 6-block pool (block 4): the next decode needs a block."""
    sched = make_scheduler(policy, num_blocks=6)
    for rid in ("a", "b", "c"):
        sched.add_request(make_request(rid, prompt_len=8, max_tokens=4, **req_kwargs.get(rid, {})))
    return sched


def test_fcfs_preempts_the_latest_arrival_on_kv_shortage():
    sched = _three_full("fcfs", b={"arrival_s": 0.2}, a={"arrival_s": 0.1}, c={"arrival_s": 0.3})
    p0 = sched.schedule()
    assert [s.request_id for s in p0.scheduled] == ["a", "b", "c"]
    assert sched.ledger.num_free == 0
    sched.update(StepResult(p0.step_id, (("a", 50), ("b", 51), ("c", 52))))
    p1 = sched.schedule()
    assert p1.preempted_request_ids == ("c",)
    assert [s.request_id for s in p1.scheduled] == ["a", "b"]  # no admission in a preempting step
    c = sched.get_request("c")
    assert c.status is RequestStatus.PREEMPTED and c.num_preemptions == 1 and c.output_token_ids == [52]
    assert sched.ledger.held("c") == 0


def test_victim_in_flight_is_drained_then_preempted():
    sched = _three_full("fcfs", a={"arrival_s": 0.1}, b={"arrival_s": 0.2}, c={"arrival_s": 0.3})
    p0 = sched.schedule()
    p1 = sched.schedule()  # every decode needs a new block; c (the victim) is still in flight
    assert p1.is_empty()
    assert sched.ticket("c").preempt_when_drained
    sched.update(StepResult(p0.step_id, (("a", 50), ("b", 51), ("c", 52))))
    p1 = sched.schedule()
    assert p1.preempted_request_ids == ("c",)
    assert [s.request_id for s in p1.scheduled] == ["a", "b"]


def test_short_requests_wait_for_a_draining_victim_instead_of_draining_more():
    # a, b, c, d of 6 prompt tokens (2 blocks each) fill 8 blocks; each decode needs a 3rd block.
    sched = make_scheduler("fcfs", num_blocks=8)
    for i, rid in enumerate("abcd"):
        sched.add_request(make_request(rid, prompt_len=8, max_tokens=4, arrival_s=0.1 * (i + 1)))
    p0 = sched.schedule()
    assert sched.ledger.num_free == 0
    p1 = sched.schedule()  # pipelined: every victim is still in flight
    assert p1.is_empty()
    # a drained d; d's 2 blocks cover b and c too, so c is not drained for b.
    assert [r.request_id for r in sched.running_requests() if sched.ticket(r.request_id).preempt_when_drained] == ["d"]
    sched.update(StepResult(p0.step_id, (("a", 50), ("b", 51), ("c", 52), ("d", 53))))
    p1 = sched.schedule()
    assert p1.preempted_request_ids == ("d",)
    assert [s.request_id for s in p1.scheduled] == ["a", "b"]  # c waits a step for a block


def test_preempted_request_resumes_with_its_tokens_and_same_output():
    sched = make_scheduler("fcfs", num_blocks=6)
    ref = make_scheduler("fcfs")
    for s in (sched, ref):
        for i, rid in enumerate(("a", "b", "c")):
            s.add_request(make_request(rid, prompt_len=8, max_tokens=6, arrival_s=0.1 * (i + 1)))
    d, r = make_driver(sched), make_driver(ref)
    d.run()
    r.run()
    assert sched.num_preemptions > 0 and ref.num_preemptions == 0
    for rid in ("a", "b", "c"):
        assert d.tokens_of(rid) == r.tokens_of(rid) == [default_token(rid, i) for i in range(6)]
    assert d.finish_of("c").num_preemptions >= 1
    resumed = [n for p in d.plans for n in p.new_requests if n.request_id == "c" and n.num_output_tokens > 0]
    assert resumed and resumed[0].token_ids[8:] == tuple(default_token("c", i) for i in range(resumed[0].num_output_tokens))
    assert not d.worker.violations


def test_priority_orders_by_priority_then_arrival():
    sched = make_scheduler("priority", max_num_batched_tokens=8)
    sched.add_request(make_request("late_urgent", prompt_len=4, priority=0, arrival_s=3.0))
    sched.add_request(make_request("early_low", prompt_len=4, priority=5, arrival_s=1.0))
    sched.add_request(make_request("mid", prompt_len=4, priority=1, arrival_s=2.0))
    plan = sched.schedule()
    assert [s.request_id for s in plan.scheduled] == ["late_urgent", "mid"]


def test_priority_victim_is_the_lowest_priority_not_the_latest():
    sched = _three_full("priority", a={"priority": 0, "arrival_s": 3.0}, b={"priority": 5, "arrival_s": 1.0},
                        c={"priority": 1, "arrival_s": 2.0})
    p0 = sched.schedule()
    sched.update(StepResult(p0.step_id, (("a", 50), ("b", 51), ("c", 52))))
    p1 = sched.schedule()
    assert p1.preempted_request_ids == ("b",)
    assert [s.request_id for s in p1.scheduled] == ["a", "c"]


def test_waiting_high_priority_does_not_preempt_running():
    sched = make_scheduler("priority", num_blocks=5)
    sched.add_request(make_request("low", prompt_len=16, max_tokens=1, priority=9))
    p0 = sched.schedule()
    sched.add_request(make_request("high", prompt_len=8, max_tokens=4, priority=0))
    p1 = sched.schedule()
    assert p1.is_empty() and sched.get_request("low").status is RequestStatus.RUNNING
    sched.update(StepResult(p0.step_id, (("low", 7),)))
    p1 = sched.schedule()
    assert p1.finished_request_ids == ("low",) and [n.request_id for n in p1.new_requests] == ["high"]


def _first_scheduled_time(driver, rid):
    for plan, t in zip(driver.plans, driver.plan_times):
        if any(s.request_id == rid for s in plan.scheduled):
            return t
    return None


@pytest.mark.parametrize("aging_s", [None, 0.3])
def test_aging_bounds_the_wait_of_a_low_priority_request(aging_s):
    sched = make_scheduler("priority", max_num_seqs=1, policy_options={"aging_s": aging_s})
    clock = sched.clock
    low = make_request("low", prompt_len=4, max_tokens=2, priority=9, arrival_s=clock.now())
    sched.add_request(low)
    driver = make_driver(sched)
    driver.plan_times = []
    driver.on_plan = lambda plan: driver.plan_times.append(clock.now())
    queued_at = clock.now()
    n = 0
    for _ in range(300):  # a steady stream of urgent work keeps the single seat busy
        if sum(1 for r in sched.waiting_requests() if r.slo.priority == 0) < 2:
            sched.add_request(make_request(f"hi{n}", prompt_len=4, max_tokens=3, priority=0))
            n += 1
        driver.step()
    first = _first_scheduled_time(driver, "low")
    if aging_s is None:
        assert first is None  # starved for the whole run without aging
    else:
        assert first is not None and first - queued_at <= aging_s + 3 * driver.step_s + 1e-9
        assert driver.finish_of("low").finish_reason is FinishReason.LENGTH
    assert not driver.worker.violations
